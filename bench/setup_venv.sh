#!/usr/bin/env bash
# Create <repo>/.venv with PyTorch (CPU use) + numpy for the PyTorch side of the benchmarks,
# and onnx + onnxruntime for the ONNX Runtime side (bench/ort_usnet.py).
#
# Idempotent: if .venv already imports the pinned versions, it does nothing (~1 s).
#
# Why a plain `pip install torch`: PyPI only ships CUDA builds of torch for Linux x86_64, and
# libtorch.so links libtorch_cuda.so, which needs libcudart/cublas/cudnn/nccl/... at load time.
# `pip install --no-deps torch` + the pure-python deps therefore fails at `import torch`
# (OSError: libcudart.so.13 not found), even for CPU-only work. The CPU-only wheels live on
# PyTorch's own index, which is not reachable here, so we accept the nvidia-* wheels.
# Measured on the 2-core dev machine: 76 s, 5.4 GB venv (see bench/README.md).
#
# Usage: bash bench/setup_venv.sh            (env: TORCH_VERSION, NUMPY_VERSION, PYTHON)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.15.0}"
NUMPY_VERSION="${NUMPY_VERSION:-2.4.6}"
ONNX_VERSION="${ONNX_VERSION:-1.23.2}"
ORT_VERSION="${ORT_VERSION:-1.31.1}"

check() {
    "$VENV/bin/python" - "$TORCH_VERSION" "$NUMPY_VERSION" "$ONNX_VERSION" "$ORT_VERSION" <<'EOF' 2>/dev/null
import sys
import numpy, onnx, onnxruntime, torch
ok = torch.__version__.split("+")[0] == sys.argv[1] and numpy.__version__ == sys.argv[2]
ok = ok and onnx.__version__ == sys.argv[3] and onnxruntime.__version__ == sys.argv[4]
x = torch.ones(2, 3, 5, 5)
ok = ok and float(torch.nn.functional.conv2d(x, torch.ones(4, 3, 3, 3), padding=1).sum()) > 0
sys.exit(0 if ok else 1)
EOF
}

if [ -x "$VENV/bin/python" ] && check; then
    echo "setup_venv: $VENV already has torch $TORCH_VERSION, numpy $NUMPY_VERSION, onnx $ONNX_VERSION, onnxruntime $ORT_VERSION; nothing to do"
    exit 0
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q \
    "torch==$TORCH_VERSION" "numpy==$NUMPY_VERSION" "onnx==$ONNX_VERSION" "onnxruntime==$ORT_VERSION"
check || { echo "setup_venv: torch/onnx/onnxruntime import or conv check failed" >&2; exit 1; }
echo "setup_venv: installed torch $TORCH_VERSION, numpy $NUMPY_VERSION, onnx $ONNX_VERSION, onnxruntime $ORT_VERSION into $VENV" \
     "in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
