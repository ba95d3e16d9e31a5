#!/bin/sh
# A compiler from before `asm!` label operands (Rust 1.86 and older, or a 1.87 nightly that
# predates them), for build.rs's probes: it refuses a probe crate (`probe_asm_*.rs`) that uses a
# label operand with those compilers' error, and is the real rustc ($LIBDD_ALLOC_REAL_RUSTC, else
# `rustc`) otherwise. Only the probes: it cannot tell a label operand from the same text in a
# string (build.rs holds the probe's source). Used as RUSTC by scripts/mark-variants.sh (the
# portable mark) and tests/build_script.rs (the probe's refusal).
for arg in "$@"; do
    case "$arg" in
    *probe_asm_*.rs)
        if grep -q '= *label *{' "$arg"; then
            echo "error[E0658]: label operands for inline assembly are unstable" >&2
            exit 1
        fi
        ;;
    esac
done
exec "${LIBDD_ALLOC_REAL_RUSTC:-rustc}" "$@"
