// A reference returned by the arena borrows it: `reset` (`&mut self`) cannot run while it lives.
use libdd_alloc::{Arena, ChainAllocator, System};

fn main() {
    let mut arena = ChainAllocator::new_in(4096, System).unwrap();
    let name = arena.try_alloc_str("main").unwrap();
    arena.reset();
    println!("{name}");
}
