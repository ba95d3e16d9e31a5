#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for the given number of seconds each (default 30).
#   scripts/fuzz.sh [seconds] [target...]
# Needs a nightly toolchain (libFuzzer and AddressSanitizer); installs cargo-fuzz if missing.
# Each target runs in one process (-jobs=1 would fork a worker and hide its output in a log).
# A crash leaves its input in fuzz/artifacts/<target>/ and makes this script fail; replay it with
#   cargo +nightly fuzz run -O <target> fuzz/artifacts/<target>/<crash-file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "skipped: no nightly"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

cd fuzz
cargo +nightly fuzz build -O
for target in "${targets[@]}"; do
    echo "== fuzz target ${target}: ${seconds} s"
    # -rss_limit_mb: the model caps live blocks at 32 MiB and the backing allocator at 64 MiB;
    # ASan's quarantine and libFuzzer's corpus take the rest.
    cargo +nightly fuzz run -O "${target}" -- \
        -max_total_time="${seconds}" -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
        grep -E '^(#[0-9]+[[:space:]]+DONE|Done|stat::|==[0-9]+==|thread .* panicked|SUMMARY|Test unit written)' || true
    # `fuzz run` exits non-zero on a crash; grep above swallowed its status: check for artifacts.
    if compgen -G "artifacts/${target}/*" >/dev/null; then
        echo "FAILED: fuzz target ${target} found a crash: $(ls "artifacts/${target}")"
        exit 1
    fi
done
echo "fuzz: all targets passed"
