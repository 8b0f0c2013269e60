#!/usr/bin/env bash
# Issue 11's experiment: per-stage search against the best uniform width, at equal cost.
#
#   bash scripts/search_experiment.sh NONUNIFORM_RUN UNIFORM_RUN [OUT]   (default OUT: runs/search)
#
# NONUNIFORM_RUN and UNIFORM_RUN are run directories of the default Fashion-MNIST model trained
# with nonuniform = true and nonuniform = false (both with a validation split). For each run, at
# 4 MACs budgets evenly between its cheapest and largest network (20/40/60/80% of the way) and at
# one latency budget (halfway): uniform and greedy once, evolution with seeds 1, 2 and 3. Every
# search's JSON stays in OUT/LABEL/; OUT/summary.json gathers them, and
#
#   python3 scripts/search_report.py OUT/summary.json
#
# prints the markdown section for docs/results.md. A search that is done already (its JSON
# exists) is not run again, so the script resumes after an interruption. Extra arguments for
# every search go in SEARCH_ARGS (e.g. SEARCH_ARGS="--population 8 --generations 4" to try it out);
# USNET picks the binary (default: build target/release/usnet).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/search_experiment.sh NONUNIFORM_RUN UNIFORM_RUN [OUT]" >&2
  exit 2
fi
# Paths are taken from where the script is called; it then works from the repository root.
nonuniform=$(realpath -m "$1") uniform=$(realpath -m "$2")
out=$(realpath -m "${3:-$(dirname "$0")/../runs/search}")
[ -n "${USNET:-}" ] && USNET=$(realpath -m "$USNET")
cd "$(dirname "$0")/.."
for run in "$nonuniform" "$uniform"; do
  if [ ! -e "$run/checkpoint.safetensors" ] && [ ! -f "$run" ]; then
    echo "error: $run holds no checkpoint.safetensors; train it first (usnet train --output $run)" >&2
    exit 1
  fi
done
if [ -z "${USNET:-}" ]; then
  cargo build --release --quiet
  USNET=target/release/usnet
fi
usnet=$USNET
read -r -a extra <<< "${SEARCH_ARGS:-}"
mkdir -p "$out"

search() { # RUN JSON ARGS...
  local run=$1 json=$2; shift 2
  if [ -e "$json" ]; then echo "== $json: done already"; return; fi
  echo "== $json"
  "$usnet" search --checkpoint "$run" --json "$json" "${extra[@]}" "$@"
}

# A budget's value from the ends of a probe search: FRACTION of the way from the cheapest
# network to the largest, in the probe's unit (MACs, or seconds).
budget_at() { # PROBE_JSON FRACTION
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); lo=r["cheapest"]["cost"]; hi=r["largest"]["cost"]; print(repr(lo + (hi - lo) * float(sys.argv[2])))' "$1" "$2"
}

for label in nonuniform uniform; do
  if [ "$label" = nonuniform ]; then run=$nonuniform; else run=$uniform; fi
  dir="$out/$label"
  mkdir -p "$dir"
  # Probes: budgets that every network meets; they give the ends of the cost range.
  search "$run" "$dir/probe-macs.json" --budget macs=1000G --strategy uniform
  search "$run" "$dir/probe-latency.json" --budget latency=1000s --strategy uniform
  budgets=()
  for f in 0.2 0.4 0.6 0.8; do
    macs=$(budget_at "$dir/probe-macs.json" "$f")
    budgets+=("macs-$f macs=$(python3 -c "print(int(float('$macs')))")")
  done
  secs=$(budget_at "$dir/probe-latency.json" 0.5)
  budgets+=("latency-0.5 latency=$(python3 -c "print(round(float('$secs') * 1e6, 1))")us")
  for entry in "${budgets[@]}"; do
    name=${entry%% *} budget=${entry#* }
    search "$run" "$dir/$name-s1.json" --budget "$budget" --strategy uniform,greedy,evolution --seed 1
    for seed in 2 3; do
      search "$run" "$dir/$name-s$seed.json" --budget "$budget" --strategy evolution --seed "$seed"
    done
  done
done

python3 - "$out" "$nonuniform" "$uniform" <<'EOF'
"""Gathers the searches' JSON into OUT/summary.json: one row per strategy and seed."""
import json
import sys
from pathlib import Path

out, runs = Path(sys.argv[1]), {"nonuniform": sys.argv[2], "uniform": sys.argv[3]}
rows, ends = [], {}
for label, run in runs.items():
    for path in sorted((out / label).glob("*.json")):
        report = json.loads(path.read_text())
        if path.stem.startswith("probe-"):
            ends[f"{label}/{report['cost_kind']}"] = {"cheapest": report["cheapest"], "largest": report["largest"]}
            continue
        name, seed = path.stem.rsplit("-s", 1)
        for s in report["strategies"]:
            best = s["best"]
            rows.append({
                "run": label, "checkpoint": run, "budget_name": name, "budget": report["budget"],
                "cost_kind": report["cost_kind"], "budget_limit": report["budget_limit"],
                "strategy": s["strategy"], "seed": int(seed) if s["strategy"] == "evolution" else None,
                "spec": best["spec"], "cost": best["cost"], "macs": best["macs"],
                "validation_top1": best["validation_top1"], "test_top1": best["test_top1"],
                "evaluations": s["evaluations"], "seconds": s["seconds"],
                "stopped_by_time_limit": s["stopped_by_time_limit"],
                "latency_error_pct": (report.get("latency") or {}).get("mean_abs_error_pct"),
                "validation_images": report["validation_images"], "test_images": report["test_images"],
                "source": str(path),
            })
# Each run's config (its recipe), so that the report can say what was searched.
configs = {label: (Path(run) / "config.toml").read_text() if (Path(run) / "config.toml").exists() else None for label, run in runs.items()}
summary = {"runs": runs, "configs": configs, "ends": ends, "rows": rows}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"wrote {out / 'summary.json'} ({len(rows)} rows)")
EOF
