#!/usr/bin/env bash
# Paired A/B of two usnet binaries on one `usnet bench --serve` workload, streams of CALLS
# back-to-back calls, A and B alternated ROUNDS times; prints each round's medians (ms) and
# the median of the B/A ratios:  bash bench/ab.sh OLD_BIN NEW_BIN infer/b1/w1.0 [ROUNDS] [CALLS]
a=$1; b=$2; wl=$3; rounds=${4:-6}; n=${5:-200}
med() { (yes run | head -$n; echo quit) | "$1" bench --serve "$wl" 2>/dev/null | python3 -c '
import sys, json, statistics
s=[json.loads(l)["s"]*1e3 for l in sys.stdin if l.startswith("{\"s\"")]
print(statistics.median(s[10:]))'; }
rs=()
for i in $(seq $rounds); do
  ta=$(med $a); tb=$(med $b)
  r=$(python3 -c "print($tb/$ta)"); rs+=($r)
  printf "A %.3f B %.3f  B/A %.3f\n" $ta $tb $r
done
python3 -c "import statistics,sys; r=sorted(map(float,sys.argv[1:])); print(f'median B/A {statistics.median(r):.3f}  range {r[0]:.3f}-{r[-1]:.3f}')" ${rs[@]}
