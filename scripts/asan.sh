#!/usr/bin/env bash
# Runs the library's unit and integration tests under AddressSanitizer (with LeakSanitizer),
# with the `asan-poison` feature on, so tests/asan_poison.rs checks that overruns into an
# arena's free bytes are reported. Doc tests are not run (rustdoc would need the sanitizer
# flags too, and they test nothing ASan would add to).
#   scripts/asan.sh
# Needs a nightly toolchain; prints "skipped: no nightly" without one.
set -euo pipefail
cd "$(dirname "$0")/.."
# Property tests run 32 cases here (the main x86_64 run keeps each test's default, 64 or 256):
# this run is emulated or instrumented, many times slower per case (tests/common proptest_cases).
export PROPTEST_CASES="${PROPTEST_CASES:-32}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "skipped: no nightly"
    exit 0
fi
target="$(rustc +nightly -vV | sed -n 's/^host: //p')"
case "$target" in
    x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu) ;;
    *)
        echo "skipped: AddressSanitizer not set up for $target"
        exit 0
        ;;
esac

start=$(date +%s)
# Own target dir: sanitized artifacts must not mix with ordinary ones.
# detect_leaks: LeakSanitizer at exit of each test binary. abort_on_error: a report fails the
# run even if a test swallowed the signal. scripts/lsan.supp: the leaks that Divert's tests end
# with on purpose (blocks freed while diverted are never handed back), and nothing else.
RUSTFLAGS="-Zsanitizer=address --cfg asan" \
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:handle_segv=0:use_sigaltstack=0:detect_stack_use_after_return=0:strict_string_checks=1:check_initialization_order=1" \
    LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=1" \
    CARGO_TARGET_DIR=target/asan \
    cargo +nightly test --target "$target" --features asan-poison --lib --tests
echo "asan: zero errors ($(($(date +%s) - start)) s)"
