#!/usr/bin/env bash
# Installs what the tests need (Debian's Fashion-MNIST) and runs every test, the heavy
# end-to-end ones included (they train on a small Fashion-MNIST subset), then checks the
# exported ONNX and safetensors files in ONNX Runtime and the safetensors package (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq dataset-fashion-mnist
fi
# The interop tests keep each exported file, with usnet's logits for it, here; ONNX Runtime
# and the safetensors package check them afterwards.
export USNET_EXPORT_CHECK_DIR="$PWD/target/export-check"
rm -rf "$USNET_EXPORT_CHECK_DIR"
cargo test --release -- --include-ignored
scripts/setup_onnx_venv.sh
.venv-onnx/bin/python scripts/check_exports.py "$USNET_EXPORT_CHECK_DIR"
