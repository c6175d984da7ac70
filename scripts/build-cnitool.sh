#!/usr/bin/env bash
# Builds the CNI project's own cnitool from Debian's source package, so conformance runs drive
# our plugins through the real libcni rather than a client of ours.
#   usage: scripts/build-cnitool.sh [OUTPUT]   (default: target/tools/cnitool)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$top/target/tools/cnitool}")
if [[ -x $out ]]; then exit 0; fi
mkdir -p "$(dirname "$out")"

# apt-get source needs a deb-src entry; Debian images ship without one.
if ! apt-get indextargets --format '$(IDENTIFIER)' 2>/dev/null | grep -qx 'Sources'; then
  . /etc/os-release
  cat > /etc/apt/sources.list.d/cni-plugins-rs-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -q
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get source -q golang-github-appc-cni >/dev/null 2>&1) \
  || { echo "build-cnitool: apt-get source golang-github-appc-cni failed" >&2; exit 1; }
src=$(find "$work" -maxdepth 2 -type d -name cnitool | head -1)
[[ -n $src ]] || { echo "build-cnitool: no cnitool/ in the source package" >&2; exit 1; }
# GOPATH mode against Debian's packaged libcni (golang-github-appc-cni-dev): no network needed.
(cd "$src" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/cache" go build -o "$out" .)
echo "build-cnitool: built $out"
