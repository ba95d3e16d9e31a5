// A value whose destructor the arena runs must be `Send`: the arena (and with it the destructor
// call) may move to another thread, while an `Rc` clone stays on this one.
use libdd_alloc::{DropArena, Layout, LinearAllocator, System};
use std::rc::Rc;

fn main() {
    let shared = Rc::new(1);
    let arena = LinearAllocator::new_in(Layout::new::<[u64; 16]>(), System).unwrap();
    arena.try_alloc_owned(Rc::clone(&shared)).unwrap();
    std::thread::spawn(move || drop(arena)).join().unwrap();
}
