//! `LinearAllocator` over a checking backing allocator (malloc or mmap), against the model.
#![no_main]

use libdd_alloc::LinearAllocator;
use libdd_alloc_fuzz::{run, Input};

libfuzzer_sys::fuzz_target!(|input: Input| {
    run(input, |config, backing| {
        LinearAllocator::new_in(config.buffer_layout(), backing)
    });
});
