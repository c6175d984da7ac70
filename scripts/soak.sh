#!/usr/bin/env bash
# make soak: runs cni-soak (thousands of ADD/DEL cycles with random kills over bridge + host-local
# + portmap, and Podman's bridge + portmap + firewall + tuning, then a count of what is left
# behind) inside the sandbox of scripts/sandbox.sh.
# Arguments go to cni-soak (--cycles N, --workers N, --kill-percent N, --plugins DIR);
# SOAK_PROFILE=debug runs the debug build of cni-soak (make test's short soak).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/sandbox.sh" "$@"
cd "$top"
exec "target/${SOAK_PROFILE:-release}/cni-soak" "$@"
