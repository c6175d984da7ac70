# host-device + host-local + loopback through cnitool: a container gets a host interface itself
# (one end of a veth here; the other end, in namespace "seg", stands for the network it leads to).

segment() { # HOST-END SEGMENT-END: a fresh "host device" leading to the segment at 192.0.2.2
  ip netns list | grep -qw seg || { ip netns add seg; ip -n seg link set lo up; }
  ip link add "$1" type veth peer name "$2" netns seg
  ip -n seg addr add 192.0.2.2/24 dev "$2" 2>/dev/null
  ip -n seg link set "$2" up
  ip link set "$1" up
}

device_list() { # NAME DEVICE DATADIR
  conflist "$1" "{\"cniVersion\":\"1.0.0\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"host-device\",\"device\":\"$2\",
     \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$3\",\"ranges\":[[{\"subnet\":\"192.0.2.0/24\",\"rangeStart\":\"192.0.2.10\"}]]}},
    {\"type\":\"loopback\"}]}"
}

# ping_soon NETNS ADDRESS: the segment end's queue starts up to a second after its carrier.
ping_soon() { ip netns exec "$1" ping -c1 -w3 "$2"; }

status_list() { # the conflist as a 1.1.0 STATUS request for the plugin alone
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); p=c["plugins"][0]; p.update(cniVersion="1.1.0", name=c["name"]); print(json.dumps(p))' "$NETCONFPATH/hostnet.conflist"
}
export -f status_list

# has_alias [-n NETNS] LINK ALIAS: the link exists and its alias is ALIAS (empty: none).
has_alias() {
  local ns=()
  if [[ $1 == -n ]]; then ns=(-n "$2"); shift 2; fi
  [[ $(ip "${ns[@]}" -j link show "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0].get("ifalias",""))') == "$2" ]]
}

segment hd0 seg0
device_list hostnet hd0 "$SANDBOX_WORK/ipam-hd"
mac=$(cat /sys/class/net/hd0/address)
ip netns add h1
r=$(cni add hostnet h1)
check "host-device: ADD gives the reference's result shape" json_assert "$r" \
  "r['interfaces'][0] == {'name': 'eth0', 'mac': '$mac', 'sandbox': '/run/netns/h1'} and r['ips'] == [{'address': '192.0.2.10/24', 'gateway': '192.0.2.1', 'interface': 0}]"
check "host-device: the device left the host" bash -c "! ip link show hd0 2>/dev/null"
check "host-device: ... is eth0 in the container with its MAC" \
  bash -c "[[ \$(ip netns exec h1 cat /sys/class/net/eth0/address) == $mac ]]"
check "host-device: ... up" link_up h1 eth0
check "host-device: ... remembering its host name" has_alias -n h1 eth0 hd0
check "host-device: ... and reaches its segment" ping_soon h1 192.0.2.2
check "host-device: CHECK passes" cni check hostnet h1
check "host-device: the address is allocated" test -e "$SANDBOX_WORK/ipam-hd/hostnet/192.0.2.10"
check "host-device: STATUS counts a device in a pinned container as present" \
  bash -c "status_list | CNI_COMMAND=STATUS CNI_PATH=$PLUGIN_DIR $PLUGIN_DIR/host-device"
check "host-device: DEL succeeds" cni del hostnet h1
check "host-device: ... hd0 is back in the host with its MAC" bash -c "[[ \$(cat /sys/class/net/hd0/address) == $mac ]]"
check "host-device: ... without the alias" has_alias hd0 ''
check "host-device: ... the address is released" test ! -e "$SANDBOX_WORK/ipam-hd/hostnet/192.0.2.10"
check "host-device: a second DEL succeeds" cni del hostnet h1

ip netns add h2
check "host-device: ADD again" cni add hostnet h2
check "host-device: ... allocates an address" bash -c "ls $SANDBOX_WORK/ipam-hd/hostnet | grep -q '^192'"
ip netns delete h2
check "host-device: DEL after the netns is gone succeeds" cni del hostnet h2
check "host-device: ... and releases the address" bash -c "! ls $SANDBOX_WORK/ipam-hd/hostnet | grep -q '^192'"

if has_reference host-device && has_reference host-local; then
  segment hd1 seg1
  device_list ref hd1 "$SANDBOX_WORK/ipam-ref"
  device_list ours hd1 "$SANDBOX_WORK/ipam-ours"
  ip netns add r1
  theirs=$(cni --reference add ref r1)
  cni --reference del ref r1 >/dev/null
  ours=$(cni add ours r1)
  check "host-device: same result as the reference" same_json "$ours" "$theirs"
  cni del ours r1 >/dev/null

  # Each gives back what the other took: the original name travels as the interface alias.
  cni --reference add ref r1 >/dev/null
  check "host-device: our DEL returns a device the reference moved in" cni del ours r1
  check "host-device: ... as hd1" has_alias hd1 ''
  cni add ours r1 >/dev/null
  check "host-device: the reference's DEL returns a device we moved in" cni --reference del ref r1
  # (Debian's reference release leaves the alias set; later ones clear it.)
  check "host-device: ... as hd1" ip link show hd1
fi
true
