#!/usr/bin/env bash
# What the `Divert` global allocator costs while nothing is diverted: the std collection workload
# (Vec growth, format!/String, a HashMap<String, u64>, boxes; examples/divert_overhead/workload.rs)
# with `Divert<System, SyncVirtualArena>` as the global allocator (examples/divert_overhead.rs)
# against `System` directly (examples/divert_overhead_system.rs). The two binaries run
# interleaved, RUNS times each; each run prints its median ns per round; the script prints both
# medians of those and their ratio (Divert / System; the target is <= 1.05). With valgrind
# installed it also prints the instructions each binary executes for ROUNDS_CG rounds (callgrind,
# deterministic: the per-call difference is what the fast path adds).
#   scripts/divert-overhead.sh [RUNS=21] [ROUNDS=200]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-21}"
ROUNDS="${2:-200}"
ROUNDS_CG="${ROUNDS_CG:-20}"

cargo build --release --quiet --example divert_overhead --example divert_overhead_system
DIR="${CARGO_TARGET_DIR:-target}/release/examples"
divert=() system=()
for _ in $(seq "$RUNS"); do
    divert+=("$("$DIR/divert_overhead" "$ROUNDS" 2>/dev/null)")
    system+=("$("$DIR/divert_overhead_system" "$ROUNDS" 2>/dev/null)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
d=$(median "${divert[@]}")
s=$(median "${system[@]}")
echo "Divert<System>: ${divert[*]}"
echo "System:         ${system[*]}"
awk -v d="$d" -v s="$s" -v r="$RUNS" -v n="$ROUNDS" 'BEGIN {
    printf "median ns per round over %d interleaved runs of %d rounds: Divert %d, System %d, ratio %.3f\n", r, n, d, s, d / s }'

if command -v valgrind >/dev/null 2>&1; then
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    instructions() {
        valgrind --tool=callgrind --callgrind-out-file="$TMP/out" "$@" >/dev/null 2>"$TMP/err" \
            || { cat "$TMP/err" >&2; return 1; }
        awk '/^summary:/ { print $2 }' "$TMP/out"
    }
    di=$(instructions "$DIR/divert_overhead" "$ROUNDS_CG")
    si=$(instructions "$DIR/divert_overhead_system" "$ROUNDS_CG")
    awk -v d="$di" -v s="$si" -v n="$ROUNDS_CG" 'BEGIN {
        printf "callgrind, %d rounds + 20 warm-up: Divert %d instructions, System %d, ratio %.4f\n", n, d, s, d / s }'
fi
