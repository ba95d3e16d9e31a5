//! Regression tests for the bugs found by the adversarial review of the unsafe code: each test
//! failed (panicked or misbehaved) before its fix.

use libdd_alloc::{Allocator, Layout, VirtualArena};

#[test]
fn virtual_arena_allocate_zeroed_of_a_zero_size_layout_is_dangling_and_touches_nothing() {
    let arena = VirtualArena::new(1 << 20).unwrap();
    // Make the high-water mark non-zero, so a bogus offset would be compared against it.
    let layout = Layout::from_size_align(4096, 8).unwrap();
    let block = arena.allocate(layout).unwrap();
    // SAFETY: the most recent block, given back.
    unsafe { arena.deallocate(block.cast(), layout) };
    for align in [1, 8, 4096, 1 << 20] {
        let zst = Layout::from_size_align(0, align).unwrap();
        let block = arena.allocate_zeroed(zst).unwrap();
        assert_eq!(block.len(), 0);
        assert_eq!(block.cast::<u8>().as_ptr().addr(), align);
    }
    assert_eq!(arena.used_bytes(), 0);
}
