//! Outside review of the fold (issue 17, branch `fold`): `SyncLinearAllocator` and
//! `SyncVirtualArena` are now `arena::Linear` / `arena::Virtual` over the `AtomicCursor`, with
//! the commit-publish-claim protocol written once for both cursors.
//!
//! Real signals at *every instruction boundary* of the arenas' own operations (x86_64 Linux; the
//! handle's are in `review_fastpath.rs`): the trap flag makes the CPU raise SIGTRAP after each
//! instruction of an allocation (fast path, and the cold path that commits, publishes the
//! frontier with `fetch_max` and claims), `allocate_zeroed` after the cursor moved back over
//! written bytes, an in-place grow across the commit frontier, a shrink and a deallocation of
//! the last block; the SIGTRAP handler allocates (zeroed every fourth time, grows, gives back)
//! from the same arena. Then every block is checked disjoint and intact, every zeroed block was
//! zero, and a budgeted arena's budget counts its committed bytes exactly. Run it with
//! `--release` too: the code the compiler emitted is what is stepped.
//!
//! And both virtual arenas under a budget that refuses the commit at every point of a workload
//! (`refused_commits`): a refusal changes nothing, and the budget counts the commit exactly.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod single_step {
    use super::common;
    use common::blocks::{fill, intact, tag, verify, Block};
    use common::layout;
    use common::single_step::{self, install, BOUNDARIES, LOCK, VISITED};
    use common::slots;
    use libdd_alloc::{
        Allocator, Budget, SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena,
        VirtualAllocator,
    };
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

    /// The arena the handlers allocate from (a `*const A`), or null.
    static ARENA: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
    const HANDLER_OWNER: u64 = 0xFFFF;
    const MAIN_OWNER: u64 = 0x1;
    /// Handler failures by kind: allocation refused (tolerated under a budget), grow lost
    /// contents, a zeroed block that was not zero.
    static REFUSED: AtomicUsize = AtomicUsize::new(0);
    static LOST_BY_GROW: AtomicUsize = AtomicUsize::new(0);
    static NOT_ZERO: AtomicUsize = AtomicUsize::new(0);

    /// Runs `f` with a handler at each of its instruction boundaries (once each).
    fn stepped<R>(f: impl FnOnce() -> R) -> R {
        VISITED[0].clear();
        single_step::stepped(f)
    }

    fn uninstall() {
        ARENA.store(std::ptr::null_mut(), Ordering::Release);
        single_step::uninstall();
    }

    /// Whether the first `len` bytes at `ptr` are zero.
    fn zero(ptr: NonNull<u8>, len: usize) -> bool {
        // SAFETY: the caller's fresh block, readable.
        (0..len).all(|i| unsafe { ptr.as_ptr().add(i).read_volatile() } == 0)
    }

    /// What a handler does on the arena it interrupted: allocates and keeps a block (zeroed
    /// and checked every fourth run); every third run grows it first; every fifth also
    /// allocates a scratch block, dirties it and gives it back (so a later zeroed block lands
    /// on written bytes).
    fn handler_body<A: Ready>(_depth: usize) {
        let arena = ARENA.load(Ordering::Acquire) as *const A;
        // SAFETY: `ARENA` points at a live arena while the trap flag is set.
        let Some(arena) = (unsafe { arena.as_ref() }) else {
            return;
        };
        let run = slots::RUNS.fetch_add(1, Ordering::Relaxed);
        let h = run.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        // Every seventh run reaches past the frontier, so that handlers commit (and publish)
        // at every instruction of the interrupted code's own commit.
        let size = if run % 7 == 3 {
            arena.ready() + 1 + (h as usize % 96)
        } else {
            1 + (h as usize % 96)
        };
        let l = layout(size, 1 << (h % 5));
        let block = if run % 4 == 0 {
            arena.allocate_zeroed(l)
        } else {
            arena.allocate(l)
        };
        let Ok(b) = block else {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if run % 4 == 0 && !zero(b.cast(), l.size()) {
            NOT_ZERO.fetch_add(1, Ordering::Relaxed);
            slots::fail();
        }
        let tag = tag(HANDLER_OWNER, run);
        // SAFETY: fresh block, ours.
        let mut record = unsafe { fill(b, l.size().min(256), tag) };
        if run % 3 == 1 {
            let bigger = layout(l.size() + 40, l.align());
            // SAFETY: a live block of `arena` with `l`.
            match unsafe { arena.grow(b.cast(), l, bigger) } {
                Ok(g) => {
                    record.addr = g.cast::<u8>().as_ptr() as usize;
                    // SAFETY: the first `l.size()` bytes were kept.
                    if !unsafe { intact(&record) } {
                        LOST_BY_GROW.fetch_add(1, Ordering::Relaxed);
                        slots::fail();
                    }
                    // SAFETY: ours, of `bigger`.
                    record = unsafe { fill(g, bigger.size().min(256), tag) };
                }
                Err(_) => {
                    REFUSED.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        slots::record(record);
        if run % 5 == 2 {
            let s = layout(48, 8);
            if let Ok(scratch) = arena.allocate(s) {
                // SAFETY: fresh, ours.
                unsafe { fill(scratch, 48, u64::MAX) };
                // SAFETY: given back once.
                unsafe { arena.deallocate(scratch.cast(), s) };
            }
        }
    }

    /// The main side: `rounds` rounds of single-stepped operations on `arena`, handlers
    /// allocating from it at every instruction boundary. `crossing` is the size of an
    /// allocation that reaches past what the arena has ready (its commit frontier), or 0.
    /// Returns the blocks kept (main's and handlers'), checked, and how many operations the
    /// arena refused.
    fn run<A: Ready + 'static>(
        arena: &'static A,
        rounds: u64,
        crossing: impl Fn(&A) -> usize,
        after_round: impl Fn(&A),
    ) -> (usize, usize) {
        let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        slots::reset();
        BOUNDARIES.store(0, Ordering::Relaxed);
        REFUSED.store(0, Ordering::Relaxed);
        LOST_BY_GROW.store(0, Ordering::Relaxed);
        NOT_ZERO.store(0, Ordering::Relaxed);
        ARENA.store(arena as *const A as *mut (), Ordering::Release);
        install(handler_body::<A>);
        let mut kept: Vec<Block> = Vec::new();
        let mut refused = 0;
        let mut seq = 0;
        let mut keep = |b: NonNull<[u8]>, size: usize, kept: &mut Vec<Block>| {
            seq += 1;
            // SAFETY: a live block of ours of at least `size` bytes.
            kept.push(unsafe { fill(b, size, tag(MAIN_OWNER, seq)) });
        };
        for round in 0..rounds {
            // 1. A small allocation (fast path).
            let l = layout(40, 8);
            match stepped(|| arena.allocate(l)) {
                Ok(b) => keep(b, 40, &mut kept),
                Err(_) => refused += 1,
            }
            // 2. An allocation that crosses the frontier (cold path: commit, publish, claim).
            let size = crossing(arena).max(64);
            let l = layout(size, 64);
            match stepped(|| arena.allocate(l)) {
                Ok(b) => keep(b, 64, &mut kept),
                Err(_) => refused += 1,
            }
            // 3. Zeroed bytes after the cursor moved back over written ones.
            let l = layout(256, 16);
            if let Ok(b) = arena.allocate(l) {
                // SAFETY: fresh, ours; given back once.
                unsafe {
                    fill(b, 256, u64::MAX - 1);
                    arena.deallocate(b.cast(), l);
                }
            }
            match stepped(|| arena.allocate_zeroed(l)) {
                Ok(b) => {
                    assert!(zero(b.cast(), 256), "round {round}: zeroed block not zero");
                    keep(b, 256, &mut kept);
                }
                Err(_) => refused += 1,
            }
            // 4. The last block grows across the frontier (in place when it can).
            let small = layout(64, 8);
            if let Ok(b) = arena.allocate(small) {
                // SAFETY: fresh, ours.
                let record = unsafe { fill(b, 64, tag(MAIN_OWNER, 1 << 30 | round)) };
                let big = layout(crossing(arena).max(128) + 64, 8);
                // SAFETY: `b` is a live block of `arena` with `small`.
                match stepped(|| unsafe { arena.grow(b.cast(), small, big) }) {
                    Ok(g) => {
                        let moved = Block {
                            addr: g.cast::<u8>().as_ptr() as usize,
                            ..record
                        };
                        // SAFETY: the first 64 bytes were kept.
                        assert!(unsafe { intact(&moved) }, "round {round}: grow lost bytes");
                        keep(g, big.size(), &mut kept);
                    }
                    Err(_) => {
                        refused += 1;
                        kept.push(record);
                    }
                }
            }
            // 5. The last block shrinks, then 6. the last block is given back.
            let l = layout(4096, 8);
            if let Ok(b) = arena.allocate(l) {
                // SAFETY: fresh, ours.
                let record = unsafe { fill(b, 100, tag(MAIN_OWNER, 2 << 30 | round)) };
                // SAFETY: `b` is live with `l`; 100 bytes are smaller.
                let s = stepped(|| unsafe { arena.shrink(b.cast(), l, layout(100, 8)) })
                    .expect("shrink never fails");
                assert_eq!(s.cast::<u8>(), b.cast::<u8>(), "shrink stays in place");
                let kept_bytes = {
                    // SAFETY: still live.
                    unsafe { intact(&record) }
                };
                assert!(kept_bytes, "round {round}: shrink lost bytes");
                kept.push(record);
            }
            let l = layout(300, 8);
            if let Ok(b) = arena.allocate(l) {
                // SAFETY: fresh, ours.
                unsafe { fill(b, 300, u64::MAX - 2) };
                // SAFETY: given back once, with its layout, then never used.
                stepped(|| unsafe { arena.deallocate(b.cast(), l) });
            }
            slots::drain(&mut kept);
            after_round(arena);
        }
        uninstall();
        assert_eq!(
            slots::FAILURES.load(Ordering::Relaxed),
            0,
            "handler failures"
        );
        assert_eq!(
            NOT_ZERO.load(Ordering::Relaxed),
            0,
            "zeroed blocks not zero"
        );
        assert_eq!(LOST_BY_GROW.load(Ordering::Relaxed), 0, "grows lost bytes");
        let n = kept.len();
        // SAFETY: every block is live (the arena is not reset while they are checked).
        if let Err(fault) = unsafe { verify(&mut kept) } {
            panic!("{fault:?}");
        }
        let boundaries = BOUNDARIES.load(Ordering::Relaxed);
        eprintln!(
            "{} rounds: {boundaries} instruction boundaries with a handler, {n} blocks disjoint \
             and intact, {refused} main and {} handler refusals",
            rounds,
            REFUSED.load(Ordering::Relaxed)
        );
        assert!(
            boundaries > rounds * 50,
            "handlers ran at {boundaries} boundaries"
        );
        (n, refused)
    }

    /// An arena, and how many bytes it has ready before its cursor (a snapshot): an
    /// allocation of more takes the cold path.
    trait Ready: Allocator {
        fn ready(&self) -> usize;
    }

    impl Ready for SyncVirtualArena {
        fn ready(&self) -> usize {
            self.committed_bytes().saturating_sub(self.used_bytes())
        }
    }

    impl Ready for SyncLinearAllocator<VirtualAllocator> {
        fn ready(&self) -> usize {
            64
        }
    }

    impl Ready for SyncChainAllocator<VirtualAllocator> {
        fn ready(&self) -> usize {
            self.remaining_capacity()
        }
    }

    /// The bytes between the cursor and the commit frontier, plus some: an allocation of this
    /// size takes the cold path.
    fn past_frontier(arena: &SyncVirtualArena) -> usize {
        arena.ready() + 512
    }

    /// Valgrind runs the code on its own virtual CPU, which ignores the trap flag: no handler
    /// would run (scripts/memcheck.sh runs every test binary).
    fn skipped_under_valgrind() -> bool {
        let skipped = common::process::under_valgrind();
        if skipped {
            eprintln!("skipped: valgrind does not raise the trap flag's SIGTRAP");
        }
        skipped
    }

    /// Drops an arena that `run` had to see as `'static` (LeakSanitizer checks for leaks).
    fn free<T>(arena: &'static T) {
        // SAFETY: made by `Box::leak` in the test, no longer published to the handler
        // (`uninstall`), and not used after this.
        drop(unsafe { Box::from_raw(arena as *const T as *mut T) });
    }

    #[test]
    fn a_handler_at_every_instruction_of_every_virtual_arena_operation_gets_a_disjoint_block() {
        if skipped_under_valgrind() {
            return;
        }
        // Each handler that reaches past the frontier uses up to a commit step of the
        // reservation; a debug (or ASan) build steps more instructions, so more handlers run.
        let arena: &'static SyncVirtualArena = Box::leak(Box::new(
            SyncVirtualArena::new(1 << 34)
                .unwrap()
                .with_max_commit_step(64 << 10),
        ));
        let (blocks, refused) = run(arena, 24, past_frontier, |_| {});
        assert!(blocks > 1000);
        assert_eq!(refused, 0);
        assert!(arena.committed_bytes() >= arena.used_bytes());
        free(arena);
    }

    #[test]
    fn a_budgeted_virtual_arena_counts_its_commits_exactly_with_a_handler_at_every_instruction() {
        if skipped_under_valgrind() {
            return;
        }
        static BUDGET: Budget = Budget::new(48 << 20);
        let arena: &'static SyncVirtualArena = Box::leak(Box::new(
            SyncVirtualArena::new_with_budget(1 << 30, &BUDGET)
                .unwrap()
                .with_max_commit_step(64 << 10),
        ));
        let check = |arena: &SyncVirtualArena| {
            // No commit is in flight between rounds: the budget is exact.
            assert_eq!(BUDGET.used(), arena.committed_bytes());
            assert!(BUDGET.peak() <= 48 << 20);
        };
        let (_, refused) = run(arena, 48, past_frontier, check);
        assert!(refused > 0, "the budget should refuse some main operations");
        free(arena);
        assert_eq!(
            BUDGET.used(),
            0,
            "dropping the arena credits all it committed"
        );
    }

    /// The chain arena's own operations (the handle's are in review_fastpath.rs): every
    /// crossing allocation and grow takes a new chunk, so a handler runs at every instruction of
    /// the slow path (retry the newest, map, carve, publish by compare-exchange, lose and give
    /// back or stack above), and every seventh handler takes a chunk of its own there.
    #[test]
    fn a_handler_at_every_instruction_of_every_chain_arena_operation_gets_a_disjoint_block() {
        if skipped_under_valgrind() {
            return;
        }
        let arena: &'static SyncChainAllocator<VirtualAllocator> = Box::leak(Box::new(
            SyncChainAllocator::new_in(4096, VirtualAllocator {})
                .unwrap()
                .with_max_chunk_size(16 << 10),
        ));
        let (blocks, refused) = run(arena, 24, |a| a.ready() + 1, |_| {});
        assert!(blocks > 1000);
        assert_eq!(refused, 0);
        assert!(arena.used_bytes() <= arena.reserved_bytes());
        free(arena);
    }

    #[test]
    fn a_handler_at_every_instruction_of_every_linear_arena_operation_gets_a_disjoint_block() {
        if skipped_under_valgrind() {
            return;
        }
        let arena: &'static SyncLinearAllocator<VirtualAllocator> = Box::leak(Box::new(
            SyncLinearAllocator::new_in(layout(64 << 20, 4096), VirtualAllocator {}).unwrap(),
        ));
        let (blocks, refused) = run(arena, 24, |_| 1000, |_| {});
        assert!(blocks > 1000);
        assert_eq!(refused, 0);
        free(arena);
    }
}

/// Both virtual arenas, with a budget that refuses the commit at every point of a workload
/// (one run per limit, 16 KiB apart): an operation the budget refuses changes nothing (cursor,
/// commit, budget), the blocks kept stay intact, zeroed blocks are zero, a refused grow keeps
/// the block, and the budget counts the commit exactly throughout and is 0 once the arena is
/// dropped.
mod refused_commits {
    use super::common::{self, blocks::fill, blocks::intact, blocks::Block, layout};
    use libdd_alloc::{Allocator, Budget, SyncVirtualArena, VirtualArena};
    use std::ptr::NonNull;

    trait Arena: Allocator {
        fn make(budget: &'static Budget) -> Self;
        fn used(&self) -> usize;
        fn committed(&self) -> usize;
    }

    macro_rules! arena {
        ($t:ty) => {
            impl Arena for $t {
                fn make(budget: &'static Budget) -> Self {
                    <$t>::new_with_budget(64 << 20, budget)
                        .unwrap()
                        .with_max_commit_step(64 << 10)
                }
                fn used(&self) -> usize {
                    self.used_bytes()
                }
                fn committed(&self) -> usize {
                    self.committed_bytes()
                }
            }
        };
    }
    arena!(VirtualArena);
    arena!(SyncVirtualArena);

    fn zero(block: NonNull<[u8]>) -> bool {
        // SAFETY: a fresh block of ours, readable.
        (0..block.len()).all(|i| unsafe { block.cast::<u8>().as_ptr().add(i).read() } == 0)
    }

    /// Runs the workload on an arena of kind `A` under `limit`; returns how many operations
    /// the budget refused.
    fn workload<A: Arena>(limit: usize) -> usize {
        let budget: &'static Budget = Box::leak(Box::new(Budget::new(limit)));
        let arena = A::make(budget);
        let mut kept: Vec<Block> = Vec::new();
        let mut refused = 0;
        let mut last: Option<(NonNull<[u8]>, usize)> = None;
        for i in 0..160u64 {
            let before = (arena.used(), arena.committed(), budget.used());
            let size = 1000 + (i as usize * 7919) % 30_000;
            let ok = match i % 5 {
                // Allocate, dirty, give back, then allocate zeroed over it.
                0 => match arena.allocate(layout(size, 8)) {
                    Ok(b) => {
                        // SAFETY: fresh, ours; given back once.
                        unsafe {
                            fill(b, size, u64::MAX);
                            arena.deallocate(b.cast(), layout(size, 8));
                        }
                        match arena.allocate_zeroed(layout(size, 8)) {
                            Ok(z) => {
                                assert!(zero(z), "limit {limit}, op {i}: not zeroed");
                                // SAFETY: ours.
                                kept.push(unsafe { fill(z, size, i) });
                                last = Some((z, size));
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    Err(_) => false,
                },
                // Grow the last block across the frontier.
                1 | 3 => match last {
                    Some((b, old)) => {
                        let new = old + size * 2;
                        // SAFETY: `b` is the live block of `old` bytes.
                        match unsafe { arena.grow(b.cast(), layout(old, 8), layout(new, 8)) } {
                            Ok(g) => {
                                let record = kept.pop().unwrap();
                                let moved = Block {
                                    addr: common::addr(g),
                                    ..record
                                };
                                // SAFETY: the first `old` bytes were kept.
                                assert!(unsafe { intact(&moved) }, "limit {limit}, op {i}");
                                // SAFETY: ours.
                                kept.push(unsafe { fill(g, new, i) });
                                last = Some((g, new));
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    None => true,
                },
                // Shrink the last block.
                2 => match last {
                    Some((b, old)) if old > 64 => {
                        // SAFETY: `b` is the live block of `old` bytes.
                        let s = unsafe { arena.shrink(b.cast(), layout(old, 8), layout(64, 8)) }
                            .expect("shrink never fails");
                        let mut record = kept.pop().unwrap();
                        record.len = 64;
                        record.addr = common::addr(s);
                        kept.push(record);
                        last = Some((s, 64));
                        true
                    }
                    _ => true,
                },
                // A plain allocation, kept.
                _ => match arena.allocate(layout(size, 64)) {
                    Ok(b) => {
                        // SAFETY: ours.
                        kept.push(unsafe { fill(b, size, i) });
                        last = Some((b, size));
                        true
                    }
                    Err(_) => false,
                },
            };
            if !ok {
                refused += 1;
                // A refusal claims and commits nothing (a refused zeroed allocation after the
                // give-back: the cursor is back where it was).
                assert_eq!(
                    (arena.used(), arena.committed(), budget.used()),
                    before,
                    "limit {limit}, op {i}: a refused operation changed the arena"
                );
            }
            assert_eq!(budget.used(), arena.committed(), "limit {limit}, op {i}");
            assert!(budget.peak() <= limit);
        }
        for block in &kept {
            // SAFETY: the arena is alive and not reset.
            assert!(unsafe { intact(block) }, "limit {limit}: {block:?} corrupt");
        }
        drop(arena);
        assert_eq!(budget.used(), 0, "limit {limit}: drop credits the commit");
        // SAFETY: leaked above; the arena that held it is gone.
        drop(unsafe { Box::from_raw(budget as *const Budget as *mut Budget) });
        refused
    }

    fn every_limit<A: Arena>() {
        let mut refusals = 0;
        for step in 0..=96 {
            refusals += workload::<A>(step * (16 << 10));
        }
        assert!(refusals > 96, "the budget refused {refusals} operations");
    }

    #[test]
    fn virtual_arena_refused_at_every_commit_changes_nothing_and_counts_exactly() {
        every_limit::<VirtualArena>();
    }

    #[test]
    fn sync_virtual_arena_refused_at_every_commit_changes_nothing_and_counts_exactly() {
        every_limit::<SyncVirtualArena>();
    }
}
