#!/usr/bin/env bash
# Conformance: drives the built plugins through the CNI project's own cnitool (real libcni) in a
# sandbox, prints a line per check and ends with "N passed, N failed".
#
#   conformance/run.sh [SCENARIO...]      (default: every file in conformance/scenarios)
#   PLUGIN_DIR   plugins under test        (default: target/debug)
#   CNITOOL      the cnitool binary        (default: target/tools/cnitool)
#
# Everything runs in the sandbox of scripts/sandbox.sh: nothing outlives the run, and the machine's
# own namespaces are never touched.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")

. "$top/scripts/sandbox.sh" "$@"

export PLUGIN_DIR=${PLUGIN_DIR:-$top/target/debug}
export CNITOOL=${CNITOOL:-$top/target/tools/cnitool}
export REFERENCE_DIR=${REFERENCE_DIR:-/usr/lib/cni}
[[ -x $CNITOOL ]] || { echo "conformance: no cnitool at $CNITOOL (make cnitool)" >&2; exit 1; }
export RESULTS=$SANDBOX_WORK/results
: > "$RESULTS"

# shellcheck source=conformance/lib.sh
. "$here/lib.sh"

# Each scenario starts from the sandbox's links as they are now. Deleting a namespace frees its
# end of a veth asynchronously, so the host end of a scenario's uplink could still exist when the
# next scenario creates its own of the same name: what is left is deleted, and waited for.
links() { ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | sort; }
baseline=$(links)
reset_sandbox() {
  cleanup_netns
  local l _
  for l in $(links); do
    grep -qx -- "$l" <<< "$baseline" || ip link del "$l" 2>/dev/null
  done
  for _ in $(seq 50); do
    [[ $(links) == "$baseline" ]] && return
    sleep 0.1
  done
  echo "# conformance: links still there after the scenario: $(comm -13 <(echo "$baseline") <(links) | tr '\n' ' ')"
}

scenarios=("$@")
((${#scenarios[@]})) || scenarios=("$here"/scenarios/*.sh)
for s in "${scenarios[@]}"; do
  echo "# scenario: $(basename "$s" .sh)"
  # Each scenario runs in a subshell so one that aborts cannot stop the others.
  ( . "$s" ) || fail "scenario $(basename "$s") aborted"
  reset_sandbox
done

passed=$(grep -c '^ok' "$RESULTS")
failed=$(grep -c '^fail' "$RESULTS")
echo "$passed passed, $failed failed"
[[ $failed == 0 && $passed -gt 0 ]]
