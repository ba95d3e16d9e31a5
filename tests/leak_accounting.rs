//! Leak accounting: after dropping or resetting an arena, every backing allocation that should
//! have been returned was returned, counted exactly (calls and bytes) by a counting backing
//! allocator; for the allocators that map memory themselves (`VirtualAllocator`, the arenas on
//! it, `VirtualArena`, `SyncVirtualArena`, `PageAllocator`), the process's mapped address space
//! returns to the page.
#![cfg_attr(not(unix), allow(unused_imports, dead_code))] // the address-space test is POSIX only

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::counting::SyncCounting;
#[cfg(unix)] // fork and the address-space size
use common::process::{in_child, mapped_pages, under_valgrind, Ended};
use libdd_alloc::{
    Allocator, ChainAllocator, Layout, LinearAllocator, PageAllocator, PageOptions, Rewind,
    SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena, System, VirtualAllocator,
    VirtualArena,
};

const OVERHEAD: usize = ChainAllocator::<System>::CHAIN_NODE_OVERHEAD;
const SYNC_OVERHEAD: usize = SyncChainAllocator::<System>::CHAIN_NODE_OVERHEAD;

fn bytes(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

#[test]
fn linear_returns_its_buffer_on_drop_and_keeps_it_on_reset() {
    let backing = SyncCounting::new(System);
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
    let backing = SyncCounting::new(System);
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
    let backing = SyncCounting::new(System);
    let mut arena = ChainAllocator::new_in(1024, &backing).unwrap();
    // Chunks double and start with a 32-byte header: 1024 B holds 1 block of 960, 2048 holds
    // 2, 4096 holds 4, 8192 holds 8.
    assert_eq!(OVERHEAD, 4 * size_of::<usize>()); // 16 bytes on 32-bit: the same counts hold
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
    let backing = SyncCounting::new(System);
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
    let backing = SyncCounting::new(System);
    let mut arena = ChainAllocator::new_lazy_in(4096, &backing);
    arena.allocate(Layout::new::<()>()).unwrap();
    arena.reset();
    assert_eq!(arena.reserved_bytes(), 0);
    drop(arena);
    assert_eq!((backing.calls(), backing.deallocations()), (0, 0));
}

#[test]
fn chain_grows_a_chunks_only_block_by_growing_the_chunk() {
    let backing = SyncCounting::new(System);
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

#[test]
fn sync_linear_returns_its_buffer_on_drop_and_keeps_it_on_reset() {
    let backing = SyncCounting::new(System);
    let mut arena = SyncLinearAllocator::new_in(bytes(1000), &backing).unwrap();
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
fn sync_chain_reset_returns_every_chunk_but_the_largest() {
    let backing = SyncCounting::new(System);
    let mut arena = SyncChainAllocator::new_in(1024, &backing).unwrap();
    // As for ChainAllocator: chunks double and start with a 32-byte header, so 1024 B hold 1
    // block of 960, 2048 hold 2, 4096 hold 4, 8192 hold 8.
    assert_eq!(SYNC_OVERHEAD, 4 * size_of::<usize>());
    for _ in 0..15 {
        arena.allocate(bytes(960)).unwrap();
    }
    assert_eq!(backing.allocations(), 4);
    assert_eq!(backing.live_bytes(), 1024 + 2048 + 4096 + 8192);
    assert_eq!(arena.reserved_bytes(), backing.live_bytes());
    arena.reset();
    assert_eq!(backing.deallocations(), 3);
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (1, 8192));
    assert_eq!(arena.reserved_bytes(), 8192);
    assert_eq!(arena.used_bytes(), SYNC_OVERHEAD);
    // The kept chunk serves 8 blocks again without a call; the 9th takes a new chunk.
    for _ in 0..8 {
        arena.allocate(bytes(960)).unwrap();
    }
    assert_eq!(backing.allocations(), 4);
    arena.allocate(bytes(960)).unwrap();
    assert_eq!(backing.allocations(), 5);
    assert_eq!(arena.reserved_bytes(), backing.live_bytes());
    let largest = backing.live_bytes() - 8192;
    assert!(largest > 8192);
    arena.reset();
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (1, largest));
    drop(arena);
    assert_eq!(backing.allocations(), backing.deallocations());
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (0, 0));
    assert_eq!(backing.grows() + backing.shrinks(), 0);
}

#[test]
fn sync_chain_rewind_returns_the_chunks_published_since_the_checkpoint() {
    let backing = SyncCounting::new(System);
    let mut arena = SyncChainAllocator::new_in(4096, &backing)
        .unwrap()
        .with_max_chunk_size(4096);
    arena.allocate(bytes(1000)).unwrap();
    let checkpoint = arena.checkpoint();
    // (4096 - 32) / 1000 = 4 blocks per chunk: 3 more fill the first, 12 more take 3 chunks.
    for _ in 0..15 {
        arena.allocate(bytes(1000)).unwrap();
    }
    assert_eq!((backing.allocations(), backing.live_bytes()), (4, 4 * 4096));
    arena.rewind(checkpoint);
    assert_eq!(backing.deallocations(), 3);
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (1, 4096));
    assert_eq!(arena.reserved_bytes(), 4096);
    assert_eq!(arena.used_bytes(), SYNC_OVERHEAD + 1000);
    drop(arena);
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (0, 0));
}

#[test]
fn sync_chain_moves_a_chunks_only_block_to_a_new_chunk_and_returns_both_on_drop() {
    let backing = SyncCounting::new(System);
    let arena = SyncChainAllocator::new_in(4096, &backing).unwrap();
    let old = bytes(4000);
    let block = arena.allocate(old).unwrap();
    // SAFETY: `block` is live with layout `old`.
    let grown = unsafe { arena.grow(block.cast(), old, bytes(10_000)) }.unwrap();
    assert_ne!(grown.cast::<u8>(), block.cast::<u8>());
    // The chunk was not grown by the backing allocator (another thread might read it): the
    // block got a chunk of its own, and the old chunk stays until drop.
    assert_eq!((backing.allocations(), backing.grows()), (2, 0));
    assert_eq!(backing.live_bytes(), 4096 + SYNC_OVERHEAD + 10_000);
    assert_eq!(arena.reserved_bytes(), backing.live_bytes());
    drop(arena);
    assert_eq!((backing.deallocations(), backing.live_blocks()), (2, 0));
    assert_eq!(backing.live_bytes(), 0);
}

#[test]
fn lazy_sync_chain_that_never_allocates_never_calls_its_backing_allocator() {
    let backing = SyncCounting::new(System);
    let mut arena = SyncChainAllocator::new_lazy_in(4096, &backing);
    arena.allocate(Layout::new::<()>()).unwrap();
    arena.reset();
    assert_eq!(arena.reserved_bytes(), 0);
    drop(arena);
    assert_eq!((backing.calls(), backing.deallocations()), (0, 0));
}

/// The child of `virtual_memory_allocators_give_back_every_page`: single-threaded, so the
/// address space it maps is exactly what the allocators map. Exit codes name the failed check.
#[cfg(unix)]
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

    // The lock-free twins on pages: the same mappings, all gone on drop.
    let Ok(mut linear) = SyncLinearAllocator::new_in(layout(10 * page, 8), pages) else {
        return 40;
    };
    if linear.allocate(layout(5 * page, 8)).is_err() || !grown_by(10) {
        return 41;
    }
    linear.reset();
    drop(linear);
    let Ok(chain) = SyncChainAllocator::new_in(page, pages) else {
        return 42;
    };
    let mut chain = chain.with_max_chunk_size(4 * page);
    for _ in 0..4 {
        if chain.allocate(layout(page, 8)).is_err() {
            return 43;
        }
    }
    let reserved = chain.reserved_bytes() / page;
    if reserved < 4 || !grown_by(reserved) {
        return 44;
    }
    chain.reset();
    if !grown_by(4) || chain.reserved_bytes() != 4 * page {
        return 45;
    }
    drop(chain);
    if !grown_by(0) {
        return 46;
    }

    // Virtual arenas: the whole reservation is one mapping, whatever was committed, released
    // or reset; drop unmaps all of it.
    let reservation = 256 * page;
    let Ok(mut arena) = VirtualArena::new(reservation) else {
        return 50;
    };
    if arena.allocate(layout(100 * page, 8)).is_err() || !grown_by(256) {
        return 51;
    }
    arena.reset_and_release();
    if arena.allocate(layout(200 * page, 8)).is_err() || !grown_by(256) {
        return 52;
    }
    drop(arena);
    if !grown_by(0) {
        return 53;
    }
    let Ok(mut arena) = SyncVirtualArena::new(reservation) else {
        return 54;
    };
    if arena.allocate(layout(100 * page, 8)).is_err() || !grown_by(256) {
        return 55;
    }
    arena.reset_and_release();
    if arena.allocate(layout(200 * page, 8)).is_err() || !grown_by(256) {
        return 56;
    }
    drop(arena);
    if !grown_by(0) {
        return 57;
    }

    // PageAllocator: each block with its guard pages is one mapping (split in pieces by the
    // protection), unmapped whole on deallocate, also after a grow that moved it.
    let guarded = PageOptions::new()
        .guard_pages_before(1)
        .guard_pages_after(2)
        .prefault(true);
    let Ok(pages_with_guards) = PageAllocator::new(guarded) else {
        return 60;
    };
    let first = layout(3 * page + 1, 8);
    let Ok(a) = pages_with_guards.allocate(first) else {
        return 61;
    };
    if !grown_by(1 + 4 + 2) {
        return 62;
    }
    let grown = layout(10 * page, 8);
    // SAFETY: `a` is live with layout `first`.
    let Ok(a) = (unsafe { pages_with_guards.grow(a.cast(), first, grown) }) else {
        return 63;
    };
    if !grown_by(1 + 10 + 2) {
        return 64;
    }
    // SAFETY: live block with this layout.
    unsafe { pages_with_guards.deallocate(a.cast(), grown) };
    if !grown_by(0) {
        return 65;
    }
    0
}

#[cfg(unix)] // the address-space size of a forked child
#[test]
fn virtual_memory_allocators_give_back_every_page() {
    if under_valgrind() {
        // Valgrind's own mappings show in /proc/self/statm. ASan runs it (asan.sh).
        eprintln!("skipped under valgrind: its own mappings change /proc/self/statm");
        return;
    }
    let ended = in_child(address_space_balance_child);
    assert_eq!(
        ended,
        Ended::Exited(0),
        "address-space child failed check {ended:?}"
    );
}
