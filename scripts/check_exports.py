#!/usr/bin/env python3
"""Runs usnet's exported files outside usnet: ONNX in ONNX Runtime, safetensors in the
`safetensors` package.

Reads every `*.json` case in DIR (written by `cargo test --test interop` when
USNET_EXPORT_CHECK_DIR=DIR): for an ONNX file, `onnx.checker.check_model(full_check=True)`,
then ONNX Runtime (2 threads) on the stored input, compared with the logits usnet computed
(1e-4 relative); for a safetensors file, every tensor's shape against the width's shapes.
Exits non-zero, naming the file, on the first mismatch; exits non-zero too when DIR holds no
case (a check that checks nothing is a failure).

Usage: .venv-onnx/bin/python scripts/check_exports.py DIR
"""

import json
import pathlib
import sys

import numpy as np


def same_spec(a, b):
    """Width specs compare by value per entry ('1' is '1.0'; '0.5/0.35' is '0.50/0.350')."""
    try:
        return [float(x) for x in str(a).split("/")] == [float(x) for x in str(b).split("/")]
    except ValueError:
        return a == b


def check_onnx(path, case):
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    if not same_spec(meta.get("width_spec"), case["width_spec"]):
        raise AssertionError(f"metadata width_spec {meta.get('width_spec')!r}, expected {case['width_spec']!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.asarray(case["input"], dtype=np.float32).reshape(case["input_shape"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    want = np.asarray(case["logits"], dtype=np.float32).reshape(got.shape)
    err = np.abs(got - want) / np.maximum(np.abs(want), 1.0)
    if not np.all(err <= 1e-4):
        i = int(np.argmax(err))
        raise AssertionError(f"ONNX Runtime differs from usnet: entry {i}: {got.flat[i]} vs {want.flat[i]}")
    return f"ONNX checker ok, ONNX Runtime {ort.__version__} within 1e-4 (max rel. error {err.max():.2e})"


def check_safetensors(path, case):
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    want = case["shapes"]
    for name, shape in want.items():
        if name not in tensors:
            raise AssertionError(f"no tensor {name}")
        if list(tensors[name].shape) != shape:
            raise AssertionError(f"{name}: shape {list(tensors[name].shape)}, expected {shape}")
    return f"{len(want)} tensors with the width's shapes"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = pathlib.Path(sys.argv[1])
    cases = sorted(root.glob("*.json"))
    if not cases:
        sys.exit(f"check_exports: no cases in {root}; run the interop tests with USNET_EXPORT_CHECK_DIR={root}")
    failed = 0
    for case_path in cases:
        case = json.loads(case_path.read_text())
        path = root / case["file"]
        try:
            if path.suffix == ".onnx":
                note = check_onnx(path, case)
            elif path.suffix == ".safetensors":
                note = check_safetensors(path, case)
            else:
                raise AssertionError(f"unknown file type {path.suffix}")
            print(f"{path.name} ... ok ({note})")
        except Exception as e:  # noqa: BLE001 - every failure is reported with its file
            failed += 1
            print(f"{path.name} ... FAILED: {e}")
    print(f"check_exports: {len(cases) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
