# vrf through cnitool: bridge + vrf, the container's eth0 and its routes in VRF `blue`, traffic
# bound to the VRF reaching the bridge's gateway; a second network joining the same VRF; DEL
# removing the VRF with its last interface; side by side with the reference vrf (our bridge in
# front of either). Bad input is refused on any kernel; the rest needs the vrf link type, which
# this machine's kernel lacks: it runs in the VM lane (make test-vm), where
# CNI_RS_REQUIRE_KERNEL_FEATURES=1 makes a skip a failure.

vrf_list() { # NAME BRIDGE SUBNET DATADIR [VRF-KEYS]
  conflist "$1" "{\"cniVersion\":\"1.0.0\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"bridge\",\"bridge\":\"$2\",\"isGateway\":true,
     \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$4\",\"ranges\":[[{\"subnet\":\"$3\"}]],\"routes\":[{\"dst\":\"0.0.0.0/0\"}]}},
    {\"type\":\"vrf\",\"vrfname\":\"blue\" ${5:-}}]}"
}

# Bad input, on any kernel: refused, and the runtime's DEL cleans up the chain.
ip netns add bad
while IFS='|' read -r keys want; do
  vrf_list badv cni-vrfb 10.97.9.0/24 "$SANDBOX_WORK/ipam-bad" "$keys"
  check "vrf: refused: $want" bash -c "! out=\$(CNI_PATH=$PLUGIN_DIR $CNITOOL add badv /run/netns/bad 2>&1) && grep -q \"\$1\" <<< \"\$out\"" _ "$want"
  cni del badv bad >/dev/null 2>&1
done <<'EOF2'
,"vrfname":""|valid vrf name
,"vrfname":"lo"|Netlink lo is not a VRF
EOF2
check "vrf: ... no VRF left in the container" bash -c "! ip -n bad -d link show | grep -q vrf"
ip netns delete bad

if ! ip link add vrf-probe type vrf table 10 2>/dev/null; then
  if [[ ${CNI_RS_REQUIRE_KERNEL_FEATURES:-} == 1 ]]; then
    fail "vrf: the kernel lacks the vrf link type"
  else
    echo "# vrf: the kernel lacks the vrf link type (the VM lane runs the rest): skipped"
  fi
  return 0
fi
ip link del vrf-probe

vrf_list red1 cni-vrf1 10.97.1.0/24 "$SANDBOX_WORK/ipam-1"
vrf_list red2 cni-vrf2 10.97.2.0/24 "$SANDBOX_WORK/ipam-2" ',"table":1'
ip netns add f1
r=$(cni add red1 f1)
check "vrf: ADD through cnitool (bridge + vrf) passes bridge's result on" json_assert "$r" \
  "r['ips'][0]['address'] == '10.97.1.2/24' and r['interfaces'][2]['name'] == 'eth0'"
check "vrf: a VRF blue on table 1 in the container" bash -c "ip -n f1 -d link show blue | grep -q 'vrf table 1 '"
check "vrf: eth0 is in it" bash -c "ip -n f1 link show eth0 | grep -q 'master blue'"
check "vrf: its routes are in the VRF's table" bash -c \
  "ip -n f1 route show vrf blue | grep -q 'default via 10.97.1.1 dev eth0' && ip -n f1 route show vrf blue | grep -q '10.97.1.0/24 dev eth0'"
check "vrf: ... and not in main" bash -c "! ip -n f1 route show table main | grep -q eth0"
check "vrf: traffic bound to the VRF reaches the gateway" ip netns exec f1 ping -c1 -W2 -I blue 10.97.1.1
check "vrf: CHECK passes" cni check red1 f1
CNI_IFNAME=net1 cni add red2 f1 >/dev/null
check "vrf: a second network joins the same VRF (its table given)" bash -c \
  "ip -n f1 link show net1 | grep -q 'master blue' && test \$(ip -n f1 -d link show type vrf | grep -c 'vrf table') = 1"
check "vrf: ... and reaches its gateway" ip netns exec f1 ping -c1 -W2 -I blue 10.97.2.1
vrf_list green cni-vrf3 10.97.3.0/24 "$SANDBOX_WORK/ipam-3" ',"table":55'
check_fails "vrf: the same VRF with another table is refused" env CNI_IFNAME=net2 bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL add green /run/netns/f1"
CNI_IFNAME=net2 cni del green f1 >/dev/null 2>&1
check "vrf: DEL of the first succeeds" cni del red1 f1
check "vrf: ... the VRF stays for the second" bash -c "ip -n f1 link show blue >/dev/null && ip -n f1 link show net1 | grep -q 'master blue'"
check "vrf: DEL of the last succeeds" env CNI_IFNAME=net1 bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL del red2 /run/netns/f1"
check "vrf: ... and the VRF is gone" bash -c "! ip -n f1 link show blue 2>/dev/null"
check "vrf: a second DEL succeeds" cni del red1 f1
cni add red1 f1 >/dev/null
ip netns delete f1
check "vrf: DEL after the netns is gone succeeds" cni del red1 f1

if has_reference vrf; then
  mixed=$SANDBOX_WORK/mixed-vrf; mkdir -p "$mixed"
  for p in bridge host-local; do ln -sf "$PLUGIN_DIR/$p" "$mixed/$p"; done
  ln -sf "$REFERENCE_DIR/vrf" "$mixed/vrf"
  vrf_list ref cni-vrfr 10.97.4.0/24 "$SANDBOX_WORK/ipam-ref"
  vrf_list ours cni-vrfo 10.97.4.0/24 "$SANDBOX_WORK/ipam-ours"
  # Debian's reference is 1.1.1, older than the re-adding of routes through gateways into the
  # VRF's table (v1.4.0, #874): it loses them, so they are left out of the comparison (the checks
  # above show ours keeps them, as v1.9.1 does).
  state() { ip -n "$1" -d link show blue | grep -o 'vrf table [0-9]*'; { ip -n "$1" route show vrf blue; ip -n "$1" -6 route show vrf blue; } | grep -v -e fe80 -e ' via ' | sed 's/proto [a-z]* //; s/ pref medium//'; }
  ip netns add r1
  theirs=$(CNI_PATH=$mixed "$CNITOOL" add ref /run/netns/r1)
  ref_state=$(state r1)
  CNI_PATH=$mixed "$CNITOOL" del ref /run/netns/r1 >/dev/null; ip netns delete r1
  ip netns add o1
  ours=$(cni add ours o1)
  check "vrf: same result as the reference" same_json "$ours" "$theirs" mac sandbox name
  check "vrf: same VRF and connected routes as the reference" bash -c "$(declare -f state); diff <(echo \"\$1\") <(state o1)" _ "$ref_state"
  cni del ours o1 >/dev/null; ip netns delete o1
  ip netns add x1
  CNI_PATH=$mixed "$CNITOOL" add ref /run/netns/x1 >/dev/null
  check "vrf: our DEL removes what the reference's ADD made" bash -c \
    "CNI_PATH=$PLUGIN_DIR $CNITOOL del ref /run/netns/x1 && ! ip -n x1 link show blue 2>/dev/null"
fi
true
