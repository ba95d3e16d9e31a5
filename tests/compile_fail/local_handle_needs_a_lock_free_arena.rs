// A `LocalHandle` carves slabs out of a lock-free arena; the single-thread arenas (a `Cell`
// cursor) have no `local()`, even now that they share one generic type with the lock-free ones.
use libdd_alloc::{Layout, LinearAllocator, System, VirtualArena};

fn main() {
    let linear = LinearAllocator::new_in(Layout::new::<[u8; 4096]>(), System).unwrap();
    let _ = linear.local();
    let arena = VirtualArena::new(1 << 20).unwrap();
    let _ = arena.local();
}
