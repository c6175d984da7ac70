# Helpers for conformance scenarios; sourced by run.sh inside the sandbox.

pass() { echo "ok - $1"; echo ok >> "$RESULTS"; }
fail() {
  echo "not ok - $1"
  [[ -n ${2:-} ]] && sed 's/^/    # /' <<< "$2"
  echo fail >> "$RESULTS"
}

# check DESCRIPTION COMMAND...: the command must succeed.
check() {
  local desc=$1 out; shift
  if out=$("$@" 2>&1); then pass "$desc"; else fail "$desc" "$out"; fi
}

# check_fails DESCRIPTION COMMAND...: the command must fail.
check_fails() {
  local desc=$1 out; shift
  if out=$("$@" 2>&1); then fail "$desc (it succeeded)" "$out"; else pass "$desc"; fi
}

# conflist NAME JSON: writes a network config list for cnitool.
conflist() { printf '%s\n' "$2" > "$NETCONFPATH/$1.conflist"; }

# cni [--reference] add|check|del NETWORK CONTAINER: runs cnitool against our plugins (or the
# reference ones), with the container's netns path.
cni() {
  local dir=$PLUGIN_DIR
  if [[ $1 == --reference ]]; then dir=$REFERENCE_DIR; shift; fi
  CNI_PATH=$dir "$CNITOOL" "$1" "$2" "/run/netns/$3"
}

# json_assert JSON PYTHON-EXPRESSION: evaluates the expression with the parsed JSON as `r`.
json_assert() {
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
ok = eval(sys.argv[2])
if not ok:
    print("assertion failed:", sys.argv[2]); print(json.dumps(r, indent=1)); sys.exit(1)
' "$1" "$2"
}

# same_json A B [KEY...]: the two documents are equal once the named keys are dropped anywhere.
same_json() {
  python3 -c '
import json, sys
drop = set(sys.argv[3:])
def clean(v):
    if isinstance(v, dict): return {k: clean(x) for k, x in v.items() if k not in drop}
    if isinstance(v, list): return [clean(x) for x in v]
    return v
a, b = clean(json.loads(sys.argv[1])), clean(json.loads(sys.argv[2]))
if a != b:
    print("ours:", json.dumps(a, sort_keys=True)); print("reference:", json.dumps(b, sort_keys=True)); sys.exit(1)
' "$@"
}

has_reference() { [[ -x $REFERENCE_DIR/$1 ]]; }

link_up() { ip -n "$1" -o link show "$2" | grep -q '[<,]UP[,>]'; }
link_down() { ! link_up "$@"; }

cleanup_netns() { ip -all netns delete 2>/dev/null || true; }
