#!/usr/bin/env bash
# Where a chain ADD and DEL spend their time: runs the bench's chain (bridge + host-local +
# portmap through cnitool) N times with CNI_RS_TRACE=1 inside the sandbox, and prints the median
# time between consecutive trace marks, with cnitool's own start and end around them.
#   scripts/profile.sh [N [POPULATION]]
#     N runs (default 30) with POPULATION containers attached beforehand (default 0); uses
#     target/release and target/tools/cnitool
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/sandbox.sh" "$@"
n=${1:-30}
population=${2:-0}
cat > "$NETCONFPATH/prof.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "prof", "plugins": [
  {"type": "bridge", "bridge": "cni-prof", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "dataDir": "$SANDBOX_WORK/ipam", "ranges": [[{"subnet": "10.77.0.0/16"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
for i in $(seq 0 "$n"); do ip netns add "p$i"; done
for i in $(seq 1 "$population"); do ip netns add "bg$i"; done
run() { # VERB I: one cnitool run, its trace lines framed by "runtime start" and "runtime end"
  local caps="{\"portMappings\":[{\"hostPort\":$((20000 + $2)),\"containerPort\":80,\"protocol\":\"tcp\"}]}"
  python3 - "$1" "$2" "$caps" "$top" <<'PY'
import os, subprocess, sys, time
verb, i, caps, top = sys.argv[1:]
env = dict(os.environ, CNI_PATH=f"{top}/target/release", CAP_ARGS=caps, CNI_RS_TRACE="1")
start = time.monotonic_ns()
p = subprocess.run([f"{top}/target/tools/cnitool", verb, "prof", f"/run/netns/p{i}"], env=env, capture_output=True, text=True)
end = time.monotonic_ns()
if p.returncode != 0:
    sys.exit(p.stdout + p.stderr)
print(f"cni-trace cnitool {start} start")
print("\n".join(l for l in p.stderr.splitlines() if l.startswith("cni-trace ")))
print(f"cni-trace cnitool {end} end")
PY
}
run add 0 >/dev/null; run del 0 >/dev/null   # warm-up: the bridge and tables exist afterwards
for i in $(seq 1 "$population"); do
  CNI_PATH=$top/target/release CAP_ARGS="{\"portMappings\":[{\"hostPort\":$((40000 + i)),\"containerPort\":80,\"protocol\":\"tcp\"}]}" \
    "$top/target/tools/cnitool" add prof "/run/netns/bg$i" >/dev/null
done
for verb in add del; do
  for i in $(seq 1 "$n"); do run "$verb" "$i"; echo "--"; done > "$SANDBOX_WORK/$verb.trace"
  python3 - "$SANDBOX_WORK/$verb.trace" "$verb" <<'PY'
import statistics, sys
runs, cur = [], []
for line in open(sys.argv[1]):
    if line.startswith("--"):
        # A delegate's lines reach stderr after its caller's, so order by time.
        runs.append(sorted(cur, key=lambda m: m[1])); cur = []
    else:
        _, who, ns, step = line.split(None, 3)
        cur.append((f"{who}: {step.strip()}", int(ns)))
steps = {}
for r in runs:
    for (prev, t0), (name, t1) in zip(r, r[1:]):
        steps.setdefault(f"{prev}  ->  {name}", []).append((t1 - t0) / 1e6)
total = statistics.median((r[-1][1] - r[0][1]) / 1e6 for r in runs)
print(f"\n{sys.argv[2].upper()}: median {total:.2f} ms over {len(runs)} runs; median of each interval:")
order = [f"{a[0]}  ->  {b[0]}" for a, b in zip(runs[0], runs[0][1:])]
for k in order:
    print(f"  {statistics.median(steps[k]):7.2f} ms  {k}")
PY
done
