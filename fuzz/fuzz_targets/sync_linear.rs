//! `SyncLinearAllocator` over a checking backing allocator (malloc or mmap), from one thread,
//! against the model (the same one as `LinearAllocator`'s: the lock-free twin keeps its API,
//! packing and statistics).
#![no_main]

use libdd_alloc::SyncLinearAllocator;
use libdd_alloc_fuzz::{run, Input};

libfuzzer_sys::fuzz_target!(|input: Input| {
    run(input, |config, backing| {
        SyncLinearAllocator::new_in(config.buffer_layout(), backing)
    });
});
