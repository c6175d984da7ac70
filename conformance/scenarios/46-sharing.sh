# What one attachment's ADD and DEL do to another that shares something with it, through cnitool,
# ours and then the reference side by side, every case checked with traffic:
#   - two networks on one subnet (Podman's and containerd's defaults are both 10.88.0.0/16), each on
#     its own bridge: deleting the second network's container must not take the first one's
#     outbound NAT;
#   - two containers publishing one hostPort: the first holds it, the other's DEL leaves it alone,
#     and when the first goes the other takes over;
#   - an IPv4-only and an IPv6-only container publishing one port number: both answer.

# A client outside the host: 203.0.113.2 / 2001:db8:46::2, reaching the host at .1 / ::1. It has
# no route to the containers' subnets, so only masqueraded traffic gets an answer.
ip netns add client
ip link add uplink-sh type veth peer name eth0 netns client
ip addr add 203.0.113.1/24 dev uplink-sh && ip addr add 2001:db8:46::1/64 dev uplink-sh nodad
ip link set uplink-sh up
ip -n client addr add 203.0.113.2/24 dev eth0 && ip -n client addr add 2001:db8:46::2/64 dev eth0 nodad
ip -n client link set eth0 up && ip -n client link set lo up

servers=()
# serve NETNS: an HTTP server on port 80 of NETNS (both families) that answers with its name.
serve() {
  ip netns exec "$1" python3 -c '
import http.server, socketserver, socket, sys
name = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(name))); self.end_headers(); self.wfile.write(name)
    def log_message(self, *a): pass
class S(socketserver.TCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); super().server_bind()
S(("::", 80), H).serve_forever()' "$1" &
  servers+=($!)
  for _ in $(seq 100); do ip netns exec "$1" ss -Hltn 'sport = :80' | grep -q . && break; sleep 0.1; done
}
# answers HOST PORT NAME: the client's request to HOST:PORT is answered by container NAME.
answers() {
  ip netns exec client python3 -c '
import urllib.request, sys
got = urllib.request.urlopen("http://%s:%s/" % (sys.argv[1], sys.argv[2]), timeout=2).read().decode()
sys.exit(0 if got == sys.argv[3] else "answered by %s" % got)' "$1" "$2" "$3"
}
# reaches NETNS: the container gets an answer from the client (needs its masquerade).
reaches() { ip netns exec "$1" ping -c1 -W2 203.0.113.2 > /dev/null; }
ports() { printf '{"portMappings":[{"hostPort":%s,"containerPort":80,"protocol":"tcp"}]}' "$1"; }
# net NAME BRIDGE SUBNET: a bridge + host-local + portmap network.
net() {
  conflist "$1" "{\"cniVersion\":\"1.0.0\",\"name\":\"$1\",\"plugins\":[
    {\"type\":\"bridge\",\"bridge\":\"$2\",\"isGateway\":true,\"isDefaultGateway\":true,\"ipMasq\":true,\"hairpinMode\":true,
     \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$SANDBOX_WORK/ipam-$1\",\"subnet\":\"$3\"}},
    {\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}}]}"
}

# sharing IMPL TAG [--reference]: every case with one implementation; names carry TAG so the two
# runs do not meet (each has its own networks, bridges and ports).
sharing() {
  local who=$1 tag=$2 ref=${3:-} base
  base=$([[ $tag == o ]] && echo 0 || echo 1)
  # Two networks on one subnet. p is added first, so replies to the shared address route to its
  # bridge: it is the container whose traffic can be checked.
  net "sa$tag" "br-sa$tag" "10.79.$base.0/24"; net "sb$tag" "br-sb$tag" "10.79.$base.0/24"
  ip netns add "p$tag"; ip netns add "q$tag"
  cni $ref add "sa$tag" "p$tag" > /dev/null
  check "$who: the first network's container reaches the outside (masquerade)" reaches "p$tag"
  check "$who: the same subnet's second network adds its container" cni $ref add "sb$tag" "q$tag"
  check "$who: ... with the same address" test "$(ip -n "p$tag" -4 -o addr show eth0 | awk '{print $4}')" = \
    "$(ip -n "q$tag" -4 -o addr show eth0 | awk '{print $4}')"
  check "$who: the second network's DEL succeeds" cni $ref del "sb$tag" "q$tag"
  check "$who: ... and the first container keeps its outbound NAT" reaches "p$tag"
  cni $ref del "sa$tag" "p$tag" > /dev/null

  # One hostPort, two containers on one network.
  local port=$((31005 + base * 10))
  net "pub$tag" "br-pub$tag" "10.80.$base.0/24"
  ip netns add "a$tag"; ip netns add "b$tag"
  CAP_ARGS=$(ports $port) cni $ref add "pub$tag" "a$tag" > /dev/null
  check "$who: a second container publishing the same hostPort is added" \
    env CAP_ARGS="$(ports $port)" bash -c "CNI_PATH=$([[ -n $ref ]] && echo "$REFERENCE_DIR" || echo "$PLUGIN_DIR") $CNITOOL add pub$tag /run/netns/b$tag"
  serve "a$tag"; serve "b$tag"
  check "$who: the port answers for the first holder" answers 203.0.113.1 $port "a$tag"
  check "$who: the second holder's DEL succeeds" env CAP_ARGS="$(ports $port)" \
    bash -c "CNI_PATH=$([[ -n $ref ]] && echo "$REFERENCE_DIR" || echo "$PLUGIN_DIR") $CNITOOL del pub$tag /run/netns/b$tag"
  check "$who: ... and the first keeps its port" answers 203.0.113.1 $port "a$tag"
  ip netns del "b$tag"; ip netns add "b$tag"; serve "b$tag"
  CAP_ARGS=$(ports $port) cni $ref add "pub$tag" "b$tag" > /dev/null
  # Ours is deleted without portMappings, as runtimes send DEL. The reference needs them: without,
  # its DEL leaves the DNAT of the deleted container in front (seen with Debian's 1.1.1).
  if [[ -z $ref ]]; then
    check "$who: the first holder's DEL (without portMappings) succeeds" cni del "pub$tag" "a$tag"
  else
    check "$who: the first holder's DEL (with portMappings) succeeds" \
      env CAP_ARGS="$(ports $port)" bash -c "CNI_PATH=$REFERENCE_DIR $CNITOOL del pub$tag /run/netns/a$tag"
  fi
  check "$who: ... and the port passes to the other" answers 203.0.113.1 $port "b$tag"
  CAP_ARGS=$(ports $port) cni $ref del "pub$tag" "b$tag" > /dev/null
  check_fails "$who: ... and closes with the last" answers 203.0.113.1 $port "b$tag"
}

sharing ours o
check "ours: nothing is left of any of them" \
  bash -c "! nft list ruleset | grep -E -q '10\\.(79|80)\\.0\\.|key-|pm-|masq-'"

# One port number, an IPv4-only network and an IPv6-only network (ours; the reference 1.1.1 has no
# separate view of the families to compare with).
net v4only br-v4 10.81.0.0/24
conflist v6only "{\"cniVersion\":\"1.0.0\",\"name\":\"v6only\",\"plugins\":[
  {\"type\":\"bridge\",\"bridge\":\"br-v6\",\"isGateway\":true,\"isDefaultGateway\":true,
   \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$SANDBOX_WORK/ipam-v6\",\"subnet\":\"fd81::/64\"}},
  {\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}}]}"
ip netns add four; ip netns add six
CAP_ARGS=$(ports 31020) cni add v4only four > /dev/null
CAP_ARGS=$(ports 31020) cni add v6only six > /dev/null
serve four; serve six
check "ours: the IPv4 holder of a port answers over IPv4" answers 203.0.113.1 31020 four
check "ours: the IPv6 holder of the same port answers over IPv6" answers '[2001:db8:46::1]' 31020 six
check "ours: the IPv6 holder's DEL succeeds" cni del v6only six
check "ours: ... and the IPv4 holder keeps the port" answers 203.0.113.1 31020 four
cni del v4only four > /dev/null

if has_reference bridge && has_reference portmap && has_reference host-local; then
  sharing reference r --reference
else
  echo "# no reference plugins in $REFERENCE_DIR: the side-by-side half skipped"
fi

for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null; done
for br in br-sao br-sbo br-pubo br-v4 br-v6 br-sar br-sbr br-pubr; do ip link del "$br" 2>/dev/null; done
true
