# containerd's own client: `ctr run --cni` sets up the first network config of /etc/cni/net.d with
# the plugins of /opt/cni/bin (and, in Debian's build, /usr/lib/cni): in the sandbox they are a
# conflist of ours and PLUGIN_DIR, and /usr/lib/cni is empty. ctr runs in the foreground, as
# there is no CNI teardown for detached containers; when the task exits it calls CNI DEL without
# a netns path, then deletes the container (--rm).

trap 'stop_containerd' EXIT
if start_containerd containerd-ctr; then pass "ctr: containerd starts with a config of the sandbox"; else
  fail "ctr: containerd starts with a config of the sandbox" "$(containerd_log_tail)"; exit 1; fi
export CONTAINERD_NAMESPACE=e2e
check "ctr: the busybox image imports (ctr images import)" ctr images import "$IMAGE_TAR"

net=e2e-ctr
cat > /etc/cni/net.d/10-$net.conflist <<EOF
{"cniVersion": "1.0.0", "name": "$net", "plugins": [
  {"type": "bridge", "bridge": "cni-ctr0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.1.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF

id=web
cid=$CONTAINERD_NAMESPACE-$id   # the container ID ctr gives CNI: namespace-id
tag=$(attachment_tag "$net" "$cid")
ctr run --cni --rm --runc-binary "${E2E_OCI_RUNTIME:-runc}" --cgroup "$CGROUP_PARENT/ctr-$id" "$IMAGE" "$id" \
  sh -c 'echo hello from ctr > /tmp/index.html; httpd -p 80 -h /tmp; exec sleep infinity' \
  < /dev/null > "$SB/ctr-$id.log" 2>&1 &
ctr_pid=$!
# in_ctr COMMAND...: runs a command in the container.
in_ctr() { ctr task exec --exec-id "e2e-$BASHPID-$RANDOM" "$id" "$@"; }
# shows PATTERN COMMAND...: the command's output in the container matches PATTERN. Retried by
# wait_for below: ctr execs into the created task while go-cni still sets up its networks, in
# parallel, so the main network's allocation (what the test waits for) can come before loopback's
# ADD has run (seen once on a loaded machine: lo still DOWN).
shows() { local pattern=$1; shift; matches "$(in_ctr "$@" 2>&1)" "$pattern"; }

check "ctr: the container gets an address from host-local" wait_for 30 has_allocation $net "$cid"
ip=$(allocated_ip $net "$cid")
echo "# container $cid has ${ip:-no address}"
check "ctr: the address is in the network's range" matches "$ip" '^10\.89\.1\.[0-9]+$'
check "ctr: the container's eth0 holds it" wait_for 10 shows "inet $ip/24" ip -4 addr show eth0
check "ctr: its default route is the bridge's gateway" wait_for 10 shows '^default via 10\.89\.1\.1 dev eth0' ip route
check "ctr: its lo is up (loopback)" wait_for 10 shows '<LOOPBACK,UP' ip link show lo
check "ctr: the sandbox host pings the container" ping -c 1 -W 2 "$ip"
check "ctr: the container pings its gateway" in_ctr ping -c 1 -W 2 10.89.1.1
check "ctr: the sandbox host fetches the container's page" wait_for 10 page_is "http://$ip/" "hello from ctr"
check "ctr: the container's veth is on bridge cni-ctr0" matches "$(ip -o link show master cni-ctr0 type veth)" .
check "ctr: our bridge masquerades for it (nft table inet cni_bridge)" nft_has "inet cni_bridge" "$tag"
check "ctr: no iptables rule of the reference plugins" no_reference_iptables

check "ctr: the task is killed" ctr task kill -s SIGKILL $id
check "ctr: ctr run returns once it has torn the network down" wait_for 20 gone $ctr_pid
wait $ctr_pid
status=$?
check "ctr: ... with the task's status (137) and no error" bash -c "[[ $status == 137 ]] && ! grep -qi error $SB/ctr-$id.log"
check "ctr: the container is removed (--rm)" test -z "$(ctr containers list -q)"
check "ctr: no veth is left" no_veth
check "ctr: host-local released the address" no_allocation $net
check "ctr: no firewall entry of the container is left" nft_clean_of "$tag"
check "ctr: ... nor any naming its address" nft_clean_of "$ip "

# A config that names a plugin PLUGIN_DIR lacks (no directory has one of that name; vrf, used
# here before, is one of ours now): the run fails and leaves nothing.
rm /etc/cni/net.d/10-$net.conflist
cat > /etc/cni/net.d/10-e2e-missing.conflist <<EOF
{"cniVersion": "1.0.0", "name": "e2e-missing", "plugins": [
  {"type": "e2e-no-such-plugin", "ipam": {"type": "host-local", "subnet": "10.89.2.0/24"}}]}
EOF
out=$(timeout 60 ctr run --cni --rm --runc-binary "${E2E_OCI_RUNTIME:-runc}" --cgroup "$CGROUP_PARENT/ctr-missing" \
  "$IMAGE" missing true < /dev/null 2>&1)
status=$?
if [[ $status != 0 ]] && matches "$out" 'failed to find plugin "e2e-no-such-plugin"'; then
  pass "ctr: a network naming a plugin missing from PLUGIN_DIR fails the run"
else
  fail "ctr: a network naming a plugin missing from PLUGIN_DIR fails the run (status $status)" "$out"
fi
echo "# $(grep -m1 '(add)' <<< "$out")"
# ctr itself leaves the created task and its container behind on this path (it tries a CNI DEL,
# which fails the same way, then the task's delete); they go here, by their names.
ctr task delete -f missing >/dev/null 2>&1; ctr containers delete missing >/dev/null 2>&1
check "ctr: ... and leaves no veth or allocation" bash -c 'no_veth && no_allocation e2e-missing'
rm -f /etc/cni/net.d/10-e2e-missing.conflist
true
