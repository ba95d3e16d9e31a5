#!/usr/bin/env bash
# Instructions per value with a destructor (allocate + drop), ours and the peers', under
# valgrind's callgrind: runs examples/drop_count.rs with N values and with 0 and prints
# (Ir(N) - Ir(0)) / N. The loop around each value (counter, black_box) is the same for everyone;
# each destructor is one out-of-line call that reads the value.
#
# Usage: scripts/drop-count.sh [N]     (N defaults to 65536; prints a markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-65536}"
if ! command -v valgrind >/dev/null 2>&1; then
    echo "skipped: valgrind is not installed"
    exit 0
fi
cargo build --release --example drop_count --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/examples/drop_count"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
instructions() {
    valgrind --tool=callgrind --callgrind-out-file="$TMP/out" "$BIN" "$@" >/dev/null 2>"$TMP/err" \
        || { cat "$TMP/err" >&2; return 1; }
    awk '/^summary:/ { print $2 }' "$TMP/out"
}
echo "| contender | instructions per value (allocate + drop), N = $N |"
echo "|---|---:|"
for contender in $("$BIN" --list); do
    with=$(instructions "$contender" "$N")
    without=$(instructions "$contender" 0)
    awk -v a="$with" -v b="$without" -v n="$N" -v c="$contender" \
        'BEGIN { printf "| %s | %.1f |\n", c, (a - b) / n }'
done
