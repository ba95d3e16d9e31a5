// A nested scope holds its parent mutably, so no allocation of the parent scope can be alive
// across it (the nested scope could otherwise rewind below it).
use libdd_alloc::{Arena, ChainAllocator, Rewind, System};

fn main() {
    let mut arena = ChainAllocator::new_in(4096, System).unwrap();
    arena.scope(|outer| {
        let kept = outer.try_alloc(1u8).unwrap();
        outer.scope(|inner| {
            let _ = inner.try_alloc(2u8);
        });
        *kept += 1;
    });
}
