# bridge + host-local + loopback through cnitool: Docker's default bridge network.

bridge_list() { # NAME BRIDGE DATADIR SUBNET [EXTRA-KEYS]
  conflist "$1" "{\"cniVersion\":\"1.0.0\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"bridge\",\"bridge\":\"$2\",\"isGateway\":true,\"isDefaultGateway\":true,\"ipMasq\":true ${5:-},
     \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$3\",\"ranges\":[[{\"subnet\":\"$4\"}]]}},
    {\"type\":\"loopback\"}]}"
}

bridge_list web br-web "$SANDBOX_WORK/ipam-web" 10.50.0.0/24
ip netns add w1; ip netns add w2
r1=$(cni add web w1); r2=$(cni add web w2)
check "bridge: ADD gives the reference's result shape" json_assert "$r1" \
  "[i['name'] for i in r['interfaces']][0] == 'br-web' and r['interfaces'][1]['name'].startswith('veth') and r['interfaces'][2] == {'name': 'eth0', 'mac': r['interfaces'][2]['mac'], 'sandbox': '/run/netns/w1'} and r['ips'] == [{'interface': 2, 'address': '10.50.0.2/24', 'gateway': '10.50.0.1'}]"
check "bridge: containers reach each other" ip netns exec w1 ping -c1 -W1 10.50.0.3
check "bridge: containers reach the gateway" ip netns exec w2 ping -c1 -W1 10.50.0.1
check "bridge: lo is up too (loopback in the chain)" link_up w1 lo
check "bridge: CHECK passes" cni check web w1
check "bridge: masquerade entry installed" bash -c "nft list table inet cni_bridge | grep -q 'ip saddr 10.50.0.2 ip daddr != 10.50.0.0/24 masquerade'"
veth1=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["interfaces"][1]["name"])' "$r1")
check "bridge: DEL succeeds" cni del web w1
check "bridge: ... the host veth is gone" bash -c "! ip link show $veth1 2>/dev/null"
check "bridge: ... the address is released" test ! -e "$SANDBOX_WORK/ipam-web/web/10.50.0.2"
check "bridge: ... the masquerade entry is gone" bash -c "! nft list table inet cni_bridge | grep -q 10.50.0.2"
check "bridge: a second DEL succeeds" cni del web w1
ip netns delete w2
check "bridge: DEL after the netns is gone succeeds" cni del web w2
check "bridge: ... and leaves no entry behind" bash -c "! nft list table inet cni_bridge | grep -q 10.50.0.3"
check "bridge: ... nor the address" test ! -e "$SANDBOX_WORK/ipam-web/web/10.50.0.3"

if has_reference bridge && has_reference host-local; then
  bridge_list ref br-ref "$SANDBOX_WORK/ipam-ref" 10.60.0.0/24
  bridge_list ours br-ours "$SANDBOX_WORK/ipam-ours" 10.60.0.0/24
  ip netns add r1; ip netns add o1
  theirs=$(cni --reference add ref r1); ours=$(cni add ours o1)
  check "bridge: same result shape and addresses as the reference" python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
shape = lambda r: ([sorted(i) for i in r["interfaces"]], r["ips"], r.get("routes"), r["interfaces"][2]["name"])
assert shape(a) == shape(b), (shape(a), shape(b))' "$ours" "$theirs"
  cni --reference del ref r1 >/dev/null; cni del ours o1 >/dev/null

  # The reference masquerades with iptables; with ipMasqBackend iptables our DEL removes its chain.
  bridge_list compat br-compat "$SANDBOX_WORK/ipam-compat" 10.61.0.0/24
  ip netns add x1
  cni --reference add compat x1 >/dev/null
  check "bridge: the reference installed its iptables chain" bash -c "iptables-save -t nat | grep -q 'id: \\\\\"cnitool-'"
  bridge_list compat br-compat "$SANDBOX_WORK/ipam-compat" 10.61.0.0/24 ',"ipMasqBackend":"iptables"'
  check "bridge: our DEL removes the reference's masquerade rules" cni del compat x1
  check "bridge: ... leaving no CNI chain" bash -c "! iptables-save -t nat | grep -q '^:CNI-'"
fi
true
