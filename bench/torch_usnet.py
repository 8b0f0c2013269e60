#!/usr/bin/env python3
"""PyTorch baseline for usnet: US-MobileNet v1/v2 with the semantics of our golden-vector spec.

Self-contained (torch + numpy). Every US layer takes the width as a forward argument and uses
the FIRST channels of its full weight (F.conv2d / F.batch_norm / F.linear on sliced tensors).

  .venv/bin/python bench/torch_usnet.py --check                       # vs tests/golden/v2_small.json
  .venv/bin/python bench/torch_usnet.py --quick                       # all workloads, few repeats
  .venv/bin/python bench/torch_usnet.py --workloads sandwich --sandwich-batch 128,64 --threads 2
  .venv/bin/python bench/torch_usnet.py --serve infer/b1/w1.0 --threads 2    # worker: `run` lines on stdin

Benchmark mode prints ONE JSON object on stdout (progress goes to stderr): per workload the
median seconds, all samples, and the torch version / thread count.
"""
import argparse, json, math, os, platform, random, statistics, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-5


def make_divisible(v, d=8, min_value=1):
    new_v = max(min_value, int(v + d / 2) // d * d)
    return new_v + d if new_v < 0.9 * v else new_v


# ----------------------------------------------------------------------------- US layers
class USConv2d(nn.Module):
    """Bias-free conv, padding k//2. us = (slim input, slim output); ratio = (r_in, r_out)."""

    def __init__(self, cin, cout, k, stride=1, depthwise=False, us=(True, True), ratio=(1, 1), divisor=8):
        super().__init__()
        self.cin, self.cout, self.k, self.stride, self.depthwise = cin, cout, k, stride, depthwise
        self.us, self.ratio, self.divisor = us, ratio, divisor
        self.weight = nn.Parameter(torch.empty(cout, 1 if depthwise else cin, k, k))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default

    def channels(self, w):
        (r_in, r_out), d = self.ratio, self.divisor
        cin = make_divisible(self.cin * w / r_in, d) * r_in if self.us[0] else self.cin
        cout = make_divisible(self.cout * w / r_out, d) * r_out if self.us[1] else self.cout
        return cin, cout

    def forward(self, x, w):
        cin, cout = self.channels(w)
        assert x.shape[1] == cin, (x.shape, cin)
        weight = self.weight[:cout] if self.depthwise else self.weight[:cout, :cin]
        return F.conv2d(x, weight, None, self.stride, self.k // 2, 1, cin if self.depthwise else 1)


class USBatchNorm2d(nn.Module):
    """BN on the first channels. Training: batch stats (biased var). With `accumulate` set,
    training mode also keeps, per width, the cumulative average of batch mean / unbiased var
    (k-th batch: s += (batch - s)/k == PyTorch momentum 1/k); eval mode normalises with them."""

    def __init__(self, c, ratio=1, us=True, divisor=8):
        super().__init__()
        self.c, self.ratio, self.us, self.divisor = c, ratio, us, divisor
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.accumulate = False
        self.stats = {}  # width -> [running_mean, running_var, batches_seen]

    def reset_stats(self, w):
        c = make_divisible(self.c * w / self.ratio, self.divisor) * self.ratio if self.us else self.c
        self.stats[w] = [torch.zeros(c, dtype=self.weight.dtype), torch.ones(c, dtype=self.weight.dtype), 0]

    def forward(self, x, w):
        c = x.shape[1]
        g, b = self.weight[:c], self.bias[:c]
        if self.training and not self.accumulate:
            return F.batch_norm(x, None, None, g, b, True, 0.0, BN_EPS)
        st = self.stats[w]
        if self.training:
            st[2] += 1
            return F.batch_norm(x, st[0], st[1], g, b, True, 1.0 / st[2], BN_EPS)
        return F.batch_norm(x, st[0], st[1], g, b, False, 0.0, BN_EPS)


class USLinear(nn.Module):
    def __init__(self, fin, fout, us_in):
        super().__init__()
        self.us_in = us_in
        self.weight = nn.Parameter(torch.empty(fout, fin))
        self.bias = nn.Parameter(torch.zeros(fout))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x, w):
        return F.linear(x, self.weight[:, : x.shape[1]] if self.us_in else self.weight, self.bias)


class ReLU6(nn.Module):
    def forward(self, x, w):
        return F.relu6(x)


class Seq(nn.Sequential):
    def forward(self, x, w):
        for m in self:
            x = m(x, w)
        return x


class Block(nn.Module):
    def __init__(self, body, residual):
        super().__init__()
        self.body, self.residual = Seq(*body), residual

    def forward(self, x, w):
        y = self.body(x, w)
        return x + y if self.residual else y


# ----------------------------------------------------------------------------- model
PRESETS = {
    "v2_small": dict(arch="us_mobilenet_v2", num_classes=10, input_channels=3, divisor=8,
                     width_range=[0.35, 1.0], stem_channels=32, stem_stride=1, last_channels=128,
                     block_setting=[[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 48, 1, 1]]),
    "v2_official": dict(arch="us_mobilenet_v2", num_classes=1000, input_channels=3, divisor=8,
                        width_range=[0.35, 1.0], stem_channels=32, stem_stride=2, last_channels=1280,
                        block_setting=[[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                                       [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]),
}


class USNet(nn.Module):
    """US-MobileNet v1/v2; state-dict names: features.0.{0,1} stem, features.i.body.j blocks,
    features.<last>.{0,1} v2 last conv, classifier.0 linear."""

    def __init__(self, cfg):
        super().__init__()
        d, v2 = cfg["divisor"], cfg["arch"] == "us_mobilenet_v2"
        assert cfg["arch"] in ("us_mobilenet_v1", "us_mobilenet_v2"), cfg["arch"]
        inp = make_divisible(cfg["stem_channels"], d)
        feats = [Seq(USConv2d(cfg["input_channels"], inp, 3, cfg["stem_stride"], us=(False, True), divisor=d),
                     USBatchNorm2d(inp, divisor=d), ReLU6())]
        for row in cfg["block_setting"]:
            t, c, n, s = row if v2 else [1] + list(row)
            out = make_divisible(c, d)
            for i in range(n):
                stride = s if i == 0 else 1
                if v2:
                    hid, body = inp * t, []
                    if t != 1:
                        body += [USConv2d(inp, hid, 1, ratio=(1, t), divisor=d),
                                 USBatchNorm2d(hid, ratio=t, divisor=d), ReLU6()]
                    body += [USConv2d(hid, hid, 3, stride, depthwise=True, ratio=(t, t), divisor=d),
                             USBatchNorm2d(hid, ratio=t, divisor=d), ReLU6(),
                             USConv2d(hid, out, 1, ratio=(t, 1), divisor=d), USBatchNorm2d(out, divisor=d)]
                    feats.append(Block(body, stride == 1 and inp == out))
                else:
                    feats.append(Block([USConv2d(inp, inp, 3, stride, depthwise=True, divisor=d),
                                        USBatchNorm2d(inp, divisor=d), ReLU6(),
                                        USConv2d(inp, out, 1, divisor=d), USBatchNorm2d(out, divisor=d),
                                        ReLU6()], False))
                inp = out
        if v2:
            last = cfg["last_channels"]
            feats.append(Seq(USConv2d(inp, last, 1, us=(True, False), divisor=d),
                             USBatchNorm2d(last, us=False, divisor=d), ReLU6()))
            inp = last
        self.features = nn.ModuleList(feats)
        self.classifier = Seq(USLinear(inp, cfg["num_classes"], us_in=not v2))

    def forward(self, x, w=1.0):
        for f in self.features:
            x = f(x, w)
        return self.classifier(x.mean((2, 3)), w)

    def bns(self):
        return [m for m in self.modules() if isinstance(m, USBatchNorm2d)]

    def calibrate(self, widths, batches):
        """Per width: reset BN stats, accumulate over `batches` (train mode, no grad)."""
        self.train()
        with torch.no_grad():
            for w in widths:
                for bn in self.bns():
                    bn.reset_stats(w)
                    bn.accumulate = True
                for x in batches:
                    self(x, w)
        for bn in self.bns():
            bn.accumulate = False


def make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=1e-4):
    """SGD nesterov; weight decay only on non-depthwise conv weights and linear weights."""
    decay = [m.weight for m in model.modules()
             if isinstance(m, USLinear) or (isinstance(m, USConv2d) and not m.depthwise)]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": rest, "weight_decay": 0.0}],
                           lr=lr, momentum=momentum, nesterov=True)


def sandwich_step(model, opt, x, y, widths):
    """widths[0] is the max width (CE with labels); the others distil from its detached softmax."""
    model.train()
    opt.zero_grad(set_to_none=True)
    losses, soft = [], None
    for i, w in enumerate(widths):
        logits = model(x, w)
        if i == 0:
            loss = F.cross_entropy(logits, y)
            soft = F.softmax(logits.detach(), dim=1)
        else:
            loss = -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()
        loss.backward()
        losses.append(loss.item())
    opt.step()
    return losses


# ----------------------------------------------------------------------------- golden check
def fnv1a32(s):
    h = 0x811C9DC5
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def _counter(key, seed, n):
    salt = (fnv1a32(key) + seed * 0x85EBCA77) % 2**32
    return (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B1) + np.uint64(salt)) % np.uint64(2**32)


def golden_values(key, seed, shape, kind):
    """Counter-formula tensor, computed in f64, cast to f32, returned as f64."""
    u = _counter(key, seed, math.prod(shape)).astype(np.float64) / 2**32
    scale, offset = {"weight": (2 * math.sqrt(3.0 / math.prod(shape[1:] or [1])), 0.0), "gamma": (0.4, 1.0),
                     "beta": (0.4, 0.0), "bias": (0.4, 0.0), "input": (4.0, 0.0)}[kind]
    v = offset + (u - 0.5) * scale  # weight: fan_in = prod(shape[1:]) (in/groups * k * k, or in_features)
    return torch.from_numpy(v.astype(np.float32).astype(np.float64).reshape(shape))


def golden_labels(key, seed, n, num_classes):
    return torch.from_numpy(((_counter(key, seed, n) >> np.uint64(16)) % np.uint64(num_classes)).astype(np.int64))


def init_golden(model, seed):
    mods = dict(model.named_modules())
    with torch.no_grad():
        for name, p in model.named_parameters():
            mod, leaf = name.rsplit(".", 1)
            kinds = ("gamma", "beta") if isinstance(mods[mod], USBatchNorm2d) else ("weight", "bias")
            p.copy_(golden_values(name, seed, list(p.shape), kinds[leaf == "bias"]))


class Checker:
    def __init__(self):
        self.n = self.bad = 0
        self.worst = 0.0  # max |err| / tol

    def cmp(self, what, got, ref, tol, idx=None):
        got = got.detach().reshape(-1).double()
        got = got[idx] if idx is not None else got
        err = (got - torch.tensor(ref, dtype=torch.float64)).abs()
        tol = torch.as_tensor(tol, dtype=torch.float64)
        self.n += err.numel()
        self.worst = max(self.worst, float((err / tol).max()))
        nbad = int((err > tol).sum())
        if nbad:
            self.bad += nbad
            print(f"  MISMATCH {what}: {nbad} values, max err {float(err.max()):.3g}", file=sys.stderr)

    def samples(self, what, got, entry):
        """A stored tensor: sampled [flat_index, value, tolerance] entries, or full `values`."""
        assert list(got.shape) == entry["shape"], (what, list(got.shape), entry["shape"])
        if "values" in entry:
            return self.cmp(what, got, entry["values"], entry["tolerance"])
        s = entry["samples"]
        self.cmp(what, got, [e[1] for e in s], [e[2] for e in s], torch.tensor([e[0] for e in s]))


def check_golden(path):
    """Rebuild every case of a usnet-golden/1 file in float64 and compare within tolerance."""
    g = json.load(open(path))
    cfg, seed = g["model"], g["seed"]
    model = USNet(cfg).double()
    init_golden(model, seed)
    inp = lambda e: golden_values(e["key"], seed, e["shape"], "input")
    params = dict(model.named_parameters())
    res = {k: Checker() for k in ("params_init", "forward", "calibration") + (("train",) if g.get("train") else ())}
    assert set(params) == set(g["params_init"]), set(params) ^ set(g["params_init"])
    for k, e in g["params_init"].items():
        res["params_init"].samples(k, params[k], e)

    x = inp(g["forward"]["input"])
    model.train()
    with torch.no_grad():
        for case in g["forward"]["cases"]:
            lg = case["logits"]
            res["forward"].cmp(f"forward w={case['width']}", model(x, case["width"]), lg["values"], lg["tolerance"])

    cal, c = g["calibration"], res["calibration"]
    batches, xe = [inp(b) for b in cal["batches"]], inp(cal["eval_input"])
    bn_by_name = {n: m for n, m in model.named_modules() if isinstance(m, USBatchNorm2d)}
    for case in cal["cases"]:
        w = case["width"]
        model.calibrate([w], batches)
        model.eval()
        with torch.no_grad():
            c.cmp(f"eval w={w}", model(xe, w), case["logits"]["values"], case["logits"]["tolerance"])
        for name, st in case.get("bn", {}).items():
            mean, var, _ = bn_by_name[name].stats[w]
            c.samples(f"{name}.mean w={w}", mean, st["mean"])
            c.samples(f"{name}.var w={w}", var, st["var"])

    if "train" in res:
        tr, c = g["train"], res["train"]
        init_golden(model, seed)
        assert tr["nesterov"]
        opt = make_optimizer(model, tr["lr"], tr["momentum"], tr["weight_decay"])
        for i, st in enumerate(tr["steps"]):
            x = inp(st["input"])
            y = golden_labels(f"labels.train.{i}", seed, x.shape[0], cfg["num_classes"])
            assert y.tolist() == st["labels"], ("labels", i)
            losses = sandwich_step(model, opt, x, y, st["widths"])
            c.cmp(f"train step {i} losses", torch.tensor(losses), st["losses"]["values"], st["losses"]["tolerance"])
        for k, e in tr["params_after"].items():
            c.samples(f"params_after {k}", params[k], e)

    out = {s: {"ok": c.bad == 0, "values": c.n, "mismatches": c.bad, "max_err_over_tol": float(f"{c.worst:.3g}")}
           for s, c in res.items()}
    return {"file": path, "ok": all(v["ok"] for v in out.values()), "sections": out}


# ----------------------------------------------------------------------------- benchmarks
def _busy_s():
    """CPU seconds used by the whole machine (/proc/stat) and by this process."""
    v = [int(f) for f in open("/proc/stat").readline().split()[1:9]]  # Linux only
    t = os.times()
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), t.user + t.system


def timed(fn, warmup, repeats):
    """Median of `repeats` timed calls after `warmup` calls. other_cpu_s = CPU time other
    processes used during the timed calls: well above 0 means the numbers are contended."""
    for _ in range(warmup):
        fn()
    samples, (m0, p0) = [], _busy_s()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    m1, p1 = _busy_s()
    return {"median_s": statistics.median(samples), "samples_s": samples,
            "other_cpu_s": round(max(0.0, (m1 - m0) - (p1 - p0)), 2)}


def make_workload(name, args):
    """(fn, meta) for one workload name: `sandwich/b<B>`, `calibrate` or `infer/b<B>/w<W>`."""
    gen = torch.Generator().manual_seed(args.seed)
    rng = random.Random(args.seed)
    small = PRESETS["v2_small"]
    lo, hi = small["width_range"]
    parts = name.split("/")
    if parts[0] == "sandwich" and len(parts) == 2:
        b = int(parts[1][1:])
        torch.manual_seed(args.seed)
        model = USNet(small)
        opt = make_optimizer(model)
        x = torch.randn(b, 3, 32, 32, generator=gen)
        y = torch.randint(0, small["num_classes"], (b,), generator=gen)
        widths = lambda: [hi, lo] + [rng.uniform(lo, hi) for _ in range(2)]  # n = 4
        return (lambda: sandwich_step(model, opt, x, y, widths()),
                dict(model="v2_small", input=[b, 3, 32, 32], n_widths=4))
    if parts == ["calibrate"]:
        model = USNet(small)
        widths = np.linspace(lo, hi, args.calib_widths).tolist()
        batches = [torch.randn(args.calib_batch, 3, 32, 32, generator=gen) for _ in range(args.calib_batches)]
        return (lambda: model.calibrate(widths, batches),
                dict(model="v2_small", widths=widths, batches=args.calib_batches, input=[args.calib_batch, 3, 32, 32]))
    if parts[0] == "infer" and len(parts) == 3:
        b, w = int(parts[1][1:]), float(parts[2][1:])
        model = USNet(PRESETS["v2_official"]).eval()
        for bn in model.bns():
            bn.reset_stats(w)  # fresh stats (mean 0, var 1): eval cost does not depend on values
        x = torch.randn(b, 3, 224, 224, generator=gen)

        def run():
            with torch.no_grad():
                model(x, w)
        return run, dict(model="v2_official", input=[b, 3, 224, 224], width=w)
    raise SystemExit(f"unknown workload {name!r}; expected sandwich/bN, calibrate or infer/bN/wW")


def serve(name, args, make=None):
    """Worker mode for interleaved benchmarks: set `name` up, run `args.warmup` untimed calls,
    print one JSON line {"ready": ..., meta}, then answer each stdin line: `run` times one call
    and prints {"s": seconds}; `quit` or end of input exits. Used by `usnet bench`.

    `make` may return a list of functions, one per part of the workload (scaling/bN: one per
    width); then `run K` times part K, and `run` part 0."""
    fn, meta = (make or make_workload)(name, args)
    parts = fn if isinstance(fn, list) else [fn]
    for _ in range(args.warmup):
        for f in parts:
            f()
    print(json.dumps({"ready": name, **meta}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd == ["quit"]:
            break
        if not cmd or cmd[0] != "run" or len(cmd) > 2 or (len(cmd) == 2 and not (cmd[1].isdigit() and int(cmd[1]) < len(parts))):
            print(json.dumps({"error": f"unknown command {line.strip()!r}; expected run, run K (K < {len(parts)}) or quit"}), flush=True)
            continue
        f = parts[int(cmd[1]) if len(cmd) == 2 else 0]
        t0 = time.perf_counter()
        f()
        print(json.dumps({"s": time.perf_counter() - t0}), flush=True)


def bench(args):
    results = {}
    log = lambda m: print(m, file=sys.stderr, flush=True)
    wl = args.workloads.split(",")
    names = []
    if "sandwich" in wl:
        names += [f"sandwich/b{b}" for b in args.sandwich_batch.split(",")]
    if "calibrate" in wl:
        names.append("calibrate")
    if "infer" in wl:
        names += [f"infer/b{b}/w{float(w)}" for b in args.infer_batch.split(",") for w in args.infer_widths.split(",")]
    for name in names:
        fn, meta = make_workload(name, args)
        log(name)
        results[name] = dict(meta, **timed(fn, args.warmup, args.repeats))
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="verify against golden files instead of benchmarking")
    p.add_argument("--golden", nargs="+", default=[os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                 "..", "tests", "golden", "v2_small.json")])
    p.add_argument("--workloads", default="sandwich,calibrate,infer")
    p.add_argument("--quick", action="store_true", help="warmup 1, repeats 3")
    for flag, default in [("threads", 2), ("warmup", 2), ("repeats", 10), ("seed", 0),
                          ("calib-widths", 8), ("calib-batches", 10), ("calib-batch", 128)]:
        p.add_argument("--" + flag, type=int, default=default)
    p.add_argument("--sandwich-batch", default="128", help="comma list, e.g. 128,64")
    p.add_argument("--infer-batch", default="1,32")
    p.add_argument("--infer-widths", default="1.0,0.75,0.5,0.35")
    p.add_argument("--serve", metavar="WORKLOAD", help="worker mode for `usnet bench` (see serve())")
    args = p.parse_args()
    if args.quick:
        args.warmup, args.repeats = 1, 3
    torch.set_num_threads(args.threads)

    if args.serve:
        serve(args.serve, args)
        return

    if args.check:
        reports = [check_golden(f) for f in args.golden]
        print(json.dumps({"torch": torch.__version__, "checks": reports}, indent=1))
        sys.exit(0 if all(r["ok"] for r in reports) else 1)

    load_before = os.getloadavg()
    results = bench(args)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "python": platform.python_version(), "machine": platform.machine(),
                      "cpus": os.cpu_count(), "loadavg_before_after": [load_before[0], os.getloadavg()[0]],
                      "warmup": args.warmup, "repeats": args.repeats, "workloads": results}, indent=1))


if __name__ == "__main__":
    main()
