// A pinned value borrows the arena: `reset`, which drops it, cannot run while the pin lives.
use libdd_alloc::{PinArena, VirtualArena};
use std::marker::PhantomPinned;

fn main() {
    let mut arena = VirtualArena::new(1 << 20).unwrap();
    let pinned = arena.try_alloc_pinned((String::from("a"), PhantomPinned)).unwrap();
    arena.reset();
    println!("{}", pinned.0);
}
