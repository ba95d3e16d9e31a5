// A checkpoint is rolled back with `&mut self`: not while an allocation made since is alive.
use libdd_alloc::{Arena, Layout, LinearAllocator, Rewind, System};

fn main() {
    let mut arena = LinearAllocator::new_in(Layout::new::<[u8; 64]>(), System).unwrap();
    let checkpoint = arena.checkpoint();
    let scratch = arena.try_alloc_slice_copy(b"scratch").unwrap();
    arena.rewind(checkpoint);
    scratch[0] = b'S';
}
