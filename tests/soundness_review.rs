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

#[test]
fn virtual_arena_with_an_overflowing_max_commit_step_still_commits_and_allocates() {
    let page = libdd_alloc::os::page_size().unwrap();
    for (reservation, step) in [(page, usize::MAX), (1 << 20, usize::MAX - page + 2)] {
        let arena = VirtualArena::new(reservation)
            .unwrap()
            .with_max_commit_step(step);
        let block = arena.allocate(Layout::new::<u64>()).unwrap();
        // SAFETY: the block is ours and sized for a u64.
        unsafe { block.cast::<u64>().as_ptr().write(7) };
        assert_eq!(arena.used_bytes(), 8);
        assert_eq!(
            arena.committed_bytes(),
            arena.reservation_bytes().min(64 << 10)
        );
    }
}
