# Two node shapes through containerd's CRI plugin, with PLUGIN_DIR as the only plugin directory:
# kind's (ptp + host-local + portmap at 0.3.1, a hostPort) and k3s's (bridge + host-local + portmap
# + bandwidth, the pod's kubernetes.io/{ingress,egress}-bandwidth annotations, which containerd
# turns into the `bandwidth` capability). RunPodSandbox, traffic, StopPodSandbox, RemovePodSandbox;
# nothing is left.

trap 'stop_containerd' EXIT
j() { python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print(eval(sys.argv[1]))' "$1" "$2"; }
CTD=$SB/containerd-nodes
mkdir -p "$CTD/net.d" "$CTD/net-missing.d"
write_net() { rm -f "$CTD"/net.d/*; printf '%s\n' "$2" > "$CTD/net.d/10-$1.conflist"; }
# pod NAME [ANNOTATIONS-JSON]: RunPodSandbox with a hostPort 18090 -> 80; prints the sandbox ID.
pod_config() {
  local annotations=${2:-}
  [[ -n $annotations ]] || annotations='{}'
  echo "{\"metadata\": {\"name\": \"$1\", \"namespace\": \"e2e\", \"uid\": \"e2e-$1-uid\", \"attempt\": 0},
    \"hostname\": \"$1\", \"log_directory\": \"$CTD/pod-logs/$1\", \"annotations\": $annotations,
    \"port_mappings\": [{\"protocol\": \"TCP\", \"container_port\": 80, \"host_port\": 18090}],
    \"linux\": {\"cgroup_parent\": \"$CGROUP_PARENT/cri-$1\"}}"
}
serve() { # POD CONFIG TEXT: a container in the pod serving TEXT on port 80; prints its ID.
  local config="{\"metadata\": {\"name\": \"httpd\"}, \"image\": {\"image\": \"$IMAGE\"},
    \"command\": [\"sh\", \"-c\", \"mkdir /www && echo $3 > /www/index.html && exec httpd -f -p 80 -h /www\"],
    \"log_path\": \"httpd.log\"}"
  local out id
  out=$(cri CreateContainer "{\"pod_sandbox_id\": \"$1\", \"config\": $config, \"sandbox_config\": $2}" 2>&1)
  id=$(j 'r["container_id"]' "$out" 2>/dev/null) && cri StartContainer "{\"container_id\": \"$id\"}" >/dev/null && echo "$id"
}

# --- kind --------------------------------------------------------------------------------------
write_net kindnet '{"cniVersion": "0.3.1", "name": "kindnet", "plugins": [
  {"type": "ptp", "ipMasq": false, "mtu": 1400,
   "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam-state", "ranges": [[{"subnet": "10.244.0.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}'
if start_containerd containerd-nodes; then pass "nodes: containerd starts"; else
  fail "nodes: containerd starts" "$(containerd_log_tail)"; exit 1; fi
check "nodes: the busybox image imports into namespace k8s.io" ctr -n k8s.io images import "$IMAGE_TAR"
make_world

config=$(pod_config kind-web)
out=$(cri RunPodSandbox "{\"config\": $config}" 2>&1)
pod=$(j 'r["pod_sandbox_id"]' "$out" 2>/dev/null)
if [[ -n $pod ]]; then pass "kind: RunPodSandbox (ptp, host-local, portmap)"; else
  fail "kind: RunPodSandbox (ptp, host-local, portmap)" "$out"$'\n'"$(containerd_log_tail 5)"; exit 1; fi
status=$(cri PodSandboxStatus "{\"pod_sandbox_id\": \"$pod\"}" 2>&1)
ip=$(j 'r["status"]["network"]["ip"]' "$status" 2>/dev/null)
check "kind: the pod's address is in the node's pod CIDR" matches "$ip" '^10\.244\.0\.[0-9]+$'
check "kind: a /32 route to the pod on the host" matches "$(ip route show "$ip/32")" 'dev veth'
ctr_id=$(serve "$pod" "$config" "hello from kind")
check "kind: a container serves in the pod" test -n "$ctr_id"
check "kind: the container's eth0 has mtu 1400" matches "$("$PYTHON" "$here/cri.py" exec "$ctr_id" ip link show eth0 2>&1)" 'mtu 1400'
check "kind: the node fetches the page from the pod's address" wait_for 10 page_is "http://$ip/" "hello from kind"
check "kind: ... and through the hostPort from outside" page_is "http://198.51.100.1:18090/" "hello from kind" world
check "kind: StopPodSandbox" cri StopPodSandbox "{\"pod_sandbox_id\": \"$pod\"}"
check "kind: no veth, route or address is left" bash -c "no_veth && ! ip route show | grep -q 10.244.0. && ! ls /run/cni-ipam-state/kindnet | grep -q '^10\\.'"
check_fails "kind: the hostPort is closed" fetch "http://198.51.100.1:18090/" world
check "kind: RemovePodSandbox" cri RemovePodSandbox "{\"pod_sandbox_id\": \"$pod\"}"

# --- k3s ---------------------------------------------------------------------------------------
write_net cbr0 '{"cniVersion": "1.0.0", "name": "cbr0", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
   "forceAddress": true, "ipMasq": false, "mtu": 1450,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.42.0.0/24"}]], "routes": [{"dst": "10.42.0.0/16"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
  {"type": "bandwidth", "capabilities": {"bandwidth": true}}]}'
# containerd reloads its CNI config when the directory changes.
sleep 2
config=$(pod_config k3s-web '{"kubernetes.io/ingress-bandwidth": "4M", "kubernetes.io/egress-bandwidth": "2M"}')
out=$(cri RunPodSandbox "{\"config\": $config}" 2>&1)
pod=$(j 'r["pod_sandbox_id"]' "$out" 2>/dev/null)
if [[ -n $pod ]]; then pass "k3s: RunPodSandbox with bandwidth annotations (bridge, host-local, portmap, bandwidth)"; else
  fail "k3s: RunPodSandbox with bandwidth annotations" "$out"$'\n'"$(containerd_log_tail 5)"; exit 1; fi
status=$(cri PodSandboxStatus "{\"pod_sandbox_id\": \"$pod\"}" 2>&1)
ip=$(j 'r["status"]["network"]["ip"]' "$status" 2>/dev/null)
check "k3s: the pod's address is in the node's pod CIDR" matches "$ip" '^10\.42\.0\.[0-9]+$'
ifb=$(ip -o link show type ifb | awk -F': ' '{print $2}' | cut -d@ -f1)
check "k3s: an ifb device for the pod's egress" matches "$ifb" '^bwp[0-9a-f]{12}$'
check "k3s: tbf at 2 Mbit/s on it (the egress annotation)" matches "$(tc qdisc show dev "$ifb" 2>&1)" 'tbf 1: root .*rate 2Mbit'
check "k3s: tbf at 4 Mbit/s on the pod's host veth (the ingress annotation)" matches "$(tc qdisc show 2>&1)" 'tbf 1: dev veth[0-9a-f]+ root .*rate 4Mbit'
ctr_id=$(serve "$pod" "$config" "hello from k3s")
check "k3s: the node fetches the page from the pod" wait_for 10 page_is "http://$ip/" "hello from k3s"
check "k3s: ... and through the hostPort from outside" page_is "http://198.51.100.1:18090/" "hello from k3s" world
check "k3s: StopPodSandbox" cri StopPodSandbox "{\"pod_sandbox_id\": \"$pod\"}"
check "k3s: no ifb, no tbf, no veth, no allocation is left" bash -c \
  "! ip -o link show type ifb | grep -q . && ! tc qdisc show | grep -q tbf && no_veth && no_allocation cbr0"
check "k3s: RemovePodSandbox" cri RemovePodSandbox "{\"pod_sandbox_id\": \"$pod\"}"
check "nodes: no pod is left" json_assert "$(cri ListPodSandbox 2>&1)" 'r["items"] == []'
drop_world
true
