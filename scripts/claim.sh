#!/usr/bin/env bash
# The paper's headline claim on Fashion-MNIST: one US-Net against networks trained alone at
# each width, an S-Net, and the US-Net without inplace distillation, all with the same recipe
# (the default config's model, data, augmentation, batch size and schedule), for EPOCHS epochs.
#
#   bash scripts/claim.sh [RUNS_DIR] [EPOCHS]     (defaults: ~/usnet-runs/claim, 10)
#
# Resumable: each run continues from its checkpoint, and a finished run is skipped, so the
# experiment can be interrupted and spread over days. Run it in the background and keep the
# machine's other load in mind (timings of other work are skewed while it runs):
#
#   nohup bash scripts/claim.sh > ~/usnet-runs/claim.log 2>&1 &
#
# Every run holds out the same 5,000 training images (validation_size, validation_seed 0):
# they give the validation curves and numbers; the test set is scored once per finished run.
# When all runs are done, their JSON results are copied to docs/results/claim/ and
# docs/results.md and its plots are regenerated from them (scripts/results_report.py).
# USNET_BIN picks the binary (default: target/release/usnet, built here).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-$HOME/usnet-runs/claim}
epochs=${2:-10}
mkdir -p "$runs/configs"
if [ -z "${USNET_BIN:-}" ]; then
  cargo build --release --quiet
  USNET_BIN=target/release/usnet
fi
usnet=$USNET_BIN

# NAME SOURCE_CONFIG [sed expressions]: the run's config, the shipped one with EPOCHS epochs.
make_config() {
  local name=$1 src=$2; shift 2
  sed -e "s/^num_epochs = .*/num_epochs = $epochs/" "$@" "$src" > "$runs/configs/$name.toml.new"
  # An existing run keeps its config unless it changed (then the run starts over elsewhere).
  if [ -e "$runs/configs/$name.toml" ] && ! cmp -s "$runs/configs/$name.toml" "$runs/configs/$name.toml.new"; then
    echo "error: $runs/configs/$name.toml differs from what this script makes now; move $runs/$name away to re-run it" >&2
    exit 1
  fi
  mv "$runs/configs/$name.toml.new" "$runs/configs/$name.toml"
}

# NAME: train (or resume), calibrate the width grid, score validation and test once.
run() {
  local name=$1 dir="$runs/$1"
  if [ -e "$dir/eval_test.json" ]; then echo "== $name: done"; return; fi
  echo "== $name ($(date -u +%FT%TZ))"
  if [ -e "$dir/checkpoint.safetensors" ]; then
    "$usnet" train --output "$dir" --resume
  else
    "$usnet" train --config "$runs/configs/$name.toml" --output "$dir"
  fi
  "$usnet" calibrate --checkpoint "$dir"
  "$usnet" eval --checkpoint "$dir" --split validation --json "$dir/eval_validation.json" --plot "$dir/eval_validation.png"
  "$usnet" eval --checkpoint "$dir" --split test --json "$dir/eval_test.json.new" --plot "$dir/eval_test.png"
  mv "$dir/eval_test.json.new" "$dir/eval_test.json"
}

us=configs/fashion_mnist_us_v2.toml
make_config us "$us"
make_config us_no_distill "$us" -e 's/^inplace_distill = .*/inplace_distill = false/'
make_config us_seed2 "$us" -e 's/^random_seed = .*/random_seed = 2/'
for w in 10 075 05 035; do make_config "fixed_$w" "configs/fashion_mnist_fixed_$w.toml"; done
make_config fixed_10_seed2 configs/fashion_mnist_fixed_10.toml -e 's/^random_seed = .*/random_seed = 2/'
make_config fixed_035_seed2 configs/fashion_mnist_fixed_035.toml -e 's/^random_seed = .*/random_seed = 2/'
make_config snet configs/fashion_mnist_snet_v2.toml

# The most informative runs first.
for name in us fixed_10 fixed_035 fixed_05 fixed_075 snet us_no_distill us_seed2 fixed_10_seed2 fixed_035_seed2; do
  run "$name"
done

echo "== all runs done; collecting results into docs/results/claim"
for dir in "$runs"/*/; do
  name=$(basename "$dir")
  [ "$name" = configs ] && continue
  mkdir -p "docs/results/claim/$name"
  cp "$dir"/{config.toml,eval_test.json,eval_validation.json,validation.jsonl} "docs/results/claim/$name/"
  # The per-step log thinned to every 10th step keeps the training curves at a tenth of the size.
  awk 'NR % 10 == 1' "$dir/metrics.jsonl" > "docs/results/claim/$name/metrics.jsonl"
done
python3 scripts/results_report.py
echo "wrote docs/results.md"
