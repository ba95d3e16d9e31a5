#!/usr/bin/env bash
# The library with no OS at all: builds bare-metal/ (its own crate and lockfile, a path dependency
# on this checkout, default features off) for thumbv7m-none-eabi with nightly -Zbuild-std=core and
# runs it on QEMU's lm3s6965evb (a Cortex-M3) with semihosting for output and exit status. The
# program asserts a static linear arena, one over a stack array, a chain arena over a user's
# allocator and format_in!; any failed check exits non-zero, and so does this script. Installs
# qemu-system-arm (Debian) if missing. About 30 s on 2 cores the first time, under 1 s to run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/cross-suite.sh
source scripts/lib/cross-suite.sh

if ! have_nightly_build_std; then
    echo "skipped: nightly with rust-src is needed for -Zbuild-std=core"
    exit 0
fi
need_packages qemu-system-arm

root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}/bare-metal"
cd bare-metal
# --locked: the committed lockfile is what runs. The runner (bare-metal/.cargo/config.toml) is
# qemu-system-arm; `timeout` bounds a program that hangs instead of exiting.
cargo +nightly build --locked --release -Zbuild-std=core
binary="$CARGO_TARGET_DIR/thumbv7m-none-eabi/release/libdd-alloc-bare-metal"
echo "== qemu-system-arm -machine lm3s6965evb: $binary"
status=0
timeout 60 qemu-system-arm -cpu cortex-m3 -machine lm3s6965evb -nographic -monitor none \
    -serial none -semihosting-config enable=on,target=native -kernel "$binary" || status=$?
if [ "$status" -ne 0 ]; then
    echo "FAIL: the bare-metal program exited with status $status"
    exit 1
fi
echo "ok: the bare-metal program passed on qemu-system-arm"
