//! `VirtualAllocator` (whole pages from mmap) against the model.
#![no_main]

use libdd_alloc::VirtualAllocator;
use libdd_alloc_fuzz::{run, Input};

libfuzzer_sys::fuzz_target!(|input: Input| {
    run(input, |_, _| Ok(VirtualAllocator {}));
});
