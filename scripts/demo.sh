#!/usr/bin/env bash
# The demo: a container network namespace gets its network from our plugins through the real
# cnitool, inside a sandbox (scripts/sandbox.sh), so nothing on this machine changes.
#   PLUGIN_DIR (default target/release), CNITOOL (default target/tools/cnitool)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/sandbox.sh" "$@"

PLUGIN_DIR=${PLUGIN_DIR:-$top/target/release}
CNITOOL=${CNITOOL:-$top/target/tools/cnitool}
cni() { CNI_PATH=$PLUGIN_DIR "$CNITOOL" "$1" "$2" "/run/netns/$3"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "An isolated network (docker run --network=none): the loopback plugin alone"
cat > "$NETCONFPATH/none.conflist" <<'JSON'
{"cniVersion": "1.0.0", "name": "none", "plugins": [{"type": "loopback"}]}
JSON
show cat "$NETCONFPATH/none.conflist"
show ip netns add box
show ip -n box -br link
echo '$ cnitool add none /run/netns/box'
cni add none box
echo
show ip -n box -br addr
show ip netns exec box ping -c1 -W1 127.0.0.1
echo '$ cnitool del none /run/netns/box'
cni del none box
show ip -n box -br link

step "A bridge network with published ports (docker network create --subnet 10.88.0.0/24 web; docker run -p 8080:80)"
cat > "$NETCONFPATH/web.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "web", "plugins": [
  {"type": "bridge", "bridge": "cni-web", "isGateway": true, "isDefaultGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "subnet": "10.88.0.0/24", "dataDir": "$SANDBOX_WORK/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
JSON
show cat "$NETCONFPATH/web.conflist"
# An "outside" namespace stands for the world beyond the host: 198.51.100.2, reached through the
# host's uplink 198.51.100.1. A tiny server there answers with the address it sees.
ip netns add outside
ip link add uplink type veth peer name eth0 netns outside
ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up
ip -n outside addr add 198.51.100.2/24 dev eth0 && ip -n outside link set eth0 up && ip -n outside link set lo up
ip netns exec outside python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("198.51.100.2", 8080)); s.listen()
while True:
    c, peer = s.accept(); c.sendall(("hello " + peer[0] + "\n").encode()); c.close()
' &
server=$!
trap 'kill $server 2>/dev/null' EXIT
ip netns add app1; ip netns add app2
echo "\$ CAP_ARGS='{\"portMappings\":[{\"hostPort\":8080,\"containerPort\":80,\"protocol\":\"tcp\"}]}' cnitool add web /run/netns/app1"
CAP_ARGS='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}' cni add web app1 | python3 -c 'import json,sys; r=json.load(sys.stdin); print("  app1:", [i["address"] for i in r["ips"]], "via", r["interfaces"][1]["name"], "on", r["interfaces"][0]["name"])'
echo '$ cnitool add web /run/netns/app2'
cni add web app2 | python3 -c 'import json,sys; r=json.load(sys.stdin); print("  app2:", [i["address"] for i in r["ips"]], "via", r["interfaces"][1]["name"], "on", r["interfaces"][0]["name"])'
show ip -br link show master cni-web
show ip netns exec app1 ip -br addr show eth0
show ip netns exec app1 ping -c1 -W1 10.88.0.3
show ip netns exec app1 ping -c1 -W1 10.88.0.1
echo "\$ (in app2) connect to the outside server at 198.51.100.2:8080"
sleep 0.2
ip netns exec app2 python3 -c '
import socket
c = socket.create_connection(("198.51.100.2", 8080), timeout=2); print("  outside says:", c.recv(100).decode().strip(), "(masqueraded to the host uplink)")'
echo "\$ (in app1) serve a page on port 80, published on the host as 8080"
ip netns exec app1 python3 -c '
import http.server, socketserver
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("<h1>hello from app1</h1> you came from " + self.client_address[0] + "\n").encode()
        self.send_response(200); self.send_header("Content-Type", "text/html"); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
socketserver.TCPServer.allow_reuse_address = True
socketserver.TCPServer(("0.0.0.0", 80), Page).serve_forever()' &
page=$!
trap 'kill $server $page 2>/dev/null' EXIT
sleep 0.3
fetch() { ip netns exec "$1" python3 -c 'import sys, urllib.request; print("  " + urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().strip())' "$2"; }
echo '$ (in outside) fetch http://198.51.100.1:8080/'; fetch outside http://198.51.100.1:8080/
echo '$ (on the host) fetch http://127.0.0.1:8080/'; python3 -c 'import urllib.request; print("  " + urllib.request.urlopen("http://127.0.0.1:8080/", timeout=2).read().decode().strip())'
echo '$ (in app2) fetch http://198.51.100.1:8080/'; fetch app2 http://198.51.100.1:8080/
show nft list table inet cni_portmap
echo '$ cnitool del web /run/netns/app1; cnitool del web /run/netns/app2'
cni del web app1; cni del web app2
echo '$ (in outside) fetch http://198.51.100.1:8080/ again'
fetch outside http://198.51.100.1:8080/ 2>/dev/null || echo "  refused: the port is no longer published"
show ip -br link show master cni-web
show ls "$SANDBOX_WORK/ipam/web"

step "A host interface handed to a container (the closest CNI form of --network=host): host-device"
# A second uplink to the outside stands for a spare NIC of the host, "nic1".
ip link add nic1 type veth peer name eth1 netns outside
ip -n outside addr add 203.0.113.2/24 dev eth1 && ip -n outside link set eth1 up && ip link set nic1 up
cat > "$NETCONFPATH/direct.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "direct", "plugins": [
  {"type": "host-device", "device": "nic1",
   "ipam": {"type": "host-local", "subnet": "203.0.113.0/24", "rangeStart": "203.0.113.10", "dataDir": "$SANDBOX_WORK/ipam"}},
  {"type": "loopback"}]}
JSON
show cat "$NETCONFPATH/direct.conflist"
show ip -br link show nic1
ip netns add db
echo '$ cnitool add direct /run/netns/db'
cni add direct db | python3 -c 'import json,sys; r=json.load(sys.stdin); print("  db:", r["interfaces"][0], [i["address"] for i in r["ips"]])'
show ip -br link show nic1 2>&1 || true
show ip -n db -br addr show eth0
echo '$ ip -n db link show eth0 | grep alias   # where DEL finds the name to give back'
ip -n db link show eth0 | grep alias
ip netns exec db ping -c1 -w3 203.0.113.2 >/dev/null  # the far end's queue starts a moment after carrier
show ip netns exec db ping -c1 -W1 203.0.113.2
echo '$ cnitool del direct /run/netns/db'
cni del direct db
show ip -br link show nic1

step "Done: the sandbox and everything in it go away now"
