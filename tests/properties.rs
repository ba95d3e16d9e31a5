//! Property tests: random sequences of allocate / deallocate / grow / grow_zeroed / shrink /
//! reset with random layouts (sizes 0..4096 and a few impossible ones, alignments 1..=4096) on
//! every allocator. Every live block holds a pattern unique to it, re-checked after each step
//! that touches it and for all blocks at the end, with an explicit disjointness check: blocks
//! never overlap and keep their contents across grow and shrink. Alignment and statistics are
//! checked after every step.
//!
//! The generator is seeded (fixed seed below) so CI runs are reproducible; set
//! `PROPTEST_CASES` to run more cases.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::counting::{Counting, Counts};
use common::fill::{check, fill};
use common::*;
use libdd_alloc::{
    AllocError, Allocator, ChainAllocator, Layout, LinearAllocator, System, VirtualAllocator,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};
use std::ptr::NonNull;

/// Sizes no allocator can serve: past the x86_64 address space, up to near `isize::MAX`.
#[cfg(target_pointer_width = "64")]
const HUGE: [usize; 3] = [1 << 47, 1 << 60, isize::MAX as usize - 8191];
/// On 32-bit a 2 GiB mapping (or `malloc`) can succeed, so these sit within a chunk header (16
/// bytes) of `isize::MAX`: they fail only because rounding to pages or adding the header must
/// not overflow.
#[cfg(target_pointer_width = "32")]
const HUGE: [usize; 3] = [
    isize::MAX as usize - 8,
    isize::MAX as usize - 3,
    isize::MAX as usize,
];

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        size: usize,
        align: usize,
        zeroed: bool,
    },
    Deallocate(Index),
    DeallocateLast,
    Grow {
        which: Index,
        extra: usize,
        align: usize,
        zeroed: bool,
    },
    Shrink {
        which: Index,
        keep: Index,
        align: usize,
    },
    Reset,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        10 => 0usize..4096,
        2 => 0usize..16,
        1 => prop::sample::select(HUGE.to_vec()),
    ]
}

fn align() -> impl Strategy<Value = usize> {
    (0u32..=12).prop_map(|shift| 1usize << shift)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (size(), align(), any::<bool>()).prop_map(|(size, align, zeroed)| Op::Allocate { size, align, zeroed }),
        2 => any::<Index>().prop_map(Op::Deallocate),
        2 => Just(Op::DeallocateLast),
        4 => (any::<Index>(), size(), align(), any::<bool>())
            .prop_map(|(which, extra, align, zeroed)| Op::Grow { which, extra, align, zeroed }),
        2 => (any::<Index>(), any::<Index>(), align()).prop_map(|(which, keep, align)| Op::Shrink { which, keep, align }),
        1 => Just(Op::Reset),
    ]
}

/// Statistics of an arena, to check after every step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stats {
    used: usize,
    reserved: usize,
    remaining: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Linear,
    Chain,
    Pages,
}

/// An allocator under test.
trait Subject {
    fn allocator(&self) -> &dyn Allocator;
    fn kind(&self) -> Kind;
    /// Frees everything at once; returns `false` if the allocator has no reset.
    fn reset(&mut self) -> bool;
    fn stats(&self) -> Option<Stats>;
    /// Bytes the backing allocator has handed out, when it is counted.
    fn backing_live_bytes(&self) -> Option<usize>;
}

struct Linear<A: Allocator>(LinearAllocator<A>);
impl<A: Allocator> Subject for Linear<A> {
    fn allocator(&self) -> &dyn Allocator {
        &self.0
    }
    fn kind(&self) -> Kind {
        Kind::Linear
    }
    fn reset(&mut self) -> bool {
        self.0.reset();
        true
    }
    fn stats(&self) -> Option<Stats> {
        Some(Stats {
            used: self.0.used_bytes(),
            reserved: self.0.reserved_bytes(),
            remaining: self.0.remaining_capacity(),
        })
    }
    fn backing_live_bytes(&self) -> Option<usize> {
        None
    }
}

struct Chain<'a, A: Allocator>(ChainAllocator<Counting<'a, A>>, &'a Counts);
impl<A: Allocator> Subject for Chain<'_, A> {
    fn allocator(&self) -> &dyn Allocator {
        &self.0
    }
    fn kind(&self) -> Kind {
        Kind::Chain
    }
    fn reset(&mut self) -> bool {
        self.0.reset();
        true
    }
    fn stats(&self) -> Option<Stats> {
        Some(Stats {
            used: self.0.used_bytes(),
            reserved: self.0.reserved_bytes(),
            remaining: self.0.remaining_capacity(),
        })
    }
    fn backing_live_bytes(&self) -> Option<usize> {
        Some(self.1.live_bytes())
    }
}

struct Pages;
impl Subject for Pages {
    fn allocator(&self) -> &dyn Allocator {
        &VirtualAllocator {}
    }
    fn kind(&self) -> Kind {
        Kind::Pages
    }
    fn reset(&mut self) -> bool {
        false
    }
    fn stats(&self) -> Option<Stats> {
        None
    }
    fn backing_live_bytes(&self) -> Option<usize> {
        None
    }
}

struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    /// The pattern the block holds.
    id: usize,
}

fn make_layout(size: usize, align: usize) -> Layout {
    // The huge sizes leave room for every alignment up to 4096, except on 32-bit (within a page
    // of `isize::MAX`), where they come with alignment 1.
    Layout::from_size_align(size, align)
        .or_else(|_| Layout::from_size_align(size, 1))
        .unwrap()
}

/// Records a block the allocator returned: checks its length and alignment, fills it.
fn accept(block: NonNull<[u8]>, layout: Layout, id: usize) -> Live {
    assert!(block.len() >= layout.size());
    assert_eq!(addr(block) % layout.align(), 0, "misaligned {layout:?}");
    // SAFETY: the block was just handed out with at least `layout.size()` bytes.
    unsafe { fill(block.cast(), layout.size(), id) };
    Live {
        ptr: block.cast(),
        layout,
        id,
    }
}

fn run(subject: &mut dyn Subject, ops: &[Op]) {
    let mut live: Vec<Live> = Vec::new();
    let mut next_id = 1;
    let mut stats = subject.stats();
    let kind = subject.kind();
    // The id of the block the previous step handed out, if it did.
    let mut just_allocated: Option<usize> = None;
    for op in ops {
        let before = stats;
        let previous_block = just_allocated.take();
        // Whether this step may lower `used_bytes` (a free, a shrink, a reset).
        let mut may_free = false;
        let mut failed = false;
        let a = subject.allocator();
        match op {
            &Op::Allocate {
                size,
                align,
                zeroed,
            } => {
                let l = make_layout(size, align);
                let result = if zeroed {
                    a.allocate_zeroed(l)
                } else {
                    a.allocate(l)
                };
                match result {
                    Ok(block) => {
                        if zeroed {
                            // SAFETY: fresh block of at least `size` bytes.
                            let bytes = unsafe {
                                std::slice::from_raw_parts(block.cast::<u8>().as_ptr(), size)
                            };
                            assert!(
                                bytes.iter().all(|&b| b == 0),
                                "allocate_zeroed gave dirty bytes"
                            );
                        }
                        live.push(accept(block, l, next_id));
                        just_allocated = Some(next_id);
                        next_id += 1;
                    }
                    Err(AllocError) => {
                        assert!(
                            HUGE.contains(&size) || kind == Kind::Linear,
                            "{l:?} refused"
                        );
                        failed = true;
                    }
                }
            }
            Op::Deallocate(which) | Op::Grow { which, .. } | Op::Shrink { which, .. }
                if live.is_empty() =>
            {
                let _ = which;
            }
            Op::DeallocateLast if live.is_empty() => {}
            Op::Deallocate(_) | Op::DeallocateLast => {
                let index = match op {
                    Op::Deallocate(which) => which.index(live.len()),
                    _ => live.len() - 1,
                };
                let block = live.swap_remove(index);
                // SAFETY: the block is live, with its pattern and layout.
                unsafe {
                    check(block.ptr, block.layout.size(), block.id);
                    a.deallocate(block.ptr, block.layout);
                }
                may_free = true;
                if let (Some(before), Some(after)) = (before, subject.stats()) {
                    let size = block.layout.size();
                    // Either nothing or exactly this block is given back...
                    assert!(
                        after.used == before.used || after.used + size == before.used,
                        "deallocating {size} bytes took used from {} to {}",
                        before.used,
                        after.used
                    );
                    // ...and the block handed out by the step just before is always given back.
                    if previous_block == Some(block.id) {
                        assert_eq!(
                            after.used + size,
                            before.used,
                            "the most recent block is given back"
                        );
                    }
                }
            }
            &Op::Grow {
                ref which,
                extra,
                align,
                zeroed,
            } => {
                let index = which.index(live.len());
                let block = &mut live[index];
                let old = block.layout;
                let Some(new_size) = old
                    .size()
                    .checked_add(extra)
                    .filter(|&s| s <= isize::MAX as usize)
                else {
                    continue;
                };
                let new = make_layout(new_size, align);
                // SAFETY: the block is live with `old`; `new` is not smaller.
                let result = unsafe {
                    if zeroed {
                        a.grow_zeroed(block.ptr, old, new)
                    } else {
                        a.grow(block.ptr, old, new)
                    }
                };
                match result {
                    Ok(grown) => {
                        // SAFETY: the grown block keeps the old bytes and has `new_size` bytes.
                        unsafe {
                            check(grown.cast(), old.size(), block.id);
                            if zeroed {
                                let bytes = std::slice::from_raw_parts(
                                    grown.cast::<u8>().as_ptr(),
                                    new_size,
                                );
                                assert!(
                                    bytes[old.size()..].iter().all(|&b| b == 0),
                                    "grow_zeroed left dirty bytes"
                                );
                            }
                        }
                        *block = accept(grown, new, next_id);
                        next_id += 1;
                    }
                    Err(AllocError) => {
                        assert!(
                            HUGE.contains(&extra) || kind == Kind::Linear,
                            "grow to {new:?} refused"
                        );
                        // The block is untouched.
                        // SAFETY: still live with `old`.
                        unsafe { check(block.ptr, old.size(), block.id) };
                        failed = true;
                    }
                }
            }
            Op::Shrink { which, keep, align } => {
                let index = which.index(live.len());
                let block = &mut live[index];
                let old = block.layout;
                let new = make_layout(keep.index(old.size() + 1), *align);
                // SAFETY: the block is live with `old`; `new` is not larger.
                match unsafe { a.shrink(block.ptr, old, new) } {
                    Ok(shrunk) => {
                        // SAFETY: the shrunk block keeps its first `new.size()` bytes.
                        unsafe { check(shrunk.cast(), new.size(), block.id) };
                        *block = accept(shrunk, new, next_id);
                        next_id += 1;
                    }
                    Err(AllocError) => {
                        // Only a move (a stricter alignment) can fail, in a full fixed arena.
                        assert_eq!(kind, Kind::Linear, "shrink to {new:?} refused");
                        assert!(new.align() > old.align());
                        failed = true;
                    }
                }
                may_free = true;
            }
            Op::Reset => {
                if subject.reset() {
                    live.clear();
                    may_free = true;
                }
            }
        }
        stats = subject.stats();
        if let (Some(before), Some(after)) = (before, stats) {
            if failed {
                assert_eq!(after, before, "a failed call changed the statistics");
            }
            if !may_free {
                assert!(
                    after.used >= before.used,
                    "{op:?}: used went from {} to {}",
                    before.used,
                    after.used
                );
            }
            assert_eq!(after.used, after.reserved - after.remaining);
            match kind {
                Kind::Linear => assert_eq!(after.reserved, before.reserved, "a fixed buffer"),
                _ => assert!(after.used <= after.reserved),
            }
        }
        if let (Some(backing), Some(s)) = (subject.backing_live_bytes(), stats) {
            assert_eq!(
                s.reserved, backing,
                "reserved_bytes == bytes the backing allocator handed out"
            );
        }
    }
    // Every block kept its pattern, and no two non-empty blocks share a byte.
    for block in &live {
        // SAFETY: live block with its pattern.
        unsafe { check(block.ptr, block.layout.size(), block.id) };
    }
    let mut ranges: Vec<(usize, usize)> = live
        .iter()
        .filter(|b| b.layout.size() != 0)
        .map(|b| {
            (
                b.ptr.as_ptr() as usize,
                b.ptr.as_ptr() as usize + b.layout.size(),
            )
        })
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "blocks {:x?} and {:x?} overlap",
            pair[0],
            pair[1]
        );
    }
    let a = subject.allocator();
    for block in live.drain(..) {
        // SAFETY: live block with its layout.
        unsafe { a.deallocate(block.ptr, block.layout) };
    }
}

fn config() -> Config {
    Config {
        rng_seed: RngSeed::Fixed(0x11bd_a110c),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn linear_over_system_keeps_blocks_disjoint_intact_and_aligned(
        capacity in 0usize..65_536,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let arena = LinearAllocator::new_in(make_layout(capacity, 16), System).unwrap();
        run(&mut Linear(arena), &ops);
    }

    #[test]
    fn linear_over_pages_keeps_blocks_disjoint_intact_and_aligned(
        pages in 1usize..32,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let arena = LinearAllocator::new_in(make_layout(pages * 4096, 4096), VirtualAllocator {}).unwrap();
        run(&mut Linear(arena), &ops);
    }

    #[test]
    fn chain_over_system_keeps_blocks_disjoint_intact_and_aligned(
        hint in 0usize..16_384,
        max in 0usize..65_536,
        lazy in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let counts = Counts::default();
        let backing = Counting::new(System, &counts);
        let arena = if lazy {
            ChainAllocator::new_lazy_in(hint, backing)
        } else {
            ChainAllocator::new_in(hint, backing).unwrap()
        };
        run(&mut Chain(arena.with_max_chunk_size(max), &counts), &ops);
        prop_assert_eq!(counts.live_blocks(), 0, "every chunk went back");
    }

    #[test]
    fn chain_over_pages_keeps_blocks_disjoint_intact_and_aligned(
        hint in 0usize..16_384,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let counts = Counts::default();
        let arena = ChainAllocator::new_in(hint, Counting::new(VirtualAllocator {}, &counts)).unwrap();
        run(&mut Chain(arena, &counts), &ops);
        prop_assert_eq!(counts.live_blocks(), 0, "every chunk went back");
    }

    #[test]
    fn virtual_allocator_keeps_blocks_disjoint_intact_and_aligned(
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(&mut Pages, &ops);
    }
}
