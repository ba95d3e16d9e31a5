// A value pinned in a scope cannot escape it: the scope's end rewinds (and drops it).
use libdd_alloc::{PinArena, Rewind, VirtualArena};
use std::marker::PhantomPinned;
use std::pin::Pin;

fn main() {
    let mut arena = VirtualArena::new(1 << 20).unwrap();
    let mut escaped: Option<Pin<&mut (String, PhantomPinned)>> = None;
    arena.scope(|scope| {
        escaped = Some(scope.try_alloc_pinned((String::from("a"), PhantomPinned)).unwrap());
    });
    drop(escaped);
}
