#!/usr/bin/env bash
# Benchmark: fill 1 GiB in 64-byte pieces with VirtualArena vs ChainAllocator<VirtualAllocator>,
# then count the memory-management syscalls of one fill + refill of each with `strace -c -f`.
# Takes about 2 minutes (2 cores); needs ~2 GiB of free memory. Not meant for every CI run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --bench vm

if ! command -v strace >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq strace >/dev/null
    else
        echo "skipped: syscall counts (strace not installed and cannot install it)"
        exit 0
    fi
fi

bin=$(cargo bench --bench vm --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
for mode in none arena chain; do
    echo "== syscalls for one fill + refill: $mode"
    strace -f -c -e trace=mmap,munmap,mprotect,madvise,mremap "$bin" "$mode" 2>&1 \
        | grep -E 'fill|calls|mmap|munmap|mprotect|madvise|mremap|total'
done
