#!/usr/bin/env bash
# End-to-end: real container runtimes drive the built plugins. containerd through `ctr run --cni`
# and through its CRI plugin as the kubelet drives it (RunPodSandbox with port mappings,
# StopPodSandbox, RemovePodSandbox), and podman with its CNI network backend; containers from a
# busybox image built here (mkimage.py). Prints a line per check and ends with "N passed, N failed".
#
#   conformance/e2e/run.sh [SCENARIO...]    (default: every file in conformance/e2e/scenarios)
#   PLUGIN_DIR      plugins under test (default: target/debug); the only plugin directory the
#                   runtimes see (podman's networks' firewall and tuning included)
#   E2E_TIMEOUT     seconds before the whole run is killed (default 600)
#   E2E_OCI_RUNTIME runc (default) or crun, for containerd (ctr and CRI) and podman alike
#
# Needs root and, installed beforehand (scripts/deps.sh): containerd, runc, podman, crun, conmon,
# busybox-static, python3-grpcio, python3-protobuf, protobuf-compiler, nftables, iptables, iproute2.
#
# Everything runs in a sandbox (sandbox.sh): new network, mount, pid, uts and ipc namespaces, with
# the runtimes' state on tmpfs. Every process started dies with it, and the machine's own
# namespaces, interfaces, routes, firewall and files are never changed. After the sandbox is gone
# the run checks from outside that the machine looks as it did before (the last checks, "host: ...").
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)

if [[ -z ${E2E_SANDBOX:-} ]]; then
  [[ $(id -u) == 0 ]] || { echo "e2e: must run as root (it creates namespaces)" >&2; exit 1; }
  PLUGIN_DIR=$(realpath -e "${PLUGIN_DIR:-$top/target/debug}") || { echo "e2e: no plugin directory" >&2; exit 1; }
  export PLUGIN_DIR
  scenarios=()
  for s in "$@"; do scenarios+=("$(realpath -e "$s")") || exit 1; done
  E2E_WORK=$(mktemp -d /tmp/cni-e2e.XXXXXX) || exit 1
  echo $$ > "$E2E_WORK/owner"   # host.sh: the work directory of a live run is not a leftover
  export E2E_WORK RESULTS=$E2E_WORK/results
  mkdir "$E2E_WORK/sandbox" && : > "$RESULTS"
  . "$here/host.sh"
  host_snapshot > "$E2E_WORK/before"
  foreign_processes | sort > "$E2E_WORK/processes-before"
  host_cgroups > "$E2E_WORK/cgroups-before"
  start=$(date +%s)
  timeout -k 10 "${E2E_TIMEOUT:-600}" \
    unshare --net --mount --pid --uts --ipc --fork --kill-child --mount-proc --propagation private \
    env E2E_SANDBOX=1 "$BASH" "$here/run.sh" "${scenarios[@]}"
  rc=$?
  ((rc == 124 || rc == 137)) && { echo "not ok - the run did not finish within ${E2E_TIMEOUT:-600}s"; echo fail >> "$RESULTS"; }
  host_checks
  passed=$(grep -c '^ok' "$RESULTS")
  failed=$(grep -c '^fail' "$RESULTS")
  rm -rf "$E2E_WORK"
  echo "# took $(($(date +%s) - start))s"
  echo "$passed passed, $failed failed"
  [[ $failed == 0 && $passed -gt 0 ]]
  exit
fi

# The first process of the sandbox's pid namespace: only signals it handles reach it, and when it
# exits the kernel ends every other process of the sandbox.
trap 'echo "# terminated"; exit 143' TERM INT
# mount(8) keeps a table of some mounts' options in /run/mount/utab: the sandbox's, here.
export LIBMOUNT_UTAB=$E2E_WORK/utab
. "$here/sandbox.sh"
# shellcheck source=conformance/lib.sh
. "$top/conformance/lib.sh"
. "$here/lib.sh"

scenarios=("$@")
((${#scenarios[@]})) || scenarios=("$here"/scenarios/*.sh)
build_image
for s in "${scenarios[@]}"; do
  echo "# scenario: $(basename "$s" .sh)"
  # A subshell, so that one that aborts cannot stop the others.
  ( . "$s" ) || fail "scenario $(basename "$s") aborted"
done
