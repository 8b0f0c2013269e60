# Per-call-index medians of a usnet worker in bursts 50 ms apart (run from the repository root):
#   python3 bench/burst.py target/release/usnet infer/b1/w0.5 16 40 [THREADS]
import subprocess, sys, json, time, statistics, os
binp, wl, L, B = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
env = dict(os.environ)
if len(sys.argv) > 5: env['RAYON_NUM_THREADS'] = sys.argv[5]

p = subprocess.Popen([binp, 'bench', '--serve', wl], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)
while '"ready"' not in p.stdout.readline(): pass
res = [[] for _ in range(L)]
for b in range(B):
    for j in range(L):
        p.stdin.write('run\n'); p.stdin.flush()
        res[j].append(json.loads(p.stdout.readline())['s'] * 1e3)
    time.sleep(0.05)
p.stdin.write('quit\n'); p.stdin.flush()
print(wl, ' '.join(f"{statistics.median(r):.2f}" for r in res))
