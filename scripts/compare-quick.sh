#!/usr/bin/env bash
# Smoke test of the benchmark harness: every workload for every allocator, a few seconds of
# running (plus a release build), results written to target/compare-quick/ (the docs are left alone).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --example compare -- --quick
test -s target/compare-quick/BENCHMARKS.md
test -s target/compare-quick/compare.svg
echo "compare --quick: ok"
