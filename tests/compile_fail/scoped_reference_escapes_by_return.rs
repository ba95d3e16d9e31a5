// What a scope allocates borrows the scope handle: it cannot be returned out of the scope.
use libdd_alloc::{Arena, ChainAllocator, Rewind, System};

fn main() {
    let mut arena = ChainAllocator::new_in(4096, System).unwrap();
    let escaped = arena.scope(|scope| scope.try_alloc(5u32).unwrap());
    println!("{escaped}");
}
