# Sourced by conformance/e2e/run.sh as the first thing inside its sandbox: new network, mount, pid,
# uts and ipc namespaces (unshare --net --mount --pid --uts --ipc --fork --mount-proc
# --propagation private). It makes every path a container runtime reads or writes private to the
# sandbox, so the runtimes find our plugins and nothing else, and nothing they write outlives it:
#
#   $SB                  tmpfs: the runtimes' roots, states, sockets, configs, logs, TMPDIR
#   $SB/plugins          PLUGIN_DIR bound read-only (reachable whatever is hidden below)
#   /run, /run/netns     tmpfs (containerd, runc, crun, podman, conmon, netns, xtables.lock)
#   /var/lib/cni         tmpfs (host-local's default dataDir, libcni's result cache)
#   /etc/cni/net.d       tmpfs (ctr's network configs)
#   /var/lib/containers, /var/lib/containerd, /var/tmp
#                        tmpfs, in case a runtime writes to its default place anyway (podman
#                        load does: containers/image's blob-info cache, its copy buffer)
#   /opt/cni/bin         PLUGIN_DIR read-only (ctr's and podman's only plugin directory)
#   /usr/lib/cni, /usr/libexec/cni, /usr/local/lib/cni, /usr/local/libexec/cni
#                        hidden by an empty read-only tmpfs where they exist: Debian's ctr also
#                        searches /usr/lib/cni, and podman's defaults list them all
#   /sys                 a sysfs of the sandbox's network namespace, with the machine's cgroup
#                        hierarchies moved over from the old /sys
#
# A path whose directory does not exist on the machine (say /opt/cni) is made in an overlay of its
# nearest existing ancestor, with the upper layer in $SB, so the machine's filesystem is never
# written. Expects E2E_WORK (made by run.sh outside) and PLUGIN_DIR.

sandbox_die() { echo "e2e sandbox: $*" >&2; exit 1; }

SB=$E2E_WORK/sandbox
export SB
mount -t tmpfs -o mode=755 cni-e2e "$SB" || sandbox_die "cannot mount tmpfs on $SB"
mkdir -p "$SB/plugins" "$SB/cgroup" "$SB/tmp" "$SB/overlay"

# bind_ro DIR TARGET
bind_ro() { mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" || sandbox_die "cannot bind $1 on $2"; }
bind_ro "$PLUGIN_DIR" "$SB/plugins"

# A sysfs that lists the sandbox's interfaces; the cgroup hierarchies the runtimes need come along.
mount --rbind /sys/fs/cgroup "$SB/cgroup" || sandbox_die "cannot bind /sys/fs/cgroup"
mount -t sysfs cni-e2e /sys || sandbox_die "cannot mount sysfs"
mount --move "$SB/cgroup" /sys/fs/cgroup || sandbox_die "cannot move the cgroup hierarchies"

mount -t tmpfs -o mode=755 cni-e2e /run || sandbox_die "cannot mount tmpfs on /run"
mkdir -p /run/netns /run/lock
# /run/netns a mount point from the start: `ip netns add` otherwise binds it onto itself, over
# the netns files containerd mounted there, which containerd then cannot remove (EBUSY).
mount -t tmpfs -o mode=755 cni-e2e /run/netns || sandbox_die "cannot mount tmpfs on /run/netns"

# private_dir PATH: PATH exists afterwards, empty, on a tmpfs or overlay of the sandbox.
private_dir() {
  local path=$1 up=$1
  if [[ -d $path ]]; then
    mount -t tmpfs -o mode=755 cni-e2e "$path" || sandbox_die "cannot mount tmpfs on $path"
    return
  fi
  while [[ ! -d $up ]]; do up=$(dirname "$up"); done
  if [[ $(findmnt -n -o SOURCE -T "$up") != cni-e2e* ]]; then
    local layer
    layer=$SB/overlay/$(tr / _ <<< "$up")
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay cni-e2e-overlay -o "lowerdir=$up,upperdir=$layer/upper,workdir=$layer/work" "$up" \
      || sandbox_die "cannot overlay $up"
  fi
  mkdir -p "$path"
}

# Paths missing on the machine first (their overlays would hide tmpfs mounts made below them).
for d in /var/lib/cni /etc/cni/net.d /opt/cni/bin /var/lib/containers /var/lib/containerd /var/tmp; do
  [[ -d $d ]] || private_dir $d
done
for d in /var/lib/cni /etc/cni/net.d /var/lib/containers /var/lib/containerd /var/tmp; do
  [[ $(findmnt -n -o SOURCE -T $d) == cni-e2e-overlay ]] || private_dir $d
done
bind_ro "$SB/plugins" /opt/cni/bin
for d in /usr/lib/cni /usr/libexec/cni /usr/local/lib/cni /usr/local/libexec/cni; do
  [[ -d $d ]] && { mount -t tmpfs -o ro,mode=755 cni-e2e "$d" || sandbox_die "cannot hide $d"; }
done

ip link set lo up
export TMPDIR=$SB/tmp
