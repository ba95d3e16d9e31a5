#!/usr/bin/env bash
# Shows that no panic is reachable from libdd-alloc's allocation entry points in a release build.
#
# checks/no-panic is a no_std cdylib that exports every entry point (allocate, allocate_zeroed,
# deallocate, grow, grow_zeroed, shrink for VirtualAllocator, PageAllocator, VirtualArena,
# SyncVirtualArena (with and without a Budget: new_with_budget, budget), and LinearAllocator, ChainAllocator, SyncLinearAllocator and
# SyncChainAllocator on VirtualAllocator; their constructors and builders, reset,
# reset_and_release, checkpoint/rewind, statistics and drop; LocalHandle on SyncChainAllocator,
# SyncLinearAllocator and SyncVirtualArena (local(), the Allocator methods, statistics, drop);
# os::page_size; Budget and a Budgeted VirtualAllocator; ArenaString's fallible methods, into_str
# and drop, and format_in! with integers, a hex address, a &str and a char, which links
# core::fmt::write). Its panic handler calls `libdd_alloc_panic_is_reachable`, which is defined
# nowhere. It is built with panic = "abort", fat LTO and one codegen unit, so code that no
# export can reach is dropped: the symbol is left undefined in the library exactly when some
# export can reach a panic. The script fails if it is, and checks that the method works by
# building once with a deliberate panic path (feature control-panic), which must be caught.
#
# Then, for information only, it repeats the check with overflow checks on (a profile setting a
# user may choose) and lists the exports that can reach an overflow panic there.
#   scripts/no_panic.sh
set -euo pipefail
cd "$(dirname "$0")/../checks/no-panic"

marker=libdd_alloc_panic_is_reachable
lib=liblibdd_alloc_no_panic_check.so

reachable() { # target-dir -> prints the marker if some export can reach a panic
    nm -D --undefined-only "$1/release/$lib" | grep -w "$marker" || true
}

start=$(date +%s)
cargo build --release --quiet --target-dir target/check
if [ -n "$(reachable target/check)" ]; then
    echo "FAILED: a panic is reachable from an exported allocation function. Calls into core::panicking:"
    objdump -d --no-show-raw-insn -C "target/check/release/$lib" |
        awk '/^[0-9a-f]+ <.*>:$/ {fn=substr($0, index($0, "<"))} /call/ && /panicking|panic_/ {print "  " fn " -> " $NF}' | sort -u
    exit 1
fi

cargo build --release --quiet --target-dir target/control --features control-panic
if [ -z "$(reachable target/control)" ]; then
    echo "FAILED: the check missed the deliberate panic path of the control build: it proves nothing"
    exit 1
fi

RUSTFLAGS="-C overflow-checks=on" cargo build --release --quiet --target-dir target/overflow-checks
if [ -n "$(reachable target/overflow-checks)" ]; then
    echo "note: with -C overflow-checks=on (not the default release profile), these functions reach an overflow panic:"
    objdump -d --no-show-raw-insn -C "target/overflow-checks/release/$lib" |
        awk '/^[0-9a-f]+ <.*>:$/ {fn=substr($0, index($0, "<"))} /call/ && /panic_const_/ {print "  " fn}' | sort -u
fi
echo "no_panic: no panic reachable from any exported entry point in release (control caught) ($(($(date +%s) - start)) s)"
