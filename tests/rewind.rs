//! Checkpoints and scopes (`Rewind`) on the arenas that joined the five: `VirtualArena`,
//! `SyncVirtualArena`, `SyncLinearAllocator` and `SyncChainAllocator`. (`LinearAllocator` and `ChainAllocator` are
//! covered in `typed.rs`, whose property test runs over all five.) Also `ChainAllocator`'s
//! rollback after a chunk grew in its backing allocator, with and without that allocator
//! allocating from the arena during the `grow`.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::counting::{Counting, Counts};
use common::fill::{check, fill};
use common::{addr, layout, Stats};
use libdd_alloc::{
    Allocator, Arena, ChainAllocator, Layout, Rewind, SyncChainAllocator, SyncLinearAllocator,
    SyncVirtualArena, System, VirtualArena,
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

fn sync_linear(size: usize) -> SyncLinearAllocator<System> {
    SyncLinearAllocator::new_in(layout(size, 64), System).unwrap()
}

fn virtual_arena() -> VirtualArena {
    VirtualArena::new(1 << 30).unwrap()
}

fn sync_virtual_arena() -> SyncVirtualArena {
    SyncVirtualArena::new(1 << 30).unwrap()
}

/// The two virtual arenas, which keep their commit on rewind.
trait Committed: Rewind + Stats {
    fn committed(&self) -> usize;
}

impl Committed for VirtualArena {
    fn committed(&self) -> usize {
        self.committed_bytes()
    }
}

impl Committed for SyncVirtualArena {
    fn committed(&self) -> usize {
        self.committed_bytes()
    }
}

/// A block allocated and filled with block `id`'s pattern.
#[derive(Clone, Copy)]
struct Filled {
    block: NonNull<u8>,
    len: usize,
    id: usize,
}

fn alloc_filled<A: Allocator>(arena: &A, len: usize, id: usize) -> Filled {
    let block = arena.allocate(layout(len, 8)).unwrap().cast::<u8>();
    // SAFETY: a fresh block of `len` bytes.
    unsafe { fill(block, len, id) };
    Filled { block, len, id }
}

/// Every block still holds its pattern (so no later block overlapped it), and no two overlap.
fn assert_intact(blocks: &[Filled]) {
    for b in blocks {
        // SAFETY: the test only lists blocks that no rewind has freed.
        unsafe { check(b.block, b.len, b.id) };
    }
    let mut ranges: Vec<(usize, usize)> = blocks
        .iter()
        .map(|b| (b.block.as_ptr() as usize, b.block.as_ptr() as usize + b.len))
        .collect();
    ranges.sort_unstable();
    assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0), "overlap");
}

/// Rewinding to a checkpoint gives back exactly what was allocated since: the used bytes are
/// those at the checkpoint, the next block lands where the first one after the checkpoint did,
/// and blocks from before it keep their contents.
fn rewind_restores_used_bytes_and_reuses_the_address<A: Rewind + Stats>(arena: &mut A) {
    let kept = alloc_filled(&*arena, 100, 1);
    let used = arena.used();
    let checkpoint = arena.checkpoint();
    let first = arena.allocate(layout(64, 8)).unwrap();
    for id in 2..50 {
        alloc_filled(&*arena, 300, id);
    }
    assert!(arena.used() > used + 64);
    arena.rewind(checkpoint);
    assert_eq!(arena.used(), used);
    assert_eq!(arena.checkpoint(), checkpoint);
    let again = arena.allocate(layout(64, 8)).unwrap();
    assert_eq!(
        addr(again),
        addr(first),
        "the first block after the checkpoint is reused"
    );
    assert_intact(&[kept]);
}

#[test]
fn sync_linear_rewind_restores_used_bytes_exactly_and_reuses_the_same_address() {
    rewind_restores_used_bytes_and_reuses_the_address(&mut sync_linear(1 << 16));
}

#[test]
fn sync_chain_rewind_restores_used_bytes_exactly_and_reuses_the_same_address() {
    let mut arena = SyncChainAllocator::new_in(1 << 16, System).unwrap();
    rewind_restores_used_bytes_and_reuses_the_address(&mut arena);
}

#[test]
fn virtual_arena_rewind_restores_used_bytes_exactly_and_reuses_the_same_address() {
    rewind_restores_used_bytes_and_reuses_the_address(&mut virtual_arena());
}

#[test]
fn sync_virtual_arena_rewind_restores_used_bytes_exactly_and_reuses_the_same_address() {
    rewind_restores_used_bytes_and_reuses_the_address(&mut sync_virtual_arena());
}

/// A scope frees what it allocated when it returns, and when its closure panics.
fn scope_rolls_back_on_exit_and_on_panic<A: Rewind + Stats>(arena: &mut A) {
    let kept = alloc_filled(&*arena, 40, 7);
    let (used, reserved) = (arena.used(), arena.reserved());
    let sum = arena.scope(|scope| {
        let values = scope
            .try_alloc_slice_fill_with(20_000, |i| i as u64)
            .unwrap();
        assert!(scope.arena().used() >= used + 160_000);
        values.iter().sum::<u64>()
    });
    assert_eq!(sum, 19_999 * 20_000 / 2);
    assert_eq!(arena.used(), used);
    let result = catch_unwind(AssertUnwindSafe(|| {
        arena.scope(|scope| {
            scope.try_alloc([0xEEu8; 5000]).unwrap();
            panic!("work failed");
        })
    }));
    assert!(result.is_err());
    assert_eq!(
        arena.used(),
        used,
        "the panicking scope was rolled back too"
    );
    assert!(arena.reserved() >= reserved);
    assert_intact(&[kept]);
}

#[test]
fn sync_linear_scope_rolls_back_on_exit_and_on_panic() {
    scope_rolls_back_on_exit_and_on_panic(&mut sync_linear(1 << 20));
}

#[test]
fn sync_chain_scope_rolls_back_on_exit_and_on_panic() {
    let counts = Counts::default();
    let mut arena = SyncChainAllocator::new_in(4096, Counting::new(System, &counts)).unwrap();
    let reserved = arena.reserved_bytes();
    scope_rolls_back_on_exit_and_on_panic(&mut arena);
    // Both scopes needed more chunks; both returned them.
    assert_eq!(arena.reserved_bytes(), reserved);
    assert_eq!(counts.live_blocks(), 1);
}

#[test]
fn virtual_arena_scope_rolls_back_on_exit_and_on_panic() {
    scope_rolls_back_on_exit_and_on_panic(&mut virtual_arena());
}

#[test]
fn sync_virtual_arena_scope_rolls_back_on_exit_and_on_panic() {
    scope_rolls_back_on_exit_and_on_panic(&mut sync_virtual_arena());
}

#[test]
fn sync_chain_rewind_across_chunks_returns_them_and_restores_exact_stats() {
    let counts = Counts::default();
    let mut arena = SyncChainAllocator::new_in(1024, Counting::new(System, &counts)).unwrap();
    let kept = alloc_filled(&arena, 500, 1);
    let (used, reserved) = (arena.used_bytes(), arena.reserved_bytes());
    let (remaining, checkpoint) = (arena.remaining_capacity(), arena.checkpoint());
    let mut id = 2;
    while counts.live_blocks() < 5 {
        alloc_filled(&arena, 700, id);
        id += 1;
    }
    let deeper = arena.checkpoint();
    assert!(arena.reserved_bytes() > reserved);
    arena.rewind(checkpoint);
    assert_eq!(
        counts.live_blocks(),
        1,
        "the four chunks taken since are returned"
    );
    assert_eq!(counts.live_bytes(), 1024);
    assert_eq!(
        (arena.used_bytes(), arena.reserved_bytes()),
        (used, reserved)
    );
    assert_eq!(arena.remaining_capacity(), remaining);
    assert_eq!(arena.checkpoint(), checkpoint);
    let next = alloc_filled(&arena, 16, 99);
    assert_eq!(
        addr_of(&next),
        (addr_of(&kept) + 500).next_multiple_of(8),
        "cursor right after `kept`"
    );
    assert_intact(&[kept, next]);
    // The checkpoint taken four chunks deep is stale now: it names no chunk the arena has.
    assert_ne!(deeper, arena.checkpoint());
}

fn addr_of(b: &Filled) -> usize {
    b.block.as_ptr() as usize
}

#[test]
fn sync_chain_rewind_to_before_the_first_chunk_returns_every_chunk() {
    let counts = Counts::default();
    let mut arena = SyncChainAllocator::new_lazy_in(1024, Counting::new(System, &counts));
    let checkpoint = arena.checkpoint();
    arena.try_alloc([1u8; 500]).unwrap();
    arena.try_alloc_slice_fill_with(5000, |i| i as u8).unwrap();
    assert_eq!(counts.live_blocks(), 2);
    arena.rewind(checkpoint);
    assert_eq!(counts.live_blocks(), 0);
    assert_eq!((arena.used_bytes(), arena.reserved_bytes()), (0, 0));
    assert_eq!(arena.remaining_capacity(), 0);
    assert_eq!(arena.try_alloc_str("usable").unwrap(), "usable");
    assert_eq!(counts.live_blocks(), 1);
}

/// A checkpoint from a fuller arena of another type (more chunks, more bytes) is clamped:
/// afterwards, new blocks never overlap the blocks allocated before the rewind.
fn foreign_checkpoint_never_hands_out_live_blocks_again<A: Rewind + Stats>(arena: &mut A) {
    let fuller = ChainAllocator::new_in(256, System)
        .unwrap()
        .with_max_chunk_size(256);
    for _ in 0..5 {
        fuller.try_alloc([0u8; 200]).unwrap();
    }
    let foreign = fuller.checkpoint();
    let mut live = vec![alloc_filled(&*arena, 300, 1), alloc_filled(&*arena, 30, 2)];
    let used = arena.used();
    arena.rewind(foreign);
    assert_eq!(
        arena.used(),
        used,
        "a checkpoint past every chunk changes nothing"
    );
    for id in 3..40 {
        live.push(alloc_filled(&*arena, 100, id));
    }
    assert_intact(&live);
}

#[test]
fn sync_linear_foreign_checkpoint_is_clamped_and_never_reuses_live_blocks() {
    let mut arena = sync_linear(1 << 16);
    foreign_checkpoint_never_hands_out_live_blocks_again(&mut arena);
    // A one-chunk checkpoint past the end of the buffer is clamped to the end.
    let big = sync_linear(1 << 20);
    big.allocate(layout(1 << 19, 1)).unwrap();
    let past_the_end = big.checkpoint();
    let live = vec![alloc_filled(&arena, 10, 100)];
    arena.rewind(past_the_end);
    assert_eq!(arena.used_bytes(), arena.reserved_bytes());
    assert_eq!(arena.remaining_capacity(), 0);
    assert!(arena.allocate(layout(1, 1)).is_err());
    assert_intact(&live);
}

#[test]
fn sync_chain_foreign_checkpoint_is_clamped_and_never_reuses_live_blocks() {
    let counts = Counts::default();
    let mut arena = SyncChainAllocator::new_in(4096, Counting::new(System, &counts)).unwrap();
    foreign_checkpoint_never_hands_out_live_blocks_again(&mut arena);
    assert_eq!(arena.reserved_bytes(), counts.live_bytes(), "no chunk lost");
    // A checkpoint at the same depth but past the end of the chunk is clamped to the chunk.
    let one_chunk = SyncChainAllocator::new_in(1 << 20, System).unwrap();
    one_chunk.allocate(layout(1 << 19, 1)).unwrap();
    let mut small = SyncChainAllocator::new_in(4096, System).unwrap();
    let live = vec![alloc_filled(&small, 10, 100)];
    small.rewind(one_chunk.checkpoint());
    assert_eq!(small.used_bytes(), small.reserved_bytes());
    assert_eq!(small.remaining_capacity(), 0);
    let next = alloc_filled(&small, 10, 101); // in a new chunk
    assert_eq!(small.reserved_bytes(), 4096 + 8192);
    assert_intact(&[live, vec![next]].concat());
}

/// As above, and a one-chunk checkpoint past the committed part is clamped to it: the next
/// block starts the uncommitted part.
fn virtual_foreign_checkpoint_is_clamped_to_the_commit<A: Committed>(arena: &mut A) {
    foreign_checkpoint_never_hands_out_live_blocks_again(arena);
    let big = sync_linear(1 << 22);
    big.allocate(layout(1 << 21, 1)).unwrap();
    let offset = arena.used();
    let live = vec![alloc_filled(&*arena, 10, 100)];
    let committed = arena.committed();
    arena.rewind(big.checkpoint());
    assert_eq!(arena.used(), committed);
    assert_eq!(arena.committed(), committed);
    let next = alloc_filled(&*arena, 10, 101);
    let base = addr_of(&live[0]) - offset.next_multiple_of(8);
    assert_eq!(
        addr_of(&next),
        base + committed,
        "the next block starts the uncommitted part"
    );
    assert_intact(&[live, vec![next]].concat());
}

#[test]
fn virtual_arena_foreign_checkpoint_is_clamped_and_never_reuses_live_blocks() {
    virtual_foreign_checkpoint_is_clamped_to_the_commit(&mut virtual_arena());
}

#[test]
fn sync_virtual_arena_foreign_checkpoint_is_clamped_and_never_reuses_live_blocks() {
    virtual_foreign_checkpoint_is_clamped_to_the_commit(&mut sync_virtual_arena());
}

/// A checkpoint of this arena that a rewind to an earlier one has passed (stale) never frees a
/// block allocated before it: the arena stays where it is, or moves forward.
fn stale_checkpoint_never_hands_out_live_blocks_again<A: Rewind + Stats>(arena: &mut A) {
    let mut live = vec![alloc_filled(&*arena, 3000, 1)];
    let early = arena.checkpoint();
    for id in 2..20 {
        alloc_filled(&*arena, 3000, id);
    }
    let late = arena.checkpoint();
    arena.rewind(early);
    for id in 20..25 {
        live.push(alloc_filled(&*arena, 100, id));
    }
    let used = arena.used();
    arena.rewind(late);
    assert!(
        arena.used() >= used,
        "moved back over blocks from before `late`"
    );
    for id in 25..60 {
        live.push(alloc_filled(&*arena, 700, id));
    }
    assert_intact(&live);
}

#[test]
fn sync_linear_stale_checkpoint_never_reuses_live_blocks() {
    stale_checkpoint_never_hands_out_live_blocks_again(&mut sync_linear(1 << 20));
}

#[test]
fn sync_chain_stale_checkpoint_never_reuses_live_blocks() {
    let counts = Counts::default();
    let mut arena = SyncChainAllocator::new_in(4096, Counting::new(System, &counts)).unwrap();
    stale_checkpoint_never_hands_out_live_blocks_again(&mut arena);
    assert_eq!(arena.reserved_bytes(), counts.live_bytes(), "no chunk lost");
}

#[test]
fn virtual_arena_stale_checkpoint_never_reuses_live_blocks() {
    stale_checkpoint_never_hands_out_live_blocks_again(&mut virtual_arena());
}

#[test]
fn sync_virtual_arena_stale_checkpoint_never_reuses_live_blocks() {
    stale_checkpoint_never_hands_out_live_blocks_again(&mut sync_virtual_arena());
}

/// Bytes written after a checkpoint and given back by a rewind read as zero when
/// `allocate_zeroed` (or a typed zeroed allocation) hands them out again.
fn allocate_zeroed_after_rewind_returns_zeros<A: Rewind>(arena: &mut A) {
    arena.allocate(layout(24, 8)).unwrap();
    let checkpoint = arena.checkpoint();
    // Dirty 200 KB (past the first commit step) after the checkpoint.
    let scratch = arena.allocate(layout(200_000, 8)).unwrap().cast::<u8>();
    // SAFETY: the block is ours.
    unsafe { scratch.write_bytes(0xFF, 200_000) };
    arena.rewind(checkpoint);
    let zeroed = arena.allocate_zeroed(layout(200_000, 8)).unwrap();
    assert_eq!(
        zeroed.cast::<u8>(),
        scratch,
        "the same bytes handed out again"
    );
    // SAFETY: the block is ours and initialised (zeroed).
    let bytes = unsafe { std::slice::from_raw_parts(zeroed.cast::<u8>().as_ptr(), 200_000) };
    assert!(
        bytes.iter().all(|&b| b == 0),
        "a byte from before the rewind survived"
    );
    // Typed zeroing sees the same: a scope that dirties, then one that reads zeroed values.
    arena.rewind(checkpoint);
    arena.scope(|scope| scope.try_alloc([u64::MAX; 1000]).map(|_| ()).unwrap());
    let block = arena.allocate_zeroed(Layout::new::<[u64; 1000]>()).unwrap();
    // SAFETY: 8000 zeroed bytes, aligned for u64.
    assert_eq!(unsafe { block.cast::<[u64; 1000]>().read() }, [0; 1000]);
}

#[test]
fn virtual_arena_allocate_zeroed_after_rewind_returns_zeros() {
    allocate_zeroed_after_rewind_returns_zeros(&mut virtual_arena());
}

#[test]
fn sync_virtual_arena_allocate_zeroed_after_rewind_returns_zeros() {
    allocate_zeroed_after_rewind_returns_zeros(&mut sync_virtual_arena());
}

/// A rewind keeps every page committed, and refilling up to the commit commits nothing more.
fn rewind_keeps_the_pages_committed<A: Committed>(arena: &mut A) {
    let checkpoint = arena.checkpoint();
    arena.allocate(layout(1 << 20, 8)).unwrap();
    let committed = arena.committed();
    assert!(committed >= 1 << 20);
    arena.rewind(checkpoint);
    assert_eq!(arena.used(), 0);
    assert_eq!(arena.committed(), committed);
    assert_eq!(arena.reserved(), committed);
    // Refilling up to the commit asks nothing of the OS: the commit stays put.
    arena.allocate(layout(committed, 8)).unwrap();
    assert_eq!(arena.committed(), committed);
}

#[test]
fn virtual_arena_rewind_keeps_the_pages_committed() {
    rewind_keeps_the_pages_committed(&mut virtual_arena());
}

#[test]
fn sync_virtual_arena_rewind_keeps_the_pages_committed() {
    rewind_keeps_the_pages_committed(&mut sync_virtual_arena());
}

/// `reset_and_release` clears the high-water mark; a rewind after it must raise it again, or
/// `allocate_zeroed` would skip zeroing bytes written since the release.
#[test]
fn sync_virtual_arena_allocate_zeroed_after_release_then_rewind_returns_zeros() {
    let mut arena = sync_virtual_arena();
    arena.allocate(layout(5000, 8)).unwrap();
    arena.reset_and_release();
    let checkpoint = arena.checkpoint();
    let scratch = arena.allocate(layout(3000, 8)).unwrap().cast::<u8>();
    // SAFETY: the block is ours.
    unsafe { scratch.write_bytes(0xAB, 3000) };
    arena.rewind(checkpoint);
    let zeroed = arena.allocate_zeroed(layout(3000, 8)).unwrap().cast::<u8>();
    assert_eq!(zeroed, scratch);
    // SAFETY: 3000 zeroed bytes of ours.
    let bytes = unsafe { std::slice::from_raw_parts(zeroed.as_ptr(), 3000) };
    assert!(
        bytes.iter().all(|&b| b == 0),
        "stale bytes after the rewind"
    );
}

// ---- ChainAllocator: a rollback after a chunk grew while its backing allocator re-entered ----

mod grow_reenters {
    use super::*;
    use std::cell::Cell;

    pub type Arena = ChainAllocator<GrowReenters>;

    thread_local! {
        /// The arena the backing allocator's `grow` allocates from, or null.
        pub static ARENA: Cell<*const Arena> = const { Cell::new(std::ptr::null()) };
        /// The block that allocation got.
        pub static REENTERED: Cell<Option<NonNull<[u8]>>> = const { Cell::new(None) };
    }

    /// Bytes the re-entrant allocation takes: more than the arena's chunk hint, so it gets a
    /// chunk of its own.
    pub const REENTRANT: usize = 6000;

    /// `System`, counted, whose `grow` first allocates `REENTRANT` bytes from the arena it
    /// backs (as a backing allocator that logs into its arena would).
    pub struct GrowReenters(pub Counting<'static, System>);

    // SAFETY: forwards to `Counting<System>`; the extra call allocates from the arena, which
    // hands out its own disjoint blocks.
    unsafe impl Allocator for GrowReenters {
        fn allocate(&self, l: Layout) -> Result<NonNull<[u8]>, libdd_alloc::AllocError> {
            self.0.allocate(l)
        }
        unsafe fn deallocate(&self, ptr: NonNull<u8>, l: Layout) {
            // SAFETY: forwarded caller contract.
            unsafe { self.0.deallocate(ptr, l) }
        }
        unsafe fn grow(
            &self,
            ptr: NonNull<u8>,
            old: Layout,
            new: Layout,
        ) -> Result<NonNull<[u8]>, libdd_alloc::AllocError> {
            // SAFETY: the test points `ARENA` at its live arena while it grows.
            if let Some(arena) = unsafe { ARENA.get().as_ref() } {
                REENTERED.set(arena.allocate(layout(REENTRANT, 8)).ok());
            }
            // SAFETY: forwarded caller contract.
            unsafe { self.0.grow(ptr, old, new) }
        }
    }
}

/// The only block of a chunk of its own, grown past that chunk (so the chunk itself grows in the
/// backing allocator) after a checkpoint taken while that chunk was the newest; then rolled
/// back. Returns (chunks live in the backing allocator, `reserved_bytes`, `used_bytes`, where
/// the next block lands), the block's address after the growth, and the re-entrant block.
fn grow_the_newest_chunks_only_block_then_rewind(
    reenter: bool,
) -> ((usize, usize, usize, usize), usize, Option<usize>) {
    use grow_reenters::*;
    let counts: &'static Counts = Box::leak(Box::new(Counts::default()));
    let mut arena: Arena =
        ChainAllocator::new_in(4096, GrowReenters(Counting::new(System, counts))).unwrap();
    arena.allocate(layout(4000, 8)).unwrap(); // the first chunk, nearly full
    let small = layout(200, 8);
    let block = arena.allocate(small).unwrap().cast::<u8>(); // a second chunk of 8 KiB
    assert_eq!(counts.live_blocks(), 2);
    let checkpoint = arena.checkpoint();
    REENTERED.set(None);
    ARENA.set(if reenter { &arena } else { std::ptr::null() });
    // SAFETY: `block` is a live block of `small` from `arena`.
    let grown = unsafe { arena.grow(block, small, layout(20_000, 8)) }.unwrap();
    ARENA.set(std::ptr::null());
    let reentered = REENTERED.get().map(addr);
    assert_eq!(reentered.is_some(), reenter);
    arena.rewind(checkpoint);
    let next = addr(arena.allocate(layout(8, 8)).unwrap());
    let seen = (
        (
            counts.live_blocks(),
            arena.reserved_bytes(),
            arena.used_bytes() - 8,
            next,
        ),
        addr(grown),
        reentered,
    );
    drop(arena);
    // SAFETY: leaked above for the arena's `'static` counter; the arena is gone, and nothing
    // else holds it (LeakSanitizer, scripts/asan.sh, reports it otherwise).
    drop(unsafe { Box::from_raw(counts as *const Counts as *mut Counts) });
    seen
}

#[test]
fn chain_rewind_keeps_a_chunk_grown_by_the_backing_allocator_with_the_blocks_first_bytes() {
    let ((chunks, reserved, used, next), grown, _) =
        grow_the_newest_chunks_only_block_then_rewind(false);
    // The documented exception: the grown chunk stays, at its new size (20,000 and the header),
    // and the rollback keeps the block's size at the checkpoint (200 bytes) allocated.
    let header = grow_reenters::Arena::CHAIN_NODE_OVERHEAD;
    assert_eq!((chunks, reserved), (2, 4096 + header + 20_000));
    assert_eq!((used, next), (4096 + header + 200, grown + 200));
}

#[test]
fn chain_rewind_after_a_growth_during_which_the_backing_allocator_took_a_chunk_keeps_that_one() {
    let ((chunks, reserved, used, next), _, reentered) =
        grow_the_newest_chunks_only_block_then_rewind(true);
    let reentered = reentered.unwrap();
    // What the `Rewind` docs of `ChainAllocator` say: the grown chunk (linked back above the
    // chunk the re-entrant allocation took) goes back to the backing allocator, block and all;
    // the re-entrant chunk (16 KiB, the next regular size) stays as the newest, with the
    // checkpoint's 200 bytes counted as used at its start.
    let header = grow_reenters::Arena::CHAIN_NODE_OVERHEAD;
    assert_eq!((chunks, reserved), (2, 4096 + 16_384));
    assert_eq!((used, next), (4096 + header + 200, reentered + 200));
}
