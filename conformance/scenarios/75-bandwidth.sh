# k3s's chain through cnitool: bridge + host-local + portmap + bandwidth at cniVersion 1.0.0, as
# flannel's delegate writes it, with the pod's bandwidth annotations passed as the `bandwidth`
# capability (runtimeConfig.bandwidth). The limits are measured with iperf3 between the container
# and the host at 4 and 2 Mbit/s (low enough that a loaded machine cannot fall below them), side
# by side with the reference bandwidth plugin.

k3s_list() { # NAME BRIDGE DATADIR SUBNET
  conflist "$1" "{\"cniVersion\":\"1.0.0\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"bridge\",\"bridge\":\"$2\",\"isGateway\":true,\"isDefaultGateway\":true,\"hairpinMode\":true,
     \"forceAddress\":true,\"ipMasq\":false,\"mtu\":1450,
     \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$3\",\"ranges\":[[{\"subnet\":\"$4\"}]],\"routes\":[{\"dst\":\"10.42.0.0/16\"}]}},
    {\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true},\"snat\":true},
    {\"type\":\"bandwidth\",\"capabilities\":{\"bandwidth\":true}}]}"
}
field() { python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }
# tc_field DEV KIND EXPR: EXPR of the first qdisc of KIND on DEV (as `tc -j` shows it).
tc_field() { python3 -c '
import json, subprocess, sys
qs = json.loads(subprocess.run(["tc", "-j", "qdisc", "show", "dev", sys.argv[1]], capture_output=True, text=True).stdout or "[]")
q = next(q for q in qs if q["kind"] == sys.argv[2])
print(eval(sys.argv[3]))' "$@"; }

# iperf_rate NETNS GATEWAY PORT [-R]: bits per second from NETNS to the host's iperf3 server (or, with -R,
# from the server to NETNS) over 3 seconds, as the receiver counted them. Bounded by timeouts.
iperf_rate() {
  timeout 20 iperf3 -s -1 -B "$2" -p "$3" >/dev/null 2>&1 &
  local server=$!
  for _ in $(seq 50); do ss -Hltn "sport = :$3" | grep -q . && break; sleep 0.1; done
  timeout 20 ip netns exec "$1" iperf3 -c "$2" -p "$3" -t 3 -J ${4:-} |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))'
  wait $server 2>/dev/null
}
within() { python3 -c 'import sys; m, r = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if 0.5 * r <= m <= 1.3 * r else 1)' "$1" "$2"; }

if ! command -v iperf3 >/dev/null; then
  fail "bandwidth: iperf3 is missing (scripts/deps.sh installs it)"
  return 0 2>/dev/null || exit 0
fi

k3s_list cbr0 cni0 "$SANDBOX_WORK/ipam-k3s" 10.42.0.0/24
limits='{"bandwidth":{"ingressRate":4000000,"ingressBurst":524288,"egressRate":2000000,"egressBurst":524288}}'
ip netns add b1
r=$(CAP_ARGS=$limits cni add cbr0 b1)
check "bandwidth: ADD of the k3s chain with the bandwidth capability" test -n "$r"
ifb=$(field "$r" "[i['name'] for i in r['interfaces'] if i['name'].startswith('bwp')][0]")
veth=$(field "$r" "r['interfaces'][1]['name']")
check "bandwidth: the result lists the ifb device" json_assert "$r" "len(r['interfaces']) == 4 and r['interfaces'][3]['name'].startswith('bwp') and len(r['interfaces'][3]['name']) == 15"
check "bandwidth: tbf at 4 Mbit/s on the host veth" test "$(tc_field "$veth" tbf "q['options']['rate']")" = 500000
check "bandwidth: tbf at 2 Mbit/s on the ifb" test "$(tc_field "$ifb" tbf "q['options']['rate']")" = 250000
check "bandwidth: the host veth's ingress is redirected to the ifb" bash -c "tc filter show dev $veth ingress | grep -q 'Redirect to device $ifb'"
check "bandwidth: the ifb has the veth's mtu" bash -c "ip link show $ifb | grep -q 'mtu 1450'"

ip netns exec b1 ip link set lo up
into=$(iperf_rate b1 10.42.0.1 5201 -R)
out=$(iperf_rate b1 10.42.0.1 5202)
echo "# measured into the container: ${into:-?} bit/s (limit 4000000), out of it: ${out:-?} bit/s (limit 2000000)"
check "bandwidth: traffic into the container runs at 0.5-1.3x of 4 Mbit/s" within "${into:-0}" 4000000
check "bandwidth: traffic out of the container runs at 0.5-1.3x of 2 Mbit/s" within "${out:-0}" 2000000
check "bandwidth: CHECK passes" env CAP_ARGS="$limits" bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL check cbr0 /run/netns/b1"

check "bandwidth: DEL succeeds" env CAP_ARGS="$limits" bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL del cbr0 /run/netns/b1"
check "bandwidth: ... the ifb is gone" bash -c "! ip link show $ifb 2>/dev/null"
check "bandwidth: ... and the veth with its qdiscs" bash -c "! ip link show $veth 2>/dev/null && ! tc qdisc show | grep -q tbf"
check "bandwidth: a second DEL succeeds" cni del cbr0 b1

ip netns add b2
r2=$(CAP_ARGS=$limits cni add cbr0 b2)
ifb2=$(field "$r2" "r['interfaces'][3]['name']")
ip netns delete b2
check "bandwidth: DEL after the netns is gone succeeds" cni del cbr0 b2
check "bandwidth: ... and removes the ifb" bash -c "! ip link show $ifb2 2>/dev/null"
check "bandwidth: nothing is left: no ifb, no tbf, no ingress qdisc" bash -c \
  "! ip -o link show type ifb | grep -q . && ! tc qdisc show | grep -Eq 'tbf|ingress'"

if has_reference bandwidth && has_reference bridge && has_reference host-local && has_reference portmap; then
  k3s_list ref cni1 "$SANDBOX_WORK/ipam-ref" 10.43.0.0/24
  k3s_list ours cni2 "$SANDBOX_WORK/ipam-ours" 10.44.0.0/24
  ip netns add r1; ip netns add o1
  theirs=$(CAP_ARGS=$limits cni --reference add ref r1); ours=$(CAP_ARGS=$limits cni add ours o1)
  check "bandwidth: same result shape as the reference" python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
shape = lambda r: [sorted(i) for i in r["interfaces"]]
assert shape(a) == shape(b) and a["interfaces"][3]["name"].startswith("bwp"), (shape(a), shape(b))' "$ours" "$theirs"
  rv=$(field "$theirs" "r['interfaces'][1]['name']"); ov=$(field "$ours" "r['interfaces'][1]['name']")
  ri=$(field "$theirs" "r['interfaces'][3]['name']"); oi=$(field "$ours" "r['interfaces'][3]['name']")
  same_tbf() { local a b; a=$(tc_field "$1" tbf "q['options']") && b=$(tc_field "$2" tbf "q['options']") && echo "reference: $a; ours: $b" && [[ -n $a && $a == "$b" ]]; }
  check "bandwidth: the same tbf as the reference's on the veth (rate, burst, limit)" same_tbf "$rv" "$ov"
  check "bandwidth: ... and on the ifb" same_tbf "$ri" "$oi"
  # libcni caches the result as <network>-<containerID>-<ifname>: the container ID cnitool made up.
  cid=$(ls /var/lib/cni/results | sed -n 's/^ref-\(.*\)-eth0$/\1/p')
  check "bandwidth: the ifb is named as the reference names it" test "$ri" = "$(python3 -c '
import hashlib, sys
print("bwp" + hashlib.sha512(("ref" + sys.argv[1]).encode()).hexdigest()[:12])' "$cid")"
  # Switching live: our DEL removes the reference's ifb, and the reference's DEL ours.
  check "bandwidth: our DEL removes what the reference's ADD made" cni del ref r1
  check "bandwidth: ... its ifb" bash -c "! ip link show $ri 2>/dev/null"
  check "bandwidth: the reference's DEL removes what ours made" cni --reference del ours o1
  check "bandwidth: ... our ifb" bash -c "! ip link show $oi 2>/dev/null"
fi
true
