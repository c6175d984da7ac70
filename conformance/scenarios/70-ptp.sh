# kind's chain through cnitool: ptp + host-local + portmap at cniVersion 0.3.1, as kindnetd writes
# 10-kindnet.conflist (ipMasq false, mtu from the node's eth0, default routes per family), side by
# side with the reference ptp.

kind_list() { # NAME DATADIR V4-SUBNET V6-SUBNET [PTP-KEYS]
  conflist "$1" "{\"cniVersion\":\"${KIND_VERSION:-0.3.1}\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"ptp\",\"ipMasq\":false,\"mtu\":1400 ${5:-},
     \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$2\",\"ranges\":[[{\"subnet\":\"$3\"}],[{\"subnet\":\"$4\"}]],
              \"routes\":[{\"dst\":\"0.0.0.0/0\"},{\"dst\":\"::/0\"}]}},
    {\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}}]}"
}
field() { python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }

kind_list kind "$SANDBOX_WORK/ipam-kind" 10.244.1.0/24 fd00:10:244:1::/64

# The node's outside: 198.51.100.2, reached through the node's 198.51.100.1.
ip netns add world
ip link add uplink type veth peer name eth0 netns world
ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up
ip -n world addr add 198.51.100.2/24 dev eth0 && ip -n world link set eth0 up && ip -n world link set lo up

ip netns add p1; ip netns add p2
maps='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
r1=$(CAP_ARGS=$maps cni add kind p1); r2=$(cni add kind p2)
check "ptp: ADD through cnitool (0.3.1, with portmap)" test -n "$r1" -a -n "$r2"
check "ptp: the reference's 0.3.1 result shape" json_assert "$r1" \
  "r['cniVersion'] == '0.3.1' and r['interfaces'][0]['name'].startswith('veth') and 'sandbox' not in r['interfaces'][0] and r['interfaces'][1]['name'] == 'eth0' and r['interfaces'][1]['sandbox'] == '/run/netns/p1' and r['ips'][0] == {'version': '4', 'interface': 1, 'address': '10.244.1.2/24', 'gateway': '10.244.1.1'} and r['ips'][1]['address'] == 'fd00:10:244:1::2/64'"
veth1=$(field "$r1" "r['interfaces'][0]['name']")
check "ptp: mtu 1400 in the container" bash -c "ip -n p1 link show eth0 | grep -q 'mtu 1400'"
check "ptp: ... and on the host end" bash -c "ip link show $veth1 | grep -q 'mtu 1400'"
check "ptp: a /32 host route to the container" bash -c "ip route show 10.244.1.2/32 | grep -q 'dev $veth1'"
check "ptp: ... and a /128 one" bash -c "ip -6 route show fd00:10:244:1::2/128 | grep -q 'dev $veth1'"
check "ptp: the gateway /32 on the host end" bash -c "ip -4 addr show dev $veth1 | grep -q 'inet 10.244.1.1/32'"
check "ptp: the container routes its subnet through the gateway" bash -c "ip -n p1 route show 10.244.1.0/24 | grep -q 'via 10.244.1.1'"
check "ptp: containers reach each other (v4)" ip netns exec p1 ping -c1 -W2 10.244.1.3
check "ptp: containers reach each other (v6, no DAD wait)" ip netns exec p2 ping -c1 -W2 fd00:10:244:1::2
check "ptp: a container reaches the host" ip netns exec p1 ping -c1 -W2 10.244.1.1
check "ptp: the host reaches a container" ping -c1 -W2 10.244.1.3

ip netns exec p1 python3 -c '
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from p1, you are " + self.client_address[0]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.TCPServer.allow_reuse_address = True
socketserver.TCPServer(("0.0.0.0", 80), H).serve_forever()' &
server=$!
for _ in $(seq 100); do ip netns exec p1 ss -Hltn 'sport = :80' | grep -q . && break; sleep 0.1; done
fetch() { ip netns exec "$1" python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())" "$2"; }
check "ptp: the hostPort answers from outside the node" bash -c "$(declare -f fetch); fetch world http://198.51.100.1:8080/ | grep -q 'you are 198.51.100.2'"
check "ptp: ... and from the other container" bash -c "$(declare -f fetch); fetch p2 http://198.51.100.1:8080/ | grep -q 'hello from p1'"
kill $server 2>/dev/null; wait $server 2>/dev/null

check "ptp: DEL succeeds" env CAP_ARGS="$maps" bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL del kind /run/netns/p1"
check "ptp: ... the host end is gone" bash -c "! ip link show $veth1 2>/dev/null"
check "ptp: ... with its host route" bash -c "! ip route show | grep -q '10.244.1.2 '"
check "ptp: ... the address is released" test ! -e "$SANDBOX_WORK/ipam-kind/kind/10.244.1.2"
check "ptp: ... the hostPort is closed" bash -c "$(declare -f fetch); ! fetch world http://198.51.100.1:8080/"
check "ptp: a second DEL succeeds" cni del kind p1
ip netns delete p2
check "ptp: DEL after the netns is gone succeeds" cni del kind p2
# What is left, printed when the check fails (it failed once under load, not reproduced since).
check "ptp: ... nothing is left: no veth, no route, no address" bash -c \
  "! ip -o link show type veth | grep -v uplink | grep . && ! ip route show | grep 10.244.1. && ! ls $SANDBOX_WORK/ipam-kind/kind | grep '^10\\.'"

# CHECK needs 0.4.0 or later (at 0.3.1 libcni refuses it).
KIND_VERSION=1.0.0 kind_list kind1 "$SANDBOX_WORK/ipam-kind1" 10.244.2.0/24 fd00:10:244:2::/64
ip netns add c1
cni add kind1 c1 >/dev/null
check "ptp: CHECK passes (1.0.0)" cni check kind1 c1
ip -n c1 route del 10.244.2.0/24
check_fails "ptp: CHECK fails once a route is gone" cni check kind1 c1
check "ptp: DEL (1.0.0)" cni del kind1 c1

# ipMasq by identity: removed on DEL without the netns (the reference leaks it).
kind_list masq "$SANDBOX_WORK/ipam-masq" 10.245.0.0/24 fd00:245::/64 ',"ipMasq":true'
ip netns add m1
cni add masq m1 >/dev/null
check "ptp: ipMasq installs masquerade for the container" bash -c "nft list ruleset | grep -q 'ip saddr 10.245.0.2 .*masquerade'"
ip netns delete m1
check "ptp: DEL without the netns succeeds" cni del masq m1
check "ptp: ... and removes the masquerade" bash -c "! nft list ruleset | grep -q 10.245.0.2"

if has_reference ptp && has_reference host-local && has_reference portmap; then
  kind_list ref "$SANDBOX_WORK/ipam-ref" 10.246.0.0/24 fd00:246::/64
  kind_list ours "$SANDBOX_WORK/ipam-ours" 10.246.0.0/24 fd00:246::/64
  ip netns add r1; ip netns add o1
  theirs=$(cni --reference add ref r1); ours=$(cni add ours o1)
  check "ptp: same result shape, addresses and routes as the reference" python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
shape = lambda r: (r["cniVersion"], [sorted(i) for i in r["interfaces"]], r["ips"], r.get("routes"), r.get("dns"))
assert shape(a) == shape(b), (shape(a), shape(b))' "$ours" "$theirs"
  check "ptp: same container routes as the reference" bash -c \
    "diff <(ip -n r1 route show | sed 's/proto [a-z]* //') <(ip -n o1 route show | sed 's/proto [a-z]* //')"
  check "ptp: same host-end addresses as the reference" bash -c \
    "diff <(ip -o addr show dev $(field "$theirs" "r['interfaces'][0]['name']") | awk '{print \$3, \$4}' | grep -v fe80) \
          <(ip -o addr show dev $(field "$ours" "r['interfaces'][0]['name']") | awk '{print \$3, \$4}' | grep -v fe80)"
  cni --reference del ref r1 >/dev/null; cni del ours o1 >/dev/null

  # A node switched from the reference: our DEL removes what the reference's ADD made.
  ip netns add x1
  xr=$(cni --reference add ref x1)
  check "ptp: our DEL removes an attachment the reference made" cni del ref x1
  check "ptp: ... its veth and address" bash -c \
    "! ip link show $(field "$xr" "r['interfaces'][0]['name']") 2>/dev/null && test ! -e $SANDBOX_WORK/ipam-ref/ref/10.246.0.2"
fi
true
