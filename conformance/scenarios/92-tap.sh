# tap through cnitool, as KubeVirt-style lists use it (tap, static IPAM, the runtime's MAC). Debian's
# reference suite (1.1.1) has no tap: the expectations are upstream v1.9.1's documented behaviour
# (a persistent tap named CNI_IFNAME in the container, one interface in the result, every address
# on it). Traffic: a program in the container opens the tap by name, as a VM monitor does, as
# the owner the config names, and sees the frames the container sends to it.

tap_list() { # NAME [TAP-KEYS]
  conflist "$1" "{\"cniVersion\":\"1.0.0\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"tap\",\"owner\":4242,\"group\":4243 ${2:-},\"capabilities\":{\"mac\":true},
     \"ipam\":{\"type\":\"static\",\"addresses\":[{\"address\":\"10.92.0.5/24\",\"gateway\":\"10.92.0.1\"}]}}]}"
}
only_lo() { [[ $(ip -n "$1" -o link show | wc -l) == 1 ]]; }

tap_list taps ',"multiQueue":true,"mtu":1450'
ip netns add t1
r=$(CAP_ARGS='{"mac":"0a:58:0a:5c:00:05"}' cni add taps t1)
check "tap: ADD through cnitool" test -n "$r"
check "tap: upstream's result shape" json_assert "$r" \
  "r['interfaces'] == [{'name': 'eth0', 'mac': '0a:58:0a:5c:00:05', 'sandbox': '/run/netns/t1'}] and r['ips'] == [{'interface': 0, 'address': '10.92.0.5/24', 'gateway': '10.92.0.1'}]"
check "tap: a persistent multi-queue tap, owner and group set, mtu 1450" bash -c \
  "ip -n t1 -d link show eth0 | grep -q 'tun type tap pi off vnet_hdr off multi_queue .*persist on user 4242 group 4243' && ip -n t1 link show eth0 | grep -q 'mtu 1450'"
check "tap: the address is on it" bash -c "ip -n t1 -o addr show dev eth0 | grep -q 'inet 10.92.0.5/24'"
check "tap: nothing in the host" bash -c "! ip -o link show | grep -v ' lo:' | grep ."

# The owner opens the tap by name, as a VM monitor does, and sees the ARP request the container
# sends for a neighbour on the tap's subnet. /dev/net/tun is opened as root (it is 0600 here),
# then the program becomes the user (dropping every capability) before attaching: only the
# owner may. Another user is refused.
vm() { # UID RESULT-FILE
  ip netns exec t1 python3 -c '
import fcntl, os, select, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
os.setgroups([]); os.setgid(4243); os.setuid(int(sys.argv[1]))
try:
    # IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE, as created.
    fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"eth0", 0x0002 | 0x1000 | 0x0100))
except OSError as e:
    open(sys.argv[2], "w").write("refused %d\n" % e.errno); sys.exit(0)
open(sys.argv[2], "w").write("attached\n")
for _ in range(50):
    if not select.select([fd], [], [], 0.1)[0]: continue
    frame = os.read(fd, 2048)
    if frame[12:14] == b"\x08\x06" and frame[38:42] == bytes([10, 92, 0, 9]):
        open(sys.argv[2], "a").write("arp\n"); break
' "$1" "$2"
}
vm 4244 "$SANDBOX_WORK/tap-other"
check "tap: a user who is not the owner cannot open the tap" grep -q 'refused 1$' "$SANDBOX_WORK/tap-other"
vm 4242 "$SANDBOX_WORK/tap-vm" &
vmpid=$!
for _ in $(seq 50); do grep -q attached "$SANDBOX_WORK/tap-vm" 2>/dev/null && break; sleep 0.1; done
ip netns exec t1 ping -c1 -W1 10.92.0.9 >/dev/null 2>&1
wait $vmpid
check "tap: the owner opens the tap and the container's frames reach it" grep -q arp "$SANDBOX_WORK/tap-vm"

check "tap: CHECK passes" env CAP_ARGS='{"mac":"0a:58:0a:5c:00:05"}' bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL check taps /run/netns/t1"
ip -n t1 addr flush dev eth0
check_fails "tap: CHECK fails once the address is gone" cni check taps t1
check "tap: DEL succeeds" cni del taps t1
check "tap: ... the tap is gone" only_lo t1
check "tap: a second DEL succeeds" cni del taps t1
ip netns delete t1
check "tap: DEL after the netns is gone succeeds" cni del taps t1

# A bridge in the container's namespace: the tap becomes its port.
conflist tapbr '{"cniVersion":"1.0.0","name":"tapbr","plugins":[{"type":"tap","bridge":"br0"}]}'
ip netns add t2
ip -n t2 link add br0 type bridge
rb=$(cni add tapbr t2)
check "tap: a port of the container's bridge, L2 only" bash -c \
  "ip -n t2 -o link show eth0 | grep -q 'master br0' && python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert \"ips\" not in r' '$rb'"
check "tap: DEL of the bridge port" cni del tapbr t2
check "tap: ... the bridge stays" bash -c "ip -n t2 link show br0 >/dev/null && ! ip -n t2 link show eth0 2>/dev/null"

# Bad input: the spec's error JSON, and nothing left.
tplug() { # CONF
  CNI_COMMAND=ADD CNI_CONTAINERID=bad-1 CNI_NETNS=/run/netns/t2 CNI_IFNAME=eth0 CNI_PATH=$PLUGIN_DIR "$PLUGIN_DIR/tap" <<< "$1"
}
for bad in '"bridge":"nosuch0"' '"mtu":10' '"mac":"nonsense"'; do
  out=$(tplug "{\"cniVersion\":\"1.0.0\",\"name\":\"bad\",\"type\":\"tap\",$bad}" || true)
  check "tap: $bad is refused with the spec's error (code 7)" json_assert "$out" "r['code'] == 7 and r['msg']"
  check "tap: ... and leaves nothing" bash -c "[[ \$(ip -n t2 -o link show | wc -l) == 2 ]]"
done
true
