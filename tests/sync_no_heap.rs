//! No hidden heap: a counting `#[global_allocator]` proves that the lock-free arenas, backed by
//! `VirtualAllocator`, never call the global allocator: not to allocate, not to grow (a new
//! chunk), not to resize, reset or drop. Only calls made on a thread while it is "watched" are
//! counted, so the test harness's own allocations do not interfere.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::counting::{global_calls_during, CountingGlobal};
use libdd_alloc::{Allocator, Layout, SyncChainAllocator, SyncLinearAllocator, VirtualAllocator};

#[global_allocator]
static GLOBAL: CountingGlobal = CountingGlobal;

/// A workload that allocates, grows, shrinks and gives back blocks of many layouts, large
/// enough to make a chain arena take many chunks.
fn workload(arena: &impl Allocator) {
    for i in 0..20_000usize {
        let layout = Layout::from_size_align(1 + i % 300, 1 << (i % 6)).unwrap();
        let block = arena.allocate(layout).unwrap();
        // SAFETY: fresh block, ours.
        unsafe { block.cast::<u8>().write_bytes(0xA5, layout.size()) };
        if i % 5 == 0 {
            let bigger = Layout::from_size_align(layout.size() * 3, layout.align()).unwrap();
            // SAFETY: `block` came from `arena` with `layout`.
            let grown = unsafe { arena.grow(block.cast(), layout, bigger) }.unwrap();
            // SAFETY: as above, now of `bigger`.
            let shrunk = unsafe { arena.shrink(grown.cast(), bigger, layout) }.unwrap();
            // SAFETY: as above, now of `layout`.
            unsafe { arena.deallocate(shrunk.cast(), layout) };
        }
    }
    // A block bigger than any chunk: a chunk of its own.
    arena.allocate(Layout::new::<[u8; 1 << 20]>()).unwrap();
}

#[test]
fn the_oracle_sees_a_box() {
    let calls = global_calls_during(|| drop(std::hint::black_box(Box::new(7u64))));
    assert_eq!(calls, 2);
}

#[test]
fn sync_chain_arena_allocates_and_grows_with_no_global_allocation() {
    libdd_alloc::os::page_size().unwrap();
    let calls = global_calls_during(|| {
        let mut arena = SyncChainAllocator::new_in(4096, VirtualAllocator {})
            .unwrap()
            .with_max_chunk_size(64 << 10);
        workload(&arena);
        assert!(arena.reserved_bytes() > 1 << 20);
        arena.reset();
        workload(&arena);
        drop(arena);
        let lazy = SyncChainAllocator::new_lazy_in(4096, VirtualAllocator {});
        workload(&lazy);
    });
    assert_eq!(calls, 0);
}

#[test]
fn sync_linear_arena_allocates_with_no_global_allocation() {
    libdd_alloc::os::page_size().unwrap();
    let calls = global_calls_during(|| {
        let mut arena = SyncLinearAllocator::new_in(
            Layout::from_size_align(64 << 20, 4096).unwrap(),
            VirtualAllocator {},
        )
        .unwrap();
        workload(&arena);
        arena.reset();
        workload(&arena);
    });
    assert_eq!(calls, 0);
}

#[test]
fn sync_chain_arena_shared_by_threads_makes_no_global_allocation() {
    let arena = SyncChainAllocator::new_in(4096, VirtualAllocator {})
        .unwrap()
        .with_max_chunk_size(32 << 10);
    let calls: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| global_calls_during(|| workload(&arena))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(calls, 0);
}

#[test]
fn local_handles_allocate_refill_and_drop_with_no_global_allocation() {
    libdd_alloc::os::page_size().unwrap();
    let calls = global_calls_during(|| {
        let mut arena = SyncChainAllocator::new_in(4096, VirtualAllocator {})
            .unwrap()
            .with_max_chunk_size(64 << 10);
        {
            let local = arena.local();
            workload(&local);
            assert!(local.used_bytes() > 1 << 20);
        }
        arena.reset();
        workload(&arena.local());
        let virtual_arena = libdd_alloc::SyncVirtualArena::new(1 << 30).unwrap();
        workload(&virtual_arena.local());
    });
    assert_eq!(calls, 0);
}

#[test]
fn local_handles_on_threads_make_no_global_allocation() {
    let arena = SyncChainAllocator::new_in(4096, VirtualAllocator {})
        .unwrap()
        .with_max_chunk_size(32 << 10);
    let calls: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| global_calls_during(|| workload(&arena.local()))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(calls, 0);
}
