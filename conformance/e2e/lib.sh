# Helpers for the end-to-end scenarios; sourced by run.sh inside the sandbox, after
# conformance/lib.sh (pass, fail, check, check_fails, json_assert).

IMAGE=localhost/cni-e2e/busybox:latest
IMAGE_TAR=$SB/busybox-oci.tar
# Containers' cgroups go below this parent (in the machine's hierarchies: cgroups have no
# sandbox of their own); run.sh removes what is left of it after the run.
CGROUP_PARENT=/$(basename "$E2E_WORK")
PYTHON=${E2E_PYTHON:-/usr/bin/python3}   # Debian's, where python3-grpcio and python3-protobuf are

build_image() {
  if "$PYTHON" "$here/mkimage.py" "$IMAGE_TAR" "$IMAGE"; then
    pass "image: $IMAGE built from busybox-static ($(du -k "$IMAGE_TAR" | cut -f1) KiB OCI archive)"
  else
    fail "image: $IMAGE built from busybox-static"
  fi
}

# wait_for SECONDS COMMAND...: polls until the command succeeds; fails when the time is up.
wait_for() {
  local until=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < until)) || return 1
    sleep 0.2
  done
}

# The names our plugins give an attachment's firewall entries (crates/firewall/src/identity.rs):
# 16 hex of sha512(network) and 16 hex of sha512("ifname:containerID").
network_hash() { printf '%s' "$1" | sha512sum | cut -c1-16; }
instance_hash() { printf '%s' "$2:$1" | sha512sum | cut -c1-16; }   # CONTAINER_ID IFNAME
attachment_tag() { echo "$(network_hash "$1")-$(instance_hash "$2" "${3:-eth0}")"; }   # NETWORK ID [IFNAME]

# nft_has TABLE STRING: `nft list table TABLE` mentions STRING. (Listings are read whole, never
# piped to grep -q: under pipefail its early exit would fail the pipeline.)
nft_has() { local t table; read -ra table <<< "$1"; t=$(nft list table "${table[@]}" 2>/dev/null) && [[ $t == *"$2"* ]]; }
# nft_clean_of STRING: no table of the ruleset mentions STRING.
nft_clean_of() { local t; t=$(nft list ruleset) && [[ $t != *"$1"* ]]; }
# No iptables rule or chain of the reference plugins (CNI-...) in any table.
no_reference_iptables() { local t; t=$(iptables-save; ip6tables-save) && [[ $t != *CNI-* ]]; }

# The host-local allocations (address files) of a network in the default dataDir.
allocations() { find "/var/lib/cni/networks/$1" -maxdepth 1 -type f -name '[0-9a-f]*[.:]*' 2>/dev/null; }
# The address host-local gave CONTAINER_ID on NETWORK (its file starts with the ID).
allocated_ip() {
  local f
  for f in $(allocations "$1"); do
    [[ $(head -n 1 "$f") == "$2"$'\r' || $(head -n 1 "$f") == "$2" ]] && { basename "$f"; return; }
  done
}

# No veth and no network namespace, but for the outside one of make_world.
no_veth() { [[ -z $(ip -o link show type veth | grep -v ': uplink@') ]]; }
no_netns() { local n; for n in /run/netns/*; do [[ -e $n && $n != /run/netns/world ]] && return 1; done; return 0; }

# fetch URL [NETNS]: the page, with busybox wget (from the sandbox host, or from NETNS).
# (Debian's busybox 1.35 wget crashes with -T; timeout(1) bounds it instead.)
fetch() {
  if [[ -n ${2:-} ]]; then timeout 5 ip netns exec "$2" busybox wget -q -O - "$1"; else timeout 5 busybox wget -q -O - "$1"; fi
}
# page_is URL TEXT [NETNS]
page_is() { [[ $(fetch "$1" "${3:-}") == "$2" ]]; }

# An outside network namespace ("world", 198.51.100.2) wired to the sandbox host (198.51.100.1),
# to reach published ports as a remote client would.
make_world() {
  ip netns add world
  ip link add uplink type veth peer name eth0 netns world
  ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up
  ip -n world addr add 198.51.100.2/24 dev eth0 && ip -n world link set eth0 up && ip -n world link set lo up
}
drop_world() { ip netns delete world 2>/dev/null; }

# --- containerd -------------------------------------------------------------------------------

# start_containerd NAME: a containerd of the sandbox, everything under $CTD ($SB/NAME); the CRI
# plugin takes its CNI configs from $CTD/net.d (written before) and its plugins from PLUGIN_DIR
# only, and has a runtime handler "missing-plugin" whose networks come from $CTD/net-missing.d.
start_containerd() {
  CTD=$SB/$1
  mkdir -p "$CTD/root" "$CTD/state" "$CTD/net.d" "$CTD/net-missing.d" "$CTD/opt" "$CTD/pod-logs"
  cat > "$CTD/config.toml" <<EOF
version = 2
root = "$CTD/root"
state = "$CTD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTD/containerd.sock"
[ttrpc]
  address = "$CTD/containerd.sock.ttrpc"
[debug]
  level = "${E2E_CONTAINERD_LOG:-info}"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$IMAGE"
  disable_apparmor = true
  # Keep pods' oom_score_adj at or above containerd's own: the pause container's -998 needs
  # CAP_SYS_RESOURCE, which some sandboxes (this project's CI among them) do not grant root.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$SB/plugins"
    conf_dir = "$CTD/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "${E2E_OCI_RUNTIME:-runc}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.missing-plugin]
      runtime_type = "io.containerd.runc.v2"
      cni_conf_dir = "$CTD/net-missing.d"
      cni_max_conf_num = 1
EOF
  containerd --config "$CTD/config.toml" > "$CTD/containerd.log" 2>&1 &
  CONTAINERD_PID=$!
  export CONTAINERD_ADDRESS=$CTD/containerd.sock CRI_ENDPOINT=$CTD/containerd.sock CRI_GEN_DIR=$CTD/cri-py
  wait_for 30 ctr version
}

# stop_containerd: stops the containerd that start_containerd started (by its PID), and the
# shims it started (their PIDs from its state directory).
stop_containerd() {
  [[ -n ${CONTAINERD_PID:-} ]] || return 0
  local shims
  shims=$(cat "$CTD"/state/io.containerd.runtime.v2.task/*/*/shim.pid 2>/dev/null)
  kill "$CONTAINERD_PID" 2>/dev/null
  wait "$CONTAINERD_PID" 2>/dev/null
  # shellcheck disable=SC2086 # one PID a word
  [[ -n $shims ]] && kill $shims 2>/dev/null
  CONTAINERD_PID=
}

containerd_log_tail() { tail -n "${1:-20}" "$CTD/containerd.log"; }

# cri METHOD [JSON]: one CRI call (cri.py), the response as JSON.
cri() { "$PYTHON" "$here/cri.py" call "$@"; }

has_allocation() { [[ -n $(allocated_ip "$1" "$2") ]]; }   # NETWORK CONTAINER_ID
no_allocation() { [[ -z $(allocations "$1") ]]; }            # NETWORK
# same A B: A is not empty and B equals it.
same() { [[ -n $1 && $1 == "$2" ]]; }
# matches TEXT REGEX: grep -E on a text.
matches() { grep -qE -- "$2" <<< "$1"; }
# running PID
gone() { ! kill -0 "$1" 2>/dev/null; }

# --- podman -----------------------------------------------------------------------------------

# setup_podman: podman with its CNI network backend, everything under $P ($SB/podman), its only
# plugin directory /opt/cni/bin (PLUGIN_DIR: firewall and tuning included, no /usr/lib/cni); the
# busybox image loaded. Defines podman(), bounded to 60 s a call.
setup_podman() {
  P=$SB/podman
  mkdir -p "$P/net.d" "$P/tmp"
  cat > "$P/containers.conf" <<EOF
[containers]
apparmor_profile = "unconfined"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$P/events.log"
image_copy_tmp_dir = "$P/tmp"
runtime = "${E2E_OCI_RUNTIME:-runc}"
static_dir = "$P/libpod"
tmp_dir = "$P/tmp"
volume_path = "$P/volumes"

[network]
network_backend = "cni"
cni_plugin_dirs = ["/opt/cni/bin"]
network_config_dir = "$P/net.d"
EOF
  cat > "$P/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$P/storage"
runroot = "$P/runroot"
EOF
  export CONTAINERS_CONF=$P/containers.conf CONTAINERS_STORAGE_CONF=$P/storage.conf
  podman_bin=$(type -P podman)
  podman() { timeout 60 "$podman_bin" "$@"; }
  podman image exists "$IMAGE" 2>/dev/null || check "podman: the busybox image loads (podman load)" podman load -i "$IMAGE_TAR"
}

# podman_fetch NETWORK URL...: a throwaway container on NETWORK fetches each URL in turn; prints
# the pages (or wget's complaints), fails if the last fetch did. One container for several URLs:
# podman notices a container's exit only after 20 s in this sandbox (conmon's exit file; nothing
# of the plugins'). wget under a shell that stays PID 1, which timeout's signal can stop.
# Named: podman's generated names (adjective_name) have an underscore, which our dnsname refuses
# as a host name (RFC 1123), so an unnamed run fails on a network with DNS on.
podman_fetch() {
  local net=$1; shift
  podman run --rm --name "fetch-$RANDOM" --network "$net" --cgroup-parent "$CGROUP_PARENT/podman" "$IMAGE" \
    sh -c 'for u; do timeout 5 wget -q -O - "$u"; r=$?; done; exit $r' sh "$@" 2>&1
}

# podman_net_without_firewall NETWORK SUBNET: `podman network create`, then its conflist rewritten
# without the firewall plugin (bridge, portmap, tuning): a control for what firewall lets through.
podman_net_without_firewall() {
  podman network create --subnet "$2" "$1" >/dev/null || return 1
  python3 - "$P/net.d/$1.conflist" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["plugins"] = [p for p in c["plugins"] if p["type"] != "firewall"]
json.dump(c, open(sys.argv[1], "w"))
PY
}

# forward_drop: the sandbox host forwards nothing that no rule accepts (iptables and ip6tables
# FORWARD policy DROP). Containers on one bridge go through FORWARD too when br_netfilter is there
# (bridge-nf-call-iptables, on by default in a new network namespace).
forward_drop() {
  iptables -P FORWARD DROP && ip6tables -P FORWARD DROP
  echo "# FORWARD policy DROP; bridge-nf-call-iptables=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo absent)"
}

# world_serve: make_world, with a route back to the containers' networks (10.89.0.0/16) and a
# page on 198.51.100.2:8080 (busybox httpd in the world namespace, WORLD_HTTPD its PID);
# world_stop stops it (by PID) and removes the namespace. Not through check: its PID must reach
# the scenario, and a command substitution would wait for the server's end of its pipe.
world_serve() {
  make_world
  ip -n world route add 10.89.0.0/16 via 198.51.100.1
  mkdir -p "$SB/world-www" && echo "hello from the world" > "$SB/world-www/index.html"
  ip netns exec world busybox httpd -f -p 8080 -h "$SB/world-www" < /dev/null > /dev/null 2>&1 &
  WORLD_HTTPD=$!
  wait_for 5 page_is http://198.51.100.2:8080/ "hello from the world"
}
world_stop() {
  [[ -n ${WORLD_HTTPD:-} ]] && { kill "$WORLD_HTTPD" 2>/dev/null; wait "$WORLD_HTTPD" 2>/dev/null; }
  WORLD_HTTPD=
  drop_world
}

export -f network_hash instance_hash attachment_tag nft_has nft_clean_of no_reference_iptables allocations allocated_ip \
  no_veth no_netns fetch page_is has_allocation no_allocation same matches gone
