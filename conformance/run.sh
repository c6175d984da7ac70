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

scenarios=("$@")
((${#scenarios[@]})) || scenarios=("$here"/scenarios/*.sh)
for s in "${scenarios[@]}"; do
  echo "# scenario: $(basename "$s" .sh)"
  # Each scenario runs in a subshell so one that aborts cannot stop the others.
  ( . "$s" ) || fail "scenario $(basename "$s") aborted"
  cleanup_netns
done

passed=$(grep -c '^ok' "$RESULTS")
failed=$(grep -c '^fail' "$RESULTS")
echo "$passed passed, $failed failed"
[[ $failed == 0 && $passed -gt 0 ]]
