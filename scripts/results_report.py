#!/usr/bin/env python3
"""Regenerates docs/results.md and its plots from the JSON results committed under
docs/results/ (written there by scripts/claim.sh and scripts/search_experiment.sh).

    python3 scripts/results_report.py [--usnet target/release/usnet]

Standard library only; the plots are drawn by `usnet plot` from the same JSON files.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")
CLAIM = os.path.join(RESULTS, "claim")
WIDTHS = ["1", "0.75", "0.5", "0.35"]
BAR = 0.3  # US-Net top-1 >= fixed-width top-1 - 0.3 pt

# (run names, label): the methods of the comparison, each with its seeds.
METHODS = [
    (["us", "us_seed2"], "US-Net (sandwich n=4, inplace distillation)"),
    (["us_no_distill"], "US-Net without inplace distillation"),
    (["snet"], "S-Net (switchable BN, 4 widths)"),
]
FIXED = {
    "1": ["fixed_10", "fixed_10_seed2"],
    "0.75": ["fixed_075"],
    "0.5": ["fixed_05"],
    "0.35": ["fixed_035", "fixed_035_seed2"],
}


def load_rows(run, split, base=CLAIM):
    path = os.path.join(base, run, f"{split}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return {r["width"]: r for r in json.load(f)}


def top1(run, split, width, base=CLAIM):
    rows = load_rows(run, split, base)
    if rows is None or width not in rows:
        return None
    return rows[width]["top1"]


def seeds(runs, split, width, base=CLAIM):
    """Top-1 of each seed's run that exists."""
    return [v for v in (top1(r, split, width, base) for r in runs) if v is not None]


def fmt_seeds(values):
    """'91.23' for one seed; 'mean (a / b)' for more."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"**{statistics.mean(values):.2f}** ({' / '.join(f'{v:.2f}' for v in values)})"


def config_value(run, key):
    path = os.path.join(CLAIM, run, "config.toml")
    with open(path) as f:
        for line in f:
            if line.startswith(key + " ="):
                return line.split("=", 1)[1].strip()
    return None


def macs(width):
    rows = load_rows("us", "test") or {}
    r = rows.get(width)
    return f"{r['macs'] / 1e6:.2f}M" if r else "–"


def claim_section(out, split):
    out.append(f"| width | MACs | " + " | ".join(label for _, label in METHODS) + " | fixed width, trained alone | US-Net − fixed | bar (≥ −0.3) |")
    out.append("|---|---|" + "---|" * len(METHODS) + "---|---|---|")
    verdicts = []
    for w in WIDTHS:
        cells = [fmt_seeds(seeds(runs, split, w)) for runs, _ in METHODS]
        fixed = seeds(FIXED[w], split, w)
        us = seeds(METHODS[0][0], split, w)
        if us and fixed:
            gap = statistics.mean(us) - statistics.mean(fixed)
            ok = gap >= -BAR
            verdicts.append(ok)
            gap_cell, bar_cell = f"{gap:+.2f}", "met" if ok else "**not met**"
        else:
            gap_cell, bar_cell = "–", "–"
        out.append(f"| {w} | {macs(w)} | " + " | ".join(cells) + f" | {fmt_seeds(fixed)} | {gap_cell} | {bar_cell} |")
    return verdicts


# (seed 1995 run, seed 2 run), and the widths both are scored at.
SEED_PAIRS = [(("us", "us_seed2"), WIDTHS), (("fixed_10", "fixed_10_seed2"), ["1"]), (("fixed_035", "fixed_035_seed2"), ["0.35"])]


def seed_diffs(base=CLAIM):
    """(name, |seed 1995 - seed 2|) of test top-1 for every seed pair and width with both runs."""
    diffs = []
    for pair, widths in SEED_PAIRS:
        for w in widths:
            a, b = (top1(r, "test", w, base) for r in pair)
            if a is not None and b is not None:
                diffs.append((f"{pair[0]} at {w}", abs(a - b)))
    return diffs


def recipe_noise():
    """|seed 1995 - seed 2| of the recipe's US-Net at width 1 on validation: the yardstick of a
    change there; None without both seeds."""
    a, b = top1("us", "validation", "1"), top1("us_seed2", "validation", "1")
    return abs(a - b) if a is not None and b is not None else None


def spread_section(out):
    out.append("| run pair | width | split | seed 1995 | seed 2 | difference |")
    out.append("|---|---|---|---|---|---|")
    for pair, widths in SEED_PAIRS:
        for w in widths:
            for split in ["validation", "test"]:
                a, b = (top1(r, split, w) for r in pair)
                if a is None or b is None:
                    continue
                out.append(f"| {pair[0]} | {w} | {split} | {a:.2f} | {b:.2f} | {abs(a - b):.2f} |")
    # The test gaps against the seed differences, pooled over every pair (one pair per width
    # is too few to estimate the spread at each width alone).
    diffs = [d for _, d in seed_diffs()]
    gaps = []
    for w in WIDTHS:
        us, fixed = seeds(METHODS[0][0], "test", w), seeds(FIXED[w], "test", w)
        if us and fixed:
            gaps.append(f"{statistics.mean(us) - statistics.mean(fixed):+.2f} at {w}")
    if len(diffs) > 1 and gaps:
        out.append("")
        out.append(f"Against the run-to-run spread: over the {len(diffs)} seed pairs, test top-1 differs by "
                   f"{statistics.mean(diffs):.2f} pt on average and {max(diffs):.2f} at most; the test gaps are "
                   + ", ".join(gaps) + ".")


def grid_section(out):
    val, test = load_rows("us", "validation"), load_rows("us", "test")
    if not test:
        return
    out.append("| width | MACs | params | validation top-1 | test top-1 | BN statistics |")
    out.append("|---|---|---|---|---|---|")
    for w, r in sorted(test.items(), key=lambda kv: float(kv[0])):
        v = val.get(w, {}).get("top1") if val else None
        stored = "on demand" if r.get("calibrated_on_demand") else "stored"
        out.append(f"| {w} | {r['macs'] / 1e6:.2f}M | {r['params'] / 1e6:.3f}M | {v:.2f} | {r['top1']:.2f} | {stored} |" if v is not None else
                   f"| {w} | {r['macs'] / 1e6:.2f}M | {r['params'] / 1e6:.3f}M | – | {r['top1']:.2f} | {stored} |")


def final_validation(run):
    """Last epoch's validation top-1 per width from validation.jsonl."""
    path = os.path.join(CLAIM, run, "validation.jsonl")
    if not os.path.exists(path):
        return {}
    last = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            last[r["width"]] = (r["epoch"], r["top1"])
    return last


def curve(run, width):
    """Validation top-1 at `width` after each epoch, from the run's validation.jsonl."""
    path = os.path.join(CLAIM, run, "validation.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {r["epoch"]: r["top1"] for r in map(json.loads, f) if r["width"] == width}


def last_epoch_loss(run, width, base=CLAIM):
    """Mean training loss at `width` over the last epoch's lines of the run's metrics.jsonl."""
    path = os.path.join(base, run, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    key = f"{float(width):.3f}"
    last = max(r["epoch"] for r in rows)
    values = [dict(r["losses"])[key] for r in rows if r["epoch"] == last and key in dict(r["losses"])]
    return statistics.mean(values) if values else None


def training_fit():
    """(label, (run, distills)) of the finished US-Net runs, for the training-loss table."""
    runs = [("US-Net", "us", True), ("US-Net seed 2", "us_seed2", True), ("US-Net, no distillation", "us_no_distill", False)]
    return [(label, (run, distills)) for label, run, distills in runs if os.path.exists(os.path.join(CLAIM, run, "metrics.jsonl"))]


def analysis_section(out):
    """The measurements that explain a gap: per-epoch gap, calibration set size."""
    pairs = [(w, FIXED[w][0]) for w in WIDTHS]
    curves = {w: (curve("us", w), curve(f, w)) for w, f in pairs}
    curves = {w: c for w, c in curves.items() if c[0] and c[1]}
    if curves:
        out.append("**The gap over training.** Validation top-1 of the US-Net minus the fixed net's after each "
                   "epoch (each scored with BN post-statistics calibrated then, 8 batches). The runs record the "
                   "US-Net at its max and min width and each fixed net at its own width, so the columns are "
                   "the widths both have.")
        out.append("")
        ws = sorted(curves, key=float, reverse=True)
        out.append("| epoch | " + " | ".join(f"gap at {w}" for w in ws) + " |")
        out.append("|---|" + "---|" * len(ws))
        epochs = sorted(set.intersection(*(set(c[0]) & set(c[1]) for c in curves.values())))
        for e in epochs:
            out.append(f"| {e} | " + " | ".join(f"{curves[w][0][e] - curves[w][1][e]:+.2f}" for w in ws) + " |")
        last = epochs[-5:]
        for w in ws:
            gaps = [curves[w][0][e] - curves[w][1][e] for e in last]
            out.append("")
            out.append(f"At {w}, over the last {len(last)} epochs the gap is {statistics.mean(gaps):+.2f} pt on average "
                       f"(from {min(gaps):+.2f} to {max(gaps):+.2f}).")
        out.append("")
    fit = training_fit()
    if fit:
        out.append("**Fit to the training data.** Mean training loss over the last epoch's logged iterations "
                   "(label cross-entropy on the augmented training batches; a US-Net's non-max widths learn "
                   "from the max width's soft targets when distillation is on, so only label losses are "
                   "compared). A higher loss at equal epochs is underfitting, not overfitting.")
        out.append("")
        out.append("| width | fixed net | " + " | ".join(label for label, _ in fit) + " |")
        out.append("|---|---|" + "---|" * len(fit))
        for w in WIDTHS:
            fixed = last_epoch_loss(FIXED[w][0], w)
            cells = [last_epoch_loss(run, w) if (w == "1" or not distills) else None for _, (run, distills) in fit]
            if fixed is None and all(c is None for c in cells):
                continue
            out.append(f"| {w} | {fixed:.3f} | " if fixed is not None else f"| {w} | – | ")
            out[-1] += " | ".join(f"{c:.3f}" if c is not None else "–" for c in cells) + " |"
        out.append("")
        fixed, us = last_epoch_loss(FIXED["1"][0], "1"), last_epoch_loss("us", "1")
        if fixed and us:
            out.append(f"At width 1 the US-Net ends {us - fixed:+.3f} ({(us / fixed - 1) * 100:+.0f}%) above the fixed "
                       "net's training loss with the same epochs, augmentation and learning rate: its max width fits the "
                       "training data less well, as it scores lower on validation and test.")
            out.append("")
    rows, batches = calibration_rows()
    if rows:
        out.append("**BN calibration set size.** Validation top-1 after re-calibrating each run's widths with more "
                   "batches of 128 training images than the recipe's 8 (`bash scripts/claim_analysis.sh`).")
        out.append("")
        out.append("| run | width | " + " | ".join(f"{b} batches" for b in batches) + " |")
        out.append("|---|---|" + "---|" * len(batches))
        for (run, w), v in sorted(rows.items(), key=lambda kv: (kv[0][0], -float(kv[0][1]))):
            out.append(f"| {run} | {w} | " + " | ".join(f"{v[b]:.2f}" if b in v else "–" for b in batches) + " |")
        out.append("")
        changes = calibration_changes(rows, batches)
        if changes:
            out.append(f"From {batches[0]} to {batches[-1]} batches, validation top-1 moves by at most {max(changes):.2f} pt "
                       f"(mean {statistics.mean(changes):.2f}) over {len(changes)} run-width pairs, in both directions: "
                       "the calibration set size does not explain a gap of more than that.")
            out.append("")


# (run, what it changes), scripts/claim.sh's ablations of the US-Net.
ABLATIONS = [
    ("us_n2", "n = 2: max and min width only"),
    ("us_n3", "n = 3: one random width"),
    ("us_lr005", "lr 0.05 instead of 0.1"),
    ("us_range05", "width lower bound 0.5 instead of 0.35"),
]


def accuracy_plot(usnet, files, name, title):
    """Draws `usnet plot accuracy` of `files` (paths, or `path=label`) into docs/NAME; returns
    its markdown line, or nothing without a binary or files."""
    if not usnet or not files:
        return []
    subprocess.run([usnet, "plot", "accuracy", "--output", os.path.join(ROOT, "docs", name), "--title", title] + files, check=True)
    return [f"![{title}]({name})", ""]


def ablation_section(out, usnet=None):
    """The US-Net with one setting changed, on validation, against the recipe and the fixed nets."""
    base = os.path.join(RESULTS, "claim_ablation")
    done = [(r, what) for r, what in ABLATIONS if load_rows(r, "validation", base)]
    if not done:
        return
    out.append("**One setting at a time.** The US-Net (seed 1995, 10 epochs) with one setting of the recipe "
               "changed (`CLAIM_RUNS=\"us_n2 us_n3 us_lr005 us_range05\" bash scripts/claim.sh`; results in "
               "`docs/results/claim_ablation/`), scored on the validation split, which every choice is made on. "
               "The training loss is the max width's label loss over the last epoch, as above. The seed-to-seed "
               "difference of the recipe's US-Net on validation is the yardstick (table of the spread above).")
    out.append("")
    out.append("| run | change | " + " | ".join(f"top-1 at {w}" for w in WIDTHS) + " | loss at 1 |")
    out.append("|---|---|" + "---|" * len(WIDTHS) + "---|")
    cell = lambda v: f"{v:.2f}" if v is not None else "–"
    fixed = [statistics.mean(v) if (v := seeds(FIXED[w], "validation", w)) else None for w in WIDTHS]
    loss = last_epoch_loss(FIXED["1"][0], "1")
    out.append("| fixed nets | trained alone (mean of seeds) | " + " | ".join(cell(v) for v in fixed)
               + (f" | {loss:.3f} (fixed 1.0) |" if loss else " | – |"))
    rows = [("us", "the recipe", CLAIM), ("us_seed2", "the recipe, seed 2", CLAIM)] + [(r, what, base) for r, what in done]
    for run, what, b in rows:
        vals = [top1(run, "validation", w, b) for w in WIDTHS]
        loss = last_epoch_loss(run, "1", b)
        out.append(f"| {run} | {what} | " + " | ".join(cell(v) for v in vals) + (f" | {loss:.3f} |" if loss else " | – |"))
    out.append("")
    us = [top1("us", "validation", w) for w in WIDTHS]
    seed_diff = recipe_noise()
    for run, what in done:
        vals = [top1(run, "validation", w, base) for w in WIDTHS]
        diffs = [f"{v - u:+.2f} at {w}" for w, v, u in zip(WIDTHS, vals, us) if v is not None and u is not None]
        line = f"- `{run}` ({what}) against the recipe: " + ", ".join(diffs) + "."
        # How much of the max width's gap to the fixed net the change closes, against the
        # recipe's seed-to-seed difference there.
        if vals[0] is not None and us[0] is not None and fixed[0] is not None and fixed[0] > us[0]:
            closed = (vals[0] - us[0]) / (fixed[0] - us[0])
            line += (f" At width 1 it closes {closed * 100:.0f}% of the recipe's gap to the fixed net "
                     f"({vals[0]:.2f} against {us[0]:.2f}, fixed {fixed[0]:.2f})")
            line += f"; the recipe's two seeds differ by {seed_diff:.2f} there." if seed_diff is not None else "."
        between = [v for w, v in zip(WIDTHS, vals) if v is not None and w not in ("1", "0.35")]
        if between and min(between) < min(u for u in us if u is not None) - 5:
            line += (f" The widths between the two it trains are never trained and fall to {min(between):.2f}: "
                     "this run is not a universally slimmable net.")
        out.append(line)
    out.append("")
    files = [os.path.join(CLAIM, "us", "validation.json") + "=us: the recipe, n 4"]
    files += [os.path.join(base, r, "validation.json") + f"={r}" for r, _ in done]
    out.extend(accuracy_plot(usnet, files, "claim_ablation_accuracy.png", "Ablations: validation top-1 vs MACs, 10 epochs"))


def calibration_rows():
    """({(run, width): {batches: top-1}}, sorted batch counts) from
    docs/results/claim_analysis/calibration/ (scripts/claim_analysis.sh)."""
    cal = os.path.join(RESULTS, "claim_analysis", "calibration")
    rows = {}
    if os.path.isdir(cal):
        for name in sorted(os.listdir(cal)):
            run, b = name[: -len(".json")].rsplit("-b", 1)
            with open(os.path.join(cal, name)) as f:
                for r in json.load(f):
                    rows.setdefault((run, r["width"]), {})[int(b)] = r["top1"]
    return rows, sorted({b for v in rows.values() for b in v})


def calibration_changes(rows, batches):
    """|top-1 with the most batches - with the fewest| per run and width of `calibration_rows`."""
    if len(batches) < 2:
        return []
    return [abs(v[batches[-1]] - v[batches[0]]) for v in rows.values() if batches[0] in v and batches[-1] in v]


def conclusion_section(out):
    """What the measurements above say about the shortfall, in numbers read from them."""
    base20, abl = os.path.join(RESULTS, "claim_e20"), os.path.join(RESULTS, "claim_ablation")
    test20 = {w: (top1("us", "test", w, base20), top1(FIXED[w][0], "test", w, base20)) for w in WIDTHS}
    gaps20 = {w: u - f for w, (u, f) in test20.items() if u is not None and f is not None}
    runs = {2: ("us_n2", abl), 3: ("us_n3", abl), 4: ("us", CLAIM)}
    by_n = {k: (top1(r, "validation", "1", b), top1(r, "validation", "0.35", b)) for k, (r, b) in runs.items()}
    by_n = {k: v for k, v in by_n.items() if v[0] is not None}
    if not gaps20 or 2 not in by_n or 4 not in by_n:
        return
    fixed1 = statistics.mean(seeds(FIXED["1"], "validation", "1"))
    fixed035 = statistics.mean(seeds(FIXED["0.35"], "validation", "0.35"))
    out.append("### What the measurements say")
    out.append("")
    met = sum(g >= -BAR for g in gaps20.values())
    seeds20 = sum(top1(r, "test", "1", base20) is not None for r in METHODS[0][0])
    diffs10 = [d for _, d in seed_diffs()]
    line = (f"- **The bar is met at {met} of {len(gaps20)} widths after 20 epochs** (test gaps "
            + ", ".join(f"{g:+.2f} at {w}" for w, g in gaps20.items())
            + (f", one seed a side; at 10 epochs two seeds differ by {statistics.mean(diffs10):.2f} pt on average"
               if seeds20 == 1 and diffs10 else "") + ").")
    gain = lambda run, w: (top1(run, "test", w, base20) or float("nan")) - (top1(run, "test", w) or float("nan"))
    us_gain = [gain("us", w) for w in gaps20]
    fixed_gain = [gain(FIXED[w][0], w) for w in gaps20]
    line += (f" Twice the epochs changed the fixed nets' test top-1 by {min(fixed_gain):+.2f} to {max(fixed_gain):+.2f} pt "
             f"and the US-Net's by {min(us_gain):+.2f} to {max(us_gain):+.2f}.")
    fit = (last_epoch_loss("us", "1", base20), last_epoch_loss(FIXED["1"][0], "1", base20))
    if None not in fit and fit[0] > fit[1]:
        line += f" The US-Net's max width still fits the training data less well (label loss {fit[0]:.3f} against {fit[1]:.3f})."
    out.append(line)
    rows, batches = calibration_rows()
    changes = calibration_changes(rows, batches)
    if changes:
        out.append(f"- **Not the calibration set:** from {batches[0]} to {batches[-1]} batches, validation top-1 moves by "
                   f"at most {max(changes):.2f} pt.")
    lr = [top1("us_lr005", "validation", w, abl) for w in WIDTHS]
    us = [top1("us", "validation", w) for w in WIDTHS]
    noise = recipe_noise()
    within = lambda d: f" ({'within' if abs(d) <= noise else 'beyond'} the recipe's seed-to-seed difference of {noise:.2f} at width 1)" if noise is not None else ""
    if all(v is not None for v in lr + us):
        d = [a - b for a, b in zip(lr, us)]
        out.append(f"- **The learning rate:** halving it (`us_lr005`) changes validation top-1 by {d[0]:+.2f} at width 1{within(d[0])} "
                   f"and by {min(d[1:]):+.2f} to {max(d[1:]):+.2f} at the others.")
    rng = [top1("us_range05", "validation", w, abl) for w in WIDTHS[:3]]
    if all(v is not None for v in rng):
        d = [a - b for a, b in zip(rng, us[:3])]
        out.append(f"- **The width lower bound:** raising it to 0.5 (`us_range05`) changes validation top-1 by "
                   + ", ".join(f"{v:+.2f} at {w}" for w, v in zip(WIDTHS, d)) + within(d[0]) + ".")
    ks = sorted(by_n)
    order = [by_n[k][0] for k in ks]
    monotone = all(a > b for a, b in zip(order, order[1:]))
    out.append("- **The number of widths per step:** validation top-1 at width 1 is "
               + ", ".join(f"{by_n[k][0]:.2f} with n = {k}" for k in ks) + f" (fixed net {fixed1:.2f}), at 0.35 "
               + ", ".join(f"{by_n[k][1]:.2f}" for k in ks) + f" (fixed net {fixed035:.2f}). "
               + (f"Each random width added to the max and min takes accuracy from the max width"
                  f" ({', '.join(f'n = {a} to {b}: {by_n[b][0] - by_n[a][0]:+.2f}' for a, b in zip(ks, ks[1:]))}"
                  + (f"; the recipe's seeds differ by {noise:.2f} there). " if noise is not None else "). ") if monotone else "")
               + "With the max and min width alone (n = 2) both ends come within "
               f"{max(abs(by_n[2][0] - fixed1), abs(by_n[2][1] - fixed035)):.2f} pt of the networks trained alone, but "
               "the widths between are never trained and fail (table above).")
    params = (load_rows("us", "test") or {}).get("1", {}).get("params")
    size = f" ({params / 1e6:.3f}M parameters at width 1)" if params else ""
    lo, hi = min(-g for g in gaps20.values()), max(-g for g in gaps20.values())
    out.append(f"- **So:** on this small network{size}, serving every width between 0.35 and 1 from one set of "
               "weights costs accuracy that neither a longer schedule, a lower learning rate, a larger calibration "
               f"set nor a higher width lower bound recovers: {lo:.2f} to {hi:.2f} pt of test top-1 at 20 epochs against a network trained alone for "
               "each width. The paper's MobileNets have millions of parameters; whether a wider default closes the "
               "gap is the next measurement.")
    out.append("")


def longer_section(out, usnet=None):
    """Issue 12's change: the same experiment with a longer schedule, against the 10 epochs."""
    longer = sorted(d for d in os.listdir(RESULTS) if d.startswith("claim_e") and os.path.isdir(os.path.join(RESULTS, d)))
    for name in longer:
        base = os.path.join(RESULTS, name)
        epochs = name[len("claim_e"):]
        done = sorted(r for r in os.listdir(base) if os.path.exists(os.path.join(base, r, "test.json")))
        if not done:
            continue
        out.append(f"### The change: {epochs} epochs instead of 10 (before / after)")
        out.append("")
        out.append(f"Why: after 10 epochs every run's validation curve was still rising (the last epoch added "
                   "0.2-0.6 pt) and the US-Net's max width fit the training data less well than the fixed net "
                   "(above), so the issue's own rule applies: train longer, the same for every run "
                   f"(`bash scripts/claim.sh ~/usnet-runs/claim{epochs} {epochs}`, the recipe otherwise unchanged; "
                   f"results in `docs/results/{name}/`). Runs finished: " + ", ".join(f"`{r}`" for r in done) + ".")
        out.append("")
        out.append(f"| width | US-Net 10 ep | US-Net {epochs} ep | fixed 10 ep | fixed {epochs} ep | gap 10 ep | gap {epochs} ep | bar at {epochs} ep |")
        out.append("|---|---|---|---|---|---|---|---|")
        for w in WIDTHS:
            # The same seeds before and after: the 10-epoch columns take only the seeds that
            # the longer schedule has finished too, so that before and after compare like
            # with like.
            us_runs = [r for r in METHODS[0][0] if top1(r, "test", w, base) is not None] or METHODS[0][0][:1]
            fixed_runs = [r for r in FIXED[w] if top1(r, "test", w, base) is not None] or FIXED[w][:1]
            us0, us1 = seeds(us_runs, "test", w), seeds(us_runs, "test", w, base)
            f0, f1 = seeds(fixed_runs, "test", w), seeds(fixed_runs, "test", w, base)
            gap = lambda a, b: statistics.mean(a) - statistics.mean(b) if a and b else None
            g0, g1 = gap(us0, f0), gap(us1, f1)
            cell = lambda g: f"{g:+.2f}" if g is not None else "–"
            bar = "–" if g1 is None else ("met" if g1 >= -BAR else "**not met**")
            out.append(f"| {w} | {fmt_seeds(us0)} | {fmt_seeds(us1)} | {fmt_seeds(f0)} | {fmt_seeds(f1)} | {cell(g0)} | {cell(g1)} | {bar} |")
        out.append("")
        out.append("Test top-1. Cells with two seeds show the mean in bold and each seed (1995 / 2) in parentheses; "
                   "the 10-epoch columns hold the same seeds as the longer ones. A dash: that run of the longer "
                   "schedule has not finished.")
        out.append("")
        diffs = seed_diffs(base)
        files = [os.path.join(base, r, "test.json") + f"={r}" for r in done]
        out.extend(accuracy_plot(usnet, files, f"{name}_accuracy.png", f"Fashion-MNIST test top-1 vs MACs, {epochs} epochs"))
        f, u = last_epoch_loss(FIXED["1"][0], "1", base), last_epoch_loss("us", "1", base)
        if f is not None and u is not None:
            f10, u10 = last_epoch_loss(FIXED["1"][0], "1"), last_epoch_loss("us", "1")
            before = f" (at 10 epochs: {u10:.3f} against {f10:.3f})" if f10 is not None and u10 is not None else ""
            out.append(f"Fit to the training data at {epochs} epochs: the max width's label loss over the last epoch is "
                       f"{u:.3f} for the US-Net against {f:.3f} for the fixed net at width 1, {u - f:+.3f}{before}.")
            out.append("")
        if diffs:
            out.append(f"Run-to-run spread at {epochs} epochs (test top-1, seed 1995 against seed 2): "
                       + ", ".join(f"{name} {d:.2f}" for name, d in diffs)
                       + f"; {statistics.mean(d for _, d in diffs):.2f} pt on average.")
            out.append("")


def search_section(out):
    """Issue 11's experiment, from docs/results/search/summary.json via scripts/search_report.py."""
    summary = os.path.join(RESULTS, "search", "summary.json")
    if not os.path.exists(summary):
        return
    report = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "search_report.py"), summary],
                            check=True, capture_output=True, text=True).stdout
    out.append(report.rstrip("\n"))
    out.append("")


def plots(usnet, out):
    """Draws the plots with `usnet plot`; returns the markdown image lines made."""
    made = []
    runs = [r for r in sorted(os.listdir(CLAIM)) if os.path.isdir(os.path.join(CLAIM, r))]
    evals = [os.path.join(CLAIM, r, "test.json") for r in runs if os.path.exists(os.path.join(CLAIM, r, "test.json"))]
    if evals:
        target = os.path.join(ROOT, "docs", "claim_accuracy.png")
        subprocess.run([usnet, "plot", "accuracy", "--output", target, "--title", "Fashion-MNIST test top-1 vs MACs, 10 epochs"] + evals, check=True)
        made.append("![test top-1 vs MACs](claim_accuracy.png)")
    dirs = [os.path.join(CLAIM, r) for r in runs]
    if dirs:
        target = os.path.join(ROOT, "docs", "claim_curves.png")
        subprocess.run([usnet, "curves", "--output", target] + sum((["--run", d] for d in dirs), []), check=True)
        made.append("![training curves](claim_curves.png)")
    return made


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--usnet", default=os.path.join(ROOT, "target", "release", "usnet"))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    if not os.path.isdir(CLAIM):
        sys.exit(f"error: {CLAIM} does not exist; run scripts/claim.sh first")
    epochs = config_value("us", "num_epochs")
    out = ["# Results: US-Nets on Fashion-MNIST", ""]
    out.append("Generated by `python3 scripts/results_report.py` from the JSON under `docs/results/`; "
               "the runs come from `bash scripts/claim.sh` (see its header). Do not edit by hand.")
    out.append("")
    out.append(f"## 1. One US-Net against networks trained alone ({epochs} epochs)")
    out.append("")
    out.append("Every run uses the default config's recipe (`configs/fashion_mnist_us_v2.toml`: US-MobileNet v2, "
               "4 stages, divisor 1, batch 128, SGD nesterov lr 0.1 with linear decay and 0.1 epoch of warm-up, "
               f"pad-2 random crop and flip), {epochs} epochs, 55,000 training images; the same 5,000 training "
               "images are held out as the validation split for every run. BN post-statistics: 8 batches of 128 "
               "training images per width. Widths off the stored grid are calibrated on demand the same way.")
    out.append("")
    out.append(f"### Test top-1 (10,000 images, scored once per finished run)")
    out.append("")
    verdicts = claim_section(out, "test")
    out.append("")
    out.append("Cells with two seeds show the mean in bold and each seed in parentheses. The bar: "
               f"US-Net top-1 ≥ fixed-width top-1 − {BAR} pt at each width.")
    out.append("")
    out.append("### Validation top-1 (the 5,000 held-out training images)")
    out.append("")
    claim_section(out, "validation")
    out.append("")
    out.append("### Run-to-run spread (the same recipe, another seed)")
    out.append("")
    spread_section(out)
    out.append("")
    out.append("### The US-Net at every width of a 0.05 grid")
    out.append("")
    grid_section(out)
    out.append("")
    if not args.no_plots:
        out.extend(plots(args.usnet, out))
        out.append("")
    all_runs = [r for runs, _ in METHODS for r in runs] + sorted({r for runs in FIXED.values() for r in runs})
    missing = [r for r in all_runs if load_rows(r, "test") is None]
    if missing:
        out.append(f"**Incomplete:** {len(all_runs) - len(missing)} of {len(all_runs)} runs are finished; still to run: "
                   + ", ".join(f"`{r}`" for r in missing) + ". `bash scripts/claim.sh` continues where it stopped.")
        out.append("")
    out.append(f"Verdict: the bar is met at {sum(verdicts)} of {len(verdicts)} widths" + (" compared so far." if missing else ".") if verdicts else
               "Verdict: no width has both a US-Net and a fixed-width result yet.")
    out.append("")
    out.append("### Why the US-Net falls short: measurements")
    out.append("")
    analysis_section(out)
    usnet = None if args.no_plots else args.usnet
    ablation_section(out, usnet)
    longer_section(out, usnet)
    conclusion_section(out)
    search_section(out)
    with open(os.path.join(ROOT, "docs", "results.md"), "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
