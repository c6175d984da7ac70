#!/usr/bin/env bash
# The release tarballs under test: a tarball of make dist is checked against its .sha256, unpacked
# into an empty directory, and the conformance scenarios (conformance/run.sh, through the real
# cnitool, side by side with the reference plugins) run against what it holds.
#   amd64: here, in the sandbox of scripts/sandbox.sh.
#   arm64: on Debian 12's arm64 kernel under qemu-system-aarch64 (scripts/vm-arm64.sh), with an
#          arm64 cnitool (Go cross-build) and Debian's arm64 reference plugins.
#
#   scripts/test-dist.sh amd64|arm64 [SCENARIO...]     (as root; make test-dist, make test-arm64)
#   Ends with conformance's line "N passed, N failed".
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
arch=${1:?usage: scripts/test-dist.sh amd64|arm64 [SCENARIO...]}
shift
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
tgz=dist/cni-plugins-rs-linux-$arch-v$version.tgz
[[ -e $tgz ]] || { echo "test-dist: no $tgz (make dist)" >&2; exit 1; }
(cd dist && sha256sum --quiet -c "$(basename "$tgz").sha256" && sha512sum --quiet -c "$(basename "$tgz").sha512")

# Unpacked under target/ (the arm64 guest sees the checkout, not the host's /tmp).
plugins=$top/target/dist-test/$arch
rm -rf "$plugins"
mkdir -p "$plugins"
tar -C "$plugins" -xzf "$tgz"
echo "test-dist: $tgz unpacked into $plugins: $(cd "$plugins" && echo *)"

case $arch in
  amd64)
    [[ -x target/tools/cnitool ]] || scripts/build-cnitool.sh target/tools/cnitool
    PLUGIN_DIR=$plugins CNITOOL=$top/target/tools/cnitool conformance/run.sh "$@"
    ;;
  arm64)
    cnitool=$top/target/vm-arm64/cnitool
    [[ -x $cnitool ]] || GOARCH=arm64 CGO_ENABLED=0 scripts/build-cnitool.sh "$cnitool"
    # The guest's scenarios are those the host would run; arm64 code only (file(1) checks).
    file "$plugins/bridge" "$cnitool" | grep -v 'ARM aarch64' && { echo "test-dist: not arm64" >&2; exit 1; }
    scenarios=()
    for s in "$@"; do scenarios+=("$(realpath "$s")"); done
    PLUGIN_DIR=$plugins CNITOOL=$cnitool REFERENCE_DIR=/usr/lib/cni \
      scripts/vm-arm64.sh -- conformance/run.sh "${scenarios[@]}"
    ;;
  *) echo "test-dist: unknown arch $arch" >&2; exit 2 ;;
esac
