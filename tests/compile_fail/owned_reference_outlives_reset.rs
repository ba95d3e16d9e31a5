// A value whose destructor the arena runs is borrowed from the arena: `reset`, which drops it,
// cannot run while the reference lives.
use libdd_alloc::{DropArena, Layout, LinearAllocator, System};

fn main() {
    let mut arena = LinearAllocator::new_in(Layout::new::<[u64; 16]>(), System).unwrap();
    let name = arena.try_alloc_owned(String::from("main")).unwrap();
    arena.reset();
    println!("{name}");
}
