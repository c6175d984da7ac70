#!/usr/bin/env bash
# Debian packages of the release binaries, with plain dpkg-deb (make deb, after make dist):
#   dist/cni-plugins-rs_<version>_<amd64|arm64>.deb
# The binaries are the tarball's (the same bytes), so the package is exactly what make dist tested.
#
#   scripts/deb.sh [--arch amd64|arm64]... PLUGIN...    (make deb passes $(PLUGINS))
#
# Layout, as Debian's containernetworking-plugins: the plugins are files in /usr/lib/cni (where
# Debian's containerd, podman and cri-o look). Debian's package ships nothing in /opt/cni/bin, the
# upstream default of the kubelet, containerd and the reference's tarball; we add a symlink there
# per plugin (/opt/cni/bin/bridge -> /usr/lib/cni/bridge), so both kinds of runtime find one copy.
#
# Living with containernetworking-plugins: dpkg-divert, not Conflicts/Replaces. We provide
# plugins by name (today every Linux plugin of the reference; a later release may add more), and
# containerd and golang-github-containers-common depend on or suggest that package: a Conflicts
# would make apt remove it and with it the plugins we do not have (and possibly the packages that
# need it). So preinst diverts each of our plugins' paths, /usr/lib/cni/<name> ->
# /usr/lib/cni/<name>.distrib (dpkg-divert --rename: the Go binary is moved aside, and an upgrade of
# containernetworking-plugins keeps writing there), the reference's other plugins stay where they
# are, and postrm of remove puts the Go binaries back: apt remove leaves the node as it was.
# A runtime looks plugins up by their exact type name, so the .distrib files are never picked.
# A diversion holds whatever package ships the path (dnsname is another Debian package's).
#
# Reproducible as the tarball: SOURCE_DATE_EPOCH (the commit's time) is every file's mtime and
# dpkg-deb's ar timestamp, --root-owner-group, files in sorted order.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

arches=() plugins=()
while (($#)); do
  case $1 in
    --arch) arches+=("$2"); shift 2 ;;
    -*) echo "deb: unknown option $1" >&2; exit 2 ;;
    *) plugins+=("$1"); shift ;;
  esac
done
((${#arches[@]})) || arches=(amd64 arm64)
if ((${#plugins[@]} == 0)); then
  read -r -a plugins <<< "$(sed -n 's/^PLUGINS[[:space:]]*:\{0,1\}=[[:space:]]*//p' Makefile | head -1)"
fi
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
repository=$(sed -n '/^\[workspace.package\]/,/^\[/s/^repository = "\(.*\)"/\1/p' Cargo.toml)
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH

for arch in "${arches[@]}"; do
  tgz=dist/cni-plugins-rs-linux-$arch-v$version.tgz
  [[ -e $tgz ]] || { echo "deb: no $tgz (make dist)" >&2; exit 1; }
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  chmod 0755 "$root"
  unpacked=$root.tgz
  mkdir -p "$unpacked"
  tar -C "$unpacked" -xzf "$tgz"
  install -d "$root/usr/lib/cni" "$root/opt/cni/bin" "$root/usr/share/doc/cni-plugins-rs" "$root/DEBIAN"
  for p in "${plugins[@]}"; do
    [[ -f $unpacked/$p ]] || { echo "deb: $p is not in $tgz (make dist after changing PLUGINS)" >&2; exit 1; }
    install -m 0755 "$unpacked/$p" "$root/usr/lib/cni/$p"
    ln -s "/usr/lib/cni/$p" "$root/opt/cni/bin/$p"
  done
  # The dhcp daemon's units, as upstream ships them (not enabled: `systemctl enable --now
  # cni-dhcp.socket` where a network uses dhcp IPAM).
  install -d "$root/lib/systemd/system"
  install -m 0644 crates/plugins/dhcp/systemd/cni-dhcp.service crates/plugins/dhcp/systemd/cni-dhcp.socket \
    "$root/lib/systemd/system/"
  install -m 0644 LICENSE "$root/usr/share/doc/cni-plugins-rs/copyright"
  gzip -9n < README.md > "$root/usr/share/doc/cni-plugins-rs/README.md.gz"
  rm -rf "$unpacked"

  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  cat > "$root/DEBIAN/control" <<CONTROL
Package: cni-plugins-rs
Version: $version
Architecture: $arch
Maintainer: cni-plugins-rs developers <noreply@example.com>
Installed-Size: $size
Section: net
Priority: optional
Homepage: $repository
Description: CNI plugins in Rust, drop-in for the reference plugins
 Container Network Interface plugins compatible with the reference Go suite
 (containernetworking/plugins): ${plugins[*]}.
 .
 Installed in /usr/lib/cni, with symlinks in /opt/cni/bin. Where Debian's
 containernetworking-plugins is installed, its binaries of the same names are
 diverted to /usr/lib/cni/<name>.distrib and restored when this package is
 removed; its other plugins stay in place.
CONTROL
  cat > "$root/DEBIAN/preinst" <<PREINST
#!/bin/sh
# Moves Debian's (containernetworking-plugins') binaries of our plugins' names aside; see postrm.
set -e
case "\$1" in
  install|upgrade)
    for p in ${plugins[*]}; do
      dpkg-divert --package cni-plugins-rs --add --rename --quiet \\
        --divert /usr/lib/cni/\$p.distrib /usr/lib/cni/\$p
    done
    ;;
esac
PREINST
  cat > "$root/DEBIAN/postrm" <<POSTRM
#!/bin/sh
# Puts Debian's binaries back where they were once ours are gone.
set -e
case "\$1" in
  remove|abort-install|disappear)
    for p in ${plugins[*]}; do
      dpkg-divert --package cni-plugins-rs --remove --rename --quiet \\
        --divert /usr/lib/cni/\$p.distrib /usr/lib/cni/\$p
    done
    ;;
esac
POSTRM
  chmod 0755 "$root/DEBIAN/preinst" "$root/DEBIAN/postrm"
  (cd "$root" && find usr opt lib -type f -print0 | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
  chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
  find "$root" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
  deb=dist/cni-plugins-rs_${version}_$arch.deb
  dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
  rm -rf "$root"
  trap - EXIT
  echo "deb: $deb $(sha256sum "$deb" | cut -d' ' -f1)"
done
