# ipvlan through cnitool: containers on ipvlans of the node's uplink (l2: on the neighbour's
# subnet; l3: a subnet of their own, routed by the node) reach a neighbour and each other; side by
# side with the reference ipvlan. Bad input is refused on any kernel; the rest needs the ipvlan
# link type, which this machine's kernel lacks: it runs in the VM lane (make test-vm), where
# CNI_RS_REQUIRE_KERNEL_FEATURES=1 makes a skip a failure.

ipvlan_list() { # NAME DATADIR SUBNET [IPVLAN-KEYS] [VERSION]
  conflist "$1" "{\"cniVersion\":\"${5:-1.0.0}\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"ipvlan\",\"master\":\"uplink\",
     \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$2\",\"ranges\":[[{\"subnet\":\"$3\",\"rangeStart\":\"${3%.0/24}.10\"}]],
              \"routes\":[{\"dst\":\"0.0.0.0/0\"}]} ${4:-}}]}"
}

ip netns add nb
ip link add uplink type veth peer name peer netns nb
ip addr add 10.95.0.2/24 dev uplink && ip link set uplink up
ip -n nb addr add 10.95.0.1/24 dev peer && ip -n nb link set peer up && ip -n nb link set lo up
ip -n nb route add 10.96.0.0/24 via 10.95.0.2

# Bad input, on any kernel: refused, nothing left.
ip netns add bad
while IFS='|' read -r keys want; do
  ipvlan_list badi "$SANDBOX_WORK/ipam-bad" 10.95.0.0/24 "$keys"
  check "ipvlan: refused: $want" bash -c "! out=\$(CNI_PATH=$PLUGIN_DIR $CNITOOL add badi /run/netns/bad 2>&1) && grep -q \"\$1\" <<< \"\$out\"" _ "$want"
done <<'EOF2'
,"mode":"l4"|unknown ipvlan mode: "l4"
,"master":"nope0"|failed to lookup master "nope0"
,"mtu":9000|invalid MTU 9000
,"mode":"l3","ipam":{}|ipvlan mode l3 needs addresses
EOF2
check "ipvlan: ... nothing left in the container" bash -c "test \"\$(ip -n bad -o link show | wc -l)\" = 1"
check "ipvlan: ... nor in the host" bash -c "! ip -o link show | grep -v -e uplink -e 'lo:' | grep ."
check "ipvlan: ... no address allocated" bash -c "! ls $SANDBOX_WORK/ipam-bad/badi 2>/dev/null | grep -q '^10\\.'"
ip netns delete bad

if ! ip link add link uplink name probe0 type ipvlan mode l2 2>/dev/null; then
  if [[ ${CNI_RS_REQUIRE_KERNEL_FEATURES:-} == 1 ]]; then
    fail "ipvlan: the kernel lacks the ipvlan link type"
  else
    echo "# ipvlan: the kernel lacks the ipvlan link type (the VM lane runs the rest): skipped"
  fi
  return 0
fi
ip link del probe0

ipvlan_list l2net "$SANDBOX_WORK/ipam-l2" 10.95.0.0/24 ',"dns":{"nameservers":["10.95.0.53"]}'
ip netns add i1; ip netns add i2
r1=$(cni add l2net i1); cni add l2net i2 >/dev/null
check "ipvlan: ADD through cnitool (l2, 1.0.0)" json_assert "$r1" \
  "r['interfaces'][0]['name'] == 'eth0' and r['interfaces'][0]['sandbox'] == '/run/netns/i1' and r['ips'][0] == {'address': '10.95.0.10/24', 'gateway': '10.95.0.1', 'interface': 0} and r['dns'] == {'nameservers': ['10.95.0.53']}"
check "ipvlan: an l2 ipvlan of the uplink" bash -c "ip -n i1 -d link show eth0 | grep -q 'ipvlan  *mode l2'"
check "ipvlan: ... with the uplink's MAC" bash -c "test \"\$(ip -n i1 -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0][\"address\"])')\" = \"\$(cat /sys/class/net/uplink/address)\""
check "ipvlan: nothing new in the host" bash -c "! ip -o link show | grep -v -e uplink -e 'lo:' | grep ."
check "ipvlan: the container reaches the neighbour" ip netns exec i1 ping -c1 -W2 10.95.0.1
check "ipvlan: ... and the other container" ip netns exec i1 ping -c1 -W2 10.95.0.11
check "ipvlan: CHECK passes" cni check l2net i1
check "ipvlan: DEL succeeds" cni del l2net i1
check "ipvlan: ... the link is gone and the address released" bash -c \
  "! ip -n i1 link show eth0 2>/dev/null && test ! -e $SANDBOX_WORK/ipam-l2/l2net/10.95.0.10"
check "ipvlan: a second DEL succeeds" cni del l2net i1
ip netns delete i2
check "ipvlan: DEL after the netns is gone succeeds and releases the address" bash -c \
  "CNI_PATH=$PLUGIN_DIR $CNITOOL del l2net /run/netns/i2 && test ! -e $SANDBOX_WORK/ipam-l2/l2net/10.95.0.11"

ipvlan_list l3net "$SANDBOX_WORK/ipam-l3" 10.96.0.0/24 ',"mode":"l3","mtu":1400'
ip netns add j1
cni add l3net j1 >/dev/null
check "ipvlan: an l3 ipvlan, mtu 1400" bash -c "ip -n j1 -d link show eth0 | grep -q 'mtu 1400' && ip -n j1 -d link show eth0 | grep -q 'ipvlan  *mode l3 '"
check "ipvlan: l3: the neighbour is reached through the node's routing" ip netns exec j1 ping -c1 -W2 10.95.0.1
check "ipvlan: l3: CHECK passes" cni check l3net j1
check "ipvlan: l3: DEL succeeds" cni del l3net j1

if has_reference ipvlan && has_reference host-local; then
  for v in 0.3.1 0.4.0 1.0.0; do
    ipvlan_list ref "$SANDBOX_WORK/ipam-ref-$v" 10.95.0.0/24 ',"mtu":1400' "$v"
    ipvlan_list ours "$SANDBOX_WORK/ipam-ours-$v" 10.95.0.0/24 ',"mtu":1400' "$v"
    ip netns add r1
    theirs=$(cni --reference add ref r1)
    ref_state=$(ip -n r1 -d link show eth0 | sed 1d | grep -o 'ipvlan *mode [a-z0-9]*'; ip -n r1 route show | sed 's/proto [a-z]* //')
    cni --reference del ref r1 >/dev/null; ip netns delete r1
    ip netns add o1
    ours=$(cni add ours o1)
    check "ipvlan: same result as the reference ($v)" same_json "$ours" "$theirs" mac sandbox
    check "ipvlan: same link and routes as the reference ($v)" bash -c \
      "diff <(echo \"\$1\") <(ip -n o1 -d link show eth0 | sed 1d | grep -o 'ipvlan *mode [a-z0-9]*'; ip -n o1 route show | sed 's/proto [a-z]* //')" _ "$ref_state"
    cni del ours o1 >/dev/null; ip netns delete o1
  done
  ip netns add x1
  cni --reference add ref x1 >/dev/null
  check "ipvlan: our DEL removes what the reference's ADD made" bash -c \
    "CNI_PATH=$PLUGIN_DIR $CNITOOL del ref /run/netns/x1 && ! ip -n x1 link show eth0 2>/dev/null"
fi
true
