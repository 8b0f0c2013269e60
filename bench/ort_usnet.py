#!/usr/bin/env python3
"""ONNX Runtime anchor for usnet's inference benchmark.

The network is bench/torch_usnet.py's official US-MobileNet v2 cut at one width: that
model, with the width fixed, exported by torch.onnx.export (TorchScript exporter, eval mode,
constants folded: the sliced weights become plain Conv weights) and run by ONNX Runtime on
the CPU with all graph optimisations (it folds each BatchNormalization into its Conv and
fuses the Clip), `--threads` intra-op threads and one inter-op thread. The ONNX file lives
in a temporary directory; usnet's own exporter is not involved.

  .venv/bin/python bench/ort_usnet.py --workload infer/b1/w1.0 --threads 2   # median of 10 runs
  .venv/bin/python bench/ort_usnet.py --serve infer/b1/w0.5 --threads 2      # worker for `usnet bench`
  .venv/bin/python bench/ort_usnet.py --serve scaling/b1 --threads 2         # one session per width
  .venv/bin/python bench/ort_usnet.py --workload infer/b1/w1.0 --threads 1 --profile 400
                                          # mean time of each node over 400 calls (ORT's profiler)

In worker mode it speaks torch_usnet.py's protocol (serve()): a JSON `ready` line, then one
`{"s": seconds}` line per `run` line on stdin. The ready line carries `max_abs_diff`, the
largest difference between ONNX Runtime's logits and PyTorch's on the benchmark input.
"""
import argparse, json, os, sys, tempfile, warnings

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_usnet import PRESETS, USNet, serve, timed  # noqa: E402


class AtWidth(torch.nn.Module):
    """The US-Net with its width fixed, so the export sees a plain network."""

    def __init__(self, net, width):
        super().__init__()
        self.net, self.width = net, width

    def forward(self, x):
        return self.net(x, self.width)


# The widths of scaling/bN, as usnet's bench::SCALING_WIDTHS.
SCALING_WIDTHS = [1.0, 0.75, 0.5, 0.35]


def make_workload(name, args):
    parts = name.split("/")
    if parts[0] == "scaling" and len(parts) == 2:
        # One session per width, each as infer/bN/wW builds it; `run K` times width K.
        made = [make_workload(f"infer/{parts[1]}/w{w}", args) for w in SCALING_WIDTHS]
        meta = dict(made[0][1], width=SCALING_WIDTHS, max_abs_diff=max(m["max_abs_diff"] for _, m in made))
        return [fn for fn, _ in made], meta
    if parts[0] != "infer" or len(parts) != 3:
        raise SystemExit(f"unknown workload {name!r}; ort_usnet.py runs infer/bN/wW and scaling/bN only")
    b, w = int(parts[1][1:]), float(parts[2][1:])
    torch.manual_seed(args.seed)
    net = USNet(PRESETS["v2_official"]).eval()
    gen = torch.Generator().manual_seed(args.seed)
    for bn in net.bns():
        bn.reset_stats(w)
        mean, var, _ = bn.stats[w]
        # Statistics that are not the identity, so that folding them changes the weights.
        mean.copy_(torch.randn(mean.shape, generator=gen) * 0.1)
        var.copy_(torch.rand(var.shape, generator=gen) + 0.5)
    model = AtWidth(net, w).eval()
    x = torch.randn(b, 3, 224, 224, generator=gen)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"usnet_v2_w{w}.onnx")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is the point
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["input"], output_names=["logits"],
                              opset_version=17, do_constant_folding=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if args.profile:
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(tempfile.gettempdir(), "ort_usnet_profile")
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {"input": x.numpy()}
    with torch.no_grad():
        want = model(x).numpy()
    got = session.run(None, feed)[0]
    meta = dict(model="v2_official", input=[b, 3, 224, 224], width=w, onnxruntime=ort.__version__,
                max_abs_diff=float(np.abs(got - want).max()))
    run = lambda: session.run(None, feed)  # noqa: E731
    run.session = session
    return run, meta


def profile(fn, calls):
    """Runs `calls` calls under ORT's profiler; prints each node's mean time in execution
    order, then the total of the nodes. The profiler adds its own cost to every node."""
    for _ in range(calls):
        fn()
    path = fn.session.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    total, count, op = {}, {}, {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            total[node] = total.get(node, 0) + e["dur"]
            count[node] = count.get(node, 0) + 1
            op[node] = e["args"].get("op_name", "?")
    for node, us in total.items():
        print(f"{us / count[node]:9.1f} us  {op[node]:12} {node}")
    print(f"{sum(us / count[n] for n, us in total.items()):9.1f} us  total of {len(total)} nodes, {calls} calls")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", metavar="WORKLOAD", help="worker mode for `usnet bench`")
    p.add_argument("--workload", default="infer/b1/w1.0", help="workload to time (without --serve)")
    for flag, default in [("threads", 2), ("warmup", 2), ("repeats", 10), ("seed", 0)]:
        p.add_argument("--" + flag, type=int, default=default)
    p.add_argument("--profile", type=int, default=0, metavar="CALLS",
                   help="with --workload: time each node over CALLS calls with ORT's profiler")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.serve:
        serve(args.serve, args, make=make_workload)
        return
    fn, meta = make_workload(args.workload, args)
    if args.profile:
        profile(fn, args.profile)
        return
    print(json.dumps({"workload": args.workload, **meta, **timed(fn, args.warmup, args.repeats)}, indent=1))


if __name__ == "__main__":
    main()
