#!/usr/bin/env bash
# Measurements behind docs/results.md's "why the US-Net falls short" section (issue 12):
# does a larger BN calibration set change the US-Net's or the fixed nets' validation top-1?
#
#   bash scripts/claim_analysis.sh [RUNS_DIR] [BATCHES...]   (defaults: ~/usnet-runs/claim, 8 32 128)
#
# For each finished run of scripts/claim.sh and each BATCHES, a copy of the run is calibrated
# at its widths with that many batches of 128 training images (the runs' own setting is 8),
# then scored on the validation split (never the test set). Results go to
# docs/results/claim_analysis/calibration/NAME-bBATCHES.json; a result that exists is kept,
# so the script resumes. USNET_BIN picks the binary (default: build target/release/usnet).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-$HOME/usnet-runs/claim}
shift || true
batches=("${@:-}")
[ -z "${batches[0]}" ] && batches=(8 32 128)
if [ -z "${USNET_BIN:-}" ]; then
  cargo build --release --quiet
  USNET_BIN=target/release/usnet
fi
out=docs/results/claim_analysis/calibration
mkdir -p "$out"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for name in us us_seed2 us_no_distill fixed_10 fixed_075 fixed_05 fixed_035 fixed_10_seed2 fixed_035_seed2; do
  [ -e "$runs/$name/calibrated" ] || continue
  case $name in
    us*) widths=1.0,0.75,0.5,0.35 ;;
    fixed_10*) widths=1.0 ;; fixed_075*) widths=0.75 ;; fixed_05*) widths=0.5 ;; fixed_035*) widths=0.35 ;;
  esac
  for b in "${batches[@]}"; do
    json="$out/$name-b$b.json"
    [ -e "$json" ] && continue
    echo "== $name: $b calibration batches"
    rm -rf "$scratch/run" && mkdir "$scratch/run"
    cp "$runs/$name/checkpoint.safetensors" "$runs/$name/config.toml" "$scratch/run/"
    "$USNET_BIN" calibrate --checkpoint "$scratch/run" --widths "$widths" --batches "$b"
    "$USNET_BIN" eval --checkpoint "$scratch/run" --widths "$widths" --split validation --json "$json.new" --plot "$scratch/plot.png"
    mv "$json.new" "$json"
  done
done
