# macvlan through cnitool, as a Multus secondary network: static IPAM with the pod's addresses
# and MAC from the runtime (capabilities ips and mac), on an uplink (a veth whose other end is a
# neighbour station on the segment), side by side with the reference macvlan and static.

mv_list() { # NAME MASTER [MACVLAN-KEYS] [VERSION]
  conflist "$1" "{\"cniVersion\":\"${4:-1.0.0}\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"macvlan\",\"master\":\"$2\" ${3:-},\"capabilities\":{\"ips\":true,\"mac\":true},
     \"ipam\":{\"type\":\"static\",\"routes\":[{\"dst\":\"0.0.0.0/0\",\"gw\":\"10.70.0.1\"}],
              \"dns\":{\"nameservers\":[\"10.70.0.53\"]}}}]}"
}
only_lo() { [[ $(ip -n "$1" -o link show | wc -l) == 1 ]]; }

# The segment: the host's uplink0 (10.70.0.1) and a neighbour station (10.70.0.100).
ip netns add world
ip link add uplink0 type veth peer name eth0 netns world
ip addr add 10.70.0.1/24 dev uplink0 && ip link set uplink0 up
ip -n world addr add 10.70.0.100/24 dev eth0 && ip -n world link set eth0 up && ip -n world link set lo up

mv_list mvnet uplink0
ip netns add m1; ip netns add m2
r1=$(CAP_ARGS='{"ips":["10.70.0.11/24"],"mac":"0a:58:0a:46:00:0b"}' cni add mvnet m1)
r2=$(CAP_ARGS='{"ips":["10.70.0.12/24"]}' cni add mvnet m2)
check "macvlan: ADD through cnitool with static IPAM" test -n "$r1" -a -n "$r2"
check "macvlan: the reference's result shape" json_assert "$r1" \
  "r['cniVersion'] == '1.0.0' and r['interfaces'] == [{'name': 'eth0', 'mac': '0a:58:0a:46:00:0b', 'sandbox': '/run/netns/m1'}] and r['ips'] == [{'interface': 0, 'address': '10.70.0.11/24'}] and r['routes'] == [{'dst': '0.0.0.0/0', 'gw': '10.70.0.1'}] and r['dns'] == {'nameservers': ['10.70.0.53']}"
check "macvlan: runtimeConfig.mac is the interface's MAC" bash -c "ip -n m1 link show eth0 | grep -q 'link/ether 0a:58:0a:46:00:0b'"
check "macvlan: a macvlan of uplink0 in bridge mode" bash -c "ip -n m1 -d link show eth0 | grep -q 'macvlan mode bridge'"
check "macvlan: nothing new in the host" bash -c "! ip -o link show | grep -v -e ' lo:' -e uplink0 | grep ."
check "macvlan: the default route via the gateway" bash -c "ip -n m1 route show default | grep -q 'via 10.70.0.1 dev eth0'"
check "macvlan: containers reach each other" ip netns exec m1 ping -c1 -W2 10.70.0.12
check "macvlan: a container reaches the neighbour on the uplink" ip netns exec m2 ping -c1 -W2 10.70.0.100
check "macvlan: the neighbour reaches a container" ip netns exec world ping -c1 -W2 10.70.0.11
check "macvlan: CHECK passes" env CAP_ARGS='{"ips":["10.70.0.11/24"],"mac":"0a:58:0a:46:00:0b"}' \
  bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL check mvnet /run/netns/m1"
ip -n m1 addr flush dev eth0
check_fails "macvlan: CHECK fails once the address is gone" env CAP_ARGS='{"ips":["10.70.0.11/24"]}' \
  bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL check mvnet /run/netns/m1"
check "macvlan: DEL succeeds" cni del mvnet m1
check "macvlan: ... the interface is gone" only_lo m1
check "macvlan: a second DEL succeeds" cni del mvnet m1
ip netns delete m2
check "macvlan: DEL after the netns is gone succeeds" cni del mvnet m2

# Modes, CNI_ARGS MAC, and an L2-only attachment (no ipam).
conflist l2 '{"cniVersion":"1.0.0","name":"l2","plugins":[{"type":"macvlan","master":"uplink0","mode":"private","mtu":1400}]}'
ip netns add l1
rl=$(CNI_ARGS='IgnoreUnknown=1;MAC=0a:58:00:00:00:42' cni add l2 l1)
check "macvlan: L2 only: no addresses in the result" json_assert "$rl" "'ips' not in r and r['interfaces'][0]['mac'] == '0a:58:00:00:00:42'"
check "macvlan: mode private, mtu 1400, up" bash -c "ip -n l1 -d link show eth0 | grep -q 'macvlan mode private' && ip -n l1 link show eth0 | grep -q 'mtu 1400.*state UP\|UP.*mtu 1400'"
check "macvlan: L2 DEL" cni del l2 l1

# Bad input: the spec's error JSON (the plugin run directly, as cnitool prints no JSON), and nothing
# left in the container or the host.
mvplug() { # PLUGIN-DIR CONF
  CNI_COMMAND=ADD CNI_CONTAINERID=bad-1 CNI_NETNS=/run/netns/b1 CNI_IFNAME=eth0 CNI_PATH=$1 "$1/macvlan" <<< "$2"
}
ip netns add b1
for bad in '"mode":"l3"' '"master":"nosuch0"' '"master":"lo"' '"mtu":9000' '"mac":"nonsense"'; do
  conf="{\"cniVersion\":\"1.0.0\",\"name\":\"bad\",\"type\":\"macvlan\",\"master\":\"uplink0\",$bad,
    \"ipam\":{\"type\":\"static\",\"addresses\":[{\"address\":\"10.70.0.21/24\"}]}}"
  out=$(mvplug "$PLUGIN_DIR" "$conf" || true)
  check "macvlan: $bad is refused with the spec's error (code 7)" json_assert "$out" "r['code'] == 7 and r['msg']"
  check "macvlan: ... and leaves nothing" bash -c "$(declare -f only_lo); only_lo b1 && ! ip -o link show | grep -v -e ' lo:' -e uplink0 | grep ."
  if has_reference macvlan; then
    check_fails "macvlan: ... the reference refuses $bad too" mvplug "$REFERENCE_DIR" "$conf"
    ip -n b1 link del eth0 2>/dev/null
  fi
done
# A gateway outside the address's subnet: IPAM answers, the route cannot be added; all undone.
conflist gw '{"cniVersion":"1.0.0","name":"gw","plugins":[{"type":"macvlan","master":"uplink0",
  "ipam":{"type":"static","addresses":[{"address":"10.70.0.22/24","gateway":"10.99.0.1"}],"routes":[{"dst":"0.0.0.0/0"}]}}]}'
check_fails "macvlan: a gateway outside the subnet fails the ADD" cni add gw b1
check "macvlan: ... and leaves nothing" only_lo b1

if has_reference macvlan && has_reference static; then
  mv_list ref uplink0
  ip netns add r1; ip netns add o1
  theirs=$(CAP_ARGS='{"ips":["10.70.0.31/24"],"mac":"0a:58:0a:46:00:1f"}' cni --reference add ref r1)
  # Two macvlans of one master cannot share a MAC (the kernel refuses to bring the second up).
  ours=$(CAP_ARGS='{"ips":["10.70.0.32/24"],"mac":"0a:58:0a:46:00:20"}' cni add ref o1)
  # dns too: the reference reports the config's (empty) dns and drops what static gave; ours
  # reports IPAM's unless the config says something (as our ptp and bridge).
  check "macvlan: same result as the reference but for sandbox, MAC, address and dns" same_json \
    "$(sed 's/10.70.0.32/10.70.0.31/' <<< "$ours")" "$theirs" sandbox mac dns
  check "macvlan: a MAC clash fails the ADD and leaves nothing" bash -c \
    "ip netns add o2 && ! CAP_ARGS='{\"ips\":[\"10.70.0.33/24\"],\"mac\":\"0a:58:0a:46:00:20\"}' CNI_PATH=$PLUGIN_DIR $CNITOOL add ref /run/netns/o2 \
     && [[ \$(ip -n o2 -o link show | wc -l) == 1 ]]"
  check "macvlan: same container routes as the reference" bash -c \
    "diff <(ip -n r1 route show | sed 's/proto [a-z]* //') <(ip -n o1 route show | sed 's/proto [a-z]* //;s/10.70.0.32/10.70.0.31/')"
  check "macvlan: same link as the reference (kind, mode, MTU, state)" bash -c \
    "diff <(ip -n r1 -d -o link show eth0 | grep -o ' mtu [0-9]*\|state [A-Z]*\|macvlan mode [a-z]*') \
          <(ip -n o1 -d -o link show eth0 | grep -o ' mtu [0-9]*\|state [A-Z]*\|macvlan mode [a-z]*')"
  cni del ref o1 >/dev/null
  check "macvlan: our DEL removes an attachment the reference made" cni del ref r1
  check "macvlan: ... its interface is gone" only_lo r1
fi
true
