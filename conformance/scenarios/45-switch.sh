# Switching a node live from the reference plugins to ours and back (README, "Switching a node
# from the reference plugins"), with the configs everyone has: no ipMasqBackend or backend key, so
# the reference (Debian's 1.1.x) masquerades and publishes with iptables and ours with nftables.
# Every step is checked with traffic as well as listings.

if ! { has_reference bridge && has_reference portmap && has_reference host-local; }; then
  echo "# no reference plugins in $REFERENCE_DIR: skipped"
  return 0
fi

conflist sw "{\"cniVersion\":\"1.0.0\",\"name\":\"sw\",\"plugins\":[
  {\"type\":\"bridge\",\"bridge\":\"br-sw\",\"isGateway\":true,\"isDefaultGateway\":true,\"ipMasq\":true,
   \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$SANDBOX_WORK/ipam-sw\",\"subnet\":\"10.72.0.0/24\"}},
  {\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}}]}"

# A client outside the host: 203.0.113.2, reaching the host at 203.0.113.1.
ip netns add client
ip link add uplink-sw type veth peer name eth0 netns client
ip addr add 203.0.113.1/24 dev uplink-sw && ip link set uplink-sw up
ip -n client addr add 203.0.113.2/24 dev eth0 && ip -n client link set eth0 up

servers=()
# serve NETNS: an HTTP server on port 80 of NETNS that answers with its name.
serve() {
  ip netns exec "$1" python3 -c '
import http.server, socketserver, sys
name = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(name))); self.end_headers(); self.wfile.write(name)
    def log_message(self, *a): pass
socketserver.TCPServer.allow_reuse_address = True
socketserver.TCPServer(("0.0.0.0", 80), H).serve_forever()' "$1" &
  servers+=($!)
  for _ in $(seq 100); do ip netns exec "$1" ss -Hltn 'sport = :80' | grep -q . && break; sleep 0.1; done
}
# answers PORT NAME: the client's request to the host's PORT is answered by container NAME.
answers() {
  ip netns exec client python3 -c '
import urllib.request, sys
got = urllib.request.urlopen("http://203.0.113.1:%s/" % sys.argv[1], timeout=2).read().decode()
sys.exit(0 if got == sys.argv[2] else "answered by %s" % got)' "$1" "$2"
}
# cid_of NETNS: the container ID cnitool passes for a netns.
cid_of() {
  python3 -c 'import hashlib,sys; print("cnitool-" + hashlib.sha512(sys.argv[1].encode()).hexdigest()[:20])' "/run/netns/$1"
}
# reference_state_of NETNS ADDRESS: the reference's iptables state of that container on network sw
# (its chains, and rules naming its address), in both families and both iptables variants.
reference_state_of() {
  local chains
  chains=$(python3 -c 'import hashlib,sys; h=hashlib.sha512(("sw"+sys.argv[1]).encode()).hexdigest(); print("CNI-"+h[:24]+"|CNI-DN-"+h[:21])' "$(cid_of "$1")")
  for save in iptables-nft-save ip6tables-nft-save iptables-legacy-save ip6tables-legacy-save; do
    "$save" -t nat 2>/dev/null | grep -E -- "(-s|-d|--to-destination) $2[/:]|$chains"
  done
  return 0
}
addr_of() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
ports() { printf '{"portMappings":[{"hostPort":%s,"containerPort":80,"protocol":"tcp"}]}' "$1"; }

# --- From the reference to ours -------------------------------------------------------------
# old1 and old2 are added by the reference. Then the binaries are switched: new1 is added by ours,
# publishing old1's port, and ours deletes old1 (without the port mappings, as runtimes do) and
# old2 (with them).
ip netns add old1; ip netns add old2; ip netns add new1
CAP_ARGS=$(ports 9301) cni --reference add sw old1 > /dev/null
CAP_ARGS=$(ports 9302) cni --reference add sw old2 > /dev/null
serve old1; serve old2
a1=$(addr_of old1) a2=$(addr_of old2)
check "switch: the reference published old1 with iptables" answers 9301 old1
check "switch: ... its state is in iptables" test -n "$(reference_state_of old1 "$a1")"
CAP_ARGS=$(ports 9301) cni add sw new1 > /dev/null
serve new1
check "switch: our DEL of the reference's old1 (no portMappings) succeeds" cni del sw old1
check "switch: ... and leaves none of the reference's state for it" test -z "$(reference_state_of old1 "$a1")"
check "switch: ... the port now reaches new1, which ours published" answers 9301 new1
check "switch: our DEL of the reference's old2 (with portMappings) succeeds" env CAP_ARGS="$(ports 9302)" \
  bash -c "CNI_PATH=$PLUGIN_DIR $CNITOOL del sw /run/netns/old2"
check "switch: ... and leaves none of the reference's state for it" test -z "$(reference_state_of old2 "$a2")"
check_fails "switch: ... its port no longer answers" answers 9302 old2
# The client has no route to 10.72.0.0/24: a reply comes back only if new1 is masqueraded.
check "switch: new1 still reaches the outside world (masquerade kept)" ip netns exec new1 ping -c1 -W2 203.0.113.2
check "switch: ... and its port answers for it" answers 9301 new1

# --- From ours back to the reference ----------------------------------------------------------
# b1 is added by ours; the binaries are switched back, the reference deletes b1 (it removes none of
# our state), the operator hands the node back (scripts/handback with the running attachments as
# valid), and the reference adds c1 on b1's port: c1 gets the traffic.
ip netns add b1; ip netns add c1
CAP_ARGS=$(ports 9303) cni add sw b1 > /dev/null
serve b1
check "switch back: ours published b1" answers 9303 b1
b1addr=$(addr_of b1)
# The reference's bridge DEL then fails at its very end (removing an iptables masquerade chain that
# ours never made; go-iptables does not recognise iptables 1.8.9's "does not exist"), after it has
# removed the veth and released the address; a runtime retries it. Both are why the hand-back
# exists and why README recommends the iptables backends before switching back.
CAP_ARGS=$(ports 9303) cni --reference del sw b1 > /dev/null 2>&1
check "switch back: our state of b1 outlives the reference's DEL (why the hand-back exists)" \
  bash -c "nft list table inet cni_portmap | grep -q 'dnat ip to $b1addr:80'"
new1_id=$(cid_of new1)
check "switch back: the hand-back succeeds" "$top/scripts/handback" --plugins "$PLUGIN_DIR" --netconf "$NETCONFPATH" "$new1_id"
check "switch back: ... and removes our state of b1" \
  bash -c "! nft list table inet cni_portmap | grep -q 'dnat ip to $b1addr:80'"
check "switch back: ... but keeps new1's" answers 9301 new1
CAP_ARGS=$(ports 9303) cni --reference add sw c1 > /dev/null
serve c1
check "switch back: the reference's c1 gets b1's port" answers 9303 c1

# With ipMasqBackend and backend "iptables", ours writes the reference's own chains: the reference's
# DEL of a container ours added succeeds and removes everything, and no hand-back is needed.
conflist swi "{\"cniVersion\":\"1.0.0\",\"name\":\"swi\",\"plugins\":[
  {\"type\":\"bridge\",\"bridge\":\"br-swi\",\"isGateway\":true,\"isDefaultGateway\":true,\"ipMasq\":true,\"ipMasqBackend\":\"iptables\",
   \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$SANDBOX_WORK/ipam-swi\",\"subnet\":\"10.73.0.0/24\"}},
  {\"type\":\"portmap\",\"backend\":\"iptables\",\"capabilities\":{\"portMappings\":true}}]}"
ip netns add i1; ip netns add i2
CAP_ARGS=$(ports 9305) cni add swi i1 > /dev/null
serve i1
check "switch back, iptables backends: ours published i1" answers 9305 i1
i1addr=$(addr_of i1)
check "switch back, iptables backends: the reference's DEL of i1 succeeds" \
  env CAP_ARGS="$(ports 9305)" bash -c "CNI_PATH=$REFERENCE_DIR $CNITOOL del swi /run/netns/i1"
check "switch back, iptables backends: ... and leaves nothing of i1" \
  bash -c "! { iptables-save -t nat; nft list ruleset; } 2>/dev/null | grep -q '$i1addr'"
CAP_ARGS=$(ports 9305) cni --reference add swi i2 > /dev/null
serve i2
check "switch back, iptables backends: the reference's i2 gets i1's port" answers 9305 i2
CAP_ARGS=$(ports 9305) cni --reference del swi i2 > /dev/null

for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null; done
CAP_ARGS=$(ports 9303) cni --reference del sw c1 > /dev/null
CAP_ARGS=$(ports 9301) cni del sw new1 > /dev/null
check "switch: nothing of either is left for any container" \
  bash -c "! { iptables-save -t nat; ip6tables-save -t nat; nft list table inet cni_portmap; nft list table inet cni_bridge; } 2>/dev/null | grep -q '10\\.72\\.0\\.'"
ip link del br-sw 2>/dev/null; ip link del br-swi 2>/dev/null
true
