#!/usr/bin/env bash
# Installs the Debian packages the tests, the demo and the benchmarks use, if any is missing.
#   iproute2, iputils-ping, nftables, iptables, conntrack: the kernel tools the plugins and tests drive
#   golang-go, golang-github-appc-cni-dev, dpkg-dev: build the real cnitool from Debian's source
#   containernetworking-plugins: the Go reference plugins, for side-by-side runs
#   containerd, runc, podman, conmon, busybox-static: real runtimes and the image of conformance/e2e
#   python3-grpcio, python3-protobuf, protobuf-compiler: its CRI client (Debian's python3; no pip)
#   strace: counts the firewall processes a verb starts, in make bench
#   qemu-system-x86, cpio, kmod (and busybox-static): boot Debian's kernel for the VM lane (scripts/vm.sh)
#   firewalld, dbus-daemon: the firewall plugin's firewalld backend is tested against the real daemon, run by
#     the tests inside a throwaway namespace on a private bus (never as the machine's service: see below)
#   iperf3: measures the bandwidth plugin's limits with real traffic (conformance/scenarios/75-bandwidth.sh)
#   dnsmasq-base: the DNS server dnsname runs per network (the binary only: the `dnsmasq` package
#     would also enable a system-wide dnsmasq on the machine's own port 53)
#   golang-github-containernetworking-plugin-dnsname: the reference dnsname (/usr/lib/cni/dnsname),
#     for side-by-side runs (conformance/scenarios/80-dnsname.sh)
#   gcc-aarch64-linux-gnu, libc6-dev-arm64-cross: link the aarch64 release binaries, statically (make dist)
#   qemu-system-arm, debootstrap: the arm64 lane, an arm64 Debian guest for the arm64 tarball (make test-arm64)
set -euo pipefail
packages=(iproute2 iputils-ping nftables iptables conntrack golang-go golang-github-appc-cni-dev dpkg-dev
          containernetworking-plugins ca-certificates containerd runc podman conmon busybox-static
          python3-grpcio python3-protobuf protobuf-compiler strace
          qemu-system-x86 cpio kmod iperf3 dbus-daemon firewalld dnsmasq-base
          golang-github-containernetworking-plugin-dnsname
          gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-system-arm debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # firewalld's maintainer scripts start and enable the service where systemd runs, which would take
  # over the machine's firewall. A policy-rc.d that refuses firewalld (only) keeps it stopped during
  # the install, and the unit is disabled afterwards; a policy-rc.d already there is left as it is.
  guard=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# deps.sh: firewalld is for tests only, never the machine'"'"'s service\ncase "$1" in firewalld*) exit 101;; esac\nexit 0\n' > "$guard"
    chmod 755 "$guard"
    trap 'rm -f "$guard"' EXIT
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [[ " ${missing[*]} " == *" firewalld "* ]] && command -v systemctl >/dev/null; then
    systemctl disable firewalld.service >/dev/null 2>&1 || true
  fi
fi
