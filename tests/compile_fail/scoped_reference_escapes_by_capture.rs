// ... nor stored in a variable from outside the scope.
use libdd_alloc::{Arena, ChainAllocator, Rewind, System};

fn main() {
    let mut arena = ChainAllocator::new_in(4096, System).unwrap();
    let mut escaped: Option<&str> = None;
    arena.scope(|scope| {
        escaped = Some(scope.try_alloc_str("temporary").unwrap());
    });
    println!("{escaped:?}");
}
