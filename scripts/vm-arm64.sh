#!/usr/bin/env bash
# Runs one command on an arm64 Debian guest: Debian 12's arm64 kernel (linux-image-arm64) and an
# arm64 Debian root file system, under qemu-system-aarch64 with software emulation (TCG), for
# testing the aarch64 release binaries on an arm64 kernel. Modelled on scripts/vm.sh (the amd64
# lane); prints the command's output and exits with its status.
#
#   scripts/vm-arm64.sh [--timeout SECONDS] [--env NAME=VALUE]... -- COMMAND [ARG...]
#   VM_TIMEOUT  seconds until a guest that has not finished is killed (default 1800)
#   VM_MEM, VM_SMP  guest RAM in MiB (default 2048) and CPUs (default 2)
#
# Why not the host's / as in vm.sh: the host's programs are amd64, the guest runs arm64 code only.
# The root is a Debian 12 arm64 tree made once by `debootstrap --foreign --arch=arm64` (it
# downloads and unpacks without running arm64 code) with the packages the conformance scenarios
# use (iproute2, nftables, iptables, python3, iperf3, dnsmasq-base, the arm64 reference plugins
# containernetworking-plugins and dnsname, the kernel). Its packages are unpacked on the host, not configured
# (no arm64 code runs here: qemu-user needs binfmt_misc, which this machine does not set up and
# which we do not change); the few things their maintainer scripts would do for these tests are
# done below (users and groups, the awk and iptables alternatives). Cached under target/vm-arm64/.
#
# In the guest: the tree is the root (read-only share under a RAM overlay); the checkout is
# shared read-only at the same path as here, so dist/, target/ and conformance/ are where they are
# on the host. Output and status come back through a writable share as in vm.sh.
# Packages (host): qemu-system-arm, debootstrap, cpio, kmod (scripts/deps.sh).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
timeout_s=${VM_TIMEOUT:-1800}
extra_env=()
while (($#)); do
  case $1 in
    --timeout) timeout_s=$2; shift 2 ;;
    --env) extra_env+=("$2"); shift 2 ;;
    --) shift; break ;;
    -*) echo "vm-arm64.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
(($#)) || { sed -n '6,8s/^# \{0,1\}//p' "$0" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "vm-arm64.sh: must run as root" >&2; exit 1; }

say() { echo "vm-arm64: $*" >&2; }

missing=()
for p in qemu-system-arm debootstrap cpio kmod; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

vmdir=$top/target/vm-arm64
mkdir -p "$vmdir/runs"
exec 9> "$vmdir/.lock"
flock 9

# --- the root file system: made once ----------------------------------------------------------
packages=linux-image-arm64,iproute2,iputils-ping,nftables,iptables,python3,procps,kmod,busybox-static,mawk,iperf3,dnsmasq-base,containernetworking-plugins,golang-github-containernetworking-plugin-dnsname
# Keyed by the package list: another list makes another tree (and the old one is removed).
rootfs=$vmdir/rootfs-$(sha256sum <<< "$packages" | cut -c1-12)
if [[ ! -e $rootfs/.complete ]]; then
  say "making an arm64 Debian 12 tree in $rootfs (debootstrap --foreign; about 300 MB)"
  tmp=$rootfs.tmp
  for old in "$vmdir"/rootfs-*; do
    [[ $old == "$rootfs" || $old == "$tmp" ]] || rm -rf "$old"
  done
  rm -rf "$rootfs"
  # A finished download of an interrupted run is kept (debootstrap --foreign is the slow part).
  [[ -e $tmp/debootstrap/debootstrap.log ]] || { rm -rf "$tmp"; debootstrap --foreign --arch=arm64 --variant=minbase --include="$packages" \
    bookworm "$tmp" http://deb.debian.org/debian >&2; }
  # --foreign unpacked only the essential packages; unpack the rest (and all again: harmless)
  # the same way, keeping the merged-/usr symlinks (/bin -> usr/bin).
  for deb in "$tmp"/var/cache/apt/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$tmp"
  done
  # What the maintainer scripts would have done, as far as these tests need it.
  cp "$tmp"/usr/share/base-passwd/passwd.master "$tmp"/etc/passwd
  cp "$tmp"/usr/share/base-passwd/group.master "$tmp"/etc/group
  ln -sfn mawk "$tmp/usr/bin/awk"
  for t in iptables ip6tables; do
    for s in "" -save -restore; do ln -sfn "$t-nft$s" "$tmp/usr/sbin/$t$s"; done
  done
  for d in proc sys dev run tmp; do rm -rf "$tmp/$d"; mkdir -p "$tmp/$d"; done
  chmod 1777 "$tmp/tmp"
  mkdir -p "$tmp/var/lib/cni" "$tmp/etc/cni/net.d"
  rm -rf "$tmp"/var/cache/apt/archives/*.deb
  kver=$(ls "$tmp/lib/modules")
  depmod -b "$tmp" "$kver"
  mv "$tmp" "$rootfs"
  touch "$rootfs/.complete"
fi
kver=$(ls "$rootfs/lib/modules")
vmlinuz=$rootfs/boot/vmlinuz-$kver
moddir=$rootfs/lib/modules/$kver

# --- the initramfs: arm64 busybox, the modules that reach the 9p root, /init -------------------
wanted=(virtio_pci 9pnet_virtio 9p overlay)
read -r -d '' init <<'INIT' || true
#!/bin/sh
# /init of the arm64 lane's guest (scripts/vm-arm64.sh). Kernel command line:
#   vm.results=DIR  the writable share's host path; vm.top=DIR  the checkout's host path
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
die() { echo "vm-init: $*"; poweroff -f; }
for arg in $(cat /proc/cmdline); do
  case $arg in vm.results=*) results=${arg#*=} ;; vm.top=*) top=${arg#*=} ;; esac
done
for m in $(cat /boot-modules); do insmod /lib/boot/$m.ko || die "insmod $m"; done
opts=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /lower /upper /root
mount -t 9p -o $opts,ro,cache=loose rootfs /lower || die "mounting the root share"
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work root /root \
  || die "mounting the overlay"
mkdir -p /root$top /root$results
mount -t 9p -o $opts,ro,cache=loose top /root$top || die "mounting the checkout"
mount -t 9p -o $opts results /root$results || die "mounting the results share"
mount -t tmpfs -o mode=0755 run /root/run
mount -t tmpfs -o mode=1777 tmp /root/tmp
mount -t proc proc /root/proc
mount -t sysfs sys /root/sys
mount -t devtmpfs dev /root/dev
ln -s /proc/self/fd /root/dev/fd
for i in 0:stdin 1:stdout 2:stderr; do ln -s /proc/self/fd/${i%:*} /root/dev/${i#*:}; done
mkdir -p /root/dev/pts /root/dev/shm
mount -t devpts devpts /root/dev/pts
mount -t tmpfs shm /root/dev/shm
mount -t cgroup2 cgroup2 /root/sys/fs/cgroup 2>/dev/null
# The kernel loads modules on demand with pid 1's /sbin/modprobe (busybox's, here).
mkdir -p /lib/modules
mount --bind /root/lib/modules /lib/modules
chroot /root /sbin/ldconfig
ip link set lo up
hostname cni-vm-arm64
echo "vm-init: running $results/run.sh"
chroot /root /bin/sh $results/run.sh > /root$results/output 2>&1
echo $? > /root$results/rc
sync
umount /root$results
echo "vm-init: done"
poweroff -f
INIT
init_hash=$(sha256sum < "${BASH_SOURCE[0]}" | cut -c1-16)
initrd=$vmdir/initramfs-$kver-$init_hash.gz
if [[ ! -e $initrd ]]; then
  say "building $initrd"
  rm -f "$vmdir"/initramfs-*.gz
  # Modules in load order: each one's dependencies (modules.dep) first, built-ins skipped.
  order=()
  add() {
    local m=$1 line dep
    line=$(grep -E "(^|/)$m\.ko:" "$moddir/modules.dep" || true)
    [[ -n $line ]] || return 0   # built in
    for dep in ${line#*:}; do add "$(basename "$dep" .ko)"; done
    [[ " ${order[*]} " == *" $m "* ]] || order+=("$m")
  }
  for m in "${wanted[@]}"; do add "$m"; done
  stage=$(mktemp -d)
  mkdir -p "$stage"/{bin,proc,sys,dev,lib/boot}
  cp "$rootfs/usr/bin/busybox" "$stage/bin/"
  for applet in sh mount insmod mkdir cat echo chroot ip hostname poweroff sync umount ln modprobe; do
    ln -s busybox "$stage/bin/$applet"
  done
  ln -s bin "$stage/sbin"
  for m in "${order[@]}"; do
    cp "$(find "$moddir" -name "$m.ko" -print -quit)" "$stage/lib/boot/"
  done
  echo "${order[*]}" > "$stage/boot-modules"
  printf '%s\n' "$init" > "$stage/init"
  chmod 0755 "$stage/init"
  (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$stage"
fi
flock -u 9

# --- one run --------------------------------------------------------------------------------
run=$(mktemp -d "$vmdir/runs/run.XXXXXX")
trap 'rm -rf "$run"' EXIT
{
  echo "# written by scripts/vm-arm64.sh for one guest run"
  echo "export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  while IFS='=' read -r -d '' name value; do
    case $name in
      RUST_* | CNI_* | PLUGIN_DIR | CNITOOL | REFERENCE_DIR) printf 'export %s=%q\n' "$name" "$value" ;;
    esac
  done < /proc/self/environ
  for kv in "${extra_env[@]}"; do printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"; done
  printf 'cd %q || exit 125\n' "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} > "$run/run.sh"
: > "$run/output"

console=$run/console.log
start=$SECONDS
timeout --kill-after=10 "$timeout_s" qemu-system-aarch64 \
  -machine virt -cpu max,pauth-impdef=on -smp "${VM_SMP:-2}" -m "${VM_MEM:-2048}" \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyAMA0 quiet panic=-1 vm.results=$run vm.top=$top" \
  -virtfs "local,path=$rootfs,mount_tag=rootfs,security_model=passthrough,readonly=on,multidevs=remap" \
  -virtfs "local,path=$top,mount_tag=top,security_model=passthrough,readonly=on,multidevs=remap" \
  -virtfs "local,path=$run,mount_tag=results,security_model=passthrough" \
  -display none -monitor none -serial "file:$console" -nic none -no-reboot \
  > "$run/qemu.log" 2>&1 &
qemu=$!
tail -n +1 -F --pid="$qemu" "$run/output" 2>/dev/null &
tailer=$!
trap 'kill "$qemu" "$tailer" 2>/dev/null; wait "$qemu" 2>/dev/null; exit 130' INT TERM
qemu_rc=0
wait "$qemu" || qemu_rc=$?
wait "$tailer" 2>/dev/null || true
if [[ -s $run/rc ]]; then
  rc=$(cat "$run/rc")
  say "$* exited with $rc on $kver (aarch64, TCG) after $((SECONDS - start)) s"
  exit "$rc"
fi
if ((qemu_rc == 124 || qemu_rc == 137)); then
  say "the guest did not finish within ${timeout_s} s; it was killed"
else
  say "the guest ended without the command's exit status (qemu exit status $qemu_rc)"
  cat "$run/qemu.log" >&2
fi
say "last console lines:"
tail -n 40 "$console" >&2
exit 1
