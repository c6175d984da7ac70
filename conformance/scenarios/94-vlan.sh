# vlan through cnitool: containers on VLAN 100 of the node's uplink reach a switch that answers
# on that VLAN, and each other; side by side with the reference vlan. Bad input is refused on
# any kernel; the rest needs the vlan link type (8021q), which this machine's kernel lacks: it
# runs in the VM lane (make test-vm), where CNI_RS_REQUIRE_KERNEL_FEATURES=1 makes a skip a
# failure.

vlan_list() { # NAME DATADIR [VLAN-KEYS] [VERSION]
  conflist "$1" "{\"cniVersion\":\"${4:-1.0.0}\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"vlan\",\"master\":\"uplink\",\"vlanId\":100 ${3:-},
     \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$2\",\"ranges\":[[{\"subnet\":\"10.94.0.0/24\",\"rangeStart\":\"10.94.0.10\"}]],
              \"routes\":[{\"dst\":\"0.0.0.0/0\"}]}}]}"
}

ip netns add switch
ip link add uplink type veth peer name trunk netns switch
ip link set uplink up
ip -n switch link set trunk up

# Bad input, on any kernel: the spec's error JSON, nothing left.
ip netns add bad
# cnitool prints the error's msg (the JSON itself is checked in crates/plugins/vlan/tests).
while IFS='|' read -r keys want; do
  vlan_list badv "$SANDBOX_WORK/ipam-bad" "$keys"
  check "vlan: refused: $want" bash -c "! out=\$(CNI_PATH=$PLUGIN_DIR $CNITOOL add badv /run/netns/bad 2>&1) && grep -q \"\$1\" <<< \"\$out\"" _ "$want"
done <<'EOF2'
,"vlanId":4095|invalid VLAN ID 4095
,"master":""|"master" field is required
,"master":"nope0"|failed to lookup master "nope0"
,"mtu":9000|invalid MTU 9000
EOF2
check "vlan: ... nothing left in the container" bash -c "test \"\$(ip -n bad -o link show | wc -l)\" = 1"
check "vlan: ... nor in the host" bash -c "! ip -o link show | grep -v -e uplink -e 'lo:' | grep ."
check "vlan: ... no address allocated" bash -c "! ls $SANDBOX_WORK/ipam-bad/badv 2>/dev/null | grep -q '^10\\.'"
ip netns delete bad

if ! ip link add link uplink name probe.5 type vlan id 5 2>/dev/null; then
  if [[ ${CNI_RS_REQUIRE_KERNEL_FEATURES:-} == 1 ]]; then
    fail "vlan: the kernel lacks the vlan link type"
  else
    echo "# vlan: the kernel lacks the vlan link type (the VM lane runs the rest): skipped"
  fi
  return 0
fi
ip link del probe.5

ip -n switch link add link trunk name trunk.100 type vlan id 100
ip -n switch addr add 10.94.0.1/24 dev trunk.100
ip -n switch link set trunk.100 up

vlan_list tagged "$SANDBOX_WORK/ipam-tagged" ',"mtu":1400,"dns":{"nameservers":["10.94.0.53"]}'
ip netns add v1; ip netns add v2
r1=$(CNI_IFNAME=net1 cni add tagged v1)
check "vlan: ADD through cnitool (1.0.0)" json_assert "$r1" \
  "r['interfaces'][0]['name'] == 'net1' and r['interfaces'][0]['sandbox'] == '/run/netns/v1' and r['ips'][0] == {'address': '10.94.0.10/24', 'gateway': '10.94.0.1', 'interface': 0} and r['dns'] == {'nameservers': ['10.94.0.53']}"
check "vlan: a VLAN 100 link of the uplink" bash -c "ip -n v1 -d link show net1 | grep -q 'vlan protocol 802.1Q id 100'"
check "vlan: mtu 1400" bash -c "ip -n v1 link show net1 | grep -q 'mtu 1400'"
check "vlan: nothing new in the host" bash -c "! ip -o link show | grep -v -e uplink -e 'lo:' | grep ."
check "vlan: the container reaches the switch on VLAN 100" ip netns exec v1 ping -c1 -W2 10.94.0.1
# The kernel holds one link per VLAN ID and master, whatever namespace it is in.
check_fails "vlan: a second container on the same VLAN of the same master is refused" \
  env CNI_IFNAME=net1 bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL add tagged /run/netns/v2"
check "vlan: ... and leaves nothing: no link, no address" bash -c \
  "test \"\$(ip -n v2 -o link show | wc -l)\" = 1 && test ! -e $SANDBOX_WORK/ipam-tagged/tagged/10.94.0.11"
check "vlan: CHECK passes" env CNI_IFNAME=net1 bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL check tagged /run/netns/v1"
check "vlan: DEL succeeds" env CNI_IFNAME=net1 bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL del tagged /run/netns/v1"
check "vlan: ... the link is gone and the address released" bash -c \
  "! ip -n v1 link show net1 2>/dev/null && test ! -e $SANDBOX_WORK/ipam-tagged/tagged/10.94.0.10"
check "vlan: a second DEL succeeds" env CNI_IFNAME=net1 bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL del tagged /run/netns/v1"
ip netns delete v2
ip netns add v3
CNI_IFNAME=net1 cni add tagged v3 >/dev/null
ip netns delete v3
check "vlan: DEL after the netns is gone succeeds and releases the address" bash -c \
  "CNI_IFNAME=net1 CNI_PATH=$PLUGIN_DIR $CNITOOL del tagged /run/netns/v3 && ! ls $SANDBOX_WORK/ipam-tagged/tagged | grep -q '^10\\.'"

# The master goes: the reference's DEL fails from then on; ours succeeds and releases.
ip link add uplink2 type veth peer name trunk2 netns switch
ip link set uplink2 up; ip -n switch link set trunk2 up
vlan_list gone "$SANDBOX_WORK/ipam-gone" ',"master":"uplink2"'
ip netns add g1
CNI_IFNAME=net1 cni add gone g1 >/dev/null
check "vlan: (a VLAN of uplink2)" bash -c "ip -n g1 -d link show net1 | grep -q 'id 100'"
ip link del uplink2
check "vlan: DEL after the master is gone succeeds" env CNI_IFNAME=net1 bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL del gone /run/netns/g1"
check "vlan: ... and releases the address" bash -c "! ls $SANDBOX_WORK/ipam-gone/gone | grep -q '^10\\.'"

if has_reference vlan && has_reference host-local; then
  for v in 0.3.1 0.4.0 1.0.0; do
    vlan_list ref "$SANDBOX_WORK/ipam-ref-$v" ',"mtu":1400' "$v"
    vlan_list ours "$SANDBOX_WORK/ipam-ours-$v" ',"mtu":1400' "$v"
    # One after the other: the kernel holds one VLAN 100 of the uplink at a time.
    ip netns add r1; ip netns add o1
    theirs=$(cni --reference add ref r1)
    ref_state=$(ip -n r1 -d link show eth0 | sed 1d | grep -o 'vlan.*id [0-9]*'; ip -n r1 route show | sed 's/proto [a-z]* //')
    cni --reference del ref r1 >/dev/null
    ours=$(cni add ours o1)
    check "vlan: same result as the reference ($v)" same_json "$ours" "$theirs" mac sandbox
    check "vlan: same link and routes as the reference ($v)" bash -c \
      "diff <(echo \"\$1\") <(ip -n o1 -d link show eth0 | sed 1d | grep -o 'vlan.*id [0-9]*'; ip -n o1 route show | sed 's/proto [a-z]* //')" _ "$ref_state"
    cni del ours o1 >/dev/null
    ip netns delete r1; ip netns delete o1
  done
  # The reference's ADD, our DEL.
  ip netns add x1
  cni --reference add ref x1 >/dev/null
  check "vlan: our DEL removes what the reference's ADD made" bash -c \
    "CNI_PATH=$PLUGIN_DIR $CNITOOL del ref /run/netns/x1 && ! ip -n x1 link show eth0 2>/dev/null"
fi
true
