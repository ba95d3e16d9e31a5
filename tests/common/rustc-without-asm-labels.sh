#!/bin/sh
# A compiler from before `asm!` label operands (Rust 1.86 and older, or a 1.87 nightly that
# predates them): it refuses a root source file that uses a label operand with those compilers'
# error, and is the real rustc ($LIBDD_ALLOC_REAL_RUSTC, else `rustc`) otherwise. Used as RUSTC by
# scripts/mark-variants.sh (the portable mark) and tests/build_script.rs (the probe's refusal).
for arg in "$@"; do
    case "$arg" in
    *.rs)
        if [ -f "$arg" ] && grep -q '= *label *{' "$arg"; then
            echo "error[E0658]: label operands for inline assembly are unstable" >&2
            exit 1
        fi
        ;;
    esac
done
exec "${LIBDD_ALLOC_REAL_RUSTC:-rustc}" "$@"
