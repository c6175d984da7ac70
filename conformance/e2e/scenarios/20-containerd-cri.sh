# The path the kubelet takes: containerd's CRI plugin, driven over its gRPC socket by cri.py.
# RunPodSandbox with a port mapping (CNI ADD through bridge, host-local, portmap, loopback, with
# the kubelet's CNI_ARGS and capability arguments), a container in the pod serving a page on the
# published port, then StopPodSandbox (CNI DEL) and RemovePodSandbox. The sandbox ("pause")
# image is the busybox image, imported into containerd's k8s.io namespace.

trap 'stop_containerd' EXIT
net=e2e-cri
CTD=$SB/containerd-cri
mkdir -p "$CTD/net.d" "$CTD/net-missing.d"
cat > "$CTD/net.d/10-$net.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "$net", "plugins": [
  {"type": "bridge", "bridge": "cni-cri0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.3.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF
# For the runtime handler "missing-plugin": a network whose plugin PLUGIN_DIR lacks.
cat > "$CTD/net-missing.d/10-e2e-missing.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "e2e-missing", "plugins": [
  {"type": "no-such-plugin", "ipam": {"type": "host-local", "subnet": "10.89.4.0/24"}}]}
EOF

if start_containerd containerd-cri; then pass "cri: containerd starts with a config of the sandbox"; else
  fail "cri: containerd starts with a config of the sandbox" "$(containerd_log_tail)"; exit 1; fi
check "cri: the busybox image imports into namespace k8s.io" ctr -n k8s.io images import "$IMAGE_TAR"

# j PYTHON-EXPRESSION JSON: a value out of a CRI response (`r`).
j() { python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print(eval(sys.argv[1]))' "$1" "$2"; }

out=$(cri Version '{"version": "v1"}' 2>&1)
check "cri: the runtime speaks CRI v1" json_assert "$out" 'r["runtime_api_version"] == "v1"'
out=$(cri ImageStatus "{\"image\": {\"image\": \"$IMAGE\"}}" 2>&1)
check "cri: the sandbox image is the local busybox image" json_assert "$out" "'$IMAGE' in r['image']['repo_tags']"

hostport=18080
pod_config="{\"metadata\": {\"name\": \"web\", \"namespace\": \"e2e\", \"uid\": \"e2e-web-uid\", \"attempt\": 0},
  \"hostname\": \"web\", \"log_directory\": \"$CTD/pod-logs/web\",
  \"port_mappings\": [{\"protocol\": \"TCP\", \"container_port\": 80, \"host_port\": $hostport}],
  \"linux\": {\"cgroup_parent\": \"$CGROUP_PARENT/cri-web\"}}"
out=$(cri RunPodSandbox "{\"config\": $pod_config}" 2>&1)
pod=$(j 'r["pod_sandbox_id"]' "$out" 2>/dev/null)
if [[ -n $pod ]]; then pass "cri: RunPodSandbox with a port mapping"; else
  fail "cri: RunPodSandbox with a port mapping" "$out"$'\n'"$(containerd_log_tail 5)"; exit 1; fi
tag=$(attachment_tag "$net" "$pod")

check "cri: the pod's sandbox (pause) container runs the busybox image" \
  matches "$(ctr -n k8s.io containers list)" "^$pod +$IMAGE "
status=$(cri PodSandboxStatus "{\"pod_sandbox_id\": \"$pod\"}" 2>&1)
check "cri: the pod is ready" json_assert "$status" 'r["status"]["state"] == "SANDBOX_READY"'
ip=$(j 'r["status"]["network"]["ip"]' "$status" 2>/dev/null)
echo "# pod ${pod:0:12} has ${ip:-no address}"
check "cri: the pod's address comes from host-local in the network's range" matches "$ip" '^10\.89\.3\.[0-9]+$'
check "cri: host-local recorded it for the pod's sandbox ID" same "$ip" "$(allocated_ip $net "$pod")"

container_config="{\"metadata\": {\"name\": \"httpd\"}, \"image\": {\"image\": \"$IMAGE\"},
  \"command\": [\"sh\", \"-c\", \"mkdir /www && echo hello from a CRI pod > /www/index.html && exec httpd -f -p 80 -h /www\"],
  \"log_path\": \"httpd.log\"}"
out=$(cri CreateContainer "{\"pod_sandbox_id\": \"$pod\", \"config\": $container_config, \"sandbox_config\": $pod_config}" 2>&1)
ctr_id=$(j 'r["container_id"]' "$out" 2>/dev/null)
check "cri: CreateContainer in the pod" test -n "$ctr_id"
[[ -n $ctr_id ]] || echo "$out" | sed 's/^/    # /'
check "cri: StartContainer" cri StartContainer "{\"container_id\": \"$ctr_id\"}"
check "cri: the container sees the pod's address on eth0" \
  matches "$("$PYTHON" "$here/cri.py" exec "$ctr_id" ip -4 addr show eth0 2>&1)" "inet $ip/24"

check "cri: the sandbox host fetches the page from the pod's address" wait_for 10 page_is "http://$ip/" "hello from a CRI pod"
check "cri: ... and from the published hostPort on 127.0.0.1:$hostport" page_is "http://127.0.0.1:$hostport/" "hello from a CRI pod"
make_world
check "cri: an outside namespace fetches it through the sandbox host's $hostport" \
  page_is "http://198.51.100.1:$hostport/" "hello from a CRI pod" world
check "cri: our portmap published it (nft table inet cni_portmap, the pod's chain)" nft_has "inet cni_portmap" "$tag"
check "cri: ... with a DNAT to $ip:80" nft_has "inet cni_portmap" "dnat ip to $ip:80"
check "cri: our bridge masquerades for the pod (nft table inet cni_bridge)" nft_has "inet cni_bridge" "$tag"
check "cri: no iptables rule of the reference plugins" no_reference_iptables
echo "# pod network namespace: $(cd /run/netns && echo cni-*)"

check "cri: StopPodSandbox" cri StopPodSandbox "{\"pod_sandbox_id\": \"$pod\"}"
status=$(cri PodSandboxStatus "{\"pod_sandbox_id\": \"$pod\"}" 2>&1)
check "cri: the pod is not ready" json_assert "$status" 'r["status"]["state"] == "SANDBOX_NOTREADY"'
check "cri: no veth is left" no_veth
check "cri: host-local released the address" no_allocation $net
check "cri: no firewall entry of the pod is left" nft_clean_of "$tag"
check "cri: ... nor any naming its address" nft_clean_of "$ip:"
check_fails "cri: the hostPort is closed" fetch "http://198.51.100.1:$hostport/" world
check "cri: the pod's network namespace is gone" no_netns
check "cri: RemovePodSandbox" cri RemovePodSandbox "{\"pod_sandbox_id\": \"$pod\"}"
check "cri: no pod is left" json_assert "$(cri ListPodSandbox 2>&1)" 'r["items"] == []'
check "cri: no container is left" json_assert "$(cri ListContainers 2>&1)" 'r["containers"] == []'
drop_world

# The runtime handler whose network names a plugin PLUGIN_DIR lacks: RunPodSandbox fails.
out=$(cri RunPodSandbox "{\"config\": ${pod_config//web/lost}, \"runtime_handler\": \"missing-plugin\"}" 2>&1)
status=$?
if [[ $status != 0 ]] && matches "$out" 'failed to find plugin .?no-such-plugin'; then
  pass "cri: a network naming a plugin missing from PLUGIN_DIR fails RunPodSandbox"
else
  fail "cri: a network naming a plugin missing from PLUGIN_DIR fails RunPodSandbox (status $status)" "$out"
fi
echo "# $(grep -o 'plugin type=.*' <<< "$out")"
# containerd keeps the failed pod, not ready, for the kubelet to stop and remove; neither can
# succeed while the network's plugin is missing (CNI DEL needs it too).
lost=$(j '" ".join(p["id"] for p in r["items"])' "$(cri ListPodSandbox)")
out=$(cri StopPodSandbox "{\"pod_sandbox_id\": \"$lost\"}" 2>&1)
check "cri: ... its StopPodSandbox fails the same way" matches "$out" 'failed to find plugin .?no-such-plugin'
# The administrator fixes the network (a plugin we ship in its place); the kubelet's retries
# then go through.
cat > "$CTD/net-missing.d/10-e2e-missing.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "e2e-missing", "plugins": [{"type": "loopback"}]}
EOF
check "cri: ... and succeeds once the network names only plugins PLUGIN_DIR has" \
  wait_for 20 cri StopPodSandbox "{\"pod_sandbox_id\": \"$lost\"}"
check "cri: ... then RemovePodSandbox" cri RemovePodSandbox "{\"pod_sandbox_id\": \"$lost\"}"
check "cri: ... leaving no pod" json_assert "$(cri ListPodSandbox 2>&1)" 'r["items"] == []'
check "cri: ... no veth, allocation or network namespace" bash -c 'no_veth && no_allocation e2e-missing && no_netns'
true
