// A chain arena over a borrowed backing allocator cannot pin either: forgetting the arena would
// end the borrow, and the backing allocator could then reuse its chunks without the destructor
// having run.
use libdd_alloc::{ChainAllocator, PinArena, SyncChainAllocator, System};
use std::marker::PhantomPinned;

fn main() {
    let backing = System;
    let arena = ChainAllocator::new_in(4096, &backing).unwrap();
    drop(arena.try_alloc_pinned(PhantomPinned).unwrap());
    let arena = SyncChainAllocator::new_in(4096, &backing).unwrap();
    drop(arena.try_alloc_pinned(PhantomPinned).unwrap());
}
