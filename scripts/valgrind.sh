#!/usr/bin/env bash
# Runs the unit tests and every integration test binary under valgrind memcheck.
# Usage: scripts/valgrind.sh            (PROPTEST_CASES defaults to 64 here; set it to run more)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
    else
        echo "skipped: valgrind is not installed and cannot be installed here"
        exit 0
    fi
fi

export PROPTEST_CASES="${PROPTEST_CASES:-64}"
# The binaries cargo builds for `cargo test`, as JSON lines; keep the test executables.
mapfile -t binaries < <(cargo test --no-run --message-format=json 2>/dev/null |
    grep '"profile":{[^}]*"test":true' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
if [ "${#binaries[@]}" -eq 0 ]; then
    echo "no test binaries found" >&2
    exit 1
fi
status=0
for binary in "${binaries[@]}"; do
    echo "== valgrind $(basename "$binary")"
    if ! valgrind --quiet --error-exitcode=1 "$binary" --test-threads=1 -q; then
        status=1
    fi
done
exit "$status"
