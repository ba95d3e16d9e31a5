//! What signal handlers record in the tests: the blocks they keep, in preallocated slots (no heap
//! in a handler), drained by the test once the signal is blocked. One table per test binary;
//! tests that use it are serialized by their own lock.

use super::blocks::Block;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Room for every block the handlers of one operation keep: a handler runs once per distinct
/// instruction address per nesting level (2^14 each, tests/common/single_step.rs), more of them
/// under ASan's instrumentation, and keeps several blocks per run.
pub const SLOTS: usize = 1 << 17;
static ADDR: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static TAG: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// Handler runs, and handler-side check failures (a block that changed under it, a full
/// table, an allocation that failed).
pub static RUNS: AtomicU64 = AtomicU64::new(0);
pub static FAILURES: AtomicUsize = AtomicUsize::new(0);

pub fn fail() {
    FAILURES.fetch_add(1, Ordering::Relaxed);
}

pub fn record(block: Block) {
    let slot = NEXT.fetch_add(1, Ordering::Relaxed);
    if slot >= SLOTS {
        fail();
        return;
    }
    ADDR[slot].store(block.addr, Ordering::Relaxed);
    LEN[slot].store(block.len, Ordering::Relaxed);
    TAG[slot].store(block.tag, Ordering::Relaxed);
}

/// Appends the recorded blocks to `into` and empties the table. Signal blocked.
pub fn drain(into: &mut Vec<Block>) {
    let n = NEXT.swap(0, Ordering::Relaxed).min(SLOTS);
    into.extend((0..n).map(|i| Block {
        addr: ADDR[i].load(Ordering::Relaxed),
        len: LEN[i].load(Ordering::Relaxed),
        tag: TAG[i].load(Ordering::Relaxed),
    }));
}

pub fn reset() {
    NEXT.store(0, Ordering::Relaxed);
    RUNS.store(0, Ordering::Relaxed);
    FAILURES.store(0, Ordering::Relaxed);
}
