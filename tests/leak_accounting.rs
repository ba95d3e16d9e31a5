//! Leak accounting: after dropping or resetting an arena, every backing allocation that should
//! have been returned was returned, counted exactly (calls and bytes) by a counting backing
//! allocator; for `VirtualAllocator`, the process's mapped address space returns to the page.

mod backing;

use backing::{in_forked_child, mapped_pages, under_valgrind, Counting};
use libdd_alloc::{Allocator, ChainAllocator, Layout, LinearAllocator, System, VirtualAllocator};

const OVERHEAD: usize = ChainAllocator::<System>::CHAIN_NODE_OVERHEAD;

fn bytes(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

#[test]
fn linear_returns_its_buffer_on_drop_and_keeps_it_on_reset() {
    let backing = Counting::new(System);
    let mut arena = LinearAllocator::new_in(bytes(1000), &backing).unwrap();
    assert_eq!((backing.allocations(), backing.live_bytes()), (1, 1000));
    for _ in 0..10 {
        arena.allocate(Layout::new::<[u8; 100]>()).unwrap();
    }
    assert!(arena.allocate(Layout::new::<u8>()).is_err());
    arena.reset();
    assert_eq!((backing.deallocations(), backing.live_bytes()), (0, 1000));
    arena.allocate(bytes(1000)).unwrap();
    drop(arena);
    assert_eq!((backing.allocations(), backing.deallocations()), (1, 1));
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (0, 0));
    assert_eq!(backing.calls(), 1);
}

#[test]
fn chain_with_fixed_chunks_takes_one_chunk_per_fill_and_returns_all_on_drop() {
    let backing = Counting::new(System);
    let arena = ChainAllocator::new_in(4096, &backing)
        .unwrap()
        .with_max_chunk_size(4096);
    // (4096 - 32) / 1000 = 4 blocks per chunk: 20 blocks take 5 chunks.
    for _ in 0..20 {
        arena.allocate(bytes(1000)).unwrap();
    }
    assert_eq!(backing.allocations(), 5);
    assert_eq!(backing.live_bytes(), 5 * 4096);
    assert_eq!(arena.reserved_bytes(), backing.live_bytes());
    drop(arena);
    assert_eq!(backing.deallocations(), 5);
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (0, 0));
}

#[test]
fn chain_reset_returns_every_chunk_but_the_largest() {
    let backing = Counting::new(System);
    let mut arena = ChainAllocator::new_in(1024, &backing).unwrap();
    // Chunks double and start with a 32-byte header: 1024 B holds 1 block of 960, 2048 holds
    // 2, 4096 holds 4, 8192 holds 8.
    assert_eq!(OVERHEAD, 32);
    for _ in 0..15 {
        arena.allocate(bytes(960)).unwrap();
    }
    assert_eq!(backing.allocations(), 4);
    assert_eq!(backing.live_bytes(), 1024 + 2048 + 4096 + 8192);
    arena.reset();
    assert_eq!(backing.deallocations(), 3);
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (1, 8192));
    assert_eq!(arena.reserved_bytes(), 8192);
    assert_eq!(arena.used_bytes(), OVERHEAD);
    // The kept chunk serves 8 blocks again without a call; the 9th takes a new chunk.
    for _ in 0..8 {
        arena.allocate(bytes(960)).unwrap();
    }
    assert_eq!(backing.allocations(), 4);
    arena.allocate(bytes(960)).unwrap();
    assert_eq!(backing.allocations(), 5);
    assert_eq!(arena.reserved_bytes(), backing.live_bytes());
    // A second reset again keeps one chunk, the largest.
    let largest = backing.live_bytes() - 8192;
    assert!(largest > 8192);
    arena.reset();
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (1, largest));
    drop(arena);
    assert_eq!(backing.allocations(), backing.deallocations());
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (0, 0));
}

#[test]
fn chain_oversized_allocation_gets_a_chunk_sized_exactly_for_it() {
    let backing = Counting::new(System);
    let arena = ChainAllocator::new_in(4096, &backing).unwrap();
    arena.allocate(bytes(100_000)).unwrap();
    assert_eq!(backing.allocations(), 2);
    assert_eq!(backing.live_bytes(), 4096 + OVERHEAD + 100_000);
    assert_eq!(arena.reserved_bytes(), backing.live_bytes());
    drop(arena);
    assert_eq!((backing.deallocations(), backing.live_bytes()), (2, 0));
}

#[test]
fn lazy_chain_that_never_allocates_never_calls_its_backing_allocator() {
    let backing = Counting::new(System);
    let mut arena = ChainAllocator::new_lazy_in(4096, &backing);
    arena.allocate(Layout::new::<()>()).unwrap();
    arena.reset();
    assert_eq!(arena.reserved_bytes(), 0);
    drop(arena);
    assert_eq!((backing.calls(), backing.deallocations()), (0, 0));
}

#[test]
fn chain_grows_a_chunks_only_block_by_growing_the_chunk() {
    let backing = Counting::new(System);
    let arena = ChainAllocator::new_in(4096, &backing).unwrap();
    let old = bytes(4000);
    let block = arena.allocate(old).unwrap();
    // SAFETY: `block` is live with layout `old`.
    unsafe { arena.grow(block.cast(), old, bytes(10_000)) }.unwrap();
    assert_eq!((backing.allocations(), backing.grows()), (1, 1));
    assert_eq!(
        (backing.live_blocks(), backing.live_bytes()),
        (1, OVERHEAD + 10_000)
    );
    assert_eq!(arena.reserved_bytes(), backing.live_bytes());
    drop(arena);
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (0, 0));
}

/// The child of `virtual_memory_allocators_give_back_every_page`: single-threaded, so the
/// address space it maps is exactly what the allocators map. Exit codes name the failed check.
fn address_space_balance_child() -> i32 {
    let Ok(page) = libdd_alloc::os::page_size() else {
        return 2;
    };
    let Some(baseline) = mapped_pages() else {
        return 3;
    };
    let grown_by = |pages: usize| mapped_pages() == Some(baseline + pages);
    let pages = VirtualAllocator {};
    let layout = |size: usize, align: usize| {
        Layout::from_size_align(size, align).unwrap_or(Layout::new::<u8>())
    };

    // Plain, over-aligned (head and tail trimmed), grown (mremap), shrunk (tail unmapped).
    let plain = layout(3 * page + 1, 8);
    let aligned = layout(2 * page, 1 << 21);
    let (Ok(a), Ok(b)) = (pages.allocate(plain), pages.allocate(aligned)) else {
        return 10;
    };
    if !grown_by(4 + 2) {
        return 11;
    }
    let bigger = layout(40 * page, 8);
    // SAFETY: `a` is live with layout `plain`.
    let Ok(a) = (unsafe { pages.grow(a.cast(), plain, bigger) }) else {
        return 12;
    };
    let smaller = layout(page, 1 << 21);
    // SAFETY: `b` is live with layout `aligned`.
    let Ok(b) = (unsafe { pages.shrink(b.cast(), aligned, smaller) }) else {
        return 13;
    };
    if !grown_by(40 + 1) {
        return 14;
    }
    // SAFETY: live blocks with these layouts.
    unsafe {
        pages.deallocate(a.cast(), bigger);
        pages.deallocate(b.cast(), smaller);
    }
    if !grown_by(0) {
        return 15;
    }

    // A linear arena on pages: one mapping, kept by reset, gone on drop.
    let Ok(mut linear) = LinearAllocator::new_in(layout(10 * page, 8), pages) else {
        return 20;
    };
    if linear.allocate(layout(5 * page, 8)).is_err() || !grown_by(10) {
        return 21;
    }
    linear.reset();
    if !grown_by(10) {
        return 22;
    }
    drop(linear);
    if !grown_by(0) {
        return 23;
    }

    // A chain on pages: chunks of 1, 2 and 4 pages (growth bounded at 4); reset keeps the
    // largest; drop returns everything.
    let Ok(chain) = ChainAllocator::new_in(page, pages) else {
        return 30;
    };
    let mut chain = chain.with_max_chunk_size(4 * page);
    for _ in 0..4 {
        if chain.allocate(layout(page, 8)).is_err() {
            return 31;
        }
    }
    let reserved = chain.reserved_bytes() / page;
    if reserved < 4 || !grown_by(reserved) {
        return 32;
    }
    chain.reset();
    if !grown_by(4) || chain.reserved_bytes() != 4 * page {
        return 33;
    }
    drop(chain);
    if !grown_by(0) {
        return 34;
    }
    0
}

#[test]
fn virtual_memory_allocators_give_back_every_page() {
    if under_valgrind() {
        // Valgrind's own mappings show in /proc/self/statm. ASan runs it (asan.sh).
        eprintln!("skipped under valgrind: its own mappings change /proc/self/statm");
        return;
    }
    let code = in_forked_child(address_space_balance_child);
    assert_eq!(code, 0, "address-space child failed check {code}");
}
