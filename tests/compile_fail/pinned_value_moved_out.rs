// A pinned value that is not `Unpin` cannot be moved out of the arena (no `&mut T`).
use libdd_alloc::{PinArena, VirtualArena};
use std::marker::PhantomPinned;

fn main() {
    let arena = VirtualArena::new(1 << 20).unwrap();
    let mut pinned = arena.try_alloc_pinned((String::from("a"), PhantomPinned)).unwrap();
    let moved = std::mem::replace(&mut *pinned, (String::new(), PhantomPinned));
    drop(moved);
}
