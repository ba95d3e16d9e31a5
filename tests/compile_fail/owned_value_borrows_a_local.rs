// A value whose destructor the arena runs must be `'static`: the destructor runs at `reset` or
// when the arena is dropped, which may come after the local it borrows is gone.
use libdd_alloc::{DropArena, Layout, LinearAllocator, System};

struct Named<'a>(&'a str, Vec<u8>);

fn main() {
    let arena = LinearAllocator::new_in(Layout::new::<[u64; 16]>(), System).unwrap();
    {
        let local = String::from("scratch");
        arena.try_alloc_owned(Named(&local, Vec::new())).unwrap();
    }
    drop(arena);
}
