#!/usr/bin/env bash
# Builds the test suite for x86_64-pc-windows-gnu and runs it under Wine: the library's unit
# tests, every integration test and the doc tests. Wine is not Windows (its VirtualAlloc is a
# reimplementation of the documented behaviour), but it runs our real Windows code path.
#   scripts/test-windows.sh
# Installs what it needs (Debian's wine64 and gcc-mingw-w64-x86-64; the target's standard library
# with rustup, else nightly's -Zbuild-std). Builds in target/windows; the Wine prefix is a
# throwaway one in target/windows/wineprefix. Prints "skipped: ..." and exits 0 when the Rust
# standard library for the target cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."
# Property tests run 32 cases here (the main x86_64 run keeps each test's default, 64 or 256):
# this run is emulated or instrumented, many times slower per case (tests/common proptest_cases).
export PROPTEST_CASES="${PROPTEST_CASES:-32}"

target=x86_64-pc-windows-gnu
start=$(date +%s)
export CARGO_TARGET_DIR=target/windows
mkdir -p "$CARGO_TARGET_DIR"
out="$(cd "$CARGO_TARGET_DIR" && pwd)"

# Debian puts wine64 in /usr/lib/wine unless the `wine` wrapper package is installed too.
find_wine() { command -v wine64 || { [ -x /usr/lib/wine/wine64 ] && echo /usr/lib/wine/wine64; }; }
if ! command -v x86_64-w64-mingw32-gcc >/dev/null || ! find_wine >/dev/null; then
    echo "== installing wine64 and gcc-mingw-w64-x86-64"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        wine64 gcc-mingw-w64-x86-64 >/dev/null
fi
wine="$(find_wine)"
wineserver="$(dirname "$wine")/wineserver"

# The target's standard library: prebuilt from rustup, else built from nightly's rust-src.
cargo_args=(test --target "$target")
if rustup target list --installed 2>/dev/null | grep -qx "$target" ||
    timeout 300 rustup target add "$target" >/dev/null 2>&1; then
    toolchain=()
elif cargo +nightly --version >/dev/null 2>&1 &&
    { rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src' ||
        rustup +nightly component add rust-src >/dev/null 2>&1; }; then
    toolchain=(+nightly)
    cargo_args+=(-Zbuild-std)
else
    echo "skipped: no standard library for $target (rustup target add and rust-src both failed)"
    exit 0
fi

export WINEPREFIX="$out/wineprefix" WINEDEBUG=-all WINEARCH=win64
# No Mono or Gecko installer dialogs while the prefix is made.
export WINEDLLOVERRIDES="mscoree,mshtml="
if [ ! -f "$WINEPREFIX/system.reg" ]; then
    echo "== creating the Wine prefix (first start of Wine)"
    "$wine" wineboot --init </dev/null >/dev/null 2>&1 || true
    "$wineserver" -w
fi
trap '"$wineserver" -k 2>/dev/null || true' EXIT

# Wine 8 has no bcryptprimitives.dll, whose ProcessPrng Rust's std imports: a stub over
# RtlGenRandom (scripts/wine/), or no Rust binary starts.
dll="$out/bcryptprimitives.dll"
if [ ! -f "$dll" ] || [ scripts/wine/bcryptprimitives.c -nt "$dll" ]; then
    x86_64-w64-mingw32-gcc -shared -O2 -Wall -o "$dll" scripts/wine/bcryptprimitives.c \
        scripts/wine/bcryptprimitives.def -ladvapi32
fi
cp "$dll" "$WINEPREFIX/drive_c/windows/system32/"

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
# Bounded (a test binary that hangs under Wine is killed after 10 minutes), and run again when
# Wine kills its own process on the way out (scripts/wine/run.sh says how that is told apart).
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$PWD/scripts/wine/run.sh"
export WINE_BIN="$wine" WINE_RETRY_LOG="$out/wine-retries.log"
rm -f "$WINE_RETRY_LOG"

log="$out/test-windows.log"
echo "== cargo ${toolchain[*]} ${cargo_args[*]} --lib --tests, then --doc (runner: wine)"
status=0
cargo "${toolchain[@]}" "${cargo_args[@]}" --no-fail-fast --lib --tests 2>&1 | tee "$log" || status=1
cargo "${toolchain[@]}" "${cargo_args[@]}" --no-fail-fast --doc 2>&1 | tee -a "$log" || status=1

read -r passed failed ignored < <(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed/) p += $i
            if ($(i + 1) ~ /^failed/) f += $i
            if ($(i + 1) ~ /^ignored/) g += $i
        }
    } END { print p + 0, f + 0, g + 0 }' "$log")
binaries=$(grep -c '^test result:' "$log" || true)
retried=$(grep -c '^== wine-run:' "$WINE_RETRY_LOG" 2>/dev/null || true)
echo "windows (wine): $binaries test binaries, $passed passed, $failed failed, $ignored ignored," \
    "in $(($(date +%s) - start)) s; ${retried:-0} run again after Wine killed its own process" \
    "(see $WINE_RETRY_LOG)"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
    echo "windows (wine): FAILED"
    exit 1
fi
