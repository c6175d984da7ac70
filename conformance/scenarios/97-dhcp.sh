# dhcp IPAM through cnitool: bridge + dhcp, side by side with the reference's plugin and daemon,
# against a real DHCP server (Debian's dnsmasq) in a namespace on the bridge. Each suite's plugin
# talks to its own daemon (the two speak different protocols on the socket). The daemons and
# dnsmasq are started here and stopped by PID at the end.

srv=10.78.0.1
ip link add cnidhcp0 type bridge && ip link set cnidhcp0 up
ip netns add dhcpsrv
ip link add dsrv type veth peer name eth0 netns dhcpsrv
ip link set dsrv master cnidhcp0 up
ip -n dhcpsrv addr add $srv/24 dev eth0 && ip -n dhcpsrv link set eth0 up && ip -n dhcpsrv link set lo up
leases=$SANDBOX_WORK/dnsmasq.leases
ip netns exec dhcpsrv dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --interface=eth0 \
  --bind-interfaces --user=root --pid-file= --dhcp-range=10.78.0.50,10.78.0.150,255.255.255.0,10m \
  --dhcp-leasefile="$leases" --dhcp-option=option:router,$srv --dhcp-authoritative --no-ping \
  --log-facility="$SANDBOX_WORK/dnsmasq.log" --log-dhcp &
dnsmasq_pid=$!

mkdir -p "$SANDBOX_WORK/ours" "$SANDBOX_WORK/ref"
start_ours() {
  "$PLUGIN_DIR/dhcp" daemon -socketpath "$SANDBOX_WORK/ours/dhcp.sock" -timeout 5s -resendtimeout 30s \
    2>>"$SANDBOX_WORK/ours/log" &
  ours_pid=$!
  for _ in $(seq 100); do [[ -S $SANDBOX_WORK/ours/dhcp.sock ]] && break; sleep 0.1; done
}
start_ours
ref_pid=
if has_reference dhcp; then
  "$REFERENCE_DIR/dhcp" daemon -socketpath "$SANDBOX_WORK/ref/dhcp.sock" 2>>"$SANDBOX_WORK/ref/log" &
  ref_pid=$!
  for _ in $(seq 100); do [[ -S $SANDBOX_WORK/ref/dhcp.sock ]] && break; sleep 0.1; done
fi

dhcp_list() { # NAME SOCKET [IPAM-KEYS]
  conflist "$1" "{\"cniVersion\":\"1.0.0\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"bridge\",\"bridge\":\"cnidhcp0\",\"ipam\":{\"type\":\"dhcp\",\"daemonSocketPath\":\"$2\" ${3:-}}}]}"
}
dhcp_list dhcpnet "$SANDBOX_WORK/ours/dhcp.sock"
dhcp_list dhcpref "$SANDBOX_WORK/ref/dhcp.sock"
field() { python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }
leased() { grep -q " $1 " "$leases"; }

ip netns add d1; ip netns add d2
r1=$(cni add dhcpnet d1)
check "dhcp: bridge + dhcp ADD through cnitool" test -n "$r1"
a1=$(field "$r1" "r['ips'][0]['address'].split('/')[0]")
check "dhcp: the result is the reference's shape" json_assert "$r1" \
  "r['cniVersion'] == '1.0.0' and r['ips'][0]['address'].startswith('10.78.0.') and r['ips'][0]['address'].endswith('/24') and r['ips'][0]['gateway'] == '$srv' and r['ips'][0]['interface'] == 2 and r['routes'] == [{'dst': '0.0.0.0/0', 'gw': '$srv'}]"
check "dhcp: the address is on the container's eth0" bash -c "ip -n d1 -4 addr show eth0 | grep -q 'inet $a1/24'"
check "dhcp: ... and in dnsmasq's lease file" leased "$a1"
check "dhcp: the container reaches the DHCP server" ip netns exec d1 ping -c1 -W2 $srv
check "dhcp: CHECK passes" cni check dhcpnet d1
if [[ -n $ref_pid ]]; then
  rr=$(cni --reference add dhcpref d2)
  check "dhcp: the reference's ADD (its own daemon)" test -n "$rr"
  check "dhcp: same result as the reference, but for addresses and names" \
    same_json "$r1" "$rr" address mac name sandbox
  check "dhcp: the reference's DEL" cni --reference del dhcpref d2
fi

# A daemon restart keeps the lease: CHECK and a repeated ADD find it.
kill "$ours_pid"; wait "$ours_pid" 2>/dev/null
start_ours
check "dhcp: CHECK passes after a daemon restart" cni check dhcpnet d1
check "dhcp: ... the daemon resumed the lease from its state file" grep -q "resumed the lease of $a1" "$SANDBOX_WORK/ours/log"

check "dhcp: DEL succeeds" cni del dhcpnet d1
# bridge releases dhcp's lease before it removes the interface (the reference's bridge removes
# first, and its RELEASE goes nowhere): the server frees the address.
check "dhcp: ... and the lease leaves the server (RELEASE from the container's eth0)" bash -c \
  "for i in \$(seq 50); do ! grep -q ' $a1 ' $leases && exit 0; sleep 0.1; done; exit 1"
check "dhcp: ... the container's eth0 is gone" bash -c "! ip -n d1 link show eth0 2>/dev/null"
check "dhcp: a second DEL succeeds" cni del dhcpnet d1
ip netns delete d1
check "dhcp: DEL after the netns is gone succeeds" cni del dhcpnet d1

# dhcp alone on an interface that exists: DEL releases the lease at the server (in a chain, the
# main plugin removes the interface first, so there is nothing left to send a RELEASE from, with
# the reference as with us).
conflist dhcponly "{\"cniVersion\":\"1.0.0\",\"name\":\"dhcponly\",\"plugins\":[
  {\"type\":\"dhcp\",\"ipam\":{\"type\":\"dhcp\",\"daemonSocketPath\":\"$SANDBOX_WORK/ours/dhcp.sock\"}}]}"
ip netns add d3
ip link add d3h type veth peer name eth0 netns d3 && ip link set d3h master cnidhcp0 up
r3=$(cni add dhcponly d3)
a3=$(field "$r3" "r['ips'][0]['address'].split('/')[0]")
check "dhcp: a lease for an existing interface" leased "$a3"
check "dhcp: DEL releases it at the server" bash -c \
  "CNI_PATH=$PLUGIN_DIR $CNITOOL del dhcponly /run/netns/d3 && for i in \$(seq 50); do ! grep -q ' $a3 ' $leases && exit 0; sleep 0.1; done; exit 1"

# Multus' pairing, macvlan + dhcp: macvlan releases the lease before it removes the interface (as
# the reference does), so the RELEASE reaches the server. The uplink is a veth on the bridge.
# (ptp + dhcp has no server to reach: ptp's host end is a routed /32, not on a segment.)
ip link add mvdhcp type veth peer name mvdhcpb && ip link set mvdhcpb master cnidhcp0 up && ip link set mvdhcp up
conflist mvdhcp "{\"cniVersion\":\"1.0.0\",\"name\":\"mvdhcp\",\"plugins\":[
  {\"type\":\"macvlan\",\"master\":\"mvdhcp\",\"ipam\":{\"type\":\"dhcp\",\"daemonSocketPath\":\"$SANDBOX_WORK/ours/dhcp.sock\"}}]}"
ip netns add d5
r5=$(cni add mvdhcp d5)
a5=$(field "$r5" "r['ips'][0]['address'].split('/')[0]")
check "dhcp: macvlan + dhcp gets a lease" leased "$a5"
check "dhcp: ... the macvlan container reaches the server" ip netns exec d5 ping -c1 -W2 $srv
check "dhcp: macvlan's DEL releases it at the server" bash -c \
  "CNI_PATH=$PLUGIN_DIR $CNITOOL del mvdhcp /run/netns/d5 && for i in \$(seq 50); do ! grep -q ' $a5 ' $leases && exit 0; sleep 0.1; done; exit 1"
check "dhcp: ... and the macvlan is gone" bash -c "! ip -n d5 link show eth0 2>/dev/null"

dhcp_list dhcpbad "$SANDBOX_WORK/ours/dhcp.sock" ',"provide":[{"option":"no-such-option","value":"x"}]'
ip netns add d4
out=$(cni add dhcpbad d4 2>&1)
check "dhcp: an unknown option name is refused" grep -q 'Can not parse option "no-such-option"' <<< "$out"
check "dhcp: ... and leaves no interface behind" bash -c "! ip -n d4 link show eth0 2>/dev/null"
dhcp_list dhcpnone "$SANDBOX_WORK/nobody.sock"
check_fails "dhcp: no daemon at the socket: ADD fails" cni add dhcpnone d4
check "dhcp: ... and leaves no interface behind" bash -c "! ip -n d4 link show eth0 2>/dev/null"

for pid in "$ours_pid" $ref_pid "$dnsmasq_pid"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
