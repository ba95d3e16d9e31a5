#!/usr/bin/env bash
# Type-checks the library for Windows, macOS, FreeBSD, Android and x32 (the OS layer's other code
# paths: Android uses rustix's libc backend, so errno is saved there), which cannot be built or run
# on our Linux machines, and for two bare-metal targets with no OS: thumbv7em-none-eabihf
# (Cortex-M4F) and thumbv6m-none-eabi (Cortex-M0, no compare-and-swap: the lock-free arenas and
# `Budget` do not exist there). Uses nightly's -Zbuild-std, so no target standard library needs
# installing. About 90 s on 2 cores the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "skipped: nightly toolchain not installed"
    exit 0
fi
if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
    rustup +nightly component add rust-src || { echo "skipped: cannot install rust-src"; exit 0; }
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/cross-check"
# x32 (x86_64 with 32-bit pointers) takes the portable LocalHandle mark, not the asm one.
for target in x86_64-pc-windows-gnu x86_64-apple-darwin x86_64-unknown-freebsd aarch64-linux-android \
    x86_64-unknown-linux-gnux32; do
    echo "== cargo check --lib --target $target"
    RUSTFLAGS="-D warnings" cargo +nightly check --lib --no-default-features --target "$target" -Zbuild-std=core,alloc
done
# No OS: `core` only (these targets have no `std`); the optional Allocator traits too.
for target in thumbv7em-none-eabihf thumbv6m-none-eabi; do
    echo "== cargo check --lib --target $target (no OS)"
    RUSTFLAGS="-D warnings" cargo +nightly check --lib --no-default-features --target "$target" -Zbuild-std=core
    RUSTFLAGS="-D warnings" cargo +nightly check --lib --no-default-features --features allocator-api2-03,allocator-api2-04 \
        --target "$target" -Zbuild-std=core
done
