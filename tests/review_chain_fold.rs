//! Adversarial review of the folded chain arena (issue 17 stage 3: `ChainAllocator` and
//! `SyncChainAllocator` are one `arena::Chain<C, A>`). Each test is an attack that held (or the
//! regression test of one that did not):
//!
//! - real threads racing to publish a chunk (every allocation needs a new one; a lazy arena's
//!   first chunk): blocks disjoint and intact, `reserved_bytes` equal to what the backing
//!   allocator holds, every loser's chunk given back;
//! - a backing allocator that re-enters the `Cell` arena from `grow` (the sole-block chunk grow,
//!   which unlinks the chunk during the call) and from `allocate` (while a new chunk is taken,
//!   growing, and so moving, the chunk the outer call saw as the newest);
//! - a backing `grow` or `deallocate` that panics (mid-grow, mid-rewind): the arena stays usable,
//!   its statistics match the backing allocator minus the one chunk leaked, nothing is freed
//!   twice;
//! - rewind's documented re-entrant-grow case: statistics stay exact against the backing
//!   allocator.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::counting::SyncCounting;
use libdd_alloc::{
    AllocError, Allocator, ChainAllocator, Checkpoint, Layout, Rewind, SyncChainAllocator, System,
};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

/// A call a [`Backing`] makes into the arena it backs, with that arena.
type Hook = (unsafe fn(*const ()), *const ());

/// A single-threaded backing allocator over `System` that counts what it holds, runs a one-shot
/// hook inside its next `allocate` or `grow` (re-entering the arena), and panics on demand.
#[derive(Default)]
struct Backing {
    live_bytes: Cell<usize>,
    live_blocks: Cell<usize>,
    on_allocate: Cell<Option<Hook>>,
    on_grow: Cell<Option<Hook>>,
    panic_in_grow: Cell<bool>,
    panic_in_deallocate: Cell<bool>,
}

impl Backing {
    fn leaked() -> &'static Self {
        Box::leak(Box::default())
    }

    fn run(hook: &Cell<Option<Hook>>) {
        if let Some((call, arena)) = hook.take() {
            // SAFETY: armed by the test with the arena this allocator backs, alive meanwhile.
            unsafe { call(arena) };
        }
    }
}

// SAFETY: forwards to `System`; the hooks and counters change no block.
unsafe impl Allocator for Backing {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        Self::run(&self.on_allocate);
        let block = System.allocate(layout)?;
        self.live_bytes.set(self.live_bytes.get() + block.len());
        self.live_blocks.set(self.live_blocks.get() + 1);
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if self.panic_in_deallocate.take() {
            panic!("backing deallocate panics");
        }
        self.live_bytes.set(self.live_bytes.get() - layout.size());
        self.live_blocks.set(self.live_blocks.get() - 1);
        // SAFETY: forwarded caller contract.
        unsafe { System.deallocate(ptr, layout) };
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        Self::run(&self.on_grow);
        if self.panic_in_grow.take() {
            panic!("backing grow panics");
        }
        // SAFETY: forwarded caller contract.
        let block = unsafe { System.grow(ptr, old, new) }?;
        self.live_bytes
            .set(self.live_bytes.get() - old.size() + block.len());
        Ok(block)
    }
}

type CellChain = ChainAllocator<&'static Backing>;

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn fill(block: NonNull<[u8]>, len: usize, tag: u8) {
    // SAFETY: a live block of at least `len` bytes, ours.
    unsafe { block.cast::<u8>().as_ptr().write_bytes(tag, len) };
}

fn holds(ptr: NonNull<u8>, len: usize, tag: u8) -> bool {
    // SAFETY: a live block of at least `len` bytes.
    (0..len).all(|i| unsafe { ptr.as_ptr().add(i).read() } == tag)
}

fn disjoint(blocks: &mut [(usize, usize)]) -> bool {
    blocks.sort_unstable();
    blocks.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0)
}

/// Four threads, 256-byte chunks, blocks of 120 to 200 bytes: almost every allocation needs a
/// new chunk, so the threads race to publish at every step. Every block is disjoint and
/// intact, the arena reserves exactly what the backing allocator holds (a loser that used the
/// winner's chunk gave its own back; one that stacked above is counted), and drop returns it all.
#[test]
fn threads_racing_to_publish_get_disjoint_blocks_and_exact_statistics() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 3000;
    let backing = SyncCounting::new(System);
    let arena = SyncChainAllocator::new_in(256, &backing)
        .unwrap()
        .with_max_chunk_size(256);
    let mut blocks: Vec<(usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let arena = &arena;
                s.spawn(move || {
                    let tag = t as u8 + 1;
                    let mut mine = Vec::with_capacity(PER_THREAD);
                    for i in 0..PER_THREAD {
                        let size = 120 + (i * 7 + t * 13) % 81;
                        let b = arena.allocate(layout(size, 8 << (i % 2))).unwrap();
                        fill(b, size, tag);
                        mine.push((b.cast::<u8>(), size));
                    }
                    for &(ptr, size) in &mine {
                        assert!(holds(ptr, size, tag), "thread {t}: a block was overwritten");
                    }
                    mine.into_iter()
                        .map(|(p, n)| (p.as_ptr() as usize, n))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(disjoint(&mut blocks), "two blocks overlap");
    assert_eq!(arena.reserved_bytes(), backing.live_bytes());
    assert!(arena.used_bytes() <= arena.reserved_bytes());
    assert!(arena.used_bytes() >= blocks.iter().map(|b| b.1).sum::<usize>());
    drop(arena);
    assert_eq!(backing.live_blocks(), 0);
}

/// A lazy arena's first chunk, raced for by four threads released at once, many times: the
/// small blocks all fit in the winner's chunk, so every loser gives its chunk back and the arena
/// holds exactly one.
#[test]
fn threads_racing_for_a_lazy_arenas_first_chunk_leave_exactly_one() {
    for _ in 0..200 {
        let backing = SyncCounting::new(System);
        let arena = SyncChainAllocator::new_lazy_in(4096, &backing);
        let start = std::sync::Barrier::new(4);
        let mut blocks: Vec<(usize, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let b = arena.allocate(layout(64, 16)).unwrap();
                        (b.cast::<u8>().as_ptr() as usize, 64)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(disjoint(&mut blocks));
        assert_eq!(
            backing.live_blocks(),
            1,
            "a loser's chunk was kept or leaked"
        );
        assert_eq!(arena.reserved_bytes(), 4096);
        assert_eq!(
            arena.used_bytes(),
            SyncChainAllocator::<System>::CHAIN_NODE_OVERHEAD + 256
        );
        drop(arena);
        assert_eq!(backing.live_blocks(), 0);
    }
}

/// Allocates 100 bytes (tagged 0xEE) from the `CellChain` at `arena`; records it in `REENTERED`.
unsafe fn reenter_allocate(arena: *const ()) {
    // SAFETY: per the hook's arming, a live `CellChain`.
    let arena = unsafe { &*arena.cast::<CellChain>() };
    let b = arena.allocate(layout(100, 8)).unwrap();
    fill(b, 100, 0xEE);
    REENTERED.with(|r| r.set(b.cast::<u8>().as_ptr() as usize));
}

thread_local! {
    static REENTERED: Cell<usize> = const { Cell::new(0) };
    static SOLE: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// A checkpoint the hook took, with `used_bytes` and `reserved_bytes` then.
    static IN_HOOK: Cell<Option<(Checkpoint, usize, usize)>> = const { Cell::new(None) };
}

/// A chunk whose only block is `size` bytes (tagged 0x5A), the newest of `arena`.
fn sole_block(arena: &CellChain, size: usize) -> NonNull<[u8]> {
    // Fill the current chunk so that the block takes a fresh one of its own.
    let rest = arena.remaining_capacity();
    if rest > 0 {
        arena.allocate(layout(rest, 1)).unwrap();
    }
    let b = arena.allocate(layout(size, 16)).unwrap();
    fill(b, size, 0x5A);
    b
}

/// The sole-block chunk grow with a backing `grow` that allocates from the arena (as a logging
/// allocator might): the block keeps its bytes, the re-entrant block is disjoint from it and
/// intact, the arena reserves what the backing allocator holds, and rewinding to a checkpoint
/// from before (both the exact case and the documented inexact one) frees each chunk once.
#[test]
fn a_backing_grow_that_reenters_the_cell_arena_keeps_every_block_and_exact_statistics() {
    for checkpoint_at_the_grown_chunk in [false, true] {
        let backing = Backing::leaked();
        let mut arena = CellChain::new_in(256, backing)
            .unwrap()
            .with_max_chunk_size(256);
        let before = arena.checkpoint();
        let (before_used, before_reserved) = (arena.used_bytes(), arena.reserved_bytes());
        let old = layout(150, 16);
        let b = sole_block(&arena, 150);
        let at_grown = arena.checkpoint();
        let this = (&arena as *const CellChain).cast::<()>();
        backing.on_grow.set(Some((reenter_allocate, this)));
        let new = layout(2000, 16);
        // SAFETY: `b` is a live block of `old`; `new` is larger.
        let g = unsafe { arena.grow(b.cast(), old, new) }.unwrap();
        assert!(
            backing.on_grow.take().is_none(),
            "the chunk was not grown by `A`"
        );
        assert!(holds(g.cast(), 150, 0x5A), "grow lost the block's bytes");
        fill(g, 2000, 0x5A);
        let r = REENTERED.with(Cell::get);
        assert!(holds(NonNull::new(r as *mut u8).unwrap(), 100, 0xEE));
        assert!(disjoint(&mut [
            (g.cast::<u8>().as_ptr() as usize, 2000),
            (r, 100)
        ]));
        assert_eq!(arena.reserved_bytes(), backing.live_bytes.get());
        // The grown block is still the only one of the newest chunk, which it fills: it grows
        // through `A::grow` again (no hook now), keeping its bytes wherever realloc puts it.
        // SAFETY: `g` is live with `new`.
        let g2 = unsafe { arena.grow(g.cast(), new, layout(2100, 16)) }.unwrap();
        assert!(holds(g2.cast(), 2000, 0x5A));
        assert_eq!(arena.reserved_bytes(), backing.live_bytes.get());
        if checkpoint_at_the_grown_chunk {
            // The documented inexact case: the grown chunk goes, the re-entrant one stays.
            arena.rewind(at_grown);
        } else {
            arena.rewind(before);
            assert_eq!(
                (arena.used_bytes(), arena.reserved_bytes()),
                (before_used, before_reserved)
            );
        }
        assert_eq!(arena.reserved_bytes(), backing.live_bytes.get());
        assert!(arena.used_bytes() <= arena.reserved_bytes());
        let after = arena.allocate(layout(64, 8)).unwrap();
        fill(after, 64, 1);
        assert_eq!(arena.reserved_bytes(), backing.live_bytes.get());
        drop(arena);
        assert_eq!(backing.live_blocks.get(), 0);
        assert_eq!(backing.live_bytes.get(), 0);
    }
}

#[cfg(target_pointer_width = "64")]
/// Grows the sole block recorded in `SOLE` to 4000 bytes (moving its chunk, which `System`'s
/// realloc frees), then allocates a chunk-sized block (which may land where the chunk was).
unsafe fn reenter_grow_then_allocate(arena: *const ()) {
    // SAFETY: per the hook's arming, a live `CellChain`.
    let arena = unsafe { &*arena.cast::<CellChain>() };
    let (ptr, size) = SOLE.with(Cell::get);
    let ptr = NonNull::new(ptr as *mut u8).unwrap();
    // SAFETY: the test's live sole block of `size`; handed over to this hook.
    let g = unsafe { arena.grow(ptr, layout(size, 16), layout(4000, 16)) }.unwrap();
    assert!(holds(g.cast(), size, 0x5A));
    fill(g, 4000, 0x5A);
    SOLE.with(|s| s.set((g.cast::<u8>().as_ptr() as usize, 4000)));
    let other = arena.allocate(layout(200, 16)).unwrap();
    fill(other, 200, 0xEE);
    REENTERED.with(|r| r.set(other.cast::<u8>().as_ptr() as usize));
    let at = (
        arena.checkpoint(),
        arena.used_bytes(),
        arena.reserved_bytes(),
    );
    IN_HOOK.with(|c| c.set(Some(at)));
}

/// While the `Cell` arena waits for a new chunk, the backing allocator grows (so unlinks, moves
/// and relinks) the chunk the outer call saw as the newest, then takes another chunk, which
/// malloc may place where the moved one was (the newest pointer then equals what the outer
/// call saw, though it is another chunk). Every block stays disjoint and intact, the
/// statistics match the backing allocator, and rewind and drop free each chunk once.
// 64-bit only: its sizes are chosen against 64-bit chunk headers (32 bytes), so that the outer
// block needs a new chunk while the sole block's chunk can be grown and moved.
#[cfg(target_pointer_width = "64")]
#[test]
fn a_backing_allocate_that_moves_the_newest_cell_chunk_is_survived() {
    for outer_size in [80, 100, 200] {
        let backing = Backing::leaked();
        let mut arena = CellChain::new_in(256, backing)
            .unwrap()
            .with_max_chunk_size(256);
        let before = arena.checkpoint();
        let b = sole_block(&arena, 150);
        SOLE.with(|s| s.set((b.cast::<u8>().as_ptr() as usize, 150)));
        let this = (&arena as *const CellChain).cast::<()>();
        backing
            .on_allocate
            .set(Some((reenter_grow_then_allocate, this)));
        // Does not fit in the sole block's chunk: a new chunk, during which the hook runs.
        let outer = arena.allocate(layout(outer_size, 16)).unwrap();
        assert!(backing.on_allocate.take().is_none());
        fill(outer, outer_size, 0x77);
        let (grown, grown_len) = SOLE.with(Cell::get);
        let other = REENTERED.with(Cell::get);
        let old_chunk = b.cast::<u8>().as_ptr() as usize - CellChain::CHAIN_NODE_OVERHEAD;
        let same_address = (old_chunk..old_chunk + 256).contains(&other);
        let outer_addr = outer.cast::<u8>().as_ptr() as usize;
        assert!(disjoint(&mut [
            (grown, grown_len),
            (other, 200),
            (outer_addr, outer_size)
        ]));
        assert!(holds(
            NonNull::new(grown as *mut u8).unwrap(),
            grown_len,
            0x5A
        ));
        assert!(holds(NonNull::new(other as *mut u8).unwrap(), 200, 0xEE));
        assert!(holds(outer.cast(), outer_size, 0x77));
        assert_eq!(arena.reserved_bytes(), backing.live_bytes.get());
        // More chunks, then back to the start: each freed once.
        for _ in 0..5 {
            let x = arena.allocate(layout(200, 8)).unwrap();
            fill(x, 200, 3);
        }
        assert!(holds(outer.cast(), outer_size, 0x77));
        assert_eq!(arena.reserved_bytes(), backing.live_bytes.get());
        // Back to the checkpoint the hook took (the re-entrant chunk the newest): the outer
        // chunk and those after it go, exactly. The outer chunk was given its depth before the
        // backing call, from the chunk then at that address: stale when the re-entrant chunk
        // took the address (`same_address`), and the rewind then stopped at the outer chunk.
        let (cp, used, reserved) = IN_HOOK.with(Cell::take).unwrap();
        arena.rewind(cp);
        assert_eq!(
            (arena.used_bytes(), arena.reserved_bytes()),
            (used, reserved),
            "outer {outer_size}, re-entrant chunk at the moved one's address: {same_address}"
        );
        assert_eq!(arena.reserved_bytes(), backing.live_bytes.get());
        arena.rewind(before);
        assert_eq!(arena.reserved_bytes(), backing.live_bytes.get());
        drop(arena);
        assert_eq!(backing.live_blocks.get(), 0);
    }
}

/// A backing `grow` that panics during the sole-block chunk grow: the chunk (unlinked before the
/// call) leaks with the block in it, readable; the arena stays usable, reserves what the backing
/// allocator holds minus that chunk, and frees the rest once.
#[test]
fn a_backing_grow_that_panics_leaks_only_the_unlinked_chunk() {
    let backing = Backing::leaked();
    let arena = CellChain::new_in(256, backing)
        .unwrap()
        .with_max_chunk_size(256);
    let b = sole_block(&arena, 150);
    let held = backing.live_bytes.get();
    backing.panic_in_grow.set(true);
    // SAFETY: `b` is live with its layout; the new one is larger.
    let grown = catch_unwind(AssertUnwindSafe(|| unsafe {
        arena.grow(b.cast(), layout(150, 16), layout(2000, 16))
    }));
    assert!(grown.is_err());
    assert!(
        holds(b.cast(), 150, 0x5A),
        "the leaked chunk must stay readable"
    );
    assert_eq!(arena.reserved_bytes(), held - 256);
    let mut blocks = vec![(b.cast::<u8>().as_ptr() as usize, 150)];
    for i in 0..10 {
        let x = arena.allocate(layout(200, 8)).unwrap();
        fill(x, 200, i);
        blocks.push((x.cast::<u8>().as_ptr() as usize, 200));
    }
    assert!(disjoint(&mut blocks));
    assert_eq!(arena.reserved_bytes(), backing.live_bytes.get() - 256);
    drop(arena);
    assert_eq!(
        backing.live_bytes.get(),
        256,
        "only the unlinked chunk leaks"
    );
}

/// A backing `deallocate` that panics mid-rewind, on both cursors: the chunk being freed leaks;
/// the arena links only live chunks, reserves what the backing allocator holds minus that one,
/// hands out disjoint blocks afterwards (none in the leaked chunk's place while it is held), and
/// frees the rest once.
#[test]
fn a_backing_deallocate_that_panics_mid_rewind_leaves_a_usable_arena() {
    fn attack<T: Allocator + Rewind>(
        arena: &mut T,
        backing: &Backing,
        reserved: impl Fn(&T) -> usize,
    ) {
        let cp = arena.checkpoint();
        let mut kept = Vec::new();
        for i in 0..6u8 {
            let x = arena.allocate(layout(200, 8)).unwrap();
            fill(x, 200, i);
            kept.push(x);
        }
        let held = backing.live_bytes.get();
        assert_eq!(reserved(arena), held);
        backing.panic_in_deallocate.set(true);
        assert!(catch_unwind(AssertUnwindSafe(|| arena.rewind(cp))).is_err());
        // The newest chunk was unlinked, then its deallocation panicked: it leaks.
        assert_eq!(reserved(arena), held - 256);
        let leaked = kept.last().unwrap().cast::<u8>().as_ptr() as usize;
        assert!(holds(kept.last().unwrap().cast(), 200, 5));
        let mut blocks = vec![(leaked, 200)];
        for i in 0..8u8 {
            let x = arena.allocate(layout(100, 8)).unwrap();
            fill(x, 100, 0x80 | i);
            blocks.push((x.cast::<u8>().as_ptr() as usize, 100));
        }
        assert!(disjoint(&mut blocks), "a block landed in the leaked chunk");
        assert_eq!(reserved(arena), backing.live_bytes.get() - 256);
        arena.rewind(cp);
        assert_eq!(reserved(arena), backing.live_bytes.get() - 256);
    }
    let backing = Backing::leaked();
    let mut cell = ChainAllocator::new_in(256, backing)
        .unwrap()
        .with_max_chunk_size(256);
    attack(&mut cell, backing, |a| a.reserved_bytes());
    drop(cell);
    assert_eq!(backing.live_bytes.get(), 256);
    let backing = Backing::leaked();
    let mut sync = SyncChainAllocator::new_in(256, backing)
        .unwrap()
        .with_max_chunk_size(256);
    attack(&mut sync, backing, |a| a.reserved_bytes());
    drop(sync);
    assert_eq!(backing.live_bytes.get(), 256);
}

/// Absurd layouts on both cursors, on a fresh arena and after a chunk is in use: each is
/// `Err` (or a correct block, should `System` serve it), nothing is linked for a refusal, the
/// arena stays usable, and it reserves exactly what the backing allocator holds.
#[test]
fn absurd_sizes_and_alignments_are_refused_cleanly_by_both_cursors() {
    fn attack<T: Allocator>(arena: &T, backing: &Backing, reserved: impl Fn(&T) -> usize) {
        let max = isize::MAX as usize;
        let absurd = [
            (max, 1),
            (max - 15, 16),
            (max - 4095, 4096),
            // 2^40 and 2^47 on 64-bit targets; 2^20 and 2^15 on 32-bit ones.
            (1, 1 << (usize::BITS * 5 / 8)),
            (1 << 20, 1 << (usize::BITS - 17)),
            (max / 2 + 1, 1 << 20),
            (1, 1 << (usize::BITS - 2)),
        ];
        for (size, align) in absurd {
            let l = layout(size, align);
            if let Ok(b) = arena.allocate(l) {
                assert_eq!(b.len(), size);
                assert_eq!(b.cast::<u8>().as_ptr() as usize % align, 0);
            }
            assert_eq!(reserved(arena), backing.live_bytes.get(), "{l:?}");
            // Zero-size with the same alignment: dangling and aligned, no chunk.
            let z = arena.allocate(layout(0, align)).unwrap();
            assert_eq!(z.cast::<u8>().as_ptr() as usize % align, 0);
            let b = arena.allocate(layout(24, 8)).unwrap();
            fill(b, 24, 9);
            // SAFETY: `b` is live with its layout; `l` is at least as large and as aligned.
            if let Ok(g) = unsafe { arena.grow(b.cast(), layout(24, 8), l) } {
                assert_eq!(g.cast::<u8>().as_ptr() as usize % align, 0);
            } else {
                assert!(holds(b.cast(), 24, 9), "a refused grow changed the block");
            }
            assert_eq!(reserved(arena), backing.live_bytes.get(), "grow {l:?}");
        }
    }
    for lazy in [false, true] {
        let backing = Backing::leaked();
        let cell = if lazy {
            ChainAllocator::new_lazy_in(256, backing)
        } else {
            ChainAllocator::new_in(256, backing).unwrap()
        };
        attack(&cell, backing, |a| a.reserved_bytes());
        drop(cell);
        assert_eq!(backing.live_blocks.get(), 0);
        let backing = Backing::leaked();
        let sync = if lazy {
            SyncChainAllocator::new_lazy_in(256, backing)
        } else {
            SyncChainAllocator::new_in(256, backing).unwrap()
        };
        attack(&sync, backing, |a| a.reserved_bytes());
        drop(sync);
        assert_eq!(backing.live_blocks.get(), 0);
    }
    // Constructors with sizes no chunk can have.
    for hint in [usize::MAX, isize::MAX as usize + 1, isize::MAX as usize] {
        assert!(ChainAllocator::new_in(hint, Backing::leaked()).is_err());
        assert!(SyncChainAllocator::new_in(hint, Backing::leaked()).is_err());
        let lazy = ChainAllocator::new_capped_in(hint, usize::MAX, Backing::leaked());
        assert!(lazy.allocate(layout(1, 1)).is_err());
        assert_eq!(lazy.reserved_bytes(), 0);
    }
}

/// The sole-block chunk grow of the arena's only chunk (nothing below it: while `A::grow`
/// runs the arena has no chunk at all), with a backing `grow` that allocates from it: the
/// re-entrant call takes the first chunk of a chain that is empty meanwhile, the grown chunk
/// goes above it, and rewinding to the start (a checkpoint taken while the grown chunk was the
/// newest: the documented inexact case) frees each chunk once and counts what is held.
#[test]
fn a_reentrant_grow_of_the_only_chunk_of_a_cell_arena_is_survived() {
    let backing = Backing::leaked();
    let mut arena = CellChain::new_in(256, backing)
        .unwrap()
        .with_max_chunk_size(256);
    let start = arena.checkpoint();
    let b = arena.allocate(layout(150, 16)).unwrap();
    fill(b, 150, 0x5A);
    let this = (&arena as *const CellChain).cast::<()>();
    backing.on_grow.set(Some((reenter_allocate, this)));
    // SAFETY: `b` is live with its layout; the new one is larger.
    let g = unsafe { arena.grow(b.cast(), layout(150, 16), layout(3000, 16)) }.unwrap();
    assert!(
        backing.on_grow.take().is_none(),
        "the chunk was not grown by `A`"
    );
    assert!(holds(g.cast(), 150, 0x5A));
    let r = REENTERED.with(Cell::get);
    assert!(holds(NonNull::new(r as *mut u8).unwrap(), 100, 0xEE));
    assert!(disjoint(&mut [
        (g.cast::<u8>().as_ptr() as usize, 3000),
        (r, 100)
    ]));
    assert_eq!(arena.reserved_bytes(), backing.live_bytes.get());
    arena.rewind(start);
    assert_eq!(arena.reserved_bytes(), backing.live_bytes.get());
    assert_eq!(backing.live_blocks.get(), 1);
    let x = arena.allocate(layout(200, 8)).unwrap();
    fill(x, 200, 1);
    drop(arena);
    assert_eq!(backing.live_blocks.get(), 0);
}
