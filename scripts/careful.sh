#!/usr/bin/env bash
# Runs the unit and integration tests under cargo-careful: against a standard library rebuilt with
# its debug assertions and UB-precondition checks on (alignment and overlap of raw copies, slice
# and `Layout` construction, `unchecked_*` arithmetic, `NonNull::new_unchecked`...), the closest we
# can get to Miri here. Doc tests are not run (cargo-careful does not pass its sysroot to rustdoc).
# Installs cargo-careful from crates.io if missing. Needs nightly with rust-src.
#   scripts/careful.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Property tests run 32 cases here (the main x86_64 run keeps each test's default, 64 or 256):
# this run is emulated or instrumented, many times slower per case (tests/common proptest_cases).
export PROPTEST_CASES="${PROPTEST_CASES:-32}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "skipped: no nightly toolchain"
    exit 0
fi
if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
    rustup +nightly component add rust-src || { echo "skipped: cannot install rust-src"; exit 0; }
fi
if ! cargo careful --version >/dev/null 2>&1 && ! command -v cargo-careful >/dev/null; then
    cargo install cargo-careful --locked --quiet
fi

start=$(date +%s)
# Own target dir: careful's sysroot flags would otherwise rebuild the ordinary debug build.
CARGO_TARGET_DIR=target/careful cargo +nightly careful test --lib --tests
echo "careful: clean ($(($(date +%s) - start)) s)"
