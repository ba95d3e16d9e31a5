//! `ChainAllocator` over a checking backing allocator (malloc or mmap), eager or lazy, with or
//! without a bound on chunk growth, against the model.
#![no_main]

use libdd_alloc::ChainAllocator;
use libdd_alloc_fuzz::{run, Input};

libfuzzer_sys::fuzz_target!(|input: Input| {
    run(input, |config, backing| {
        let hint = config.chunk_size_hint();
        let arena = if config.lazy {
            ChainAllocator::new_lazy_in(hint, backing)
        } else {
            ChainAllocator::new_in(hint, backing)?
        };
        Ok(match config.max_chunk_size() {
            Some(max) => arena.with_max_chunk_size(max),
            None => arena,
        })
    });
});
