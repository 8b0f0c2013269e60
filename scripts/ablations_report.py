#!/usr/bin/env python3
"""Writes docs/ablations.md from the eval JSON files of scripts/experiments.sh.

usage: python3 scripts/ablations_report.py RUNS_DIR STEPS > docs/ablations.md
Every number in the report is read from RUNS_DIR/*/eval.json; nothing is typed in.
"""
import json
import sys
from pathlib import Path

runs = Path(sys.argv[1])
steps = sys.argv[2]


def rows(name):
    path = runs / name / "eval.json"
    return json.loads(path.read_text()) if path.exists() else []


def by_width(name):
    return {r["width"]: r for r in rows(name)}


def fmt(r):
    return f"{r['top1']:.2f}" if r else "–"


print("# Results: US-Nets on Fashion-MNIST at a CPU budget\n")
print(f"Every run trains the default model (`configs/fashion_mnist_us_v2.toml`: a US-MobileNet v2 "
      f"with 4 stages, 1 input channel) for **{steps} iterations** of batch 128 (about "
      f"{int(steps) * 128 / 60000:.2f} epochs), linear-decaying LR from 0.1, and evaluates on the "
      f"first 2000 test images. BN post-statistics use 8 training batches unless stated. These are "
      f"short CPU runs: compare rows with each other, not with the paper's ImageNet numbers.\n")
print("Reproduce everything (about an hour on 2 cores):\n")
print(f"```\nbash scripts/experiments.sh {steps}\n```\n")
print("Each run's config, checkpoint, `metrics.jsonl` and `eval.json` stay in "
      f"`{runs}/NAME`; this page is generated from those files by `scripts/ablations_report.py`.\n")

print("## Reading these numbers\n")
print("At half an epoch every network is far from converged, and the order of the methods is the "
      "order of how fast each learns, not where each ends. The individually trained networks spend "
      "every step on one width and lead; the S-Net and the US-Net share one set of weights across "
      "widths and trail. Inplace distillation makes the narrow widths learn from a max width that is "
      "itself still poor, so early on it costs accuracy; the paper reports its gain after full ImageNet "
      "training. The sandwich rule already helps here, most at the max width. Also clear at this budget: the "
      "US-Net runs at every width of its range from one set of weights, accuracy rises with MACs, "
      "and BN post-statistics are essential: with one shared set of statistics (0 calibration "
      "batches) narrow widths fall to chance while one calibration batch already recovers them. "
      "Run `scripts/experiments.sh` with more steps for converged comparisons.\n")

print("## 1. US-Net vs individually trained networks vs S-Net\n")
print("![top-1 vs MACs](compare.png)\n")
us, snet = by_width("us"), by_width("snet")
print("| width | MACs | US-Net top-1 | S-Net top-1 | fixed-width top-1 |")
print("|---|---|---|---|---|")
for w, name in [("1", "fixed_10"), ("0.75", "fixed_075"), ("0.5", "fixed_05"), ("0.35", "fixed_035")]:
    fixed = by_width(name).get(w)
    ref = us.get(w) or snet.get(w) or fixed
    macs = f"{ref['macs'] / 1e6:.2f}M" if ref else "–"
    print(f"| {w} | {macs} | {fmt(us.get(w))} | {fmt(snet.get(w))} | {fmt(fixed)} |")
print("\nThe US-Net also runs at every other width of its grid, which the others cannot:\n")
print("| width | MACs | top-1 | top-5 |")
print("|---|---|---|---|")
for r in rows("us"):
    print(f"| {r['width']} | {r['macs'] / 1e6:.2f}M | {r['top1']:.2f} | {r['top5']:.2f} |")

print("\n## 2. Ablations\n")
print("Each row differs from the US-Net of section 1 (`us`: sandwich rule, n = 4, inplace "
      "distillation, k0 = 0.35, d = 8) in one setting. Columns: top-1 at the min, a middle and "
      "the max width, and the mean over the width grid.\n")


def summary(name, label):
    rs = rows(name)
    if not rs:
        print(f"| {label} | – | – | – | – |")
        return
    top = [r["top1"] for r in rs]
    w = {r["width"]: r for r in rs}
    lo = min(rs, key=lambda r: float(r["width"]))
    mid = w.get("0.7") or w.get("0.6") or rs[len(rs) // 2]
    print(f"| {label} | {lo['top1']:.2f} (w={lo['width']}) | {mid['top1']:.2f} (w={mid['width']}) "
          f"| {fmt(w.get('1'))} | {sum(top) / len(top):.2f} |")


header = "| run | min width | middle | max width | mean over grid |\n|---|---|---|---|---|"
print("### Sandwich rule and inplace distillation\n")
print("![ablation](ablate_rules.png)\n")
print(header)
summary("us", "sandwich rule + inplace distillation (`us`)")
summary("random_n4", "n = 4 random widths, no sandwich rule")
summary("no_distill", "sandwich rule, labels for every width")
print("\n### Number of sampled widths n\n")
print(header)
for n, name in [(2, "n2"), (3, "n3"), (4, "us"), (5, "n5")]:
    summary(name, f"n = {n}")
print("\n### Width lower bound k0\n")
print(header)
for k, name in [("0.25", "k0_025"), ("0.35", "us"), ("0.5", "k0_05")]:
    summary(name, f"k0 = {k}")
print("\n### Divisor d of make_divisible\n")
print(header)
summary("us", "d = 8")
summary("d1", "d = 1 (every channel count possible)")
print("\n### BN calibration batches (on the `us` checkpoint)\n")
print("0 batches: no per-width statistics; every width is normalised with the max width's "
      "statistics, sliced to its channels.\n")
print(header)
for b in [0, 1, 2, 4]:
    summary(f"cal_{b}", f"{b} batch(es)")
summary("us", "8 batches")
summary("cal_16", "16 batches")
