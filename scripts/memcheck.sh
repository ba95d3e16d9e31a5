#!/usr/bin/env bash
# Runs every unit and integration test binary under valgrind's memcheck: invalid reads and
# writes, uses of uninitialised bytes, bad frees and definite leaks all fail the run. Doc tests
# are not run (each is its own tiny binary built by rustdoc).
#   scripts/memcheck.sh
# Installs valgrind with apt-get if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
    else
        echo "skipped: valgrind missing and no apt-get to install it"
        exit 0
    fi
fi

# Valgrind runs code ~20x slower: fewer property-test cases than the default 256.
export PROPTEST_CASES="${PROPTEST_CASES:-64}"
start=$(date +%s)
mapfile -t binaries < <(
    cargo test --lib --tests --no-run --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/'
)
if [ ${#binaries[@]} -eq 0 ]; then
    echo "FAILED: no test binaries built"
    exit 1
fi
# Tests that measure or limit the process's own address space (64 GiB reservations, RSS, resource
# limits in a forked child, deliberate faults in a child) cannot run under valgrind, which owns the
# address space and the signal handling of the process, and the eight-thread stress tests (valgrind
# runs one thread at a time; the two-thread versions stay). They run in `cargo test` and under ASan.
skips=()
for name in ${MEMCHECK_SKIP:-eight_threads 64_gib rlimit rss touching_reserved inherited_from_the_parent refused_mmap_through_libc transparent_huge_pages guarded_block}; do
    skips+=(--skip "$name")
done
failed=()
for binary in "${binaries[@]}"; do
    echo "== memcheck $(basename "$binary")"
    # Reachable and "possibly lost" blocks at exit (test harness, thread caches) are not leaks.
    if ! valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
        --quiet \
        "$binary" --test-threads=2 -q "${skips[@]}"; then
        failed+=("$(basename "$binary")")
    fi
done
if [ ${#failed[@]} -ne 0 ]; then
    echo "memcheck: FAILED in ${failed[*]}"
    exit 1
fi
echo "memcheck: zero errors in ${#binaries[@]} test binaries ($(($(date +%s) - start)) s)"
