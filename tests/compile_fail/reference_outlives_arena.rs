// A reference returned by the arena cannot outlive the arena.
use libdd_alloc::{Arena, Layout, LinearAllocator, System};

fn leak() -> &'static mut u64 {
    let arena = LinearAllocator::new_in(Layout::new::<u64>(), System).unwrap();
    arena.try_alloc(7u64).unwrap()
}

fn main() {
    let mut kept = None;
    {
        let arena = LinearAllocator::new_in(Layout::new::<u64>(), System).unwrap();
        kept = Some(arena.try_alloc(1u64).unwrap());
    }
    println!("{kept:?} {}", leak());
}
