// While a scope is open it holds the arena mutably: allocations cannot bypass the scope (they
// would be rolled back under the caller's feet).
use libdd_alloc::{Arena, ChainAllocator, Rewind, System};

fn main() {
    let mut arena = ChainAllocator::new_in(4096, System).unwrap();
    let arena_ref = &arena;
    arena.scope(|scope| {
        let inner = scope.try_alloc(1u8).unwrap();
        let outer = arena_ref.try_alloc(2u8).unwrap();
        println!("{inner} {outer}");
    });
}
