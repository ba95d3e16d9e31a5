//! Model check of the lock-free protocols with [loom](https://docs.rs/loom), which runs each
//! scenario under every interleaving of its threads' atomic operations (up to a preemption
//! bound). Run with `scripts/loom.sh`, that is:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --lib sync::loom_tests
//! ```
//!
//! Unit tests, not integration tests, so that loom stays a dev-dependency: the library's
//! atomics come from loom only under `cfg(all(test, loom))` (see `atomic.rs`), so this is the
//! real code, not a copy. Only the atomics are modelled: the tests check the ranges handed out
//! and the chunk bookkeeping, not the bytes.
//!
//! `SyncVirtualArena` commits with the real `mprotect` (a syscall, invisible to loom, between
//! the atomic steps loom interleaves): its tests write to both ends of every block, so a block
//! handed out before its pages were read-write would crash the model run with SIGSEGV, and they
//! check each block against the published frontier. A commit limit
//! (`with_commit_limit_for_loom`) models the OS refusing a commit.

use crate::{
    AllocError, Allocator, Layout, Rewind, SyncChainAllocator, SyncLinearAllocator,
    SyncVirtualArena, System,
};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

fn range(block: NonNull<[u8]>) -> (usize, usize) {
    let start = block.cast::<u8>().as_ptr() as usize;
    (start, start + block.len())
}

fn assert_disjoint(mut ranges: Vec<(usize, usize)>) {
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// `System`, counting chunks and bytes held (plain std atomics: loom runs one thread at a time).
#[derive(Default)]
struct Counting {
    live_bytes: AtomicUsize,
    live_chunks: AtomicUsize,
    allocations: AtomicUsize,
}

// SAFETY: forwards to `System`, only counting.
unsafe impl Allocator for &'static Counting {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let block = System.allocate(layout)?;
        self.live_bytes.fetch_add(block.len(), Ordering::SeqCst);
        self.live_chunks.fetch_add(1, Ordering::SeqCst);
        self.allocations.fetch_add(1, Ordering::SeqCst);
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.live_bytes.fetch_sub(layout.size(), Ordering::SeqCst);
        self.live_chunks.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: forwarded caller contract.
        unsafe { System.deallocate(ptr, layout) };
    }
}

#[test]
fn concurrent_bumps_never_overlap_and_the_cursor_adds_up() {
    model(|| {
        let layout = Layout::new::<u64>();
        let arena =
            Arc::new(SyncLinearAllocator::new_in(Layout::new::<[u64; 8]>(), System).unwrap());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let arena = arena.clone();
                thread::spawn(move || {
                    let a = arena.allocate(layout).unwrap();
                    let b = arena.allocate(layout).unwrap();
                    [range(a), range(b)]
                })
            })
            .collect();
        let mut ranges: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        ranges.push(range(arena.allocate(layout).unwrap()));
        assert_disjoint(ranges);
        assert_eq!(arena.used_bytes(), 5 * 8);
    });
}

#[test]
fn dealloc_and_grow_of_the_last_block_race_safely_with_allocation() {
    model(|| {
        let small = Layout::new::<u64>();
        let big = Layout::new::<[u64; 2]>();
        let arena =
            Arc::new(SyncLinearAllocator::new_in(Layout::new::<[u64; 8]>(), System).unwrap());
        let other = {
            let arena = arena.clone();
            thread::spawn(move || range(arena.allocate(small).unwrap()))
        };
        // This thread: allocate, grow (in place if still last, else copy), then give a scratch
        // block back (in place only if still last).
        let x = arena.allocate(small).unwrap();
        // SAFETY: `x` came from the arena with `small`.
        let x = unsafe { arena.grow(x.cast(), small, big) }.unwrap();
        let scratch = arena.allocate(small).unwrap();
        // SAFETY: as above.
        unsafe { arena.deallocate(scratch.cast(), small) };
        let y = other.join().unwrap();
        assert_disjoint(vec![range(x), y]);
        let base = arena.allocate(small).unwrap();
        // Every live block lies below the cursor.
        assert!(range(x).1 <= range(base).0 && y.1 <= range(base).0);
    });
}

/// Two threads find the (lazy) arena empty and both take a chunk. Blocks of 40 bytes: two fit
/// in one 128-byte chunk, so the loser moves into the winner's chunk and returns its own.
#[test]
fn racing_first_chunk_loser_uses_the_winners_chunk_and_returns_its_own() {
    racing_growth(40);
}

/// Blocks of 80 bytes: one per chunk, so the loser stacks its chunk above the winner's.
#[test]
fn racing_growth_loser_stacks_its_chunk_above_the_winners() {
    racing_growth(80);
}

fn racing_growth(size: usize) {
    model(move || {
        let counting: &'static Counting = Box::leak(Box::default());
        let layout = Layout::from_size_align(size, 8).unwrap();
        {
            let arena =
                Arc::new(SyncChainAllocator::new_lazy_in(128, counting).with_max_chunk_size(128));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let arena = arena.clone();
                    thread::spawn(move || range(arena.allocate(layout).unwrap()))
                })
                .collect();
            let ranges: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert_disjoint(ranges);
            let chunks = counting.live_chunks.load(Ordering::SeqCst);
            assert_eq!(chunks, if size <= 48 { 1 } else { 2 });
            // Nothing leaked: what the backing allocator still holds is what the arena counts.
            assert_eq!(
                arena.reserved_bytes(),
                counting.live_bytes.load(Ordering::SeqCst)
            );
            assert_eq!(arena.reserved_bytes(), chunks * 128);
        }
        assert_eq!(counting.live_chunks.load(Ordering::SeqCst), 0);
    });
}

/// Three threads allocate into a chain whose chunks hold one block each, while the chain grows
/// under them: every block distinct, every chunk accounted for.
#[test]
fn three_threads_growing_a_chain_hand_out_disjoint_blocks() {
    model(|| {
        let counting: &'static Counting = Box::leak(Box::default());
        let layout = Layout::from_size_align(64, 8).unwrap();
        let arena = Arc::new(
            SyncChainAllocator::new_in(128, counting)
                .unwrap()
                .with_max_chunk_size(128),
        );
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let arena = arena.clone();
                thread::spawn(move || range(arena.allocate(layout).unwrap()))
            })
            .collect();
        let mut ranges = vec![range(arena.allocate(layout).unwrap())];
        ranges.extend(threads.into_iter().map(|t| t.join().unwrap()));
        assert_disjoint(ranges);
        assert_eq!(
            arena.reserved_bytes(),
            counting.live_bytes.load(Ordering::SeqCst)
        );
        assert_eq!(counting.live_chunks.load(Ordering::SeqCst), 3);
    });
}

const KIB: usize = 1 << 10;

/// A 256 KiB reservation committed in 64 KiB steps.
fn virtual_arena() -> SyncVirtualArena {
    SyncVirtualArena::new(256 * KIB)
        .unwrap()
        .with_max_commit_step(64 * KIB)
}

/// The start of an empty arena's reservation: where its next block goes.
fn base_of_empty(arena: &SyncVirtualArena) -> usize {
    let probe = arena.allocate(Layout::new::<u8>()).unwrap();
    // SAFETY: the most recent block, given back: the arena is empty again.
    unsafe { arena.deallocate(probe.cast(), Layout::new::<u8>()) };
    range(probe).0
}

/// Checks that `block` lies inside the frontier `arena` has published, and writes its first and
/// last byte: a SIGSEGV here means it was handed out uncommitted.
fn touch_committed(arena: &SyncVirtualArena, block: NonNull<[u8]>, base: usize) -> (usize, usize) {
    let (start, end) = range(block);
    assert!(
        end - base <= arena.committed_bytes(),
        "block ends past the frontier"
    );
    // SAFETY: the block is ours and at least one byte long.
    unsafe {
        block.cast::<u8>().as_ptr().write_volatile(1);
        block
            .cast::<u8>()
            .as_ptr()
            .add(block.len() - 1)
            .write_volatile(1);
    }
    (start, end)
}

/// Two threads each allocate two 40 KiB blocks with 64 KiB commit steps, so most allocations
/// move the frontier: the threads commit overlapping ranges concurrently (one may commit from a
/// stale frontier after the other has moved it further), and each block is committed, and
/// inside the published frontier, before it is handed out.
#[test]
fn racing_committers_hand_out_disjoint_blocks_only_after_committing_them() {
    model(|| {
        let arena = Arc::new(virtual_arena());
        let base = base_of_empty(&arena);
        let layout = Layout::from_size_align(40 * KIB, 8).unwrap();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let arena = arena.clone();
                thread::spawn(move || {
                    let a = touch_committed(&arena, arena.allocate(layout).unwrap(), base);
                    let b = touch_committed(&arena, arena.allocate(layout).unwrap(), base);
                    [a, b]
                })
            })
            .collect();
        let ranges = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_disjoint(ranges);
        assert_eq!(arena.used_bytes(), 160 * KIB);
        // Racing committers publish with `fetch_max`: no frontier is lost (a stale committer
        // cannot move it back), none overshoots by more than a step.
        let committed = arena.committed_bytes();
        assert!((160 * KIB..=192 * KIB).contains(&committed), "{committed}");
    });
}

/// The OS refuses every commit past 64 KiB. Two threads each need 48 KiB: exactly one gets it,
/// the other gets `Err` with nothing claimed, and the committed rest is still usable.
#[test]
fn a_refused_commit_claims_nothing_and_the_committed_part_stays_usable() {
    model(|| {
        let arena = Arc::new(virtual_arena().with_commit_limit_for_loom(64 * KIB));
        let layout = Layout::from_size_align(48 * KIB, 8).unwrap();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let arena = arena.clone();
                thread::spawn(move || arena.allocate(layout).map(range))
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert_eq!(
            arena.used_bytes(),
            48 * KIB,
            "the refused allocation claimed nothing"
        );
        assert_eq!(arena.committed_bytes(), 64 * KIB);
        let rest = arena.allocate(Layout::from_size_align(16 * KIB, 8).unwrap());
        assert!(rest.is_ok());
        assert_eq!(arena.used_bytes(), 64 * KIB);
    });
}

/// One thread writes a block and gives it back while another asks for zeroed bytes: whenever the
/// second is handed the first one's bytes, they read as zero. The giver raises the high-water
/// mark *before* its compare-exchange moves the cursor back, and the taker reads the mark after
/// its own compare-exchange read that one; raised after, the taker could miss it.
#[test]
fn a_block_given_back_by_one_thread_is_zeroed_when_another_allocates_it_zeroed() {
    model(|| {
        let arena = Arc::new(virtual_arena());
        let layout = Layout::from_size_align(64, 8).unwrap();
        base_of_empty(&arena); // commits the first step: no commit inside the model
        let giver = {
            let arena = arena.clone();
            thread::spawn(move || {
                let block = arena.allocate(layout).unwrap();
                // SAFETY: the block is ours, 64 bytes.
                unsafe { block.cast::<u8>().as_ptr().write_bytes(0xFF, 64) };
                // SAFETY: given back once, with its layout, and not used after.
                unsafe { arena.deallocate(block.cast(), layout) };
            })
        };
        let zeroed = arena.allocate_zeroed(layout).unwrap();
        // SAFETY: the block is ours and 64 bytes long.
        let bytes = unsafe { core::slice::from_raw_parts(zeroed.cast::<u8>().as_ptr(), 64) };
        assert!(
            bytes.iter().all(|&b| b == 0),
            "zeroed block holds {bytes:?}"
        );
        giver.join().unwrap();
    });
}

/// One thread grows its block across the frontier while another allocates: the growth commits
/// before it claims (in place if still last, else by a copy that commits too).
#[test]
fn grow_across_the_frontier_races_safely_with_allocation() {
    model(|| {
        let arena = Arc::new(virtual_arena());
        let base = base_of_empty(&arena);
        let small = Layout::from_size_align(8 * KIB, 8).unwrap();
        let big = Layout::from_size_align(100 * KIB, 8).unwrap();
        let other = {
            let arena = arena.clone();
            thread::spawn(move || range(arena.allocate(small).unwrap()))
        };
        let block = arena.allocate(small).unwrap();
        // SAFETY: `block` came from the arena with `small`; `big` is larger.
        let grown = unsafe { arena.grow(block.cast(), small, big) }.unwrap();
        let grown = touch_committed(&arena, grown, base);
        let y = other.join().unwrap();
        assert_disjoint(vec![grown, y]);
    });
}

/// Two threads grow a full chain at once (one block per chunk, so the loser stacks its chunk
/// above the winner's and must take the next depth); afterwards a rewind to a checkpoint taken before
/// them returns exactly the chunks they published and restores the stats.
#[test]
fn rewind_after_racing_growth_returns_exactly_the_chunks_published_since() {
    model(|| {
        let counting: &'static Counting = Box::leak(Box::default());
        let layout = Layout::from_size_align(80, 8).unwrap();
        let arena = SyncChainAllocator::new_in(128, counting)
            .unwrap()
            .with_max_chunk_size(128);
        arena.allocate(layout).unwrap(); // the first chunk is full
        let checkpoint = arena.checkpoint();
        let (used, reserved) = (arena.used_bytes(), arena.reserved_bytes());
        let arena = Arc::new(arena);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let arena = arena.clone();
                thread::spawn(move || range(arena.allocate(layout).unwrap()))
            })
            .collect();
        let ranges: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_disjoint(ranges);
        let mut arena = Arc::try_unwrap(arena).unwrap_or_else(|_| panic!("threads joined"));
        assert_eq!(counting.live_chunks.load(Ordering::SeqCst), 3);
        // The newest chunk is at depth 3 with one block: what a `ChainAllocator` in the same
        // state reports (its checkpoint names a chunk by depth too).
        let twin = crate::ChainAllocator::new_in(128, System)
            .unwrap()
            .with_max_chunk_size(128);
        for _ in 0..3 {
            twin.allocate(layout).unwrap();
        }
        assert_eq!(arena.checkpoint(), twin.checkpoint());
        arena.rewind(checkpoint);
        assert_eq!(counting.live_chunks.load(Ordering::SeqCst), 1);
        assert_eq!(counting.live_bytes.load(Ordering::SeqCst), 128);
        assert_eq!(
            (arena.used_bytes(), arena.reserved_bytes()),
            (used, reserved)
        );
        drop(arena);
        assert_eq!(counting.live_chunks.load(Ordering::SeqCst), 0);
    });
}

/// Racing committers on a budget: each charges its own range before its `mprotect` and, after
/// `fetch_max`, credits the part another thread had published. Under every interleaving the
/// budget never counts less than the published frontier (checked by each thread after each
/// allocation: frontier first, then the budget), and once both are done it counts the frontier
/// exactly; dropping the arena gives it all back.
#[test]
fn racing_committers_on_a_budget_charge_the_frontier_exactly_once_they_are_done() {
    model(|| {
        let budget: &'static crate::Budget = Box::leak(Box::new(crate::Budget::new(1 << 20)));
        let arena = Arc::new(
            SyncVirtualArena::new_with_budget(256 * KIB, budget)
                .unwrap()
                .with_max_commit_step(64 * KIB),
        );
        let base = base_of_empty(&arena);
        let layout = Layout::from_size_align(40 * KIB, 8).unwrap();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let arena = arena.clone();
                thread::spawn(move || {
                    let mut ranges = Vec::new();
                    for _ in 0..2 {
                        ranges.push(touch_committed(
                            &arena,
                            arena.allocate(layout).unwrap(),
                            base,
                        ));
                        let committed = arena.committed_bytes();
                        assert!(budget.used() >= committed, "the budget under-counts");
                    }
                    ranges
                })
            })
            .collect();
        let ranges = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_disjoint(ranges);
        assert_eq!(budget.used(), arena.committed_bytes());
        drop(arena);
        assert_eq!(budget.used(), 0);
    });
}

/// A budget of 128 KiB and two threads that each ask for 48 KiB twice: whatever the
/// interleaving, the budget never passes its limit, every refusal claims nothing, at least one
/// block is handed out (a racing refusal may come one step early, so not always two), and the
/// budget counts the frontier exactly at the end.
#[test]
fn committers_racing_at_a_budget_limit_never_pass_it_and_a_refusal_claims_nothing() {
    model(|| {
        let budget: &'static crate::Budget = Box::leak(Box::new(crate::Budget::new(128 * KIB)));
        let arena = Arc::new(
            SyncVirtualArena::new_with_budget(256 * KIB, budget)
                .unwrap()
                .with_max_commit_step(64 * KIB),
        );
        let layout = Layout::from_size_align(48 * KIB, 8).unwrap();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let arena = arena.clone();
                thread::spawn(move || {
                    let mut ok = 0;
                    for _ in 0..2 {
                        if arena.allocate(layout).is_ok() {
                            ok += 1;
                        }
                        assert!(budget.used() <= 128 * KIB);
                    }
                    ok
                })
            })
            .collect();
        let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        // Refusals claimed nothing: the cursor is exactly the blocks handed out.
        assert_eq!(arena.used_bytes(), ok * 48 * KIB);
        assert!((1..=2).contains(&ok), "{ok} blocks of 48 KiB on 128 KiB");
        assert_eq!(budget.used(), arena.committed_bytes());
        assert!(budget.peak() <= 128 * KIB);
    });
}

/// Two threads, each with a `LocalHandle` on one chain arena: each claims a 1 KiB slab, then
/// overflows it, so it either grows the slab in place (when it is still the arena's last claim)
/// or gives the tail back (one compare-exchange that fails if the other thread claimed after
/// it) and claims another; dropping the handle gives the last tail back. Under every
/// interleaving the blocks are disjoint, the arena counts at least what was handed out, and
/// every chunk goes back to the backing allocator.
#[test]
fn local_handles_claim_grow_and_give_back_slabs_disjointly() {
    model(|| {
        let counting: &'static Counting = Box::leak(Box::default());
        let arena = Arc::new(SyncChainAllocator::new_in(4096, counting).unwrap());
        let work = |arena: &SyncChainAllocator<&'static Counting>| {
            let local = arena.local();
            let mut ranges = Vec::new();
            for size in [8usize, 120, 120, 120, 120, 120, 120, 120, 120, 120] {
                let layout = Layout::from_size_align(size, 8).unwrap();
                ranges.push(range(local.allocate(layout).unwrap()));
            }
            ranges
        };
        let other = {
            let arena = arena.clone();
            thread::spawn(move || work(&arena))
        };
        let mut ranges = work(&arena);
        ranges.extend(other.join().unwrap());
        let handed_out: usize = ranges.iter().map(|(start, end)| end - start).sum();
        assert!(arena.used_bytes() >= handed_out);
        assert!(arena.used_bytes() <= arena.reserved_bytes());
        assert_disjoint(ranges);
        drop(arena);
        assert_eq!(counting.live_chunks.load(Ordering::SeqCst), 0);
    });
}

/// A lone handle's slab tail is given back on drop exactly when its slab is still the arena's
/// last claim: with another thread allocating directly from the arena meanwhile, the arena ends
/// with exactly the bytes handed out, plus the whole slab when the other thread claimed after it.
#[test]
fn a_dropped_handle_gives_its_tail_back_exactly_when_its_slab_is_the_last_claim() {
    model(|| {
        let counting: &'static Counting = Box::leak(Box::default());
        let arena = Arc::new(SyncChainAllocator::new_in(8192, counting).unwrap());
        let base = arena.used_bytes();
        let other = {
            let arena = arena.clone();
            thread::spawn(move || range(arena.allocate(Layout::new::<u64>()).unwrap()))
        };
        let (slab, block) = {
            let local = arena.local();
            let block = range(local.allocate(Layout::new::<[u64; 2]>()).unwrap());
            (block.0, block)
        };
        let theirs = other.join().unwrap();
        assert_disjoint(vec![block, theirs]);
        let used = arena.used_bytes() - base;
        if theirs.0 >= slab + 1024 {
            // They claimed after the slab, before the handle was dropped: its tail stayed
            // counted as used.
            assert_eq!(used, 1024 + 8);
        } else {
            // Before the slab, or after the tail was given back (right behind our block).
            assert!(theirs.1 <= slab || theirs.0 == slab + 16);
            assert_eq!(used, 16 + 8);
        }
    });
}

/// Appends its id to a shared log when dropped (std types: loom runs one thread at a time).
struct Logged(u32, std::sync::Arc<std::sync::Mutex<Vec<u32>>>);

impl Drop for Logged {
    fn drop(&mut self) {
        self.1.lock().unwrap().push(self.0);
    }
}

/// Two threads each register two values on the arena `make` builds; after they join, `reset`
/// must drop each once, newest first per thread, and leave `left` bytes `used`.
fn racing_drop_registrations<A, F>(make: F, reset: fn(&mut A), used: fn(&A) -> usize, left: usize)
where
    A: crate::DropArena + Send + Sync + 'static,
    F: Fn() -> A + Sync + Send + 'static,
{
    model(move || {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let arena = Arc::new(make());
        let threads: Vec<_> = (0..2u32)
            .map(|t| {
                let (arena, log) = (arena.clone(), log.clone());
                thread::spawn(move || {
                    arena.try_alloc_owned(Logged(t * 10, log.clone())).unwrap();
                    arena.try_alloc_owned(Logged(t * 10 + 1, log)).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut arena = Arc::try_unwrap(arena).ok().unwrap();
        reset(&mut arena);
        let dropped = log.lock().unwrap().clone();
        assert_eq!(dropped.len(), 4, "each value dropped once: {dropped:?}");
        for t in 0..2u32 {
            let mine: Vec<u32> = dropped.iter().copied().filter(|id| id / 10 == t).collect();
            assert_eq!(mine, [t * 10 + 1, t * 10], "newest first");
        }
        assert_eq!(used(&arena), left);
    });
}

#[test]
fn racing_drop_registrations_are_each_run_once_newest_first_per_thread() {
    racing_drop_registrations(
        || SyncLinearAllocator::new_in(Layout::new::<[u64; 32]>(), System).unwrap(),
        SyncLinearAllocator::reset,
        SyncLinearAllocator::used_bytes,
        0,
    );
}

#[test]
fn racing_drop_registrations_on_a_chain_are_each_run_once_newest_first_per_thread() {
    // 128-byte chunks hold two values: the threads race to link chunks as they register.
    racing_drop_registrations(
        || SyncChainAllocator::new_lazy_in(128, System).with_max_chunk_size(128),
        SyncChainAllocator::reset,
        SyncChainAllocator::used_bytes,
        SyncChainAllocator::<System>::CHAIN_NODE_OVERHEAD,
    );
}
