#!/usr/bin/env bash
# Instructions per allocation for ours and the peers, under valgrind's callgrind.
#
# For each allocator and workload (small: 32-byte constant layout; mixed: sizes 1..=128, aligns
# 1..=16; strings: the first N string-table lookups, each a miss that hashes the string, copies it
# into the arena and inserts it into a hashbrown set), runs examples/alloc_count.rs twice, with N allocations and with 0 (same inputs, same
# arena setup), and prints (Ir(N) - Ir(0)) / N. That includes the benchmark loop around each
# allocation (counter, first-byte write, black_box store: 5 instructions), the same for everyone.
# For System (malloc) it also includes the free of each block and recording it.
#
# Usage: scripts/callgrind.sh [N]        (N defaults to 8192, the most the mixed inputs hold; writes docs/callgrind.md)
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-8192}"
OUT="${CALLGRIND_OUT:-docs/callgrind.md}"

if ! command -v valgrind >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
    else
        echo "skipped: valgrind is not installed"
        exit 0
    fi
fi

cargo build --release --example alloc_count --quiet
# Where cargo put it: CARGO_TARGET_DIR when set (else a stale target/ binary would be measured).
BIN="${CARGO_TARGET_DIR:-target}/release/examples/alloc_count"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Total instructions executed by one run.
instructions() {
    valgrind --tool=callgrind --callgrind-out-file="$TMP/out" "$BIN" "$@" >/dev/null 2>"$TMP/err" \
        || { cat "$TMP/err" >&2; return 1; }
    awk '/^summary:/ { print $2 }' "$TMP/out"
}

{
    echo "# Instructions per allocation (callgrind)"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(valgrind --version); $(rustc --version)"
    echo "- Command: \`scripts/callgrind.sh $N\` (N = $N allocations, minus a run with 0)"
    echo "- Each figure includes 5 instructions of benchmark loop per allocation (counter, first-byte"
    echo "  write, \`black_box\` store); System also frees each block. strings is per lookup (hash,"
    echo "  probe, copy into the arena, insert): the arena's share is the difference between rows."
    echo
    echo "| allocator | small (32 B, align 8) | mixed (1..=128 B, align 1..=16) | strings (one interning miss) |"
    echo "|---|---:|---:|---:|"
} >"$TMP/table"

for allocator in $("$BIN" --list); do
    row="| $allocator |"
    for workload in small mixed strings; do
        echo "callgrind: $allocator $workload" >&2
        base=$(instructions "$allocator" "$workload" 0)
        full=$(instructions "$allocator" "$workload" "$N")
        row="$row $(awk -v a="$full" -v b="$base" -v n="$N" 'BEGIN { printf "%.1f", (a - b) / n }') |"
    done
    echo "$row" >>"$TMP/table"
done

mkdir -p "$(dirname "$OUT")"
cp "$TMP/table" "$OUT"
cat "$OUT"
