#!/usr/bin/env bash
# ThreadSanitizer over the thread and signal tests of the lock-free arenas. Needs nightly and its
# rust-src component (std is rebuilt with the sanitizer: -Zbuild-std). TSan also reports a signal
# handler that calls a signal-unsafe function such as malloc.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v rustup >/dev/null || ! rustup toolchain list | grep -q '^nightly'; then
    echo "skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    rustup component add rust-src --toolchain nightly || {
        echo "skipped: rust-src for nightly is not installable here (-Zbuild-std needs it)"
        exit 0
    }
fi

target="$(rustc +nightly -vV | sed -n 's/^host: //p')"
# `--cfg tsan` lets the tests tell TSan that a raw munmap happens before a raw mmap that reuses
# the address (TSan cannot see raw syscalls).
export RUSTFLAGS="-Zsanitizer=thread --cfg tsan"
export RUSTDOCFLAGS="-Zsanitizer=thread"
export TSAN_OPTIONS="halt_on_error=1 report_signal_unsafe=1"
export CARGO_TARGET_DIR=target/tsan
cargo +nightly test -Zbuild-std --target "$target" --release \
    --test sync_threads --test sync_signals
# LocalHandle: threads with a handle each, and threads plus signal handlers allocating from the
# interrupted thread's own handle (the single-thread storm is in sync_signals above).
cargo +nightly test -Zbuild-std --target "$target" --release \
    --test local_handle -- never_overlap
# The review's attacks on LocalHandle: handlers that resize and free on the interrupted handle,
# handles dropped and recreated on threads racing the arena's own last-block path.
cargo +nightly test -Zbuild-std --target "$target" --release --test review_local
# Only the thread tests of SyncVirtualArena: its other tests measure the resident set, which
# TSan's shadow memory inflates.
cargo +nightly test -Zbuild-std --target "$target" --release \
    --test sync_virtual_arena -- never_overlap
