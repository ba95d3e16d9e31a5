//! `VirtualArena` with a reservation of up to 64 MiB and a random commit step, against the
//! model; every other reset is a `reset_and_release`. The reservation must be unmapped on drop.
#![no_main]

use libdd_alloc::VirtualArena;
use libdd_alloc_fuzz::{run, Input};

libfuzzer_sys::fuzz_target!(|input: Input| {
    run(input, |config, _| {
        let arena = VirtualArena::new(config.reservation_bytes())?;
        Ok(match config.max_commit_step() {
            Some(step) => arena.with_max_commit_step(step),
            None => arena,
        })
    });
});
