#!/usr/bin/env bash
# Type-checks the library for Windows, macOS, FreeBSD, Android and x32 (the OS layer's other code
# paths: Android uses rustix's libc backend, so errno is saved there), which cannot be built or run
# on our Linux machines. Uses nightly's -Zbuild-std, so no target
# standard library needs installing. About 70 s on 2 cores the first time.
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
