#!/usr/bin/env bash
# Installs what the tests need (Debian's Fashion-MNIST; OpenMPI and libclang for the `mpi`
# feature) and runs every test, the heavy end-to-end ones included (they train on a small
# Fashion-MNIST subset, and under `mpirun -np 2` on loopback: tests/mpi.rs), then checks the exported ONNX and
# safetensors files in ONNX Runtime and the safetensors package (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
# OpenMPI and libclang (bindgen, for the mpi crate) for the `mpi` feature and tests/mpi.rs.
for pkg in libopenmpi-dev openmpi-bin libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
# The interop tests keep each exported file, with usnet's logits for it, here; ONNX Runtime
# and the safetensors package check them afterwards.
export USNET_EXPORT_CHECK_DIR="$PWD/target/export-check"
rm -rf "$USNET_EXPORT_CHECK_DIR"
cargo test --release --features mpi -- --include-ignored
scripts/setup_onnx_venv.sh
.venv-onnx/bin/python scripts/check_exports.py "$USNET_EXPORT_CHECK_DIR"
