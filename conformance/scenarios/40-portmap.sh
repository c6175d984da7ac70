# bridge + portmap + loopback through cnitool, port mappings passed as libcni capability
# arguments (CAP_ARGS): Docker's -p 8080:80 and -p 127.0.0.1:8081:80.

conflist pub "{\"cniVersion\":\"1.0.0\",\"name\":\"pub\",\"plugins\":[
  {\"type\":\"bridge\",\"bridge\":\"br-pub\",\"isGateway\":true,\"isDefaultGateway\":true,\"ipMasq\":true,\"hairpinMode\":true,
   \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$SANDBOX_WORK/ipam-pub\",\"subnet\":\"10.70.0.0/24\"}},
  {\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}},
  {\"type\":\"loopback\"}]}"

# The world outside the host: 198.51.100.2, reached through the host's 198.51.100.1.
ip netns add world
ip link add uplink type veth peer name eth0 netns world
ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up
ip -n world addr add 198.51.100.2/24 dev eth0 && ip -n world link set eth0 up && ip -n world link set lo up

ip netns add web
maps='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":8081,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}'
CAP_ARGS=$maps cni add pub web > /dev/null
check "portmap: ADD through cnitool with CAP_ARGS" test $? -eq 0
ip netns exec web python3 -c '
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from web, you are " + self.client_address[0]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.TCPServer.allow_reuse_address = True
socketserver.TCPServer(("0.0.0.0", 80), H).serve_forever()' &
server=$!
# Until it listens (python takes a second to start under emulation, in the VM lane); at most 10 s.
for _ in $(seq 100); do ip netns exec web ss -Hltn 'sport = :80' | grep -q . && break; sleep 0.1; done
fetch() { ip netns exec "$1" python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())" "$2"; }
check "portmap: the world fetches the page through hostPort 8080" bash -c "$(declare -f fetch); fetch world http://198.51.100.1:8080/ | grep -q 'you are 198.51.100.2'"
check "portmap: the host fetches it on 127.0.0.1:8080" \
  python3 -c "import urllib.request; assert b'hello from web' in urllib.request.urlopen('http://127.0.0.1:8080/', timeout=2).read()"
check "portmap: 127.0.0.1:8081 is published on localhost" python3 -c "import urllib.request; assert b'hello' in urllib.request.urlopen('http://127.0.0.1:8081/', timeout=2).read()"
check_fails "portmap: ... and only there" bash -c "$(declare -f fetch); fetch world http://198.51.100.1:8081/"
check "portmap: the container reaches its own published port (hairpin)" bash -c "$(declare -f fetch); fetch web http://198.51.100.1:8080/ | grep -q 'hello'"
check "portmap: CHECK passes" env CAP_ARGS="$maps" bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL check pub /run/netns/web"
check "portmap: DEL without the capability arguments removes the mappings" cni del pub web
check_fails "portmap: ... the port is closed" bash -c "$(declare -f fetch); fetch world http://198.51.100.1:8080/"
check "portmap: ... and no DNAT rule is left" bash -c "! nft list table inet cni_portmap | grep -q 'dnat ip to'"
kill $server 2>/dev/null

if has_reference portmap && has_reference bridge && has_reference host-local; then
  # The reference (1.1.x) publishes with iptables; with backend iptables our DEL removes it.
  ip netns add oldweb
  CAP_ARGS='{"portMappings":[{"hostPort":9090,"containerPort":80,"protocol":"tcp"}]}' cni --reference add pub oldweb >/dev/null
  check "portmap: the reference published with its iptables chains" bash -c "iptables-save -t nat | grep -q '^:CNI-DN-'"
  conflist pub "$(sed 's/"type":"portmap"/"type":"portmap","backend":"iptables"/' "$NETCONFPATH/pub.conflist")"
  check "portmap: our DEL (backend iptables) removes the reference's rules" cni del pub oldweb
  check "portmap: ... leaving no CNI-DN chain" bash -c "! iptables-save -t nat | grep -q '^:CNI-DN-'"
fi
true
