//! Memory budgets across arenas and threads: several arenas capped together by one `static`
//! [`Budget`], threads racing at the limit, a backing allocator that fails or panics, and a
//! model-based property test of [`Budgeted`]; the virtual arenas' commits on a budget
//! (`new_with_budget`), shared with `Budgeted` arenas, raced by threads, and checked against a
//! model.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::blocks::{fill, mixed_layout, tag, verify, Block};
use common::counting::{PanicsOn, SyncCounting};
use common::layout;
use libdd_alloc::{
    os, AllocError, Allocator, Budget, Budgeted, ChainAllocator, Layout, LinearAllocator,
    SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena, System, VirtualAllocator,
    VirtualArena,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

#[test]
fn several_arenas_of_every_kind_on_one_static_budget_are_capped_together() {
    static BUDGET: Budget = Budget::new(64 << 10);
    static BACKING: SyncCounting<System> = SyncCounting::new(System);
    let budgeted = || Budgeted::new(&BUDGET, &BACKING);
    let linear = LinearAllocator::new_in(layout(16 << 10, 8), budgeted()).unwrap();
    let sync_linear = SyncLinearAllocator::new_in(layout(16 << 10, 8), budgeted()).unwrap();
    // Chunks of at most 4 KiB, so that a refusal means less than 4 KiB was left.
    let chain = ChainAllocator::new_in(4096, budgeted())
        .unwrap()
        .with_max_chunk_size(4096);
    let sync_chain = SyncChainAllocator::new_in(4096, budgeted())
        .unwrap()
        .with_max_chunk_size(4096);
    assert_eq!(BUDGET.used(), BACKING.live_bytes());
    // A linear arena needs a buffer that does not fit in what is left: refused, nothing charged.
    let before = BUDGET.used();
    assert!(LinearAllocator::new_in(layout(BUDGET.remaining() + 1, 8), budgeted()).is_err());
    assert_eq!(BUDGET.used(), before);
    // The chain arenas take chunks until the budget is spent; each refusal is an `Err`.
    let mut refusals = 0;
    for i in 0..10_000 {
        let arena: &dyn Allocator = if i % 2 == 0 { &chain } else { &sync_chain };
        match arena.allocate(layout(300, 8)) {
            Ok(_) => {}
            Err(AllocError) => refusals += 1,
        }
        assert!(BUDGET.used() <= BUDGET.limit());
        assert_eq!(BUDGET.used(), BACKING.live_bytes());
    }
    assert!(refusals > 0, "the budget was never reached");
    assert!(BUDGET.remaining() < 4096, "refused with room left");
    assert!(BUDGET.peak() <= BUDGET.limit());
    drop((linear, sync_linear, chain, sync_chain));
    assert_eq!((BUDGET.used(), BACKING.live_bytes()), (0, 0));
}

#[test]
fn reset_gives_back_the_chunks_an_arena_drops() {
    let budget = Budget::new(1 << 20);
    let mut arena = ChainAllocator::new_in(4096, Budgeted::new(&budget, System)).unwrap();
    for _ in 0..100 {
        arena.allocate(layout(1000, 8)).unwrap();
    }
    let full = budget.used();
    arena.reset();
    let kept = budget.used();
    assert!(kept < full && kept > 0, "reset kept {kept} of {full} bytes");
    assert_eq!(kept, arena.reserved_bytes());
}

#[test]
fn virtual_allocator_behind_a_budget_is_charged_the_sizes_asked() {
    let budget = Budget::new(1 << 20);
    let backing = Budgeted::new(&budget, VirtualAllocator {});
    let block = backing.allocate(layout(10_000, 4096)).unwrap();
    assert_eq!((block.len(), budget.used()), (10_000, 10_000));
    // SAFETY: from `backing` with this layout.
    let grown = unsafe { backing.grow(block.cast(), layout(10_000, 4096), layout(50_000, 4096)) };
    let grown = grown.unwrap();
    assert_eq!(budget.used(), 50_000);
    // SAFETY: from `backing` with the grown layout.
    unsafe { backing.deallocate(grown.cast(), layout(50_000, 4096)) };
    assert_eq!(budget.used(), 0);
}

#[test]
fn threads_racing_at_the_limit_never_exceed_it_and_give_everything_back() {
    const LIMIT: usize = 256 << 10;
    static BUDGET: Budget = Budget::new(LIMIT);
    static BACKING: SyncCounting<System> = SyncCounting::new(System);
    static STOP: AtomicBool = AtomicBool::new(false);
    static OVER: AtomicUsize = AtomicUsize::new(0);
    let shared = SyncChainAllocator::new_in(4096, Budgeted::new(&BUDGET, &BACKING))
        .unwrap()
        .with_max_chunk_size(16 << 10);
    let (successes, refusals): (usize, usize) = std::thread::scope(|s| {
        // A watcher samples the backing allocator's live bytes while the others race.
        s.spawn(|| {
            while !STOP.load(Relaxed) {
                if BACKING.live_bytes() > LIMIT {
                    OVER.fetch_add(1, Relaxed);
                }
                std::hint::spin_loop();
            }
        });
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let shared = &shared;
                s.spawn(move || {
                    let (mut ok, mut refused) = (0, 0);
                    for round in 0..40u64 {
                        // Each thread also owns an arena on the same budget, dropped each round.
                        let own =
                            ChainAllocator::new_lazy_in(2048, Budgeted::new(&BUDGET, &BACKING))
                                .with_max_chunk_size(16 << 10);
                        for i in 0..400u64 {
                            let size = 1 + ((t * 7919 + round * 131 + i * 17) % 1500) as usize;
                            let arena: &dyn Allocator = if i % 3 == 0 { &own } else { shared };
                            match arena.allocate(layout(size, 8)) {
                                Ok(block) => {
                                    // SAFETY: fresh block, ours.
                                    unsafe { block.cast::<u8>().write_bytes(t as u8, size) };
                                    ok += 1;
                                }
                                Err(AllocError) => refused += 1,
                            }
                            assert!(BUDGET.used() <= LIMIT);
                        }
                    }
                    (ok, refused)
                })
            })
            .collect();
        let totals = workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        STOP.store(true, Relaxed);
        totals
    });
    println!(
        "{successes} allocations, {refusals} refusals, peak {} of {LIMIT}",
        BUDGET.peak()
    );
    assert!(
        successes > 1000 && refusals > 1000,
        "did not race at the limit"
    );
    assert!(BUDGET.peak() <= LIMIT);
    assert!(
        BUDGET.peak() > LIMIT - (16 << 10),
        "peak {} never neared the limit",
        BUDGET.peak()
    );
    assert_eq!(
        OVER.load(Relaxed),
        0,
        "the backing allocator held more than the limit"
    );
    assert_eq!(BUDGET.used(), BACKING.live_bytes());
    drop(shared);
    assert_eq!((BUDGET.used(), BACKING.live_bytes()), (0, 0));
}

#[test]
fn a_failing_backing_allocator_gives_every_charge_back() {
    // Every backing call from the 4th on fails, like memory that has run out.
    let budget = Budget::new(1 << 20);
    let backing = SyncCounting::fail_from(System, 3);
    let arena = ChainAllocator::new_in(1024, Budgeted::new(&budget, &backing)).unwrap();
    let mut refusals = 0;
    for _ in 0..200 {
        if arena.allocate(layout(200, 8)).is_err() {
            refusals += 1;
        }
        assert_eq!(budget.used(), backing.live_bytes());
    }
    assert!(refusals > 0 && backing.failures() > 0);
    drop(arena);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_panicking_backing_allocator_leaves_the_budget_exact() {
    for n in 0..6 {
        let budget = Budget::new(1 << 20);
        let counting = SyncCounting::new(System);
        let arena =
            ChainAllocator::new_lazy_in(1024, Budgeted::new(&budget, PanicsOn::new(&counting, n)));
        let mut panics = 0;
        for _ in 0..40 {
            let result = catch_unwind(AssertUnwindSafe(|| {
                let block = arena.allocate(layout(300, 8))?;
                // SAFETY: from `arena` with `layout(300, 8)`, the most recent block.
                unsafe { arena.grow(block.cast(), layout(300, 8), layout(900, 8)) }.map(|_| ())
            }));
            if result.is_err() {
                panics += 1;
            }
            assert_eq!(
                budget.used(),
                counting.live_bytes(),
                "after backing call {n} panicked"
            );
        }
        assert_eq!(panics, 1);
        drop(arena);
        assert_eq!((budget.used(), counting.live_bytes()), (0, 0));
    }
}

#[test]
fn a_string_growing_on_a_budgeted_arena_is_refused_at_the_limit_with_its_contents_intact() {
    use libdd_alloc::ArenaString;
    const LIMIT: usize = 16 << 10;
    let budget = Budget::new(LIMIT);
    let arena = ChainAllocator::new_in(1024, Budgeted::new(&budget, System)).unwrap();
    let mut s = ArenaString::new_in(&arena);
    let mut pushed = 0;
    while s.try_push_str("0123456789abcdef").is_ok() {
        pushed += 16;
        assert!(budget.used() <= LIMIT);
    }
    assert!(pushed >= 4096, "refused at {pushed} bytes");
    assert_eq!(s.len(), pushed);
    assert!(s.as_bytes().chunks(16).all(|c| c == b"0123456789abcdef"));
    assert!(budget.peak() <= LIMIT);
    drop(s);
    drop(arena);
    assert_eq!(budget.used(), 0);
}

// ---- The virtual arenas on a budget ----

#[test]
fn a_virtual_arena_and_a_budgeted_chain_arena_share_one_budget() {
    static BUDGET: Budget = Budget::new(1 << 20);
    static BACKING: SyncCounting<System> = SyncCounting::new(System);
    let mut strings = VirtualArena::new_with_budget(1 << 30, &BUDGET).unwrap();
    let samples = ChainAllocator::new_in(16 << 10, Budgeted::new(&BUDGET, &BACKING))
        .unwrap()
        .with_max_chunk_size(16 << 10);
    let accounted = |strings: &VirtualArena| strings.committed_bytes() + BACKING.live_bytes();
    assert_eq!(BUDGET.used(), accounted(&strings));
    let (mut refused_strings, mut refused_samples) = (0, 0);
    for i in 0..4000 {
        if strings.allocate(layout(700, 8)).is_err() {
            refused_strings += 1;
        }
        if samples.allocate(layout(1 + i % 900, 8)).is_err() {
            refused_samples += 1;
        }
        assert_eq!(BUDGET.used(), accounted(&strings));
        assert!(BUDGET.used() <= BUDGET.limit());
    }
    assert!(
        refused_strings > 0 && refused_samples > 0,
        "the limit was never reached"
    );
    assert!(
        BUDGET.remaining() < 16 << 10,
        "refused with {} left",
        BUDGET.remaining()
    );
    // The string table gives its pages back: the sample arena can take its chunks again.
    strings.reset_and_release();
    assert_eq!(
        (strings.committed_bytes(), BUDGET.used()),
        (0, BACKING.live_bytes())
    );
    for _ in 0..20 {
        samples.allocate(layout(8 << 10, 8)).unwrap();
    }
    assert_eq!(BUDGET.used(), accounted(&strings));
    assert!(BUDGET.peak() <= BUDGET.limit());
    drop((strings, samples));
    assert_eq!((BUDGET.used(), BACKING.live_bytes()), (0, 0));
}

#[test]
fn threads_racing_on_a_budgeted_sync_virtual_arena_never_exceed_the_limit() {
    const LIMIT: usize = 512 << 10;
    const THREADS: u64 = 4;
    const PER_THREAD: usize = 1500;
    static BUDGET: Budget = Budget::new(LIMIT);
    static STOP: AtomicBool = AtomicBool::new(false);
    static OVER: AtomicUsize = AtomicUsize::new(0);
    // Small steps, so that the frontier is crossed often and commits race.
    let mut arena = SyncVirtualArena::new_with_budget(64 << 20, &BUDGET)
        .unwrap()
        .with_max_commit_step(64 << 10);
    let (mut successes, mut refusals) = (0usize, 0usize);
    let start = std::sync::Barrier::new(THREADS as usize);
    for round in 0..40u64 {
        let results: Vec<(Vec<Block>, usize)> = std::thread::scope(|s| {
            let arena = &arena;
            // A watcher: the budget never counts less than the arena has committed, and never
            // passes the limit.
            s.spawn(|| {
                while !STOP.load(Relaxed) {
                    let committed = arena.committed_bytes();
                    let used = BUDGET.used();
                    if used > LIMIT || used < committed {
                        OVER.fetch_add(1, Relaxed);
                    }
                    std::hint::spin_loop();
                }
            });
            let start = &start;
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    s.spawn(move || {
                        let (mut blocks, mut refused) = (Vec::with_capacity(PER_THREAD), 0);
                        // All start at once, on an empty commit, with a large block: the first
                        // commits of each round race (and overlap).
                        start.wait();
                        for i in 0..PER_THREAD as u64 {
                            let seq = round * 1_000_000 + i;
                            // Mostly small blocks, and every 100th a large one that needs a commit.
                            let l = if i % 100 == 0 {
                                layout(16 << 10, 64)
                            } else {
                                mixed_layout(seq ^ t)
                            };
                            match arena.allocate(l) {
                                Ok(block) => {
                                    // SAFETY: a fresh block, ours, of at least `l.size()` bytes.
                                    blocks.push(unsafe { fill(block, l.size(), tag(t, seq)) })
                                }
                                Err(AllocError) => refused += 1,
                            }
                        }
                        (blocks, refused)
                    })
                })
                .collect();
            let results = workers.into_iter().map(|w| w.join().unwrap()).collect();
            STOP.store(true, Relaxed);
            results
        });
        STOP.store(false, Relaxed);
        let mut all: Vec<Block> = Vec::new();
        for (blocks, refused) in results {
            successes += blocks.len();
            refusals += refused;
            all.extend(blocks);
        }
        // SAFETY: every block is live: the arena has not been reset since.
        unsafe { verify(&mut all) }.unwrap();
        assert!(all
            .iter()
            .all(|b| b.addr + b.len - arena_base(&all) <= arena.committed_bytes()));
        // Commits have stopped: the budget counts the commit exactly.
        assert_eq!(BUDGET.used(), arena.committed_bytes());
        assert!(BUDGET.peak() <= LIMIT);
        arena.reset_and_release();
        assert_eq!(BUDGET.used(), 0);
    }
    println!(
        "{successes} allocations, {refusals} refusals, peak {} of {LIMIT}",
        BUDGET.peak()
    );
    assert_eq!(
        OVER.load(Relaxed),
        0,
        "the budget passed the limit or under-counted"
    );
    assert!(
        refusals > 100 && successes > 10_000,
        "did not race at the limit"
    );
    assert!(
        BUDGET.peak() > LIMIT - (64 << 10),
        "peak {} never neared the limit",
        BUDGET.peak()
    );
    drop(arena);
    assert_eq!(BUDGET.used(), 0);
}

/// The lowest address of `blocks`, the arena's start at most: blocks lie in one range.
fn arena_base(blocks: &[Block]) -> usize {
    blocks.iter().map(|b| b.addr).min().unwrap_or(0)
}

#[derive(Clone, Debug)]
enum VirtualOp {
    Allocate(usize, u32),
    GrowLast(usize),
    FreeLast,
    Reset,
    ResetAndRelease,
    SetLimit(usize),
}

fn virtual_op() -> impl Strategy<Value = VirtualOp> {
    prop_oneof![
        6 => (0usize..200_000, 0u32..13).prop_map(|(size, align)| VirtualOp::Allocate(size, align)),
        2 => (0usize..200_000).prop_map(VirtualOp::GrowLast),
        1 => Just(VirtualOp::FreeLast),
        1 => Just(VirtualOp::Reset),
        1 => Just(VirtualOp::ResetAndRelease),
        1 => (0usize..2 << 20).prop_map(VirtualOp::SetLimit),
    ]
}

/// One of the two virtual arenas behind the operations the model needs.
trait BudgetedVirtual: Allocator {
    fn committed(&self) -> usize;
    fn used(&self) -> usize;
    fn reset(&mut self);
    fn reset_and_release(&mut self);
}

macro_rules! budgeted_virtual {
    ($($arena:ty),*) => {$(
        impl BudgetedVirtual for $arena {
            fn committed(&self) -> usize { self.committed_bytes() }
            fn used(&self) -> usize { self.used_bytes() }
            fn reset(&mut self) { <$arena>::reset(self) }
            fn reset_and_release(&mut self) { <$arena>::reset_and_release(self) }
        }
    )*};
}
budgeted_virtual!(VirtualArena, SyncVirtualArena);

/// Runs `ops` on `arena` (on `budget`, which starts with `limit`) and checks after each one that
/// the budget counts the commit exactly, and that every refusal was one the budget had to make:
/// even the bare need (the block's end rounded up to a page, minus what was committed) did not
/// fit in what was left.
fn check_virtual_on_budget(
    mut arena: impl BudgetedVirtual,
    budget: &Budget,
    limit: usize,
    ops: Vec<VirtualOp>,
) -> Result<(), TestCaseError> {
    let page = os::page_size().unwrap();
    let mut last: Option<(NonNull<u8>, Layout)> = None;
    let (mut model_limit, mut max_limit) = (limit, limit);
    for op in ops {
        let committed = arena.committed();
        let remaining = model_limit.saturating_sub(budget.used());
        // Whether a block ending at offset `end` may be refused by the budget alone.
        let refusable = |end: usize| {
            let bare = end.div_ceil(page) * page;
            bare > committed && bare - committed > remaining
        };
        let base = || arena.used(); // offset of the cursor
        match op {
            VirtualOp::Allocate(size, align) => {
                let l = layout(size, 1 << align);
                let start = base().next_multiple_of(l.align());
                match arena.allocate(l) {
                    Ok(block) => last = (size > 0).then(|| (block.cast(), l)),
                    Err(_) => prop_assert!(
                        refusable(start + size),
                        "refused {l:?} with {remaining} left"
                    ),
                }
            }
            VirtualOp::GrowLast(by) => {
                if let Some((ptr, old)) = last {
                    let new = layout(old.size() + by, old.align());
                    let end = base() + by;
                    // SAFETY: the most recent block, from `arena` with `old`.
                    match unsafe { arena.grow(ptr, old, new) } {
                        Ok(block) => {
                            prop_assert_eq!(
                                block.cast::<u8>(),
                                ptr,
                                "the last block grows in place"
                            );
                            last = Some((ptr, new));
                        }
                        Err(_) => {
                            prop_assert!(refusable(end), "grow refused with {remaining} left")
                        }
                    }
                }
            }
            VirtualOp::FreeLast => {
                if let Some((ptr, l)) = last.take() {
                    // SAFETY: from `arena` with `l`.
                    unsafe { arena.deallocate(ptr, l) };
                }
            }
            VirtualOp::Reset => {
                last = None;
                arena.reset();
                prop_assert_eq!(arena.committed(), committed, "reset keeps the commit");
            }
            VirtualOp::ResetAndRelease => {
                last = None;
                arena.reset_and_release();
                prop_assert_eq!(arena.committed(), 0);
            }
            VirtualOp::SetLimit(new_limit) => {
                budget.set_limit(new_limit);
                model_limit = new_limit;
            }
        }
        prop_assert_eq!(budget.used(), arena.committed());
        max_limit = max_limit.max(model_limit);
        prop_assert!(
            budget.peak() <= max_limit,
            "the budget passed every limit it had"
        );
    }
    drop(arena);
    prop_assert_eq!(budget.used(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: common::proptest_cases(64), ..config() })]

    #[test]
    fn a_budgeted_virtual_arena_charges_its_commit_and_refuses_only_past_the_limit(
        limit in 0usize..(2 << 20),
        sync in any::<bool>(),
        ops in prop::collection::vec(virtual_op(), 1..60),
    ) {
        let budget: &'static Budget = Box::leak(Box::new(Budget::new(limit)));
        // Kept reachable for LeakSanitizer: the budget must outlive the arena, so it is leaked.
        static KEPT: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
        KEPT.lock().unwrap().push(budget as *const Budget as usize);
        if sync {
            let arena = SyncVirtualArena::new_with_budget(8 << 20, budget).unwrap();
            check_virtual_on_budget(arena, budget, limit, ops)?;
        } else {
            let arena = VirtualArena::new_with_budget(8 << 20, budget).unwrap();
            check_virtual_on_budget(arena, budget, limit, ops)?;
        }
    }
}

// ---- Property test: `Budgeted` against a model ----

#[derive(Clone, Debug)]
enum Op {
    Allocate(usize),
    Deallocate(usize),
    Grow(usize, usize),
    Shrink(usize, usize),
    SetLimit(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3000).prop_map(Op::Allocate),
        2 => any::<usize>().prop_map(Op::Deallocate),
        2 => (any::<usize>(), 0usize..3000).prop_map(|(i, by)| Op::Grow(i, by)),
        1 => (any::<usize>(), 0usize..3000).prop_map(|(i, by)| Op::Shrink(i, by)),
        1 => (0usize..12_000).prop_map(Op::SetLimit),
    ]
}

fn config() -> Config {
    Config {
        rng_seed: RngSeed::Fixed(0xb0d9e7),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn budgeted_charges_exactly_what_a_model_says(
        limit in 0usize..12_000,
        fail_from in prop::option::of(0u64..60),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let budget = Budget::new(limit);
        let backing = match fail_from {
            Some(n) => SyncCounting::fail_from(System, n),
            None => SyncCounting::new(System),
        };
        let alloc = Budgeted::new(&budget, &backing);
        let mut blocks: Vec<(NonNull<u8>, Layout)> = Vec::new();
        let (mut model_used, mut model_limit, mut model_peak) = (0usize, limit, 0usize);
        for op in ops {
            let calls = backing.calls();
            let failures = backing.failures();
            let backing_failed = || backing.failures() > failures;
            match op {
                Op::Allocate(size) => {
                    let l = layout(size, 8);
                    let result = alloc.allocate(l);
                    let fits = model_used + size <= model_limit;
                    if size > 0 && fits {
                        // A charge taken raises the peak even if the backing call then fails.
                        model_peak = model_peak.max(model_used + size);
                    }
                    if size > 0 && !fits {
                        prop_assert!(result.is_err());
                        prop_assert_eq!(backing.calls(), calls, "a refused charge called the backing");
                    } else if let Ok(block) = result {
                        prop_assert_eq!(block.len(), size);
                        model_used += size;
                        blocks.push((block.cast(), l));
                    } else {
                        prop_assert!(backing_failed());
                    }
                }
                Op::Deallocate(i) if !blocks.is_empty() => {
                    let (ptr, l) = blocks.swap_remove(i % blocks.len());
                    // SAFETY: from `alloc` with `l`, given back once.
                    unsafe { alloc.deallocate(ptr, l) };
                    model_used -= l.size();
                }
                Op::Grow(i, by) if !blocks.is_empty() => {
                    let i = i % blocks.len();
                    let (ptr, old) = blocks[i];
                    let new = layout(old.size() + by, 8);
                    // SAFETY: from `alloc` with `old`; `new` is not smaller.
                    let result = unsafe { alloc.grow(ptr, old, new) };
                    if by > 0 && model_used + by <= model_limit {
                        model_peak = model_peak.max(model_used + by);
                    }
                    if by > 0 && model_used + by > model_limit {
                        prop_assert!(result.is_err());
                        prop_assert_eq!(backing.calls(), calls);
                    } else if let Ok(block) = result {
                        prop_assert_eq!(block.len(), new.size());
                        model_used += by;
                        blocks[i] = (block.cast(), new);
                    } else {
                        prop_assert!(backing_failed());
                    }
                }
                Op::Shrink(i, by) if !blocks.is_empty() => {
                    let i = i % blocks.len();
                    let (ptr, old) = blocks[i];
                    let new = layout(old.size().saturating_sub(by), 8);
                    // SAFETY: from `alloc` with `old`; `new` is not larger.
                    match unsafe { alloc.shrink(ptr, old, new) } {
                        Ok(block) => {
                            model_used -= old.size() - new.size();
                            blocks[i] = (block.cast(), new);
                        }
                        Err(_) => prop_assert!(backing_failed()),
                    }
                }
                Op::SetLimit(new_limit) => {
                    budget.set_limit(new_limit);
                    model_limit = new_limit;
                }
                _ => {}
            }
            model_peak = model_peak.max(model_used);
            prop_assert_eq!(budget.used(), model_used);
            prop_assert_eq!(budget.used(), backing.live_bytes());
            prop_assert_eq!(budget.limit(), model_limit);
            prop_assert_eq!(budget.remaining(), model_limit.saturating_sub(model_used));
            prop_assert_eq!(budget.peak(), model_peak);
        }
        for (ptr, l) in blocks {
            // SAFETY: from `alloc` with `l`, given back once.
            unsafe { alloc.deallocate(ptr, l) };
        }
        prop_assert_eq!((budget.used(), backing.live_bytes()), (0, 0));
    }
}
