#!/usr/bin/env bash
# Runs one command on a second kernel: Debian's stock kernel (the 6.1 LTS of Debian 12) under qemu,
# for the kernel features this machine's kernel lacks (bridge VLAN filtering, dummy, vlan, ipvlan,
# vrf, bond). Prints the command's output and exits with its status.
#
#   scripts/vm.sh [--timeout SECONDS] [--env NAME=VALUE]... -- COMMAND [ARG...]
#   VM_TIMEOUT  seconds until a guest that has not finished is killed (default 900)
#   VM_MEM, VM_SMP  guest RAM in MiB (default 2048) and CPUs (default 2)
#
# The guest has no disk image: the host's / is shared read-only over 9p and is the guest's root
# (under a RAM overlay, so the guest may write anywhere and the host sees none of it; tmpfs on
# /tmp and /run). The command runs there as root, in the same directory as here, with the same
# paths: target/debug and its test executables are where they are on the host. Its output and
# exit status come back through a second, writable share (target/vm/runs/<id>). Environment
# passed in: RUST_*, CNI_*, PLUGIN_DIR, CNITOOL, REFERENCE_DIR, and every --env; PATH is Debian's
# default (so the tools are Debian's, not a shim of the calling shell) unless --env sets it.
#
# The kernel is fetched once with apt-get (`linux-image-amd64`'s current dependency), unpacked
# under target/vm/<kernel version>/ with its modules and an initramfs (busybox-static), and kept.
# qemu runs with TCG (`-machine accel=tcg`): /dev/kvm exists on these machines but nested KVM
# guests hang after the boot loader. A guest that hangs or crashes is a failure that prints the
# tail of its console, after VM_TIMEOUT at the latest.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
timeout_s=${VM_TIMEOUT:-900}
extra_env=()
while (($#)); do
  case $1 in
    --timeout) timeout_s=$2; shift 2 ;;
    --env) extra_env+=("$2"); shift 2 ;;
    --) shift; break ;;
    -*) echo "vm.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
(($#)) || { sed -n '2,8s/^# \{0,1\}//p' "$0" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "vm.sh: must run as root (qemu's 9p passthrough of /)" >&2; exit 1; }

say() { echo "vm: $*" >&2; }

# --- packages -------------------------------------------------------------------------------
missing=()
for p in qemu-system-x86 cpio kmod busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# --- the kernel: fetched, unpacked and indexed once per version --------------------------------
vmdir=$top/target/vm
mkdir -p "$vmdir/runs"
exec 9> "$vmdir/.lock"
flock 9   # one fetch or initramfs build at a time; released before the guest boots

kernel_package() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg=$(kernel_package)
if [[ -z $pkg ]]; then
  apt-get update -q >&2 || true
  pkg=$(kernel_package)
fi
if [[ -z $pkg ]]; then
  # No package lists (offline): the newest kernel already unpacked will do.
  cached=$(ls -d "$vmdir"/*/.complete 2>/dev/null | sort -V | tail -1)
  [[ -n $cached ]] || { say "cannot resolve linux-image-amd64 (apt-cache) and no kernel is cached"; exit 1; }
  pkg=linux-image-$(basename "$(dirname "$cached")")
fi
kver=${pkg#linux-image-}
cache=$vmdir/$kver
if [[ ! -e $cache/.complete ]]; then
  say "fetching $pkg into $cache"
  rm -rf "$cache" "$cache.tmp"
  mkdir -p "$cache.tmp/deb"
  (cd "$cache.tmp/deb" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2)
  dpkg -x "$cache.tmp"/deb/*.deb "$cache.tmp/root"
  depmod -b "$cache.tmp/root" "$kver"
  mv "$cache.tmp/root" "$cache"
  rm -rf "$cache.tmp"
  touch "$cache/.complete"
fi
vmlinuz=$cache/boot/vmlinuz-$kver
moddir=$cache/lib/modules/$kver

# --- the initramfs: busybox, the modules that reach the 9p root, and /init ----------------------
# Modules for virtio-pci, 9p and the overlay, in load order.
boot_modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache
              9pnet 9pnet_virtio 9p overlay)
read -r -d '' init <<'INIT' || true
#!/bin/sh
# /init of the VM lane's guest (scripts/vm.sh). Arguments on the kernel command line:
#   vm.results=DIR  the writable share's host path; vm.modules=DIR  the kernel's modules
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
die() { echo "vm-init: $*"; poweroff -f; }
for arg in $(cat /proc/cmdline); do
  case $arg in vm.results=*) results=${arg#*=} ;; vm.modules=*) modules=${arg#*=} ;; esac
done
for m in $(cat /boot-modules); do insmod /lib/boot/$m.ko || die "insmod $m"; done
opts=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /lower /upper /root
mount -t 9p -o $opts,ro,cache=loose host /lower || die "mounting the host's /"
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work root /root \
  || die "mounting the overlay"
mount -t 9p -o $opts results /root$results || die "mounting the results share"
# /run starts empty as on a booted machine; /tmp stays the overlay's, so a checkout under /tmp is seen.
mount -t tmpfs -o mode=0755 run /root/run
mount -t proc proc /root/proc
mount -t sysfs sys /root/sys
mount -t devtmpfs dev /root/dev
# What udev would add: nft -f /dev/stdin, bash's process substitution.
ln -s /proc/self/fd /root/dev/fd
for i in 0:stdin 1:stdout 2:stderr; do ln -s /proc/self/fd/${i%:*} /root/dev/${i#*:}; done
mkdir -p /root/dev/pts /root/dev/shm
mount -t devpts devpts /root/dev/pts
mount -t tmpfs shm /root/dev/shm
mount -t cgroup2 cgroup2 /root/sys/fs/cgroup 2>/dev/null
# The kernel loads modules on demand (link kinds, nft expressions) with /sbin/modprobe of this
# root, pid 1's: busybox's, reading the kernel's modules.
mkdir -p /lib/modules
mount --bind /root$modules /lib/modules
ip link set lo up
hostname cni-vm
echo "vm-init: running $results/run.sh"
chroot /root /bin/sh $results/run.sh > /root$results/output 2>&1
echo $? > /root$results/rc
sync
umount /root$results
echo "vm-init: done"
poweroff -f
INIT
# Keyed by this script's text: a change to /init or to how the image is built makes a new one.
init_hash=$(sha256sum < "${BASH_SOURCE[0]}" | cut -c1-16)
initrd=$cache/initramfs-$init_hash.gz
if [[ ! -e $initrd ]]; then
  say "building $initrd"
  rm -f "$cache"/initramfs-*.gz
  stage=$(mktemp -d)
  mkdir -p "$stage"/{bin,proc,sys,dev,lib/boot}
  cp /bin/busybox "$stage/bin/"
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -s busybox "$stage/bin/$applet"
  done
  ln -s bin "$stage/sbin"
  for m in "${boot_modules[@]}"; do
    f=$(find "$moddir" -name "$m.ko" -print -quit)
    [[ -n $f ]] || { say "module $m not found in $moddir"; exit 1; }
    cp "$f" "$stage/lib/boot/"
  done
  echo "${boot_modules[*]}" > "$stage/boot-modules"
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
  echo "# written by scripts/vm.sh for one guest run"
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
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
  -machine q35,accel=tcg -cpu max -smp "${VM_SMP:-2}" -m "${VM_MEM:-2048}" \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 quiet panic=-1 vm.results=$run vm.modules=$cache/lib/modules" \
  -virtfs local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap \
  -virtfs "local,path=$run,mount_tag=results,security_model=passthrough" \
  -display none -monitor none -serial "file:$console" -nic none -no-reboot \
  > "$run/qemu.log" 2>&1 &
qemu=$!
# The output file is written through the share as the command runs: show it live.
tail -n +1 -F --pid="$qemu" "$run/output" 2>/dev/null &
tailer=$!
# Interrupted: stop the guest (timeout passes the signal on to qemu) and the tail, then clean up.
trap 'kill "$qemu" "$tailer" 2>/dev/null; wait "$qemu" 2>/dev/null; exit 130' INT TERM
qemu_rc=0
wait "$qemu" || qemu_rc=$?
wait "$tailer" 2>/dev/null || true
if [[ -s $run/rc ]]; then
  rc=$(cat "$run/rc")
  say "$* exited with $rc on $kver after $((SECONDS - start)) s"
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
