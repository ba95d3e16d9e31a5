//! `SyncChainAllocator` over a checking backing allocator (malloc or mmap), eager or lazy, with
//! or without a bound on chunk growth, from one thread, against the model.
#![no_main]

use libdd_alloc::SyncChainAllocator;
use libdd_alloc_fuzz::{run, Input};

libfuzzer_sys::fuzz_target!(|input: Input| {
    run(input, |config, backing| {
        let hint = config.chunk_size_hint();
        let arena = if config.lazy {
            SyncChainAllocator::new_lazy_in(hint, backing)
        } else {
            SyncChainAllocator::new_in(hint, backing)?
        };
        Ok(match config.max_chunk_size() {
            Some(max) => arena.with_max_chunk_size(max),
            None => arena,
        })
    });
});
