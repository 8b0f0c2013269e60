#!/usr/bin/env bash
# The paper's headline claim on Fashion-MNIST: one US-Net against networks trained alone at
# each width, an S-Net, and the US-Net without inplace distillation, all with the same recipe
# (the default config's model, data, augmentation, batch size and schedule), for EPOCHS epochs,
# with second seeds of the US-Net and of the fixed 1.0 and 0.35 nets for the run-to-run spread.
#
#   bash scripts/claim.sh [RUNS_DIR] [EPOCHS]     (defaults: ~/usnet-runs/claim, 10)
#
# Results go to docs/results/claim/ for the recipe's 10 epochs and to
# docs/results/claim_eEPOCHS/ for any other length (the longer schedule of issue 12 is
# `bash scripts/claim.sh ~/usnet-runs/claim20 20`), so both stay side by side in the report.
#
# Ablations of the US-Net (issue 12's "find out why"), run only when named in CLAIM_RUNS and
# collected apart, in docs/results/claim_ablation/ (10 epochs; the report shows these) or
# claim_ablation_eEPOCHS/ (kept, not yet in the report):
#   us_n2       the sandwich with n = 2 (max and min width only, no random widths)
#   us_n3       the sandwich with n = 3 (one random width)
#   us_lr005    lr 0.05 instead of 0.1 (the n = 4 widths' gradients are summed per step)
#   us_range05  the width lower bound 0.5 instead of 0.35
#
# CLAIM_RUNS="us fixed_10 ..." runs only those runs (in that order): two instances with
# disjoint lists and RAYON_NUM_THREADS=1 each use both cores better than one instance with two
# threads (docs/performance.md: 2 processes of 1 thread train 1.46x faster than 1 of 2).
#
# Resumable: each run continues from its checkpoint with its own stored config, a finished
# step is skipped, so the experiment can be interrupted and spread over days (delete
# RUNS_DIR/NAME to re-run NAME with a changed recipe). Run it in the background, niced, and
# keep the machine's other load in mind (it skews the timings of other work):
#
#   nohup nice bash scripts/claim.sh > ~/usnet-runs/claim.log 2>&1 &
#
# Every run holds out the same 5,000 training images (validation_size, validation_seed 0):
# they give the per-epoch validation curves and the validation numbers; the test set is
# scored once per finished run. Then the runs' JSON results are copied to
# docs/results/claim/ and docs/results.md and its plots are regenerated from them
# (scripts/results_report.py). USNET_BIN picks the binary (default: build target/release/usnet).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-$HOME/usnet-runs/claim}
epochs=${2:-10}
results=docs/results/claim
[ "$epochs" = 10 ] || results=docs/results/claim_e$epochs
mkdir -p "$runs/configs"
if [ -z "${USNET_BIN:-}" ]; then
  cargo build --release --quiet
  USNET_BIN=target/release/usnet
fi
usnet=$USNET_BIN

# NAME SOURCE_CONFIG [sed expressions]: the run's config, the shipped one with EPOCHS epochs.
# A run that has started keeps the config it started with.
make_config() {
  local name=$1 src=$2; shift 2
  [ -e "$runs/$name/checkpoint.safetensors" ] && return
  sed -e "s/^num_epochs = .*/num_epochs = $epochs/" "$@" "$src" > "$runs/configs/$name.toml"
}

# NAME: train (or resume), then calibrate the width grid once.
train() {
  local name=$1 dir="$runs/$1"
  if [ -e "$dir/calibrated" ]; then echo "== $name: trained and calibrated"; return; fi
  echo "== $name ($(date -u +%FT%TZ))"
  if [ -e "$dir/checkpoint.safetensors" ]; then
    "$usnet" train --output "$dir" --resume
  else
    "$usnet" train --config "$runs/configs/$name.toml" --output "$dir"
  fi
  "$usnet" calibrate --checkpoint "$dir"
  touch "$dir/calibrated"
}

# NAME WIDTHS: top-1 on the validation split and on the test set (once), at WIDTHS.
evaluate() {
  local name=$1 widths=$2 dir="$runs/$1"
  for split in validation test; do
    [ -e "$dir/$split.json" ] && continue
    "$usnet" eval --checkpoint "$dir" --widths "$widths" --split $split --json "$dir/$split.json.new" --plot "$dir/$split.png"
    mv "$dir/$split.json.new" "$dir/$split.json"
  done
}

us=configs/fashion_mnist_us_v2.toml
make_config us "$us"
make_config us_no_distill "$us" -e 's/^inplace_distill = .*/inplace_distill = false/'
make_config us_seed2 "$us" -e 's/^random_seed = .*/random_seed = 2/'
for w in 10 075 05 035; do make_config "fixed_$w" "configs/fashion_mnist_fixed_$w.toml"; done
make_config fixed_10_seed2 configs/fashion_mnist_fixed_10.toml -e 's/^random_seed = .*/random_seed = 2/'
make_config fixed_035_seed2 configs/fashion_mnist_fixed_035.toml -e 's/^random_seed = .*/random_seed = 2/'
make_config snet configs/fashion_mnist_snet_v2.toml
make_config us_n2 "$us" -e 's/^num_sample_training = .*/num_sample_training = 2/'
make_config us_n3 "$us" -e 's/^num_sample_training = .*/num_sample_training = 3/'
make_config us_lr005 "$us" -e 's/^lr = .*/lr = 0.05/'
make_config us_range05 "$us" -e 's/^width_mult_range = .*/width_mult_range = [0.5, 1.0]/' \
  -e 's/^width_mult_list = .*/width_mult_list = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]/' -e 's/^width_range = .*/width_range = [0.5, 1.0]/'

# NAME: the widths it is scored at. US-Nets at every width of a 0.05 grid over their range
# (0.75 among them); the others at their own widths.
widths_of() {
  case $1 in
    us_range05) echo 0.5:1.0:0.05 ;;
    us*) echo 0.35:1.0:0.05 ;;
    *) echo grid ;;
  esac
}

ablation=claim_ablation
[ "$epochs" = 10 ] || ablation=claim_ablation_e$epochs
# NAME: where its JSON results are committed.
results_of() {
  case $1 in
    us_n2 | us_n3 | us_lr005 | us_range05) echo "docs/results/$ablation/$1" ;;
    *) echo "$results/$1" ;;
  esac
}

# NAME: the run's JSON results into $results/NAME (committed with the report).
collect() {
  local name=$1 dir="$runs/$1" out
  out=$(results_of "$1")
  mkdir -p "$out"
  cp "$dir"/{config.toml,validation.json,test.json,validation.jsonl} "$out/"
  # Every 10th step of the per-step log is enough for the training curves.
  awk 'NR % 10 == 1' "$dir/metrics.jsonl" > "$out/metrics.jsonl"
}

# The most informative runs first; each run is scored and collected as soon as it is trained,
# so an interrupted experiment still reports what it finished.
for name in ${CLAIM_RUNS:-us fixed_10 fixed_035 fixed_05 fixed_075 us_seed2 fixed_10_seed2 fixed_035_seed2 us_no_distill snet}; do
  # A run whose results are committed is done, even where its run directory is gone (a new
  # machine): delete $results/NAME to run it again.
  if [ -e "$(results_of "$name")/test.json" ]; then echo "== $name: results in $(results_of "$name")"; continue; fi
  train "$name"
  evaluate "$name" "$(widths_of "$name")"
  collect "$name"
  python3 scripts/results_report.py --no-plots || true
done
python3 scripts/results_report.py
echo "== wrote docs/results.md"
