#!/usr/bin/env bash
# The whole suite on aarch64 Linux, emulated by qemu-user: unit, integration and doc tests,
# examples built; release build (debug is ~10x slower under emulation). What emulation does not
# show: qemu-user runs on the x86 host's memory system, so it does not exercise the weak
# orderings real aarch64 hardware allows; scripts/loom.sh model-checks those.
#   scripts/test-aarch64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Property tests run 32 cases here (the main x86_64 run keeps each test's default, 64 or 256):
# this run is emulated or instrumented, many times slower per case (tests/common proptest_cases).
export PROPTEST_CASES="${PROPTEST_CASES:-32}"
source scripts/lib/cross-suite.sh

have_nightly_build_std || { echo "skipped: aarch64 suite"; exit 0; }
need_packages qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross ||
    { echo "skipped: aarch64 suite"; exit 0; }
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# A test that re-runs its own binary as a child (tests/sync_crash_report.rs) goes through qemu too.
export CROSS_TEST_RUNNER="$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER"
# `cfg(qemu_user)` gates the tests that need what qemu-user does not emulate (setrlimit of
# RLIMIT_AS/RLIMIT_DATA, madvise other than MADV_DONTNEED); each gate gives the reason.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="--cfg qemu_user"
run_suite aarch64-unknown-linux-gnu
