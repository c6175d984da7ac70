#!/usr/bin/env bash
# The Debian package under test (make test-deb): in the amd64 qemu guest of scripts/vm.sh, whose
# root is a RAM overlay over this machine's / (so the machine's dpkg database and its /usr/lib/cni,
# the reference plugins the tests compare against, are never touched):
#   1. apt install ./dist/cni-plugins-rs_<version>_amd64.deb over Debian's containernetworking-plugins
#   2. every plugin answers VERSION from /usr/lib/cni and from /opt/cni/bin, and is ours (the
#      tarball's bytes); the reference's other plugins are still there; a conformance scenario
#      runs with PLUGIN_DIR=/opt/cni/bin (bridge + host-local, a container that gets its network)
#   3. apt remove: the reference binaries are back, byte for byte, /opt/cni/bin is gone, no
#      diversion is left, and the reference bridge plugin works again.
# Ends with "test-deb: N passed, N failed"; a check per line before it.
#
#   scripts/test-deb.sh      (as root; needs make deb first)
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
deb=dist/cni-plugins-rs_${version}_amd64.deb
tgz=dist/cni-plugins-rs-linux-amd64-v$version.tgz

if [[ ${1:-} == --guest ]]; then
  set +e
  pass=0 fail=0
  check() {   # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@" > /tmp/check.out 2>&1; then echo "ok $what"; pass=$((pass + 1))
    else echo "fail $what"; sed 's/^/    /' /tmp/check.out | tail -n 20; fail=$((fail + 1)); fi
  }
  read -r -a plugins <<< "$(dpkg-deb -f "$deb" Description | sed -n 's/.*(containernetworking\/plugins): \(.*\)\./\1/p')"
  ours=$(mktemp -d)
  tar -C "$ours" -xzf "$tgz"
  before=$(cd /usr/lib/cni && sha256sum -- *)
  export DEBIAN_FRONTEND=noninteractive
  # The guest has no network: apt installs the local file (and would fail if it needed more).
  check "apt install ./$deb" apt-get install -y -q "$top/$deb"
  for p in "${plugins[@]}"; do
    check "/usr/lib/cni/$p is ours" cmp /usr/lib/cni/"$p" "$ours/$p"
    check "/opt/cni/bin/$p -> /usr/lib/cni/$p" test "$(readlink /opt/cni/bin/"$p")" = /usr/lib/cni/"$p"
    for d in /usr/lib/cni /opt/cni/bin; do
      check "CNI_COMMAND=VERSION $d/$p" sh -c "CNI_COMMAND=VERSION $d/$p < /dev/null | grep -q '\"supportedVersions\"'"
    done
    if [[ -n $(dpkg-query -W -f='${Status}' containernetworking-plugins 2>/dev/null) ]]; then
      check "the reference's $p is diverted to /usr/lib/cni/$p.distrib" \
        sh -c "dpkg-divert --list /usr/lib/cni/$p | grep -q 'by cni-plugins-rs' && test -x /usr/lib/cni/$p.distrib"
    fi
  done
  # Every Go plugin is still on disk, diverted or not (ours took over ipvlan, the last one we lacked).
  check "the reference's ipvlan is kept as /usr/lib/cni/ipvlan.distrib" test -x /usr/lib/cni/ipvlan.distrib
  check "dpkg --verify cni-plugins-rs" dpkg --verify cni-plugins-rs
  # The scenario compares with the reference: the diverted Go binaries, under their own names.
  reference=$(mktemp -d)
  for f in /usr/lib/cni/*; do
    name=$(basename "$f" .distrib)
    [[ $f == *.distrib || ! -e /usr/lib/cni/$name.distrib ]] && ln -sfn "$f" "$reference/$name"
  done
  check "conformance 30-bridge with PLUGIN_DIR=/opt/cni/bin, the diverted Go plugins as reference" \
    env PLUGIN_DIR=/opt/cni/bin REFERENCE_DIR="$reference" conformance/run.sh conformance/scenarios/30-bridge.sh
  check "apt remove cni-plugins-rs" apt-get remove -y -q cni-plugins-rs
  check "/usr/lib/cni as before the install" test "$(cd /usr/lib/cni && sha256sum -- *)" = "$before"
  check "/opt/cni/bin removed" test ! -e /opt/cni/bin
  check "no diversion left" sh -c "! dpkg-divert --list | grep -q cni-plugins-rs"
  check "reference bridge works after removal" sh -c "CNI_COMMAND=VERSION /usr/lib/cni/bridge < /dev/null | grep -q supportedVersions"
  # And on a node without Debian's plugins: install, run, remove, nothing left.
  check "apt remove containernetworking-plugins (no reference installed)" apt-get remove -y -q containernetworking-plugins
  check "apt install ./$deb without the reference" apt-get install -y -q "$top/$deb"
  check "/opt/cni/bin/bridge runs" sh -c "CNI_COMMAND=VERSION /opt/cni/bin/bridge < /dev/null | grep -q supportedVersions"
  check "apt purge cni-plugins-rs" apt-get purge -y -q cni-plugins-rs
  for p in "${plugins[@]}"; do
    # Another package's plugin of that name (dnsname's own package) is back, not gone.
    check "purged: /usr/lib/cni/$p gone or another package's again, no /opt/cni" \
      sh -c "test ! -e /opt/cni && { test ! -e /usr/lib/cni/$p || dpkg -S /usr/lib/cni/$p | grep -qv cni-plugins-rs; }"
  done
  echo "test-deb: $pass passed, $fail failed"
  exit 0
fi

[[ $(id -u) == 0 ]] || { echo "test-deb: must run as root" >&2; exit 1; }
[[ -e $deb && -e $tgz ]] || { echo "test-deb: no $deb or $tgz (make deb)" >&2; exit 1; }
[[ -x target/tools/cnitool ]] || scripts/build-cnitool.sh target/tools/cnitool
host_before=$(dpkg -l containernetworking-plugins | tail -n 1; cd /usr/lib/cni && sha256sum -- *)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
VM_TIMEOUT=${VM_TIMEOUT:-900} scripts/vm.sh -- scripts/test-deb.sh --guest | tee "$out"
host_after=$(dpkg -l containernetworking-plugins | tail -n 1; cd /usr/lib/cni && sha256sum -- *)
if [[ $host_before != "$host_after" ]]; then
  echo "test-deb: THIS MACHINE's containernetworking-plugins or /usr/lib/cni changed" >&2
  exit 1
fi
echo "test-deb: this machine's dpkg state of containernetworking-plugins and /usr/lib/cni unchanged"
grep -q '^test-deb: [0-9]* passed, 0 failed$' "$out"
