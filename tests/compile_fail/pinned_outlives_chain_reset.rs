// A pinned value borrows the chain arena: `reset` and `rewind`, which drop it, cannot run while
// the pin lives.
use libdd_alloc::{ChainAllocator, PinArena, Rewind, SyncChainAllocator, System};
use std::marker::PhantomPinned;

fn main() {
    let mut arena = ChainAllocator::new_in(4096, System).unwrap();
    let pinned = arena.try_alloc_pinned((String::from("a"), PhantomPinned)).unwrap();
    arena.reset();
    println!("{}", pinned.0);

    let mut arena = SyncChainAllocator::new_in(4096, System).unwrap();
    let checkpoint = arena.checkpoint();
    let pinned = arena.try_alloc_pinned((String::from("b"), PhantomPinned)).unwrap();
    arena.rewind(checkpoint);
    println!("{}", pinned.0);
}
