# Sourced by scripts that run plugins: re-executes the calling script inside a sandbox, a new
# network namespace (the "host" the plugins see) and a new mount namespace with tmpfs on
# /run/netns and /var/lib/cni, and a sysfs of the new namespace on /sys (so /sys/class/net and
# device directories list the sandbox's interfaces, as host-device expects of the host's). Containers made there with `ip netns add`, libcni's result cache,
# and every link, route and firewall rule vanish when the script ends, however it ends; the
# machine's own namespaces are never touched.
#
#   . scripts/sandbox.sh "$@"      (first thing in the script; needs root)

if [[ -z ${CNI_SANDBOX:-} ]]; then
  [[ $(id -u) == 0 ]] || { echo "$(basename "$0"): must run as root (it creates namespaces)" >&2; exit 1; }
  exec unshare --net --mount --propagation private --fork env CNI_SANDBOX=1 "$0" "$@"
fi
mkdir -p /run/netns /var/lib/cni
mount -t tmpfs cni-sandbox /run/netns
mount -t tmpfs cni-sandbox /var/lib/cni
mount -t sysfs cni-sandbox /sys
ip link set lo up
SANDBOX_WORK=$(mktemp -d)
mount -t tmpfs cni-sandbox "$SANDBOX_WORK"
export SANDBOX_WORK NETCONFPATH=$SANDBOX_WORK/net.d
mkdir -p "$NETCONFPATH"
