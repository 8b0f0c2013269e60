#!/usr/bin/env bash
# Installs what the tests need (Debian's Fashion-MNIST) and runs every test, the heavy
# end-to-end ones included (they train on a small Fashion-MNIST subset).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq dataset-fashion-mnist
fi
cargo test --release -- --include-ignored
