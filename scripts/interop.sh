#!/usr/bin/env bash
# Builds and tests the optional Allocator-trait features (allocator-api2 0.3 / 0.4, nightly's
# core::alloc::Allocator), which a plain `cargo test` does not compile.
set -euo pipefail
cd "$(dirname "$0")/.."

features=allocator-api2-03,allocator-api2-04
cargo build --no-default-features --features "$features"
cargo clippy --all-targets --features "$features" -- -D warnings
cargo test --test interop --test typed --features "$features"

if cargo +nightly --version >/dev/null 2>&1; then
    cargo +nightly build --no-default-features --features nightly
    cargo +nightly test --test interop --test typed --features "nightly,$features"
else
    echo "skipped: nightly toolchain not installed (feature \`nightly\` not checked)"
fi
