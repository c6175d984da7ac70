# dummy through cnitool, with static IPAM. Debian's reference suite (1.1.1) has no dummy: the
# expectations are upstream v1.9.1's documented behaviour (a dummy named CNI_IFNAME in the
# container holding the IPAM addresses, one interface in the result, IPAM required). The dummy
# link type is missing from this machine's kernel: the scenario runs in the VM lane
# (scripts/test-vm.sh), and here says it is skipped, unless CNI_RS_REQUIRE_KERNEL_FEATURES=1.

ip netns add dprobe
if ! ip -n dprobe link add probe0 type dummy 2>/dev/null; then
  ip netns delete dprobe
  if [[ ${CNI_RS_REQUIRE_KERNEL_FEATURES:-} == 1 ]]; then
    fail "dummy: the kernel lacks the dummy link type (CNI_RS_REQUIRE_KERNEL_FEATURES=1 forbids skipping)"
  else
    echo "# skipped: kernel lacks the dummy link type (93-dummy)"
  fi
  return 0
fi
ip netns delete dprobe

conflist dum '{"cniVersion":"1.0.0","name":"dum","plugins":[{"type":"dummy","capabilities":{"ips":true},
  "ipam":{"type":"static","routes":[{"dst":"192.168.0.0/16","gw":"10.93.0.1"}]}}]}'
ip netns add d1
r=$(CAP_ARGS='{"ips":["10.93.0.5/24","fd93::5/64"]}' cni add dum d1)
check "dummy: upstream's result shape" json_assert "$r" \
  "r['interfaces'][0]['name'] == 'eth0' and r['interfaces'][0]['sandbox'] == '/run/netns/d1' and r['ips'] == [{'interface': 0, 'address': '10.93.0.5/24'}, {'interface': 0, 'address': 'fd93::5/64'}]"
check "dummy: a dummy link holding the addresses, up" bash -c \
  "ip -n d1 -d link show eth0 | grep -q 'dummy' && ip -n d1 -o addr show dev eth0 | grep -q 'inet 10.93.0.5/24' && ip -n d1 -o addr show dev eth0 | grep -q 'inet6 fd93::5/64'"
check "dummy: the route through the gateway" bash -c "ip -n d1 route show 192.168.0.0/16 | grep -q 'via 10.93.0.1 dev eth0'"
ip -n d1 link set lo up
check "dummy: the container reaches its own address" ip netns exec d1 ping -c1 -W2 10.93.0.5
check "dummy: CHECK passes" env CAP_ARGS='{"ips":["10.93.0.5/24","fd93::5/64"]}' bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL check dum /run/netns/d1"
ip -n d1 route del 192.168.0.0/16
check_fails "dummy: CHECK fails once the route is gone" env CAP_ARGS='{"ips":["10.93.0.5/24","fd93::5/64"]}' \
  bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL check dum /run/netns/d1"
check "dummy: DEL succeeds" cni del dum d1
check "dummy: ... the link is gone" bash -c "[[ \$(ip -n d1 -o link show | wc -l) == 1 ]]"
check "dummy: a second DEL succeeds" cni del dum d1
ip netns delete d1
check "dummy: DEL after the netns is gone succeeds" cni del dum d1

ip netns add d2
out=$(CNI_COMMAND=ADD CNI_CONTAINERID=d2 CNI_NETNS=/run/netns/d2 CNI_IFNAME=eth0 CNI_PATH=$PLUGIN_DIR "$PLUGIN_DIR/dummy" \
  <<< '{"cniVersion":"1.0.0","name":"d","type":"dummy"}' || true)
check "dummy: no ipam is the spec's error (code 7)" json_assert "$out" \
  "r['code'] == 7 and r['msg'] == 'dummy interface requires an IPAM configuration'"
check "dummy: ... and leaves nothing" bash -c "[[ \$(ip -n d2 -o link show | wc -l) == 1 ]]"
true
