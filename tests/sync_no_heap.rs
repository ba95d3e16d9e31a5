//! No hidden heap: a counting `#[global_allocator]` proves that the lock-free arenas, backed by
//! `VirtualAllocator`, never call the global allocator: not to allocate, not to grow (a new
//! chunk), not to resize, reset or drop. Only calls made on a thread while it is "watched" are
//! counted, so the test harness's own allocations do not interfere. The same holds for
//! `format_in!`, `ArenaString`, a `Budgeted` backing allocator, and the virtual arenas with
//! their commits charged to a budget.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::counting::{global_calls_during, CountingGlobal};
use core::fmt::Write as _;
use libdd_alloc::{
    format_in, Allocator, ArenaString, Budget, Budgeted, Layout, SyncChainAllocator,
    SyncLinearAllocator, SyncVirtualArena, VirtualAllocator, VirtualArena,
};

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
fn format_in_and_arena_string_on_a_budgeted_sync_chain_arena_make_no_global_allocation() {
    static BUDGET: Budget = Budget::new(4 << 20);
    libdd_alloc::os::page_size().unwrap();
    let mut total = 0;
    let calls = global_calls_during(|| {
        let arena = SyncChainAllocator::new_in(4096, Budgeted::new(&BUDGET, VirtualAllocator {}))
            .unwrap()
            .with_max_chunk_size(64 << 10);
        for i in 0..5_000u64 {
            let line = format_in!(
                &arena,
                "pid {} tid {} sig {} at {:#x} in {}",
                4242,
                i,
                27,
                i * 4096,
                "worker"
            )
            .unwrap();
            total += line.len();
            let mut s = ArenaString::new_in(&arena);
            for k in 0..(i % 40) {
                write!(s, "{k},").unwrap();
            }
            s.try_push_str("end").unwrap();
            total += s.into_str().len();
        }
        // Until the budget refuses: still no heap.
        while format_in!(&arena, "{:>4000}", "x").is_ok() {}
        assert!(BUDGET.used() <= BUDGET.limit());
    });
    assert_eq!(calls, 0);
    assert!(total > 5_000 * 40);
    assert_eq!(BUDGET.used(), 0);
}

#[test]
fn budgeted_virtual_arenas_commit_refuse_release_and_drop_with_no_global_allocation() {
    static BUDGET: Budget = Budget::new(8 << 20);
    libdd_alloc::os::page_size().unwrap();
    let calls = global_calls_during(|| {
        let mut sync = SyncVirtualArena::new_with_budget(1 << 30, &BUDGET)
            .unwrap()
            .with_max_commit_step(64 << 10);
        let mut cell = VirtualArena::new_with_budget(1 << 30, &BUDGET)
            .unwrap()
            .with_max_commit_step(64 << 10);
        workload(&sync);
        workload(&cell);
        assert_eq!(
            BUDGET.used(),
            sync.committed_bytes() + cell.committed_bytes()
        );
        // Until the budget refuses a commit: still no heap.
        let big = Layout::from_size_align(100 << 10, 8).unwrap();
        while sync.allocate(big).is_ok() {}
        while cell.allocate(big).is_ok() {}
        assert!(BUDGET.used() <= BUDGET.limit());
        sync.reset_and_release();
        cell.reset_and_release();
        assert_eq!(BUDGET.used(), 0);
        workload(&sync);
        workload(&cell);
        drop((sync, cell));
    });
    assert_eq!(calls, 0);
    assert_eq!(BUDGET.used(), 0);
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
