//! Edge cases: extreme layouts, failing backing allocators, exhaustion, page allocator corner
//! cases, chunk policy of the chain, exact statistics, and the `Send`/`Sync` bounds.

mod common;

use common::*;
use libdd_alloc::{Allocator, ChainAllocator, System};

/// After a `reset`, the kept chunk may be aligned more strictly than the 32-byte header, and the
/// first block sits right after the header. Growing that block to the chunk's alignment must not
/// take the grow-the-chunk path (the block is not aligned there): contents must survive and the
/// result must be aligned.
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
        arena.reset();
    }
}
