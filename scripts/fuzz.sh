#!/usr/bin/env bash
# Runs every fuzz target of crates/fuzz for a bounded time (`make fuzz`).
#
#   scripts/fuzz.sh                      every target, FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh dispatch result
#
# Targets: netconf conflist result cni_args dispatch host_local_config host_local_store dhcp_packet
# dhcp_request.
#
# Toolchain: cargo-fuzz (installed with `cargo install --locked cargo-fuzz` when missing) on the
# stable toolchain. cargo-fuzz builds with AddressSanitizer through `-Zsanitizer=address`, a
# nightly-only flag; RUSTC_BOOTSTRAP=1 lets stable rustc accept it (the flag is all it unlocks, and
# only for this build). ASan is what makes libFuzzer's -malloc_limit_mb work: any single
# allocation over the limit is reported as a crash, so "no unbounded allocation from a small input"
# is checked, not just "no panic". FUZZ_SANITIZER=none builds without ASan and without
# RUSTC_BOOTSTRAP (then only the RSS limit catches runaway memory). Targets are built optimised
# with debug assertions and overflow checks (-O -a): an overflow is a crash.
#
# Per target: the seeds in crates/fuzz/seeds/<target> (committed; crashes found before are kept
# there) and the working corpus crates/fuzz/corpus/<target> (not committed, grows across runs).
# A crash stops that target and leaves its input in crates/fuzz/artifacts/<target>/; reproduce it
# with the command printed, fix it, add a regression test to the owning crate, and copy the input
# to seeds/<target>/regression-<what>. The script ends non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_DIR=crates/fuzz
SECONDS_EACH=${FUZZ_SECONDS:-60}
SANITIZER=${FUZZ_SANITIZER:-address}
ALL=(netconf conflist result cni_args dispatch host_local_config host_local_store dhcp_packet dhcp_request)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
if [ "$SANITIZER" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi
FLAGS=(--fuzz-dir "$FUZZ_DIR" -O -a --sanitizer "$SANITIZER")

# The lock file is committed: refuse to run with dependencies it does not pin.
cargo fetch --locked --manifest-path "$FUZZ_DIR/Cargo.toml" >/dev/null
cargo fuzz build "${FLAGS[@]}"

# -timeout: one input taking 10 s is a hang. -malloc_limit_mb: no input of at most a few KB has
# any business allocating 256 MB at once. -rss_limit_mb leaves room for ASan's quarantine.
COMMON=(-max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1)

failed=()
summary=()
for target in "${TARGETS[@]}"; do
    extra=()
    case "$target" in
        cni_args) extra+=(-dict="$FUZZ_DIR/dict/cni_args.dict") ;;
        host_local_store)
            # The store takes its lock on a helper thread that is never joined (see store.rs),
            # which LeakSanitizer reports as a 32-byte leak of the thread's TLS destructor list.
            extra+=(-detect_leaks=0) ;;
        *) extra+=(-dict="$FUZZ_DIR/dict/json.dict") ;;
    esac
    corpus="$FUZZ_DIR/corpus/$target"
    seeds="$FUZZ_DIR/seeds/$target"
    mkdir -p "$corpus" "$seeds"
    log=$(mktemp)
    echo "fuzz: $target for ${SECONDS_EACH}s" >&2
    if cargo fuzz run "${FLAGS[@]}" "$target" "$corpus" "$seeds" -- "${COMMON[@]}" "${extra[@]}" >"$log" 2>&1; then
        status=ok
    else
        status=CRASHED
        failed+=("$target")
        grep -E "panicked at|ERROR: |SUMMARY|Test unit written|Reproduce with" -A1 "$log" >&2 || tail -n 40 "$log" >&2
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    summary+=("$(printf '%-18s %-8s %12s runs %8s/s' "$target" "$status" "${runs:-?}" "${rate:-?}")")
    rm -f "$log"
done

printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}; inputs in $FUZZ_DIR/artifacts/" >&2
    exit 1
fi
