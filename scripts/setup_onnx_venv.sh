#!/usr/bin/env bash
# Creates .venv-onnx (ignored by git): onnx, onnxruntime, numpy and safetensors from PyPI, for
# scripts/check_exports.py. Small (about 100 MB), not the PyTorch venv. Idempotent: a venv
# that already imports all four is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-onnx
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import onnx, onnxruntime, numpy, safetensors' 2>/dev/null; then
  exit 0
fi
rm -rf "$venv"
if ! python3 -m venv "$venv" 2>/dev/null; then
  # Debian splits ensurepip out of python3.
  rm -rf "$venv"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq python3-venv
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet 'onnx>=1.16' 'onnxruntime>=1.18' 'numpy>=1.24' 'safetensors>=0.4'
"$venv/bin/python" -c 'import onnx, onnxruntime; print("onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)'
