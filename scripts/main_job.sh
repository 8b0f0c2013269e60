#!/usr/bin/env bash
# The main job: install Fashion-MNIST, build usnet, train the default US-Net, calibrate
# BN post-statistics for its width grid, evaluate across widths and plot top-1 vs MACs.
#
#   bash scripts/main_job.sh [RUN_DIR]     (default RUN_DIR: runs/default)
#
# Resumable: run it again after an interruption and training continues from the last
# checkpoint. Training took 6 min 12 s on the 2-core machine with its other core busy (see
# README), calibration and evaluation under 20 s; add the build (5 minutes from clean there).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/default}

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "== installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq dataset-fashion-mnist
fi

echo "== building usnet (release)"
cargo build --release --quiet
usnet=target/release/usnet

start=$(date +%s)
if [ -e "$run/checkpoint.safetensors" ]; then
  echo "== resuming training in $run"
  $usnet train --output "$run" --resume
else
  echo "== training the default US-Net into $run"
  $usnet train --output "$run"
fi
echo "== calibrating BN post-statistics"
$usnet calibrate --checkpoint "$run"
echo "== evaluating across widths"
$usnet eval --checkpoint "$run" --widths 0.35:1.0:0.05 --json "$run/eval.json" --plot "$run/eval.png"
echo "== done in $(( $(date +%s) - start ))s (after the build): $run/eval.json, $run/eval.png"
