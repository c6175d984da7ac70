#!/usr/bin/env bash
# Where a chain ADD and DEL spend their time: runs one of the bench's chains through cnitool N
# times with CNI_RS_TRACE=1 inside the sandbox, and prints the median time between consecutive
# trace marks, with cnitool's own start and end around them.
#   scripts/profile.sh [N [POPULATION]]
#     N runs (default 30) with POPULATION containers attached beforehand (default 0); uses
#     target/release and target/tools/cnitool. PROFILE_CONTAINER_IPV6=off disables IPv6 in every
#     container namespace first (see below). Also prints the machine's CPU time per run by kind.
#     PROFILE_CHAIN picks the chain: bridge (default: bridge + host-local + portmap), kind
#     (ptp + host-local + portmap at 0.3.1) or k3s (bridge + host-local + portmap + bandwidth,
#     with the bandwidth capability). PROFILE_PLUGINS=DIR runs another plugin set (the
#     reference's /usr/lib/cni: its plugins print no trace marks, so only the total is shown).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/sandbox.sh" "$@"
n=${1:-30}
population=${2:-0}
plugins=$(realpath "${PROFILE_PLUGINS:-$top/target/release}")
extra_caps=
case ${PROFILE_CHAIN:-bridge} in
bridge) cat > "$NETCONFPATH/prof.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "prof", "plugins": [
  {"type": "bridge", "bridge": "cni-prof", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "dataDir": "$SANDBOX_WORK/ipam", "ranges": [[{"subnet": "10.77.0.0/16"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  ;;
kind) cat > "$NETCONFPATH/prof.conflist" <<JSON
{"cniVersion": "0.3.1", "name": "prof", "plugins": [
  {"type": "ptp", "ipMasq": false, "mtu": 1400,
   "ipam": {"type": "host-local", "dataDir": "$SANDBOX_WORK/ipam", "ranges": [[{"subnet": "10.77.0.0/16"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  ;;
k3s) cat > "$NETCONFPATH/prof.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "prof", "plugins": [
  {"type": "bridge", "bridge": "cni-prof", "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
   "forceAddress": true, "ipMasq": false, "mtu": 1450,
   "ipam": {"type": "host-local", "dataDir": "$SANDBOX_WORK/ipam", "ranges": [[{"subnet": "10.77.0.0/16"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
  {"type": "bandwidth", "capabilities": {"bandwidth": true}}]}
JSON
  extra_caps=',"bandwidth":{"ingressRate":8000000,"ingressBurst":800000,"egressRate":8000000,"egressBurst":800000}'
  ;;
*) echo "profile.sh: PROFILE_CHAIN is bridge, kind or k3s" >&2; exit 2 ;;
esac
for i in $(seq 0 "$n"); do ip netns add "p$i"; done
for i in $(seq 1 "$population"); do ip netns add "bg$i"; done
# PROFILE_CONTAINER_IPV6=off: the control experiment for growth. Every container's IPv6 link-local
# traffic (MLD reports, router solicitations) is multicast that a bridge without a multicast
# querier floods to every port, each copy handled by the softirq of another namespace.
if [ "${PROFILE_CONTAINER_IPV6:-on}" = off ]; then
  for ns in $(ip netns list | cut -d" " -f1); do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
fi
run() { # VERB I: one cnitool run, its trace lines framed by "runtime start" and "runtime end"
  local caps="{\"portMappings\":[{\"hostPort\":$((20000 + $2)),\"containerPort\":80,\"protocol\":\"tcp\"}]$extra_caps}"
  python3 - "$1" "$2" "$caps" "$top" "$plugins" <<'PY'
import os, subprocess, sys, time
verb, i, caps, top, plugins = sys.argv[1:]
env = dict(os.environ, CNI_PATH=plugins, CAP_ARGS=caps, CNI_RS_TRACE="1")
start = time.monotonic_ns()
p = subprocess.run([f"{top}/target/tools/cnitool", verb, "prof", f"/run/netns/p{i}"], env=env, capture_output=True, text=True)
end = time.monotonic_ns()
if p.returncode != 0:
    sys.exit(p.stdout + p.stderr)
print(f"cni-trace cnitool {start} start")
for l in p.stderr.splitlines():
    if l.startswith("cni-trace "):
        print(l)
print(f"cni-trace cnitool {end} end")
PY
}
run add 0 >/dev/null; run del 0 >/dev/null   # warm-up: the bridge and tables exist afterwards
for i in $(seq 1 "$population"); do
  CNI_PATH=$plugins CAP_ARGS="{\"portMappings\":[{\"hostPort\":$((40000 + i)),\"containerPort\":80,\"protocol\":\"tcp\"}]$extra_caps}" \
    "$top/target/tools/cnitool" add prof "/run/netns/bg$i" >/dev/null
done
# CPU time of the whole machine (both CPUs) by kind, in ms, and NET_RX softirqs: what a verb
# costs beyond its own process (a bridge floods a container's broadcasts to every port).
cpu() { python3 -c '
f = open("/proc/stat").readline().split()
hz = 100
print(" ".join(str(int(f[i]) * 1000 // hz) for i in (1, 3, 6, 7)), end=" ")
print(sum(int(x) for x in [l for l in open("/proc/softirqs") if l.split()[0] == "NET_RX:"][0].split()[1:]))'; }
for verb in add del; do
  before=$(cpu)
  for i in $(seq 1 "$n"); do run "$verb" "$i"; echo "--"; done > "$SANDBOX_WORK/$verb.trace"
  after=$(cpu)
  python3 - "$n" "$verb" $before $after <<'PY'
import sys
n, verb, v = int(sys.argv[1]), sys.argv[2].upper(), [int(x) for x in sys.argv[3:]]
d = [b - a for a, b in zip(v[:5], v[5:])]
print(f"\n{verb}: machine CPU per run: user {d[0]/n:.1f} ms, system {d[1]/n:.1f} ms, "
      f"irq {d[2]/n:.1f} ms, softirq {d[3]/n:.1f} ms; NET_RX softirqs {d[4]/n:.0f}")
PY
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
