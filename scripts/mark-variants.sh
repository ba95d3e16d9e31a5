#!/usr/bin/env bash
# Runs the LocalHandle tests that single-step every operation (tests/review_fastpath.rs: a signal
# handler at every instruction boundary) in release builds, with each of the two marks of
# src/sync/mark.rs: the one-instruction x86_64 mark that this compiler selects, and the portable
# mark, selected by a rustc wrapper that reports 1.84.1 (our MSRV) to `rustc -vV`, which is what
# build.rs reads. The debug build of the asm mark runs in `cargo test`. About 90 s on 2 cores.
#   scripts/mark-variants.sh
set -euo pipefail
cd "$(dirname "$0")/.."

tests=(--lib --test review_fastpath --test local_handle --test local_fault_injection)

echo "== release, the mark this compiler selects"
cargo test --release "${tests[@]}" -q

real_rustc="$(rustup which rustc 2>/dev/null || command -v rustc)"
wrapper_dir="$(mktemp -d)"
trap 'rm -rf "$wrapper_dir"' EXIT
cat >"$wrapper_dir/rustc" <<WRAPPER
#!/bin/sh
# The real rustc, except that \`-vV\` reports release 1.84.1.
if [ "\$1" = "-vV" ]; then "$real_rustc" -vV | sed 's/^release: .*/release: 1.84.1/'; else exec "$real_rustc" "\$@"; fi
WRAPPER
chmod +x "$wrapper_dir/rustc"

echo "== release, the portable mark (build.rs told the compiler is 1.84.1)"
# Cargo reads the version too, so the dev-dependencies' newer rust-version must be ignored.
RUSTC="$wrapper_dir/rustc" CARGO_TARGET_DIR=target/portable-mark \
    cargo test --release --ignore-rust-version "${tests[@]}" -q
