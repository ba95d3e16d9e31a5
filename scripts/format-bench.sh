#!/usr/bin/env bash
# The formatting benchmark row: format_in! against bumpalo::format! and bump-scope's bump_format!
# for one 100-byte message (examples/format_compare.rs), timed (interleaved rounds, medians, ratio
# to the faster peer in the same run) and, if valgrind is installed, in instructions per message
# under callgrind (a run with N messages minus a run with 0, divided by N).
#
# Usage: scripts/format-bench.sh [N]     (N defaults to 5000; writes docs/format-benchmark.md)
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-5000}"
OUT="${FORMAT_BENCH_OUT:-docs/format-benchmark.md}"
cargo build --release --example format_compare --quiet
# Where cargo put it: CARGO_TARGET_DIR when set (else a stale target/ binary would be measured).
BIN="${CARGO_TARGET_DIR:-target}/release/examples/format_compare"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

{
    echo "# Formatting into an arena"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(rustc --version)"
    echo "- Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) logical CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- Command: \`scripts/format-bench.sh $N\`"
    echo
    "$BIN"
} >"$TMP/doc"

if command -v valgrind >/dev/null 2>&1; then
    instructions() {
        valgrind --tool=callgrind --callgrind-out-file="$TMP/out" "$BIN" count "$@" >/dev/null 2>"$TMP/err" \
            || { cat "$TMP/err" >&2; return 1; }
        awk '/^summary:/ { print $2 }' "$TMP/out"
    }
    {
        echo
        echo "Instructions per message under callgrind ($(valgrind --version); N = $N messages minus a run with 0):"
        echo
        echo "| contender | instructions per message |"
        echo "|---|---:|"
        for contender in $("$BIN" --list); do
            full=$(instructions "$contender" "$N")
            base=$(instructions "$contender" 0)
            echo "| $contender | $(awk -v a="$full" -v b="$base" -v n="$N" 'BEGIN { printf "%.0f", (a - b) / n }') |"
        done
    } >>"$TMP/doc"
else
    echo >>"$TMP/doc"
    echo "(callgrind skipped: valgrind is not installed)" >>"$TMP/doc"
fi
cp "$TMP/doc" "$OUT"
cat "$OUT"
