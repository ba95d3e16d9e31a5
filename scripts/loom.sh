#!/usr/bin/env bash
# Model-checks the lock-free arenas (src/sync/) with loom: every interleaving of 2-3 threads'
# atomic operations, up to a preemption bound of 3. The models are library unit tests
# (src/sync/loom_tests.rs) under `cfg(all(test, loom))`, so loom is only a dev-dependency. Builds
# with `--cfg loom` in its own target directory so that it does not invalidate the normal build.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test --release --lib sync::loom_tests -- --test-threads=2
