//! The typed arena API (`Arena`), checkpoints (`Rewind`) and scopes, on every arena.

use libdd_alloc::{
    AllocError, Allocator, Arena, ChainAllocator, Layout, LinearAllocator, Rewind, System,
    VirtualAllocator,
};
#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

fn linear(size: usize) -> LinearAllocator<System> {
    LinearAllocator::new_in(Layout::from_size_align(size, 64).unwrap(), System).unwrap()
}

fn addr<T: ?Sized>(r: &T) -> usize {
    (r as *const T).cast::<u8>() as usize
}

/// A backing allocator that counts its live blocks and bytes.
#[derive(Default)]
struct Counting {
    live_blocks: Cell<usize>,
    live_bytes: Cell<usize>,
}

// SAFETY: forwards to `System`, only counting.
unsafe impl Allocator for &Counting {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let block = System.allocate(layout)?;
        self.live_blocks.set(self.live_blocks.get() + 1);
        self.live_bytes.set(self.live_bytes.get() + layout.size());
        Ok(block)
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.live_blocks.set(self.live_blocks.get() - 1);
        self.live_bytes.set(self.live_bytes.get() - layout.size());
        // SAFETY: forwarded caller contract; the block came from `System`.
        unsafe { System.deallocate(ptr, layout) }
    }
}

/// Generic code over any arena: the point of the shared trait.
fn intern_all<'a, A: Arena>(arena: &'a A, words: &[&str]) -> Result<Vec<&'a str>, AllocError> {
    words
        .iter()
        .map(|w| arena.try_alloc_str(w).map(|s| &*s))
        .collect()
}

#[test]
fn generic_code_works_over_linear_and_chain_arenas() {
    let words = ["alpha", "", "beta", "gamma"];
    let lin = linear(64);
    let chain = ChainAllocator::new_in(256, System).unwrap();
    assert_eq!(intern_all(&lin, &words).unwrap(), words);
    assert_eq!(intern_all(&chain, &words).unwrap(), words);
    assert_eq!(lin.used_bytes(), 14);
}

#[test]
fn try_alloc_values_are_aligned_disjoint_and_keep_their_contents() {
    let arena = ChainAllocator::new_in(512, System).unwrap();
    let mut refs: Vec<&mut [u64; 3]> = Vec::new();
    for i in 0..200u64 {
        // 200 * 24 bytes: several chunks
        let r = arena.try_alloc([i; 3]).unwrap();
        assert_eq!(addr(r) % 8, 0);
        refs.push(r);
    }
    for (i, r) in refs.iter_mut().enumerate() {
        assert_eq!(**r, [i as u64; 3], "value {i} was overwritten");
        r[1] = !0;
    }
    let mut ranges: Vec<(usize, usize)> = refs.iter().map(|r| (addr(*r), addr(*r) + 24)).collect();
    ranges.sort();
    assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0), "overlap");
}

#[test]
fn try_alloc_of_zero_size_type_uses_no_bytes() {
    #[derive(Debug, PartialEq)]
    struct Marker;
    let arena = linear(16);
    let a = arena.try_alloc(Marker).unwrap();
    let unit = arena.try_alloc(()).unwrap();
    let empty = arena.try_alloc([0u64; 0]).unwrap();
    assert_eq!(*a, Marker);
    assert_eq!(*unit, ());
    assert_eq!(addr(empty) % align_of::<u64>(), 0);
    assert_eq!(arena.used_bytes(), 0);
}

#[test]
fn try_alloc_of_overaligned_types_honours_the_alignment() {
    #[repr(align(64))]
    struct Line([u8; 64]);
    #[repr(align(4096))]
    struct Page([u8; 4096]);

    let lin = LinearAllocator::new_in(Layout::from_size_align(16384, 8).unwrap(), System).unwrap();
    lin.try_alloc(1u8).unwrap();
    let line = lin.try_alloc(Line([7; 64])).unwrap();
    assert_eq!(addr(line) % 64, 0);
    assert_eq!(line.0, [7; 64]);

    let chain = ChainAllocator::new_in(256, System).unwrap();
    chain.try_alloc(1u8).unwrap();
    let page = chain.try_alloc_with(|| Page([9; 4096])).unwrap();
    assert_eq!(addr(page) % 4096, 0);
    assert!(page.0.iter().all(|&b| b == 9));
    let line = chain.try_alloc(Line([3; 64])).unwrap();
    assert_eq!(addr(line) % 64, 0);
}

#[test]
fn try_alloc_str_copies_and_empty_str_uses_no_bytes() {
    let arena = linear(64);
    let empty = arena.try_alloc_str("").unwrap();
    assert_eq!(empty, "");
    assert_eq!(arena.used_bytes(), 0);
    let s = arena
        .try_alloc_str("tokio::runtime::Runtime::block_on")
        .unwrap();
    assert_eq!(s, "tokio::runtime::Runtime::block_on");
    assert_eq!(arena.used_bytes(), s.len());
    let unicode = arena.try_alloc_str("λ→∞").unwrap();
    assert_eq!(unicode, "λ→∞");
}

#[test]
fn try_alloc_slice_copy_copies_and_empty_slices_use_no_bytes() {
    let arena = linear(128);
    let empty: &mut [u64] = arena.try_alloc_slice_copy(&[]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(addr(empty) % align_of::<u64>(), 0);
    let zsts = arena.try_alloc_slice_copy(&[(); 1000]).unwrap();
    assert_eq!(zsts.len(), 1000);
    assert_eq!(arena.used_bytes(), 0);
    arena.try_alloc(1u8).unwrap();
    let values = arena.try_alloc_slice_copy(&[1u32, 2, 3]).unwrap();
    assert_eq!(addr(values) % 4, 0);
    assert_eq!(values, &[1, 2, 3]);
    assert_eq!(arena.used_bytes(), 16);
}

#[test]
fn try_alloc_slice_clone_clones_each_element() {
    let arena = ChainAllocator::new_in(4096, System).unwrap();
    let src = [String::from("a"), String::from("bc")];
    let copy = arena.try_alloc_slice_clone(&src).unwrap();
    assert_eq!(copy, &src);
    assert_ne!(copy[0].as_ptr(), src[0].as_ptr(), "deep clone");
    let empty: &mut [String] = arena.try_alloc_slice_clone(&[]).unwrap();
    assert!(empty.is_empty());
    // Destructors do not run: drop the clones ourselves so this test does not leak.
    // SAFETY: the clones are initialised and never used again.
    unsafe { std::ptr::drop_in_place(copy) };
}

#[test]
fn try_alloc_slice_fill_with_calls_f_in_order() {
    let arena = linear(256);
    let calls = Cell::new(0);
    let values = arena
        .try_alloc_slice_fill_with(10, |i| {
            assert_eq!(i, calls.get());
            calls.set(i + 1);
            i as u16 * 3
        })
        .unwrap();
    assert_eq!(values, &[0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);
    let none = arena
        .try_alloc_slice_fill_with(0, |_| -> u64 { panic!("not called") })
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn try_alloc_layout_returns_an_aligned_block() {
    let arena = linear(8192);
    let start = addr(arena.try_alloc(1u8).unwrap());
    let block = arena
        .try_alloc_layout(Layout::from_size_align(100, 256).unwrap())
        .unwrap();
    assert_eq!(block.as_ptr() as usize % 256, 0);
    let used = block.as_ptr() as usize + 100 - start;
    assert!(used <= 1 + 255 + 100);
    assert_eq!(arena.used_bytes(), used);
    let zero = arena
        .try_alloc_layout(Layout::from_size_align(0, 512).unwrap())
        .unwrap();
    assert_eq!(zero.as_ptr() as usize % 512, 0);
    assert_eq!(arena.used_bytes(), used);
}

#[test]
fn full_arena_returns_err_and_writes_nothing() {
    let arena = linear(16);
    let kept = arena.try_alloc([0xAAu8; 10]).unwrap();
    assert_eq!(arena.try_alloc([0xBBu8; 7]), Err(AllocError));
    assert_eq!(arena.try_alloc_str("seven!!").map(|s| &*s), Err(AllocError));
    assert_eq!(
        arena.try_alloc_slice_copy(&[0xCCu8; 7]).map(|s| &*s),
        Err(AllocError)
    );
    let clones = Cell::new(0);
    #[derive(Debug)]
    struct Counted<'a>(&'a Cell<usize>);
    impl Clone for Counted<'_> {
        fn clone(&self) -> Self {
            self.0.set(self.0.get() + 1);
            Counted(self.0)
        }
    }
    let src = [Counted(&clones), Counted(&clones)];
    assert!(arena.try_alloc_slice_clone(&src).is_err());
    assert_eq!(clones.get(), 0, "nothing cloned on failure");
    let called = Cell::new(false);
    assert!(arena
        .try_alloc_with(|| {
            called.set(true);
            [0u8; 7]
        })
        .is_err());
    assert!(arena
        .try_alloc_slice_fill_with(7, |_| {
            called.set(true);
            0u8
        })
        .is_err());
    assert!(!called.get(), "no closure runs on failure");
    assert!(arena
        .try_alloc_slice_fill_with(usize::MAX, |_| 0u64)
        .is_err());
    assert!(arena
        .try_alloc_layout(Layout::from_size_align(7, 1).unwrap())
        .is_err());
    assert_eq!(arena.used_bytes(), 10);
    assert_eq!(*kept, [0xAA; 10], "earlier block untouched");
    // The six free bytes are still usable.
    assert_eq!(arena.try_alloc_str("six!!!").unwrap(), "six!!!");
}

#[test]
fn panic_in_try_alloc_with_gives_the_block_back() {
    let arena = linear(64);
    arena.try_alloc(1u64).unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = arena.try_alloc_with(|| -> [u8; 32] { panic!("constructor failed") });
    }));
    assert!(result.is_err());
    assert_eq!(arena.used_bytes(), 8);
    assert_eq!(*arena.try_alloc(2u64).unwrap(), 2);
}

/// Counts live clones, and panics on the `panic_at`th clone.
struct Bomb<'a> {
    live: &'a Cell<isize>,
    clones: &'a Cell<usize>,
    panic_at: usize,
}
impl Clone for Bomb<'_> {
    fn clone(&self) -> Self {
        self.clones.set(self.clones.get() + 1);
        if self.clones.get() == self.panic_at {
            panic!("clone {} fails", self.panic_at);
        }
        self.live.set(self.live.get() + 1);
        Bomb { ..*self }
    }
}
impl Drop for Bomb<'_> {
    fn drop(&mut self) {
        self.live.set(self.live.get() - 1);
    }
}

#[test]
fn panic_midway_through_slice_clone_drops_the_clones_and_gives_the_block_back() {
    let arena = ChainAllocator::new_in(4096, System).unwrap();
    let before = arena.used_bytes();
    let (live, clones) = (Cell::new(0isize), Cell::new(0));
    let src: Vec<Bomb> = (0..5)
        .map(|_| {
            live.set(live.get() + 1);
            Bomb {
                live: &live,
                clones: &clones,
                panic_at: 3,
            }
        })
        .collect();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = arena.try_alloc_slice_clone(&src);
    }));
    assert!(result.is_err());
    assert_eq!(clones.get(), 3);
    assert_eq!(live.get(), 5, "the two finished clones were dropped");
    assert_eq!(arena.used_bytes(), before, "block given back");
    drop(src);
    assert_eq!(live.get(), 0);
}

#[test]
fn panic_midway_through_fill_with_drops_the_values_made_so_far() {
    let arena = linear(1024);
    let live = Cell::new(0isize);
    struct Tracked<'a>(&'a Cell<isize>);
    impl Drop for Tracked<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = arena.try_alloc_slice_fill_with(10, |i| {
            if i == 6 {
                panic!("value 6 fails");
            }
            live.set(live.get() + 1);
            Tracked(&live)
        });
    }));
    assert!(result.is_err());
    assert_eq!(live.get(), 0, "the six values made were dropped");
    assert_eq!(arena.used_bytes(), 0);
}

#[test]
fn linear_rewind_frees_everything_since_the_checkpoint_and_reuses_it() {
    let mut arena = linear(256);
    let kept = addr(arena.try_alloc_str("kept").unwrap());
    let checkpoint = arena.checkpoint();
    let first = addr(arena.try_alloc([1u64; 8]).unwrap());
    arena.try_alloc_str("more").unwrap();
    // "kept", padding to the u64 alignment (none on i686, where it is 4), the array, "more".
    assert_eq!(arena.used_bytes(), 4 + (align_of::<u64>() - 4) + 64 + 4);
    arena.rewind(checkpoint);
    assert_eq!(arena.used_bytes(), 4);
    assert_eq!(addr(arena.try_alloc([2u64; 8]).unwrap()), first);
    assert_eq!(
        // SAFETY: the bytes precede the checkpoint, so the arena's buffer still holds them, and
        // nothing writes them.
        unsafe { std::slice::from_raw_parts(kept as *const u8, 4) },
        b"kept"
    );
}

#[test]
fn chain_rewind_across_chunks_frees_them_and_restores_exact_stats() {
    let backing = Counting::default();
    let mut arena = ChainAllocator::new_in(1024, &backing).unwrap();
    let first = arena.try_alloc_str("first").unwrap();
    let first_addr = addr(first);
    let (used, reserved) = (arena.used_bytes(), arena.reserved_bytes());
    let checkpoint = arena.checkpoint();
    for i in 0..100u32 {
        arena.try_alloc([i; 64]).unwrap(); // 25 KB: several more chunks
    }
    assert!(backing.live_blocks.get() > 3);
    let next_after = addr(arena.try_alloc(0u8).unwrap());
    arena.rewind(checkpoint);
    assert_eq!(backing.live_blocks.get(), 1, "chunks taken since are freed");
    assert_eq!(backing.live_bytes.get(), 1024);
    assert_eq!(
        (arena.used_bytes(), arena.reserved_bytes()),
        (used, reserved)
    );
    let again = arena.try_alloc(0u8).unwrap();
    assert_eq!(
        addr(again),
        first_addr + 5,
        "cursor back right after `first`"
    );
    assert_ne!(addr(again), next_after);
    assert_eq!(
        // SAFETY: the bytes precede the checkpoint, in the chunk that was kept, and nothing
        // writes them.
        unsafe { std::slice::from_raw_parts(first_addr as *const u8, 5) },
        b"first"
    );
}

#[test]
fn chain_rewind_to_before_the_first_chunk_frees_every_chunk() {
    let backing = Counting::default();
    let mut arena = ChainAllocator::new_lazy_in(1024, &backing);
    let checkpoint = arena.checkpoint();
    arena.try_alloc([1u8; 500]).unwrap();
    arena.try_alloc_slice_fill_with(5000, |i| i as u8).unwrap();
    assert_eq!(backing.live_blocks.get(), 2);
    arena.rewind(checkpoint);
    assert_eq!(backing.live_blocks.get(), 0);
    assert_eq!((arena.used_bytes(), arena.reserved_bytes()), (0, 0));
    assert_eq!(arena.try_alloc_str("usable").unwrap(), "usable");
}

#[test]
fn chain_rewind_after_the_chunk_moved_in_place_growth_is_exact() {
    // The newest chunk is empty at the checkpoint, so a Vec grown inside it is the chunk's only
    // block and growing it moves (mremaps) the whole chunk: the checkpoint must still find it.
    let mut arena = ChainAllocator::new_in(4096, VirtualAllocator {}).unwrap();
    let checkpoint = arena.checkpoint();
    let used = arena.used_bytes();
    {
        let mut v = allocator_api2::vec::Vec::<u64, _>::new_in(&arena);
        for i in 0..100_000u64 {
            v.push(i);
        }
        assert_eq!(v.iter().sum::<u64>(), 100_000 * 99_999 / 2);
        // One chunk, grown under the Vec: not a chain of copies.
        let page = libdd_alloc::os::page_size().unwrap();
        let one_chunk = (ChainAllocator::<VirtualAllocator>::CHAIN_NODE_OVERHEAD
            + v.capacity() * 8)
            .div_ceil(page)
            * page;
        assert_eq!(arena.reserved_bytes(), one_chunk);
        assert_eq!(
            arena.remaining_capacity() + arena.used_bytes(),
            arena.reserved_bytes()
        );
    }
    arena.rewind(checkpoint);
    assert_eq!(arena.used_bytes(), used);
    assert_eq!(arena.reserved_bytes() - arena.remaining_capacity(), used);
    let block = arena.try_alloc(7u64).unwrap();
    assert_eq!(*block, 7);
}

#[test]
fn stale_or_foreign_checkpoints_are_clamped_never_reused_memory() {
    let big = linear(1024);
    big.try_alloc([0u8; 900]).unwrap();
    let foreign = big.checkpoint();
    let mut small = linear(64);
    small.rewind(foreign);
    assert_eq!(small.used_bytes(), 64, "clamped to the buffer");
    assert!(small.try_alloc(0u8).is_err());

    let mut chain = ChainAllocator::new_in(256, System).unwrap();
    for _ in 0..10 {
        chain.try_alloc([0u8; 200]).unwrap();
    }
    let stale = chain.checkpoint();
    chain.reset();
    chain.rewind(stale);
    assert!(chain.used_bytes() <= chain.reserved_bytes());
    let value = chain.try_alloc(5u32).unwrap();
    assert_eq!(*value, 5);
}

#[test]
fn scope_rolls_back_on_exit_and_returns_the_result() {
    let mut arena = ChainAllocator::new_in(1024, System).unwrap();
    arena.try_alloc_str("outside").unwrap();
    let (used, reserved) = (arena.used_bytes(), arena.reserved_bytes());
    let sum = arena.scope(|scope| {
        let values = scope.try_alloc_slice_fill_with(2000, |i| i as u64).unwrap();
        assert!(scope.arena().reserved_bytes() > reserved);
        values.iter().sum::<u64>()
    });
    assert_eq!(sum, 1999 * 2000 / 2);
    assert_eq!(
        (arena.used_bytes(), arena.reserved_bytes()),
        (used, reserved)
    );
}

#[test]
fn scope_rolls_back_when_the_closure_panics() {
    let mut arena = linear(256);
    arena.try_alloc(1u32).unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| {
        arena.scope(|scope| {
            scope.try_alloc([0u8; 100]).unwrap();
            panic!("work failed");
        })
    }));
    assert!(result.is_err());
    assert_eq!(arena.used_bytes(), 4);
}

#[test]
fn nested_scopes_roll_back_to_their_own_checkpoints() {
    let mut arena = linear(256);
    arena.scope(|outer| {
        let a = addr(outer.try_alloc(1u64).unwrap());
        outer.scope(|inner| {
            inner.try_alloc([2u64; 4]).unwrap();
            assert_eq!(inner.arena().used_bytes(), 40);
        });
        assert_eq!(outer.arena().used_bytes(), 8);
        let b = addr(outer.try_alloc(3u64).unwrap());
        assert_eq!(b, a + 8, "inner scope's bytes reused");
    });
    assert_eq!(arena.used_bytes(), 0);
}

#[test]
fn collections_can_live_in_a_scope() {
    let mut arena = ChainAllocator::new_in(4096, System).unwrap();
    let used = arena.used_bytes();
    let len = arena.scope(|scope| {
        let mut v = allocator_api2::vec::Vec::new_in(&*scope);
        v.extend(0..10_000u32);
        let mut set = hashbrown::HashSet::new_in(&*scope);
        set.extend(v.iter().map(|x| x % 100));
        (v.len(), set.len())
    });
    assert_eq!(len, (10_000, 100));
    assert_eq!(arena.used_bytes(), used);
}

mod rewind_model {
    use super::*;
    use common::Stats;
    use libdd_alloc::{SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena, VirtualArena};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Alloc { size: usize, align_log2: u32 },
        Checkpoint,
        Rewind,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..3000, 0u32..8).prop_map(|(size, align_log2)| Op::Alloc { size, align_log2 }),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Rewind),
        ]
    }

    /// What the arena looked like at a checkpoint, to compare with after rewinding to it.
    struct Saved {
        checkpoint: libdd_alloc::Checkpoint,
        live: usize,
        used: usize,
        reserved: usize,
        chunks: usize,
    }

    /// Runs `ops` on `arena` and checks, at every rewind, that the stats are those saved at the
    /// checkpoint and that the blocks from before it hold their patterns. `chunks` counts the
    /// backing allocator's live blocks; `VirtualArena` keeps its commit on rewind, so where
    /// `keeps_reserved`, `reserved_bytes` is checked not to change instead.
    fn run<A: Rewind + Stats>(
        arena: &mut A,
        ops: Vec<Op>,
        chunks: &dyn Fn() -> usize,
        keeps_reserved: bool,
    ) -> Result<(), TestCaseError> {
        let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
        let mut saved: Vec<Saved> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Alloc { size, align_log2 } => {
                    let layout = Layout::from_size_align(size, 1 << align_log2).unwrap();
                    let block = arena.try_alloc_layout(layout).unwrap();
                    prop_assert_eq!(block.as_ptr() as usize % layout.align(), 0);
                    let pattern = step as u8;
                    // SAFETY: a fresh block of `size` bytes.
                    unsafe { block.as_ptr().write_bytes(pattern, size) };
                    live.push((block, size, pattern));
                }
                Op::Checkpoint => saved.push(Saved {
                    checkpoint: arena.checkpoint(),
                    live: live.len(),
                    used: arena.used(),
                    reserved: arena.reserved(),
                    chunks: chunks(),
                }),
                Op::Rewind => {
                    if let Some(s) = saved.pop() {
                        let reserved = arena.reserved();
                        arena.rewind(s.checkpoint);
                        live.truncate(s.live);
                        prop_assert_eq!(arena.used(), s.used);
                        if keeps_reserved {
                            prop_assert_eq!(arena.reserved(), reserved);
                        } else {
                            prop_assert_eq!(arena.reserved(), s.reserved);
                        }
                        prop_assert_eq!(chunks(), s.chunks);
                        check_patterns(&live)?;
                    }
                }
            }
        }
        check_patterns(&live)
    }

    /// Room for 200 allocations of up to 3000 bytes and 127 of padding, for the fixed arenas.
    const FIXED: usize = 1 << 20;

    proptest! {
        #[test]
        fn chain_rewind_restores_stats_and_never_disturbs_older_blocks(ops in proptest::collection::vec(op(), 1..200)) {
            let backing = Counting::default();
            let mut arena = ChainAllocator::new_in(1024, &backing).unwrap();
            run(&mut arena, ops, &|| backing.live_blocks.get(), false)?;
        }

        #[test]
        fn sync_chain_rewind_restores_stats_and_never_disturbs_older_blocks(ops in proptest::collection::vec(op(), 1..200)) {
            let backing = Counting::default();
            let mut arena = SyncChainAllocator::new_in(1024, &backing).unwrap();
            run(&mut arena, ops, &|| backing.live_blocks.get(), false)?;
        }

        #[test]
        fn linear_rewind_restores_stats_and_never_disturbs_older_blocks(ops in proptest::collection::vec(op(), 1..200)) {
            let mut arena = LinearAllocator::new_in(Layout::array::<u8>(FIXED).unwrap(), System).unwrap();
            run(&mut arena, ops, &|| 1, false)?;
        }

        #[test]
        fn sync_linear_rewind_restores_stats_and_never_disturbs_older_blocks(ops in proptest::collection::vec(op(), 1..200)) {
            let mut arena = SyncLinearAllocator::new_in(Layout::array::<u8>(FIXED).unwrap(), System).unwrap();
            run(&mut arena, ops, &|| 1, false)?;
        }

        #[test]
        fn virtual_arena_rewind_restores_stats_and_never_disturbs_older_blocks(ops in proptest::collection::vec(op(), 1..200)) {
            let mut arena = VirtualArena::new(FIXED).unwrap();
            run(&mut arena, ops, &|| 1, true)?;
        }

        #[test]
        fn sync_virtual_arena_rewind_restores_stats_and_never_disturbs_older_blocks(ops in proptest::collection::vec(op(), 1..200)) {
            let mut arena = SyncVirtualArena::new(FIXED).unwrap();
            run(&mut arena, ops, &|| 1, true)?;
        }
    }

    fn check_patterns(live: &[(NonNull<u8>, usize, u8)]) -> Result<(), TestCaseError> {
        for &(block, size, pattern) in live {
            // SAFETY: the block is live (allocated after no checkpoint rewound since).
            let bytes = unsafe { std::slice::from_raw_parts(block.as_ptr(), size) };
            prop_assert!(bytes.iter().all(|&b| b == pattern), "block overwritten");
        }
        Ok(())
    }
}

#[test]
fn chain_rewind_to_a_stale_deeper_checkpoint_never_frees_blocks_from_before_it() {
    let backing = Counting::default();
    let mut arena = ChainAllocator::new_in(1024, &backing).unwrap();
    let kept = arena.try_alloc([0xA5u8; 500]).unwrap() as *mut [u8; 500];
    let early = arena.checkpoint();
    while backing.live_blocks.get() < 4 {
        arena.try_alloc([0u8; 300]).unwrap();
    }
    // Taken in the fourth chunk, with fewer bytes used there than `kept` takes in the first.
    let late = arena.checkpoint();
    arena.rewind(early);
    assert_eq!(backing.live_blocks.get(), 1);
    let used = arena.used_bytes();
    // `late` names a chunk that no longer exists: the arena stays where it is.
    arena.rewind(late);
    assert_eq!(arena.used_bytes(), used);
    let fresh = arena.try_alloc([0x5Au8; 100]).unwrap();
    let fresh_addr = addr(fresh);
    assert!(fresh_addr >= kept as usize + 500, "`kept` handed out again");
    // SAFETY: `kept` was allocated before both checkpoints and never freed since.
    assert_eq!(unsafe { *kept }, [0xA5; 500]);
}

mod from_iter_model {
    use super::*;
    use proptest::prelude::*;

    fn check<A: Arena>(
        arena: &A,
        used: &dyn Fn(&A) -> usize,
        before: u8,
        items: &[u32],
        hint: usize,
        allocates: bool,
        exact: bool,
    ) -> Result<(), TestCaseError> {
        arena
            .try_alloc_slice_fill_copy(before as usize, 0xEEu8)
            .unwrap();
        let start = used(arena);
        struct Hinted<I>(I, usize);
        impl<I: Iterator> Iterator for Hinted<I> {
            type Item = I::Item;
            fn next(&mut self) -> Option<I::Item> {
                self.0.next()
            }
            fn size_hint(&self) -> (usize, Option<usize>) {
                (self.1, None)
            }
        }
        let source = items.iter().map(|&x| {
            if allocates {
                arena.try_alloc(x as u8).unwrap();
            }
            x
        });
        let slice = arena
            .try_alloc_slice_from_iter(Hinted(source, hint))
            .unwrap();
        prop_assert_eq!(&*slice, items);
        prop_assert_eq!(addr(slice) % 4, 0);
        if !allocates && exact {
            // Exactly the slice (and the padding to align it) stays allocated.
            let padding = (4 - start % 4) % 4;
            prop_assert_eq!(used(arena) - start, padding + items.len() * 4);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn from_iter_holds_every_item_and_keeps_no_spare_bytes(
            items in proptest::collection::vec(any::<u32>(), 0..300),
            before in 0u8..8,
            hint in 0usize..400,
            allocates in any::<bool>(),
        ) {
            let arena = linear(1 << 16);
            check(&arena, &|a: &LinearAllocator<System>| a.used_bytes(), before, &items, hint, allocates, true)?;
            // A chain's slice that outgrows its chunk moves to a new one, leaving the old
            // chunk's tail unused: only the contents are checked there.
            let chain = ChainAllocator::new_in(512, System).unwrap();
            check(&chain, &|a: &ChainAllocator<System>| a.used_bytes(), before, &items, hint.min(100), allocates, false)?;
        }
    }
}
