//! Regression tests for the bugs found by the adversarial review of the unsafe code: each test
//! failed (panicked or misbehaved) before its fix.

use libdd_alloc::{Allocator, Layout, VirtualArena};

#[test]
fn virtual_arena_allocate_zeroed_of_a_zero_size_layout_is_dangling_and_touches_nothing() {
    let arena = VirtualArena::new(1 << 20).unwrap();
    // Make the high-water mark non-zero, so a bogus offset would be compared against it.
    let layout = Layout::from_size_align(4096, 8).unwrap();
    let block = arena.allocate(layout).unwrap();
    // SAFETY: the most recent block, given back.
    unsafe { arena.deallocate(block.cast(), layout) };
    for align in [1, 8, 4096, 1 << 20] {
        let zst = Layout::from_size_align(0, align).unwrap();
        let block = arena.allocate_zeroed(zst).unwrap();
        assert_eq!(block.len(), 0);
        assert_eq!(block.cast::<u8>().as_ptr().addr(), align);
    }
    assert_eq!(arena.used_bytes(), 0);
}

#[test]
fn virtual_arena_with_an_overflowing_max_commit_step_still_commits_and_allocates() {
    let page = libdd_alloc::os::page_size().unwrap();
    for (reservation, step) in [(page, usize::MAX), (1 << 20, usize::MAX - page + 2)] {
        let arena = VirtualArena::new(reservation)
            .unwrap()
            .with_max_commit_step(step);
        let block = arena.allocate(Layout::new::<u64>()).unwrap();
        // SAFETY: the block is ours and sized for a u64.
        unsafe { block.cast::<u64>().as_ptr().write(7) };
        assert_eq!(arena.used_bytes(), 8);
        assert_eq!(
            arena.committed_bytes(),
            arena.reservation_bytes().min(64 << 10)
        );
    }
}

/// The repro of issue 10 §1a: a backing allocator whose `grow` allocates from the arena it
/// backs (to log the event, say) and then moves the chunk. Before the fix the arena's cursor
/// still pointed into the chunk being moved, so the logging block was carved out of it and
/// freed with it: ASan reported a heap-use-after-free on the write below, and the block lay
/// inside the old chunk.
#[test]
fn chain_grow_whose_backing_allocator_reenters_the_arena_hands_it_memory_that_stays_valid() {
    use libdd_alloc::{AllocError, ChainAllocator, System};
    use std::cell::Cell;
    use std::ptr::NonNull;
    use std::rc::{Rc, Weak};

    struct Reenter {
        arena: Weak<ChainAllocator<Reenter>>,
        stash: Cell<Option<NonNull<u8>>>,
        /// The chunk `grow` was asked to move: `(address, length)`.
        moved: Cell<Option<(usize, usize)>>,
    }
    // SAFETY: forwards to `System`; `grow` moves the block with its bytes, as the contract says.
    unsafe impl Allocator for Reenter {
        fn allocate(&self, l: Layout) -> Result<NonNull<[u8]>, AllocError> {
            System.allocate(l)
        }
        unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
            // SAFETY: forwarded caller contract.
            unsafe { System.deallocate(p, l) }
        }
        unsafe fn grow(
            &self,
            p: NonNull<u8>,
            old: Layout,
            new: Layout,
        ) -> Result<NonNull<[u8]>, AllocError> {
            self.moved.set(Some((p.as_ptr() as usize, old.size())));
            if let Some(arena) = self.arena.upgrade() {
                let record = arena.allocate(Layout::new::<[u8; 16]>())?; // re-enter the arena
                self.stash.set(Some(record.cast()));
            }
            let n = System.allocate(new)?; // new, copy, free old
                                           // SAFETY: distinct live blocks of at least `old.size()` bytes; `p` is ours to free.
            unsafe {
                std::ptr::copy_nonoverlapping(p.as_ptr(), n.cast::<u8>().as_ptr(), old.size());
                System.deallocate(p, old);
            }
            Ok(n)
        }
    }

    let arena = Rc::new_cyclic(|w| {
        ChainAllocator::new_lazy_in(
            256,
            Reenter {
                arena: w.clone(),
                stash: Cell::new(None),
                moved: Cell::new(None),
            },
        )
    });
    let (small, big) = (
        Layout::from_size_align(100, 8).unwrap(),
        Layout::from_size_align(1000, 8).unwrap(),
    );
    let v = arena.allocate(small).unwrap();
    // SAFETY: a fresh block of 100 bytes.
    unsafe { v.cast::<u8>().as_ptr().write_bytes(0xA5, 100) };
    // SAFETY: `v` is live with layout `small`; `big` is larger.
    let grown = unsafe { arena.grow(v.cast(), small, big) }.unwrap();
    let record = arena
        .allocator()
        .stash
        .get()
        .expect("grow re-entered the arena");
    let (chunk, chunk_len) = arena.allocator().moved.get().expect("the chunk was grown");
    // SAFETY: the re-entrant block is 16 bytes of the arena, live until the arena goes.
    unsafe { record.as_ptr().write_bytes(0xEE, 16) }; // ASan: heap-use-after-free before the fix
    let record_addr = record.as_ptr() as usize;
    assert!(
        record_addr + 16 <= chunk || record_addr >= chunk + chunk_len,
        "the re-entrant block lies in the chunk that grow moved and freed"
    );
    let grown = grown.cast::<u8>().as_ptr() as usize;
    assert!(
        record_addr + 16 <= grown || record_addr >= grown + 1000,
        "the re-entrant block overlaps the grown one"
    );
    // SAFETY: the grown block holds 1000 bytes, the first 100 copied.
    let kept = unsafe { std::slice::from_raw_parts(grown as *const u8, 100) };
    assert!(
        kept.iter().all(|&b| b == 0xA5),
        "grow lost the block's bytes"
    );
    // SAFETY: as above.
    let logged = unsafe { std::slice::from_raw_parts(record.as_ptr(), 16) };
    assert!(logged.iter().all(|&b| b == 0xEE));
    // The arena goes on: both blocks and the chunks they live in are accounted for.
    assert!(arena.used_bytes() >= 1000 + 16);
    assert_eq!(
        arena.used_bytes() + arena.remaining_capacity(),
        arena.reserved_bytes()
    );
}

/// The repro of issue 10 §1b: a backing allocator whose `deallocate` panics on its 2nd call,
/// and a `reset` that frees four chunks. Before the fix `reset` freed chunks while the arena
/// still linked them, so the unwinding drop freed the first one again (`free(): double free
/// detected`; ASan: use-after-free in `Drop`). Now it leaks the chunks it had not freed yet,
/// and the arena, used again, hands out memory that is really its own.
#[test]
fn chain_reset_whose_backing_deallocate_panics_leaks_but_never_frees_twice() {
    reset_whose_backing_deallocate_panics(|backing| {
        let mut arena = libdd_alloc::ChainAllocator::new_in(256, backing)
            .unwrap()
            .with_max_chunk_size(256);
        for _ in 0..5 {
            arena.allocate(Layout::new::<[u8; 200]>()).unwrap();
        }
        assert_eq!(arena.reserved_bytes(), 5 * 256);
        reset_panics_then_used_again(&mut arena, libdd_alloc::ChainAllocator::reset);
    });
}

/// The same for the lock-free chain, whose `reset` had the same order.
#[test]
fn sync_chain_reset_whose_backing_deallocate_panics_leaks_but_never_frees_twice() {
    reset_whose_backing_deallocate_panics(|backing| {
        let mut arena = libdd_alloc::SyncChainAllocator::new_in(256, backing)
            .unwrap()
            .with_max_chunk_size(256);
        for _ in 0..5 {
            arena.allocate(Layout::new::<[u8; 200]>()).unwrap();
        }
        assert_eq!(arena.reserved_bytes(), 5 * 256);
        reset_panics_then_used_again(&mut arena, libdd_alloc::SyncChainAllocator::reset);
    });
}

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::scripted::{quiet_scripted_panics, Action, Scripted, ScriptedPanic};

/// Runs `case` over a backing allocator whose 2nd `deallocate` panics (its 7th call: five
/// chunk allocations come first), then checks that nothing was freed twice and that only the
/// chunks `reset` had not freed yet leaked (three of the four it frees).
fn reset_whose_backing_deallocate_panics(case: impl FnOnce(&Scripted)) {
    quiet_scripted_panics();
    let backing = Scripted::at(6, Action::Panic);
    case(&backing);
    assert_eq!(backing.fired(), [("deallocate", Action::Panic)]);
    assert_eq!(backing.bad_frees(), 0, "a chunk was freed twice");
    // One chunk freed, the panicking one and two more not: three leaked, 256 bytes each.
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (3, 3 * 256));
}

/// Calls `reset`, which panics in the backing allocator, then uses the arena again (its blocks
/// must be its own: writing them is checked by ASan and by the backing allocator's block set
/// when the arena drops) and drops it.
fn reset_panics_then_used_again<T: Allocator + common::Stats>(arena: &mut T, reset: fn(&mut T)) {
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reset(arena)))
        .expect_err("the backing deallocate panicked");
    assert!(panic.is::<ScriptedPanic>());
    // The kept chunk is the only one: the others are unlinked, freed or leaked.
    assert_eq!(arena.reserved(), 256);
    let mut blocks = Vec::new();
    for i in 0..6 {
        let block = arena.allocate(Layout::new::<[u8; 200]>()).unwrap();
        // SAFETY: a fresh block of 200 bytes.
        unsafe { block.cast::<u8>().as_ptr().write_bytes(i, 200) };
        blocks.push((block.cast::<u8>(), i));
    }
    for (block, i) in blocks {
        // SAFETY: live blocks of 200 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(block.as_ptr(), 200) };
        assert!(bytes.iter().all(|&b| b == i), "a block was overwritten");
    }
    assert_eq!(arena.used() % 256, 32 + 200);
}
