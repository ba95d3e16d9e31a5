#!/usr/bin/env bash
# Runs the LocalHandle tests that single-step every operation (tests/review_fastpath.rs: a signal
# handler at every instruction boundary) in release builds, with each of the two marks of
# src/sync/mark.rs: the one-instruction x86_64 mark that this compiler selects, and the portable
# mark, selected by a rustc wrapper that refuses `asm!` label operands as 1.86 and older do, so
# build.rs's probe fails (tests/common/rustc-without-asm-labels.sh). The debug build of the asm
# mark runs in `cargo test`. About 90 s on 2 cores.
#   scripts/mark-variants.sh
set -euo pipefail
cd "$(dirname "$0")/.."

tests=(--lib --test review_fastpath --test local_handle --test local_fault_injection)

echo "== release, the mark this compiler selects"
cargo test --release "${tests[@]}" -q

# A compiler that refuses `asm!` label operands, as 1.86 and older do: build.rs's probe fails.
export LIBDD_ALLOC_REAL_RUSTC="$(rustup which rustc 2>/dev/null || command -v rustc)"
fake_rustc="$PWD/tests/common/rustc-without-asm-labels.sh"

echo "== release, the portable mark (build.rs's probe refused by a compiler without label operands)"
portable_target="${CARGO_TARGET_DIR:-target}/portable-mark"
RUSTC="$fake_rustc" CARGO_TARGET_DIR="$portable_target" cargo test --release "${tests[@]}" -q
# The unit test in src/sync/mark.rs pins the mark to the probe's answer; this pins the answer.
grep -q "LIBDD_ALLOC_BUILD_ASM_LABEL_PROBE=refused" \
    "$portable_target"/release/build/libdd-alloc-*/output ||
    { echo "build.rs's probe was not refused by $fake_rustc" >&2; exit 1; }
