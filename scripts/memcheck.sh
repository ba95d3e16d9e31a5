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
for binary in "${binaries[@]}"; do
    echo "== memcheck $(basename "$binary")"
    # Reachable and "possibly lost" blocks at exit (test harness, thread caches) are not leaks.
    # The two tests that fork a child skip themselves under valgrind (see their comments).
    valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
        --quiet \
        "$binary" --test-threads=2 -q
done
echo "memcheck: zero errors in ${#binaries[@]} test binaries ($(($(date +%s) - start)) s)"
