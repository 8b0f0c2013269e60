#!/usr/bin/env bash
# The paper's experiments on Fashion-MNIST, at a CPU budget, written to docs/ablations.md.
#
#   bash scripts/experiments.sh [STEPS]      (default STEPS: 250 iterations per run; about an hour)
#
# 1. US-Net vs four individually trained widths vs an S-Net on those widths (same steps).
# 2. Ablations of the US-Net: sandwich rule vs n random widths; inplace distillation on
#    and off; n = 2, 3, 4, 5; the width lower bound k0; the divisor d; and the number of
#    calibration batches, including none (every width normalised with the full width's
#    statistics, sliced).
# Each run's config, checkpoint and eval JSON stay in runs/exp/NAME; the report and plots
# are regenerated from those JSON files by scripts/ablations_report.py.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-250}
out=runs/exp
mkdir -p "$out/configs" docs
cargo build --release --quiet
usnet=target/release/usnet
base=configs/fashion_mnist_us_v2.toml
# One epoch of STEPS batches of 128 (the learning-rate schedule spans the config's epochs, so
# the budget is an epoch of STEPS * 128 training images); evaluate on 2000 test images to keep
# the budget; the same images for every run.
common='s/^num_epochs = .*/num_epochs = 1/'
make_config() { # NAME SOURCE [sed -e ...]
  local name=$1 src=$2; shift 2
  sed -e "$common" -e "s/^data_loader_workers = .*/data_loader_workers = 1\ntrain_subset = $((steps * 128))\ntest_subset = 2000/" "$@" "$src" > "$out/configs/$name.toml"
}
run() { # NAME
  local name=$1 dir="$out/$1"
  if [ -e "$dir/eval.json" ]; then echo "== $name: done already"; return; fi
  echo "== $name"
  if [ -e "$dir/checkpoint.safetensors" ]; then
    $usnet train --config "$out/configs/$name.toml" --output "$dir" --resume
  else
    $usnet train --config "$out/configs/$name.toml" --output "$dir"
  fi
  $usnet calibrate --checkpoint "$dir"
  $usnet eval --checkpoint "$dir" --json "$dir/eval.json" --plot "$dir/eval.png"
}

# 1. US-Net against fixed widths and an S-Net.
make_config us $base
for w in 10 075 05 035; do make_config "fixed_$w" "configs/fashion_mnist_fixed_$w.toml"; done
make_config snet configs/fashion_mnist_snet_v2.toml
for name in us fixed_10 fixed_075 fixed_05 fixed_035 snet; do run $name; done
$usnet eval --checkpoint $out/us --checkpoint $out/snet --checkpoint $out/fixed_10 --checkpoint $out/fixed_075 \
  --checkpoint $out/fixed_05 --checkpoint $out/fixed_035 --widths grid --json $out/compare.json --plot docs/compare.png

# 2. Ablations (each differs from `us` in one setting).
make_config random_n4 $base -e 's/^sandwich_rule = .*/sandwich_rule = false/'
make_config no_distill $base -e 's/^inplace_distill = .*/inplace_distill = false/'
for n in 2 3 5; do make_config "n$n" $base -e "s/^num_sample_training = .*/num_sample_training = $n/"; done
make_config k0_025 $base -e 's/^width_mult_range = .*/width_mult_range = [0.25, 1.0]/' \
  -e 's/^width_mult_list = .*/width_mult_list = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25]/'
make_config k0_05 $base -e 's/^width_mult_range = .*/width_mult_range = [0.5, 1.0]/' \
  -e 's/^width_mult_list = .*/width_mult_list = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]/'
make_config d1 $base -e 's/^divisor = .*/divisor = 1/'
for name in random_n4 no_distill n2 n3 n5 k0_025 k0_05 d1; do run $name; done

# Calibration batches on the `us` run: none, then 1..16 batches, into copies of it.
for b in 0 1 2 4 16; do
  dir="$out/cal_$b"
  [ -e "$dir/eval.json" ] && continue
  mkdir -p "$dir"
  cp "$out/us/checkpoint.safetensors" "$dir/checkpoint.safetensors"
  if [ "$b" = 0 ]; then
    $usnet eval --checkpoint "$dir" --widths grid --bn-stats shared-max --json "$dir/eval.json" --plot "$dir/eval.png"
  else
    $usnet calibrate --checkpoint "$dir" --batches "$b"
    $usnet eval --checkpoint "$dir" --json "$dir/eval.json" --plot "$dir/eval.png"
  fi
done
$usnet eval --checkpoint $out/us --checkpoint $out/random_n4 --checkpoint $out/no_distill --widths grid \
  --json $out/ablate_rules.json --plot docs/ablate_rules.png

python3 scripts/ablations_report.py "$out" "$steps" > docs/ablations.md
echo "wrote docs/ablations.md"
