#!/usr/bin/env bash
# The demo: a container network namespace gets its network from our plugins through the real
# cnitool, inside a sandbox (scripts/sandbox.sh), so nothing on this machine changes.
#   PLUGIN_DIR (default target/release), CNITOOL (default target/tools/cnitool)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/sandbox.sh" "$@"

PLUGIN_DIR=${PLUGIN_DIR:-$top/target/release}
CNITOOL=${CNITOOL:-$top/target/tools/cnitool}
cni() { CNI_PATH=$PLUGIN_DIR "$CNITOOL" "$1" "$2" "/run/netns/$3"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "An isolated network (docker run --network=none): the loopback plugin alone"
cat > "$NETCONFPATH/none.conflist" <<'JSON'
{"cniVersion": "1.0.0", "name": "none", "plugins": [{"type": "loopback"}]}
JSON
show cat "$NETCONFPATH/none.conflist"
show ip netns add box
show ip -n box -br link
echo '$ cnitool add none /run/netns/box'
cni add none box
echo
show ip -n box -br addr
show ip netns exec box ping -c1 -W1 127.0.0.1
echo '$ cnitool del none /run/netns/box'
cni del none box
show ip -n box -br link

step "Done: the sandbox and everything in it go away now"
