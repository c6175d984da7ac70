#!/usr/bin/env bash
# make bench: runs cni-bench (ours against the Go reference plugins in /usr/lib/cni) inside the
# sandbox of scripts/sandbox.sh, so the bridges, namespaces and firewall rules it makes never
# touch this machine's network. Arguments go to cni-bench (--rounds N, --population N).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/sandbox.sh" "$@"
cd "$top"
exec target/release/cni-bench "$@"
