// An arena whose memory is borrowed from the caller cannot pin: forgetting the arena would end
// the borrow, and the backing allocator could then reuse the memory without the destructor
// having run.
use libdd_alloc::{Layout, LinearAllocator, PinArena, System};
use std::marker::PhantomPinned;

fn main() {
    let backing = System;
    let arena = LinearAllocator::new_in(Layout::new::<[u64; 16]>(), &backing).unwrap();
    let pinned = arena.try_alloc_pinned(PhantomPinned).unwrap();
    drop(pinned);
}
