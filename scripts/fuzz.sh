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
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
    echo "== fuzz target ${target}: ${seconds} s"
    # Inputs that once crashed (fuzz/regressions/<target>/) seed every run.
    seeds=("corpus/${target}")
    if [ -d "regressions/${target}" ]; then
        seeds+=("regressions/${target}")
    fi
    mkdir -p "corpus/${target}"
    # -rss_limit_mb: the model caps live blocks at 32 MiB and the backing allocator at 64 MiB;
    # ASan's quarantine and libFuzzer's corpus take the rest.
    status=0
    cargo +nightly fuzz run -O "${target}" "${seeds[@]}" -- \
        -max_total_time="${seconds}" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1 ||
        status=$?
    grep -E '^(#[0-9]+[[:space:]]+DONE|Done|stat::|==[0-9]+==|thread .* panicked|SUMMARY|Test unit written)' "$log" || true
    if [ "$status" -ne 0 ]; then
        grep -A20 'panicked' "$log" | head -40 || true
        echo "FAILED: fuzz target ${target} (exit ${status}); crash input in fuzz/artifacts/${target}/"
        exit 1
    fi
done
echo "fuzz: all targets passed"
