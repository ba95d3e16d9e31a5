//! Edge cases: extreme layouts, failing backing allocators, exhaustion, page allocator corner
//! cases, the chunk policy of the chain, exact statistics, and the `Send`/`Sync` bounds.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::counting::{Counting, Counts};
use common::fill::{check, fill};
use common::process::under_valgrind;
use common::*;
use libdd_alloc::{
    os, AllocError, Allocator, ChainAllocator, Layout, LinearAllocator, SyncChainAllocator,
    SyncLinearAllocator, SyncVirtualArena, System, VirtualAllocator, VirtualArena,
};
use std::ptr::NonNull;

const OVERHEAD: usize = ChainAllocator::<System>::CHAIN_NODE_OVERHEAD;

fn page() -> usize {
    os::page_size().unwrap()
}

/// Valid layouts that no allocator can serve: sizes from 2^48 (past the x86_64 user address
/// space) up to `isize::MAX`, the largest size a `Layout` allows (`usize::MAX` is not a valid
/// `Layout` size at all).
#[cfg(target_pointer_width = "64")]
fn impossible_layouts() -> Vec<Layout> {
    let max = isize::MAX as usize;
    assert!(Layout::from_size_align(max + 1, 1).is_err());
    vec![
        layout(max, 1),
        layout(max - 7, 8),
        layout(max + 1 - 4096, 4096),
        layout(max + 1 - (1 << 31), 1 << 31),
        layout(max / 2 + 1, 1),
        layout(1 << 48, 16),
    ]
}

/// On 32-bit a 1 or 2 GiB mapping (or `malloc`) can succeed, so the impossible sizes are those
/// within a chunk header (16 bytes) of `isize::MAX`: each overflows `isize` once rounded up to
/// pages or given a chunk header, which is where 32-bit size arithmetic breaks first.
#[cfg(target_pointer_width = "32")]
fn impossible_layouts() -> Vec<Layout> {
    let max = isize::MAX as usize;
    assert!(Layout::from_size_align(max + 1, 1).is_err());
    vec![
        layout(max, 1),
        layout(max - 7, 8),
        layout(max - 15, 16),
        layout(max - 8, 1),
    ]
}

/// Every arena flavour under test, built fresh, with a name for failure messages.
fn with_each_allocator(mut run: impl FnMut(&str, &dyn Allocator)) {
    run(
        "Linear<System>",
        &LinearAllocator::new_in(layout(1 << 20, 16), System).unwrap(),
    );
    run(
        "Linear<Virtual>",
        &LinearAllocator::new_in(layout(1 << 20, 16), VirtualAllocator {}).unwrap(),
    );
    run(
        "Chain<System>",
        &ChainAllocator::new_in(4096, System).unwrap(),
    );
    run(
        "Chain<Virtual>",
        &ChainAllocator::new_in(1 << 16, VirtualAllocator {}).unwrap(),
    );
    run("Virtual", &VirtualAllocator::default());
    run("VirtualArena", &VirtualArena::new(1 << 20).unwrap());
    run("SyncVirtualArena", &SyncVirtualArena::new(1 << 20).unwrap());
}

#[test]
fn layouts_too_big_for_memory_fail_with_err_and_leave_the_allocator_usable() {
    with_each_allocator(|name, arena| {
        let keep = arena.allocate(layout(64, 8)).unwrap();
        // SAFETY: fresh 64-byte block.
        unsafe { fill(keep.cast(), 64, 1) };
        for huge in impossible_layouts() {
            assert_eq!(arena.allocate(huge), Err(AllocError), "{name} {huge:?}");
            assert_eq!(
                arena.allocate_zeroed(huge),
                Err(AllocError),
                "{name} {huge:?}"
            );
            // SAFETY: `keep` is live with this layout; the new size is larger.
            let grown = unsafe { arena.grow(keep.cast(), layout(64, 8), huge) };
            assert_eq!(grown, Err(AllocError), "{name} grow to {huge:?}");
            // SAFETY: as above.
            let grown = unsafe { arena.grow_zeroed(keep.cast(), layout(64, 8), huge) };
            assert_eq!(grown, Err(AllocError), "{name} grow_zeroed to {huge:?}");
        }
        // SAFETY: a failed grow leaves the block as it was.
        unsafe { check(keep.cast(), 64, 1) };
        let after = arena.allocate(layout(64, 8)).unwrap();
        assert!(
            addr(after) + 64 <= addr(keep) || addr(keep) + 64 <= addr(after),
            "{name}"
        );
        // SAFETY: both blocks are live and ours.
        unsafe {
            fill(after.cast(), 64, 2);
            check(keep.cast(), 64, 1);
            arena.deallocate(after.cast(), layout(64, 8));
            arena.deallocate(keep.cast(), layout(64, 8));
        }
    });
}

#[test]
fn arena_stats_do_not_move_when_a_huge_layout_fails() {
    let linear = LinearAllocator::new_in(layout(4096, 8), System).unwrap();
    let chain = ChainAllocator::new_in(4096, System).unwrap();
    linear.allocate(layout(10, 1)).unwrap();
    chain.allocate(layout(10, 1)).unwrap();
    for huge in impossible_layouts() {
        assert!(!linear.has_capacity_for(huge));
        assert!(!chain.has_capacity_for(huge));
        assert!(linear.allocate(huge).is_err());
        assert!(chain.allocate(huge).is_err());
        assert_eq!((linear.used_bytes(), linear.reserved_bytes()), (10, 4096));
        assert_eq!(
            (chain.used_bytes(), chain.reserved_bytes()),
            (OVERHEAD + 10, 4096)
        );
    }
}

#[test]
fn alignments_up_to_2_pow_31_are_honoured_or_refused_with_err() {
    with_each_allocator(|name, arena| {
        // 2^31 is the largest alignment an 8-byte `Layout` may have on 64-bit; 2^30 on 32-bit.
        let max_shift = if under_valgrind() && name.contains("System") {
            24
        } else if cfg!(target_pointer_width = "64") {
            31
        } else {
            30
        };
        for shift in 0..=max_shift {
            let l = layout(8, 1 << shift);
            match arena.allocate(l) {
                Ok(block) => {
                    assert_eq!(addr(block) % l.align(), 0, "{name} align 2^{shift}");
                    assert!(block.len() >= 8);
                    // SAFETY: fresh block of at least 8 bytes.
                    unsafe {
                        fill(block.cast(), 8, shift);
                        check(block.cast(), 8, shift);
                        arena.deallocate(block.cast(), l);
                    }
                }
                // A fixed buffer or reservation cannot always be realigned (a 1 MiB one not to
                // 2 MiB); the page allocators must. On 32-bit a chunk holding a header and a
                // block aligned to 2^30 would be a `Layout` past `isize::MAX`.
                Err(AllocError) => assert!(
                    name.starts_with("Linear")
                        || (name.ends_with("Arena") && shift >= 20)
                        || (cfg!(target_pointer_width = "32")
                            && name.starts_with("Chain")
                            && shift >= 30),
                    "{name} align 2^{shift}"
                ),
            }
        }
    });
}

#[test]
fn zero_size_layouts_get_aligned_dangling_pointers_and_use_no_bytes() {
    let linear = LinearAllocator::new_in(layout(4096, 8), System).unwrap();
    let chain = ChainAllocator::new_in(4096, System).unwrap();
    linear.allocate(layout(3, 1)).unwrap();
    chain.allocate(layout(3, 1)).unwrap();
    let stats = |l: &LinearAllocator<System>, c: &ChainAllocator<System>| {
        (
            l.used_bytes(),
            l.remaining_capacity(),
            c.used_bytes(),
            c.remaining_capacity(),
        )
    };
    let before = stats(&linear, &chain);
    for shift in 0..=31 {
        let l = layout(0, 1 << shift);
        let virtual_arena = VirtualArena::new(1 << 20).unwrap();
        let sync_virtual_arena = SyncVirtualArena::new(1 << 20).unwrap();
        let allocators: [&dyn Allocator; 5] = [
            &linear,
            &chain,
            &VirtualAllocator {},
            &virtual_arena,
            &sync_virtual_arena,
        ];
        for arena in allocators {
            let block = arena.allocate(l).unwrap();
            assert_eq!(block.len(), 0);
            assert_eq!(addr(block) % l.align(), 0);
            assert_eq!(addr(block), l.align(), "dangling, not in the arena");
            let zeroed = arena.allocate_zeroed(l).unwrap();
            assert_eq!(zeroed.len(), 0);
            // SAFETY: zero-size blocks from this allocator.
            unsafe {
                arena.deallocate(block.cast(), l);
                arena.deallocate(zeroed.cast(), l);
            }
        }
        assert!(linear.has_capacity_for(l));
        assert!(chain.has_capacity_for(l));
        assert_eq!(stats(&linear, &chain), before);
    }
    // Deallocating a zero-size block did not give back the real last block: the next block
    // still follows it.
    let next = linear.allocate(layout(1, 1)).unwrap();
    assert_eq!(linear.used_bytes(), 4);
    // SAFETY: fresh block.
    unsafe { linear.deallocate(next.cast(), layout(1, 1)) };
}

#[test]
fn shrink_to_zero_then_grow_from_zero_round_trips_through_a_dangling_pointer() {
    let linear = LinearAllocator::new_in(layout(4096, 8), System).unwrap();
    let block = linear.allocate(layout(100, 8)).unwrap();
    // SAFETY: `block` is live with this layout.
    let empty = unsafe { linear.shrink(block.cast(), layout(100, 8), layout(0, 8)) }.unwrap();
    assert_eq!(empty.len(), 0);
    assert_eq!(linear.used_bytes(), 0, "the last block was given back");
    // SAFETY: `empty` is the zero-size block of layout(0, 8).
    let again = unsafe { linear.grow_zeroed(empty.cast(), layout(0, 8), layout(50, 8)) }.unwrap();
    assert_eq!(again.len(), 50);
    // SAFETY: 50 fresh bytes.
    assert!(unsafe { again.as_ref() }.iter().all(|&b| b == 0));
    assert_eq!(linear.used_bytes(), 50);
}

#[test]
fn a_backing_allocator_that_always_fails_gives_err_from_every_constructor() {
    let counts = Counts::default();
    counts.fail_all.set(true);
    let backing = Counting::new(System, &counts);
    assert!(LinearAllocator::new_in(layout(64, 8), backing.clone()).is_err());
    assert!(ChainAllocator::new_in(4096, backing.clone()).is_err());
    let lazy = ChainAllocator::new_lazy_in(4096, backing);
    for _ in 0..3 {
        assert_eq!(lazy.allocate(layout(8, 8)), Err(AllocError));
        assert_eq!(lazy.allocate(layout(0, 8)).unwrap().len(), 0);
        assert_eq!((lazy.used_bytes(), lazy.reserved_bytes()), (0, 0));
        assert!(!lazy.has_capacity_for(layout(1, 1)));
    }
    assert_eq!(counts.calls(), 5);
    assert_eq!(counts.live_blocks(), 0);
    // Once the backing allocator recovers, so does the arena.
    counts.fail_all.set(false);
    let block = lazy.allocate(layout(8, 8)).unwrap();
    assert_eq!(block.len(), 8);
    assert_eq!(lazy.reserved_bytes(), 4096);
}

#[test]
fn a_backing_allocator_that_fails_on_one_call_fails_only_that_allocation() {
    for fail_on in 2..=6 {
        let counts = Counts::default();
        counts.fail_on.set(fail_on);
        let arena = ChainAllocator::new_in(1024, Counting::new(System, &counts))
            .unwrap()
            .with_max_chunk_size(1024);
        let mut live = Vec::new();
        let mut failed = 0;
        // Each block is larger than a regular chunk, which the cap keeps at 1024 bytes even
        // after an oversized one: one backing call per allocation.
        for id in 0..8 {
            let l = layout(5000 + id, 8);
            match arena.allocate(l) {
                Ok(block) => {
                    // SAFETY: fresh block.
                    unsafe { fill(block.cast(), l.size(), id) };
                    live.push((block, l, id));
                }
                Err(AllocError) => failed += 1,
            }
            assert_eq!(arena.reserved_bytes(), counts.live_bytes());
        }
        assert_eq!((failed, counts.failures.get()), (1, 1), "fail_on {fail_on}");
        assert_eq!(live.len(), 7);
        for (block, l, id) in live {
            // SAFETY: every live block is intact until the arena goes.
            unsafe { check(block.cast(), l.size(), id) };
        }
        drop(arena);
        assert_eq!(counts.live_blocks(), 0, "every chunk given back");
    }
}

#[test]
fn chain_grow_survives_a_backing_allocator_that_refuses_to_grow_the_chunk() {
    let counts = Counts::default();
    let arena = ChainAllocator::new_in(4096, Counting::new(System, &counts)).unwrap();
    let old = layout(100, 8);
    let block = arena.allocate(old).unwrap();
    // SAFETY: fresh block.
    unsafe { fill(block.cast(), 100, 7) };
    // Call 2 is the attempt to grow the chunk in place; it fails, and the arena copies the
    // block into a new chunk (call 3) instead.
    counts.fail_on.set(2);
    // SAFETY: `block` is live with `old`.
    let grown = unsafe { arena.grow(block.cast(), old, layout(10_000, 8)) }.unwrap();
    assert_eq!(counts.failures.get(), 1);
    assert_eq!(counts.calls(), 3);
    assert_ne!(addr(grown), addr(block));
    // SAFETY: the grown block keeps the old bytes.
    unsafe { check(grown.cast(), 100, 7) };
    assert_eq!(arena.reserved_bytes(), counts.live_bytes());
    // When everything fails, grow is an `Err` and the block is untouched.
    counts.fail_all.set(true);
    // SAFETY: `grown` is live with 10_000 bytes.
    let refused = unsafe { arena.grow(grown.cast(), layout(10_000, 8), layout(1 << 20, 8)) };
    assert_eq!(refused, Err(AllocError));
    // SAFETY: as above.
    unsafe { check(grown.cast(), 100, 7) };
}

#[test]
fn linear_allocator_is_exhausted_exactly_at_its_size() {
    let arena = LinearAllocator::new_in(layout(64, 8), System).unwrap();
    let mut blocks = Vec::new();
    for id in 0..8 {
        assert!(arena.has_capacity_for(layout(8, 8)));
        let block = arena.allocate(layout(8, 8)).unwrap();
        // SAFETY: fresh 8 bytes.
        unsafe { fill(block.cast(), 8, id) };
        blocks.push(block);
    }
    assert_eq!((arena.used_bytes(), arena.remaining_capacity()), (64, 0));
    assert!(!arena.has_capacity_for(layout(1, 1)));
    assert_eq!(arena.allocate(layout(1, 1)), Err(AllocError));
    assert_eq!(arena.allocate(layout(0, 1)).unwrap().len(), 0);
    // Giving back the last block makes exactly its bytes available again.
    let last = blocks.pop().unwrap();
    // SAFETY: the most recent block, with its layout.
    unsafe { arena.deallocate(last.cast(), layout(8, 8)) };
    assert_eq!(arena.remaining_capacity(), 8);
    assert!(!arena.has_capacity_for(layout(9, 1)));
    let again = arena.allocate(layout(8, 8)).unwrap();
    assert_eq!(addr(again), addr(last));
    for (id, block) in blocks.into_iter().enumerate() {
        // SAFETY: live blocks.
        unsafe { check(block.cast(), 8, id) };
    }
}

#[test]
fn linear_allocator_counts_alignment_padding_towards_exhaustion() {
    let arena = LinearAllocator::new_in(layout(16, 8), System).unwrap();
    arena.allocate(layout(1, 1)).unwrap();
    assert!(!arena.has_capacity_for(layout(9, 8)));
    assert!(arena.has_capacity_for(layout(8, 8)));
    let block = arena.allocate(layout(8, 8)).unwrap();
    assert_eq!(addr(block) % 8, 0);
    assert_eq!((arena.used_bytes(), arena.remaining_capacity()), (16, 0));
}

#[test]
fn virtual_allocator_honours_alignments_larger_than_a_page() {
    let page = page();
    let pages = VirtualAllocator {};
    for len_pages in [1, 2, 3, 5, 8, 16, 31, 32] {
        for align_pages in [2, 4, 8, 16, 32, 64] {
            let l = layout(len_pages * page, align_pages * page);
            let block = pages.allocate(l).unwrap();
            assert_eq!(
                addr(block) % l.align(),
                0,
                "{len_pages} pages at {align_pages}"
            );
            assert_eq!(block.len(), l.size());
            // SAFETY: the whole block is ours.
            let bytes = unsafe { block.as_ref() };
            assert!(bytes.iter().all(|&b| b == 0), "fresh pages are zero");
            // SAFETY: as above.
            unsafe {
                fill(block.cast(), block.len(), len_pages);
                check(block.cast(), block.len(), len_pages);
                pages.deallocate(block.cast(), l);
            }
        }
    }
}

#[test]
fn virtual_allocator_rounds_to_pages_and_accepts_the_rounded_length_back() {
    let page = page();
    let pages = VirtualAllocator {};
    for size in [1, page - 1, page, page + 1, 10 * page + 3] {
        let block = pages.allocate(layout(size, 8)).unwrap();
        assert_eq!(block.len(), size.div_ceil(page) * page);
        // The `Allocator` contract lets the caller give back any size up to the returned one.
        // SAFETY: the block is ours, described by its returned length.
        unsafe { pages.deallocate(block.cast(), layout(block.len(), 8)) };
    }
}

#[test]
fn virtual_allocator_grow_shrink_and_grow_zeroed_keep_contents() {
    let page = page();
    let pages = VirtualAllocator {};
    let small = layout(3 * page, 8);
    let block = pages.allocate(small).unwrap();
    // SAFETY: fresh block.
    unsafe { fill(block.cast(), small.size(), 1) };
    let big = layout(300 * page + 5, 8);
    // SAFETY: live block of `small`.
    let grown = unsafe { pages.grow(block.cast(), small, big) }.unwrap();
    assert_eq!(grown.len(), 301 * page);
    // SAFETY: the first 3 pages are kept, the rest is ours to write.
    unsafe {
        check(grown.cast(), small.size(), 1);
        fill(grown.cast(), big.size(), 2);
    }
    let shrunk_layout = layout(2 * page + 5, 8);
    // SAFETY: live block of `big`.
    let shrunk = unsafe { pages.shrink(grown.cast(), big, shrunk_layout) }.unwrap();
    assert_eq!(
        addr(shrunk),
        addr(grown),
        "shrinking unmaps the tail in place"
    );
    assert_eq!(shrunk.len(), 3 * page);
    // SAFETY: live block.
    unsafe { check(shrunk.cast(), shrunk_layout.size(), 2) };
    // The slack after the old size in its last page still holds pattern 2: grow_zeroed must
    // clear it, along with everything past it.
    let zeroed_layout = layout(40 * page, 8);
    // SAFETY: live block of `shrunk_layout`.
    let zeroed = unsafe { pages.grow_zeroed(shrunk.cast(), shrunk_layout, zeroed_layout) }.unwrap();
    // SAFETY: live block.
    unsafe { check(zeroed.cast(), shrunk_layout.size(), 2) };
    // SAFETY: as above.
    let bytes = unsafe { zeroed.as_ref() };
    assert!(bytes[shrunk_layout.size()..].iter().all(|&b| b == 0));
    // SAFETY: live block.
    unsafe { pages.deallocate(zeroed.cast(), zeroed_layout) };
}

#[test]
fn virtual_allocator_grow_with_alignment_above_a_page_keeps_alignment_and_contents() {
    let page = page();
    let pages = VirtualAllocator {};
    for new_align in [16 * page, 64 * page] {
        let old = layout(page, 16 * page);
        let block = pages.allocate(old).unwrap();
        // SAFETY: fresh block.
        unsafe { fill(block.cast(), page, 3) };
        let new = layout(40 * page, new_align);
        // SAFETY: live block of `old`.
        let grown = unsafe { pages.grow(block.cast(), old, new) }.unwrap();
        assert_eq!(addr(grown) % new_align, 0);
        assert_eq!(grown.len(), 40 * page);
        // SAFETY: contents kept; the rest of the block is ours.
        unsafe {
            check(grown.cast(), page, 3);
            fill(grown.cast(), 40 * page, 4);
        }
        let back = layout(page, new_align);
        // SAFETY: live block of `new`.
        let shrunk = unsafe { pages.shrink(grown.cast(), new, back) }.unwrap();
        assert_eq!(addr(shrunk), addr(grown));
        // SAFETY: live block of `back`.
        unsafe {
            check(shrunk.cast(), page, 4);
            pages.deallocate(shrunk.cast(), back);
        }
    }
}

/// `grow_zeroed` must zero bytes that a given-back block left behind, both when it grows in
/// place and when it moves over such bytes.
fn grow_zeroed_clears_leftover_bytes(arena: &dyn Allocator) {
    // In place: the block grows over the bytes of a block that was given back.
    let garbage = arena.allocate(layout(256, 8)).unwrap();
    // SAFETY: fresh block.
    unsafe { garbage.cast::<u8>().write_bytes(0xFF, 256) };
    // SAFETY: the most recent block.
    unsafe { arena.deallocate(garbage.cast(), layout(256, 8)) };
    let small = arena.allocate(layout(16, 8)).unwrap();
    assert_eq!(
        addr(small),
        addr(garbage),
        "the given-back bytes are reused"
    );
    // SAFETY: fresh block.
    unsafe { fill(small.cast(), 16, 1) };
    // SAFETY: live block of layout(16, 8).
    let grown = unsafe { arena.grow_zeroed(small.cast(), layout(16, 8), layout(256, 8)) }.unwrap();
    assert_eq!(
        addr(grown),
        addr(small),
        "the most recent block grows in place"
    );
    // SAFETY: live block.
    unsafe { check(grown.cast(), 16, 1) };
    // SAFETY: as above.
    assert!(unsafe { grown.as_ref() }[16..].iter().all(|&b| b == 0));

    // Moved: the block is not the most recent one, and lands on given-back bytes.
    let garbage = arena.allocate(layout(512, 8)).unwrap();
    // SAFETY: fresh block.
    unsafe { garbage.cast::<u8>().write_bytes(0xFF, 512) };
    // SAFETY: the most recent block.
    unsafe { arena.deallocate(garbage.cast(), layout(512, 8)) };
    let pin = arena.allocate(layout(8, 8)).unwrap();
    assert_eq!(addr(pin), addr(garbage));
    // SAFETY: `grown` is live with layout(256, 8) and no longer the most recent block.
    let moved = unsafe { arena.grow_zeroed(grown.cast(), layout(256, 8), layout(400, 8)) }.unwrap();
    assert_ne!(addr(moved), addr(grown));
    // SAFETY: live block.
    unsafe { check(moved.cast(), 16, 1) };
    // SAFETY: as above.
    assert!(unsafe { moved.as_ref() }[16..].iter().all(|&b| b == 0));
}

#[test]
fn grow_zeroed_zeroes_bytes_left_by_a_given_back_block() {
    grow_zeroed_clears_leftover_bytes(&LinearAllocator::new_in(layout(8192, 8), System).unwrap());
    grow_zeroed_clears_leftover_bytes(&ChainAllocator::new_in(8192, System).unwrap());
    grow_zeroed_clears_leftover_bytes(&ChainAllocator::new_in(8192, VirtualAllocator {}).unwrap());
    grow_zeroed_clears_leftover_bytes(&VirtualArena::new(1 << 20).unwrap());
    grow_zeroed_clears_leftover_bytes(&SyncVirtualArena::new(1 << 20).unwrap());
}

#[test]
fn chain_allocation_larger_than_the_hint_gets_a_chunk_sized_for_it() {
    let counts = Counts::default();
    let arena = ChainAllocator::new_in(4096, Counting::new(System, &counts)).unwrap();
    let big = arena.allocate(layout(100_000, 8)).unwrap();
    assert_eq!(addr(big) % 8, 0);
    assert_eq!(*counts.allocated.borrow(), [4096, OVERHEAD + 100_000]);
    assert_eq!(arena.reserved_bytes(), 4096 + OVERHEAD + 100_000);
    assert_eq!(arena.remaining_capacity(), 0);
    // The chunk after an oversized one is twice its size (under the cap), as in libdd-alloc's
    // `new_capped_in`.
    arena.allocate(layout(8, 8)).unwrap();
    assert_eq!(counts.allocated.borrow()[2], 2 * (OVERHEAD + 100_000));
    // A stricter alignment is accounted for in the chunk size.
    arena.allocate(layout(500_000, 4096)).unwrap();
    assert_eq!(counts.allocated.borrow()[3], 4096 + 500_000);
}

#[test]
fn chain_chunks_double_up_to_the_bound_set_by_with_max_chunk_size() {
    let counts = Counts::default();
    let arena = ChainAllocator::new_in(4096, Counting::new(System, &counts))
        .unwrap()
        .with_max_chunk_size(16_384);
    for _ in 0..40 {
        arena.allocate(layout(4000, 8)).unwrap();
    }
    let sizes = counts.allocated.borrow();
    assert_eq!(sizes[..3], [4096, 8192, 16_384]);
    assert!(sizes.len() > 5);
    assert!(sizes[3..].iter().all(|&s| s == 16_384), "{sizes:?}");
}

#[test]
fn chain_chunks_double_up_to_4_mib_by_default() {
    let counts = Counts::default();
    let arena = ChainAllocator::new_in(4096, Counting::new(System, &counts)).unwrap();
    while counts.allocated.borrow().len() < 14 {
        arena.allocate(layout(4000, 8)).unwrap();
    }
    let sizes = counts.allocated.borrow();
    let expected: Vec<usize> = (0..11).map(|i| 4096 << i).collect();
    assert_eq!(sizes[..11], expected[..]);
    assert!(sizes[11..].iter().all(|&s| s == 4 << 20), "{sizes:?}");
}

#[test]
fn chain_with_max_chunk_size_equal_to_hint_makes_fixed_size_chunks() {
    let counts = Counts::default();
    let arena = ChainAllocator::new_in(4096, Counting::new(System, &counts))
        .unwrap()
        .with_max_chunk_size(4096);
    for _ in 0..10 {
        arena.allocate(layout(3000, 8)).unwrap();
    }
    assert!(counts.allocated.borrow().iter().all(|&s| s == 4096));
    assert_eq!(counts.allocated.borrow().len(), 10);
}

/// The chunk sizes `ChainAllocator::new_capped_in(initial, max, _)` and its `SyncChainAllocator`
/// twin ask their backing allocator for while they serve blocks of `requests` bytes (alignment
/// 8), in order; both arenas must agree, so one list is returned.
fn capped_chunk_sizes(initial: usize, max: usize, requests: &[usize]) -> Vec<usize> {
    let cell_counts = Counts::default();
    let sync_counts = Counts::default();
    let cell = ChainAllocator::new_capped_in(initial, max, Counting::new(System, &cell_counts));
    let sync = SyncChainAllocator::new_capped_in(initial, max, Counting::new(System, &sync_counts));
    assert_eq!(
        (cell.reserved_bytes(), sync.reserved_bytes()),
        (0, 0),
        "lazy"
    );
    assert_eq!((cell_counts.calls(), sync_counts.calls()), (0, 0), "lazy");
    for &size in requests {
        cell.allocate(layout(size, 8)).unwrap();
        sync.allocate(layout(size, 8)).unwrap();
    }
    let sizes = cell_counts.allocated.borrow().clone();
    assert_eq!(
        sizes,
        *sync_counts.allocated.borrow(),
        "the Cell and Sync twins size alike"
    );
    assert_eq!(cell.reserved_bytes(), sizes.iter().sum::<usize>());
    sizes
}

#[test]
fn capped_chain_chunks_start_at_initial_and_double_up_to_max() {
    let sizes = capped_chunk_sizes(4096, 32_768, &[4000; 40]);
    assert_eq!(sizes[..4], [4096, 8192, 16_384, 32_768]);
    assert!(sizes.len() > 5);
    assert!(sizes[4..].iter().all(|&s| s == 32_768), "{sizes:?}");
    // A cap that is no power-of-two multiple of the start is reached exactly.
    assert_eq!(
        capped_chunk_sizes(4096, 12_000, &[4000; 8])[..4],
        [4096, 8192, 12_000, 12_000]
    );
}

#[test]
fn capped_chain_with_max_below_initial_makes_fixed_chunks_of_initial() {
    let sizes = capped_chunk_sizes(8192, 4096, &[8000; 6]);
    assert_eq!(sizes, [8192; 6]);
    assert_eq!(capped_chunk_sizes(4096, 4096, &[4000; 6]), [4096; 6]);
}

#[test]
fn capped_chain_with_zero_sizes_makes_fixed_chunks_of_the_minimum() {
    let min = 4 * OVERHEAD;
    assert_eq!(SyncChainAllocator::<System>::CHAIN_NODE_OVERHEAD, OVERHEAD);
    let block = min - OVERHEAD;
    assert_eq!(capped_chunk_sizes(0, 0, &[block; 5]), [min; 5]);
    // max = 0 alone is "no room to double": fixed chunks of the start.
    assert_eq!(capped_chunk_sizes(4096, 0, &[4000; 3]), [4096; 3]);
}

#[test]
fn capped_chain_gives_an_allocation_above_max_its_own_chunk_then_takes_max() {
    // 4000 fills the first chunk; 100_000 is above the cap: a chunk sized for it; the next
    // regular chunk is twice that, capped: the cap itself.
    let sizes = capped_chunk_sizes(4096, 16_384, &[4000, 100_000, 8, 16_000, 16_000]);
    assert_eq!(sizes, [4096, OVERHEAD + 100_000, 16_384, 16_384]);
    // Between the hint and the cap: the next is twice the oversized chunk.
    let sizes = capped_chunk_sizes(4096, 1 << 20, &[4000, 10_000, 8, 20_000]);
    assert_eq!(sizes, [4096, OVERHEAD + 10_000, 2 * (OVERHEAD + 10_000)]);
}

#[test]
fn capped_chain_with_usize_max_doubles_past_the_default_4_mib() {
    let mut requests = vec![4000; 4 * 1024 + 1];
    requests.push(8 << 20);
    let sizes = capped_chunk_sizes(4096, usize::MAX, &requests);
    let doubling: Vec<usize> = (0..13).map(|i| 4096 << i).collect();
    assert_eq!(
        sizes[..13],
        doubling[..],
        "8 MiB and 16 MiB chunks, above the default cap"
    );
}

#[test]
fn capped_chain_with_a_start_no_layout_can_hold_fails_with_err() {
    for (initial, max) in [
        (usize::MAX, usize::MAX),
        (usize::MAX, 0),
        (isize::MAX as usize, 0),
    ] {
        let counts = Counts::default();
        let cell = ChainAllocator::new_capped_in(initial, max, Counting::new(System, &counts));
        let sync = SyncChainAllocator::new_capped_in(initial, max, Counting::new(System, &counts));
        assert_eq!(cell.allocate(layout(8, 8)), Err(AllocError));
        assert_eq!(sync.allocate(layout(8, 8)), Err(AllocError));
        assert_eq!((cell.reserved_bytes(), sync.reserved_bytes()), (0, 0));
        assert_eq!(
            counts.calls(),
            0,
            "refused before asking the backing allocator"
        );
    }
}

#[test]
fn chain_reset_keeps_only_the_largest_chunk_and_reuses_it_without_backing_calls() {
    let counts = Counts::default();
    let mut arena = ChainAllocator::new_in(4096, Counting::new(System, &counts)).unwrap();
    for _ in 0..10 {
        arena.allocate(layout(3000, 8)).unwrap();
    }
    arena.allocate(layout(50_000, 8)).unwrap();
    for _ in 0..10 {
        arena.allocate(layout(3000, 8)).unwrap();
    }
    let largest = *counts.allocated.borrow().iter().max().unwrap();
    assert!(counts.live_blocks() > 3);
    for round in 0..3 {
        arena.reset();
        assert_eq!(counts.live_blocks(), 1, "round {round}");
        assert_eq!(counts.live_bytes(), largest);
        assert_eq!(arena.reserved_bytes(), largest);
        assert_eq!(arena.used_bytes(), OVERHEAD);
        assert_eq!(arena.remaining_capacity(), largest - OVERHEAD);
        let calls = counts.calls();
        let mut id = 0;
        let mut live = Vec::new();
        while arena.has_capacity_for(layout(1000, 8)) {
            let block = arena.allocate(layout(1000, 8)).unwrap();
            // SAFETY: fresh block.
            unsafe { fill(block.cast(), 1000, id) };
            live.push((block, id));
            id += 1;
        }
        assert_eq!(
            counts.calls(),
            calls,
            "no backing call while the kept chunk has room"
        );
        assert_eq!(live.len(), (largest - OVERHEAD) / 1000);
        for (block, id) in live {
            // SAFETY: live blocks.
            unsafe { check(block.cast(), 1000, id) };
        }
    }
    drop(arena);
    assert_eq!(counts.live_blocks(), 0);
}

#[test]
fn chain_reset_of_a_lazy_arena_that_never_allocated_keeps_nothing() {
    let counts = Counts::default();
    let mut arena = ChainAllocator::new_lazy_in(4096, Counting::new(System, &counts));
    arena.reset();
    assert_eq!((arena.used_bytes(), arena.reserved_bytes()), (0, 0));
    assert_eq!(counts.calls(), 0);
    arena.allocate(layout(8, 8)).unwrap();
    assert_eq!(arena.reserved_bytes(), 4096);
}

#[test]
fn linear_reset_makes_the_whole_buffer_available_again() {
    let mut arena = LinearAllocator::new_in(layout(100, 8), System).unwrap();
    let first = arena.allocate(layout(60, 8)).unwrap();
    arena.allocate(layout(40, 4)).unwrap();
    assert_eq!(arena.remaining_capacity(), 0);
    arena.reset();
    assert_eq!((arena.used_bytes(), arena.remaining_capacity()), (0, 100));
    let again = arena.allocate(layout(100, 8)).unwrap();
    assert_eq!(addr(again), addr(first));
}

/// Stats are O(1) counters; check they equal what the backing allocator really handed out.
#[test]
fn chain_stats_equal_what_the_backing_allocator_handed_out() {
    let counts = Counts::default();
    let arena = ChainAllocator::new_in(512, Counting::new(System, &counts)).unwrap();
    let mut last: Option<(NonNull<[u8]>, Layout)> = None;
    for i in 0..2000usize {
        let l = layout(1 + (i * 37) % 3000, 1 << (i % 7));
        match i % 5 {
            // Grow or shrink the most recent block (in place, chunk growth or a move).
            3 if last.is_some() => {
                let (block, old) = last.take().unwrap();
                let new = layout(old.size() * 2 + 1, old.align());
                // SAFETY: `block` is live with `old`.
                let grown = unsafe { arena.grow(block.cast(), old, new) }.unwrap();
                last = Some((grown, new));
            }
            4 if last.is_some() => {
                let (block, old) = last.take().unwrap();
                // SAFETY: the most recent block with its layout.
                unsafe { arena.deallocate(block.cast(), old) };
            }
            _ => last = Some((arena.allocate(l).unwrap(), l)),
        }
        assert_eq!(arena.reserved_bytes(), counts.live_bytes(), "step {i}");
        assert_eq!(
            arena.used_bytes(),
            arena.reserved_bytes() - arena.remaining_capacity()
        );
    }
}

#[test]
fn linear_stats_equal_what_the_backing_allocator_handed_out() {
    let counts = Counts::default();
    let arena = LinearAllocator::new_in(layout(10_000, 8), Counting::new(System, &counts)).unwrap();
    assert_eq!(arena.reserved_bytes(), counts.live_bytes());
    let mut expected_used: usize = 0;
    for i in 0..200usize {
        let l = layout(1 + i % 13, 1 << (i % 4));
        expected_used = expected_used.next_multiple_of(l.align()) + l.size();
        // The buffer comes from malloc, aligned to 16: padding is computed from offsets.
        arena.allocate(l).unwrap();
        assert_eq!(arena.used_bytes(), expected_used);
        assert_eq!(arena.used_bytes() + arena.remaining_capacity(), 10_000);
    }
    drop(arena);
    assert_eq!(counts.live_blocks(), 0);
}

mod send_sync {
    use super::*;

    /// Compiles only if `T: Send`.
    const fn assert_send<T: Send>() {}

    /// `<T as AmbiguousIfSync<_>>::some_item` is ambiguous, so does not compile, exactly when
    /// `T: Sync` (the `static_assertions::assert_not_impl_any!` trick).
    trait AmbiguousIfSync<Marker> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}

    /// Likewise for `Send`.
    trait AmbiguousIfSend<Marker> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}

    const _: () = {
        assert_send::<LinearAllocator<System>>();
        assert_send::<LinearAllocator<VirtualAllocator>>();
        assert_send::<ChainAllocator<System>>();
        assert_send::<ChainAllocator<VirtualAllocator>>();
        assert_send::<VirtualAllocator>();
    };

    /// A backing allocator that is not `Send` (it shares a `Cell` counter).
    type NotSendBacking = Counting<'static, System>;

    #[allow(dead_code)]
    fn not_sync_and_not_send_when_the_backing_allocator_is_not() {
        let _ = <LinearAllocator<System> as AmbiguousIfSync<_>>::some_item;
        let _ = <ChainAllocator<System> as AmbiguousIfSync<_>>::some_item;
        let _ = <NotSendBacking as AmbiguousIfSend<_>>::some_item;
        let _ = <LinearAllocator<NotSendBacking> as AmbiguousIfSend<_>>::some_item;
        let _ = <ChainAllocator<NotSendBacking> as AmbiguousIfSend<_>>::some_item;
        // The lock-free arena is `Send`/`Sync` only as far as its backing allocator is.
        let _ = <SyncLinearAllocator<NotSendBacking> as AmbiguousIfSend<_>>::some_item;
        let _ = <SyncLinearAllocator<NotSendBacking> as AmbiguousIfSync<_>>::some_item;
    }

    #[test]
    fn an_arena_moved_to_another_thread_keeps_its_blocks_and_frees_them_there() {
        let arena = ChainAllocator::new_in(4096, System).unwrap();
        let block = arena.allocate(layout(64, 8)).unwrap();
        // SAFETY: fresh block.
        unsafe { fill(block.cast(), 64, 9) };
        let addr = block.cast::<u8>().as_ptr() as usize;
        let used = std::thread::spawn(move || {
            let ptr = NonNull::new(addr as *mut u8).unwrap();
            // SAFETY: the block lives as long as the arena, which moved here with it.
            unsafe { check(ptr, 64, 9) };
            arena.used_bytes()
        })
        .join()
        .unwrap();
        assert_eq!(used, OVERHEAD + 64);
    }
}

/// The regression test for the fix in `grow_sole_block_chunk`: after a `reset`, the kept chunk
/// may be aligned more strictly than the 32-byte header, so its first block is not aligned to
/// the chunk's alignment. Growing that block to the chunk's alignment must not grow the chunk
/// in place of a move (the backing allocator was asked to "grow" to a smaller size, and the
/// block's bytes were shifted).
#[test]
fn chain_grow_to_stricter_alignment_after_reset_keeps_contents_and_alignment() {
    let counts = Counts::default();
    let mut arena = ChainAllocator::new_in(4096, Counting::new(System, &counts)).unwrap();
    // The largest chunk, kept by reset, is 64-aligned.
    arena.allocate(layout(1 << 16, 64)).unwrap();
    arena.reset();
    for (id, new_size) in [(1, 200), (2, 1 << 17)] {
        let old = layout(100, 8);
        let block = arena.allocate(old).unwrap();
        // SAFETY: fresh block of 100 bytes.
        unsafe { fill(block.cast(), 100, id) };
        let new = layout(new_size, 64);
        // SAFETY: `block` is live, from `arena`, with `old`; the new size is larger.
        let grown = unsafe { arena.grow(block.cast(), old, new) }.unwrap();
        assert_eq!(addr(grown) % 64, 0);
        assert!(grown.len() >= new_size);
        // SAFETY: the grown block keeps the first 100 bytes.
        unsafe { check(grown.cast(), 100, id) };
        assert_eq!(arena.reserved_bytes(), counts.live_bytes());
        arena.reset();
    }
}
