#!/usr/bin/env bash
# Data-parallel scaling on one machine: images/s of the default Fashion-MNIST training with
# 1 process of 1 thread, 1 process of 2 threads, and `mpirun -np 2` processes of 1 thread
# each, and the all-reduce's share of a step; for docs/performance.md.
#
# Usage: bash bench/mpi_scaling.sh [STEPS]   (default 30; needs a `--features mpi` build)
# Reports medians over the steps after the first two (warm-up), from each run's metrics.jsonl,
# and the CPU seconds each run used (less sensitive than wall time to other load).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-30}
BIN=${USNET:-target/release/usnet}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; $STEPS steps each"

run() { # name, command...
  local name=$1; shift
  /usr/bin/time -f "%U %S %e" -o "$OUT/$name.time" "$@" train --max-steps "$STEPS" --output "$OUT/$name" \
    >"$OUT/$name.log" 2>&1 || { echo "$name failed:"; tail -5 "$OUT/$name.log"; exit 1; }
}
RAYON_NUM_THREADS=1 run p1t1 "$BIN"
RAYON_NUM_THREADS=2 run p1t2 "$BIN"
run p2t1 mpirun --allow-run-as-root --oversubscribe -np 2 -x RAYON_NUM_THREADS=1 "$BIN"

python3 - "$OUT" <<'EOF'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
print(f"{'run':<28} {'img/s':>7} {'step s':>7} {'allreduce s':>11} {'share':>6} {'CPU s/img':>9}")
for name, label in [("p1t1", "1 process x 1 thread"), ("p1t2", "1 process x 2 threads"), ("p2t1", "2 processes x 1 thread (MPI)")]:
    rows = [json.loads(l) for l in (out / name / "metrics.jsonl").read_text().splitlines()][2:]
    ips = statistics.median(r["images_per_sec"] for r in rows)
    step = statistics.median(r["step_secs"] for r in rows)
    ar = statistics.median(r["all_reduce_secs"] for r in rows)
    user, sys_, wall = map(float, (out / f"{name}.time").read_text().split()[-3:])
    images = 128 * (len(rows) + 2)  # the default batch_size; CPU time includes start-up
    print(f"{label:<28} {ips:7.1f} {step:7.3f} {ar:11.4f} {ar / step:6.1%} {(user + sys_) / images:9.4f}")
EOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
