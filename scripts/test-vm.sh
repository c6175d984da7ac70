#!/usr/bin/env bash
# The VM lane (make test-vm): the kernel tests and the conformance scenarios again, on Debian's
# stock kernel under qemu (scripts/vm.sh), which has what this machine's kernel lacks (bridge VLAN
# filtering, vlan, dummy, ipvlan, vrf, bond). Ends with one line:
#   test-vm: N passed, N failed, N skipped on Linux <version> (qemu, TCG) in N s
#
# The tests are built here (the guest sees target/ read-only) and run there with
# CNI_RS_REQUIRE_KERNEL_FEATURES=1: a test that needs a kernel feature fails instead of skipping.
# A test that skips anyway (it needs what this kernel *lacks*) or is ignored is listed by name.
#
# Which tests run in the guest. `make test` runs the short lane: the tests that need what this
# machine's kernel lacks (bridge VLANs; the dummy plugin, 17 s in the guest, and its scenario;
# the vlan, ipvlan and vrf plugins, about 90 s), the ones that speak the kernel's own interfaces
# where an older kernel could answer differently (netkit's netlink, native nf_tables, the nft-less
# portmap chain), and the bridge and portmap conformance scenarios; under emulation (about 9x
# slower than the host) the whole suite took more than 15 minutes, too much for every run of
# `make test`.
# `--full` (make test-vm-full, before a release) runs every integration test of the workspace
# (tests/*.rs) and every conformance scenario, except the tests below, which exercise no kernel
# feature; make unit runs them on the host kernel. Unit tests are pure.
#   faults            bridge: the chain killed at every step; tests the plugins' own undo (106 s)
#   security          hostile input refused before the kernel is touched (160 s for the four)
#   fuzz_regressions  parsers only
#   host_local        host-local's file store (no network state)
#   injection         firewall: nft/iptables syntax refused by parsers (47 s; its iptables-save
#                     comparison includes the time of day, so it fails when a run crosses a second)
#   delegate          cni: running IPAM plugins by path
#   bandwidth         tbf, ingress, u32 and ifb, which the host kernel has; its tests measure
#                     shaped rates with TCP traffic, and under emulation that measures the
#                     emulator (161 s)
#
#   scripts/test-vm.sh [--full]   (as root; make test-vm, make test-vm-full)
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
excluded=(faults security fuzz_regressions host_local injection delegate bandwidth)
# The short lane: test executables (package/name) and conformance scenarios.
short_tests=(bridge/vlan netkit/kernel firewall/native portmap/no_nft dummy/dummy vlan/vlan ipvlan/ipvlan vrf/vrf)
short_scenarios=(conformance/scenarios/30-bridge.sh conformance/scenarios/40-portmap.sh conformance/scenarios/93-dummy.sh)

# Tests known to fail in the guest for a reason that is not the kernel's, each with that reason;
# they are skipped there, and listed.
known_skips=(
  # "<package> <test name> <reason>"
  "firewall a_listing_survives_a_ruleset_that_changes_all_the_time under emulation a listing takes ten times longer while the writers keep their wall-clock pace"
)

if [[ ${1:-} == --guest ]]; then
  # --- in the guest: run the plan, count, print the counts for the host -----------------------
  set +e   # a failing step is counted, never the end of the run
  plan=$2 scenarios=$(cat "$2.scenarios")
  passed=0 failed=0 skipped=0
  log=$(mktemp)
  while read -r label dir exe; do
    echo "# $label"
    args=() known=0
    for k in "${known_skips[@]}"; do
      read -r who test why <<< "$k"
      if [[ $who == "${label%%/*}" ]]; then
        args+=(--skip "$test")
        echo "skipped: $test: $why"
        known=$((known + 1))
      fi
    done
    # Each executable is bounded too, so a hang is reported by name, not as a dead guest.
    (cd "$dir" && timeout -k 10 300 "$exe" "${args[@]}" 2>&1) | tee "$log" | grep -v '^test .* \.\.\. ok$' || true
    result=$(grep -E '^test result: ' "$log" | tail -1)
    if [[ -z $result ]]; then
      echo "FAILED: $label ended without a test result"
      failed=$((failed + 1)) skipped=$((skipped + known))
      continue
    fi
    p=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<< "$result")
    f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<< "$result")
    i=$(sed -E 's/.* ([0-9]+) ignored.*/\1/' <<< "$result")
    # A test that skips itself passes for libtest, and says "skipped:" on stderr.
    s=$(grep -o 'skipped: ' "$log" | wc -l || true)
    echo "$label: $((p - s)) passed, $f failed, $((s + i + known)) skipped"
    passed=$((passed + p - s)) failed=$((failed + f)) skipped=$((skipped + s + i + known))
  done < "$plan"
  echo "# conformance"
  # shellcheck disable=SC2086 # a list of paths, or nothing for every scenario
  conformance/run.sh $scenarios > "$log" 2>&1 || true
  grep -v '^ok ' "$log" || true
  if line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log"); then
    passed=$((passed + ${line%% *})) f=${line#*, } failed=$((failed + ${f%% *}))
  else
    echo "FAILED: conformance ended without a summary"
    failed=$((failed + 1))
  fi
  echo "vm-lane-counts: $passed $failed $skipped $(uname -r)"
  exit 0
fi

# --- on the host: build, plan, boot ---------------------------------------------------------
start=$SECONDS
[[ $(id -u) == 0 ]] || { echo "test-vm: must run as root" >&2; exit 1; }
cargo build --workspace --locked
mkdir -p target/vm
plan=target/vm/lane-plan
notrun=()
cargo test --no-run --workspace --locked --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        d = os.path.dirname(m["manifest_path"])
        print(os.path.basename(d) + "/" + m["target"]["name"], d, m["executable"])
' | sort > "$plan.all"
: > "$plan"
full=0 timeout=900
if [[ ${1:-} == --full ]]; then full=1 timeout=2700; fi
while read -r label dir exe; do
  name=${label#*/}
  if [[ " ${excluded[*]} " == *" $name "* ]] || { ((!full)) && [[ " ${short_tests[*]} " != *" $label "* ]]; }; then
    notrun+=("$label")
  else
    echo "$label $dir $exe" >> "$plan"
  fi
done < "$plan.all"
if ((full)); then : > "$plan.scenarios"; else echo "${short_scenarios[*]}" > "$plan.scenarios"; fi
[[ -s $plan ]] || { echo "test-vm: no test executables found" >&2; exit 1; }
[[ -x target/tools/cnitool ]] || { echo "test-vm: no cnitool at target/tools/cnitool (make cnitool)" >&2; exit 1; }

out=target/vm/last-run.log
VM_TIMEOUT=${VM_TIMEOUT:-$timeout} scripts/vm.sh --env CNI_RS_REQUIRE_KERNEL_FEATURES=1 -- \
  scripts/test-vm.sh --guest "$plan" 2>&1 | tee "$out" | grep -v '^vm-lane-counts: ' || true
if ((full)); then
  echo "not run in the guest (no kernel feature; make unit runs them): ${notrun[*]}"
else
  echo "short lane (make test-vm-full runs the rest in the guest; make unit runs them all on the host): not run here: ${notrun[*]}"
fi
counts=$(grep '^vm-lane-counts: ' "$out" | tail -1 || true)
if [[ -z $counts ]]; then
  echo "test-vm: 0 passed, 1 failed, 0 skipped: the guest did not report (see above) in $((SECONDS - start)) s"
  exit 1
fi
read -r _ passed failed skipped kernel <<< "$counts"
echo "test-vm: $passed passed, $failed failed, $skipped skipped on Linux $kernel (qemu, TCG) in $((SECONDS - start)) s"
[[ $failed == 0 && $passed -gt 0 ]]
