//! Regressions found by the `chain` fuzz target.

use libdd_alloc::{AllocError, Allocator, ChainAllocator, Layout, System};
use std::ptr::NonNull;

/// `System`, except that `grow` and `shrink` always move the block, and memory given back is
/// scribbled over first: reading a block after it moved sees 0xDD, not the old bytes. `grow`
/// and `shrink` check their size contract instead of trusting the caller.
struct Scribbling;

impl Scribbling {
    /// # Safety
    /// `ptr` is a live block of `old` from `System`.
    unsafe fn moved(
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let block = System.allocate(new)?;
        // SAFETY: distinct live blocks, each at least `min(old, new)` long.
        unsafe {
            let keep = old.size().min(new.size());
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), block.cast::<u8>().as_ptr(), keep);
            Scribbling.deallocate(ptr, old);
        }
        Ok(block)
    }
}

// SAFETY: forwards to `System`; moves copy the bytes the contract keeps.
unsafe impl Allocator for Scribbling {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        System.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller gives the block back; it is ours until `System` takes it.
        unsafe {
            ptr.as_ptr().write_bytes(0xDD, layout.size());
            System.deallocate(ptr, layout);
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        assert!(new.size() >= old.size(), "grow to a smaller size");
        // SAFETY: forwarded caller contract.
        unsafe { Self::moved(ptr, old, new) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        assert!(new.size() <= old.size(), "shrink to a larger size");
        // SAFETY: forwarded caller contract.
        unsafe { Self::moved(ptr, old, new) }
    }
}

/// A chain whose newest chunk is 4096-aligned and holds one block of `size` bytes (align 8) at
/// its very start, right after the chunk header, filled with 0xA7.
fn chain_with_sole_block_in_aligned_chunk(
    size: usize,
) -> (ChainAllocator<Scribbling>, NonNull<u8>) {
    let mut arena = ChainAllocator::new_in(4096, Scribbling).unwrap();
    // Too big for the first chunk, and 4096-aligned: a new chunk aligned to 4096, the largest.
    arena
        .allocate(Layout::from_size_align(8192, 4096).unwrap())
        .unwrap();
    // Reset keeps the largest chunk (with its alignment) and starts again after its header.
    arena.reset();
    let ptr = arena
        .allocate(Layout::from_size_align(size, 8).unwrap())
        .unwrap()
        .cast::<u8>();
    assert_eq!(
        ptr.as_ptr().addr() % 4096,
        ChainAllocator::<Scribbling>::CHAIN_NODE_OVERHEAD
    );
    // SAFETY: a fresh block of `size` bytes.
    unsafe { ptr.as_ptr().write_bytes(0xA7, size) };
    (arena, ptr)
}

/// Grows the block of [`chain_with_sole_block_in_aligned_chunk`] and checks it kept its bytes.
fn grow_keeps_contents(new: Layout) -> ChainAllocator<Scribbling> {
    let (arena, ptr) = chain_with_sole_block_in_aligned_chunk(100);
    let old = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: `ptr` is live with layout `old`.
    let grown = unsafe { arena.grow(ptr, old, new) }.unwrap().cast::<u8>();
    assert_eq!(grown.as_ptr().addr() % new.align(), 0);
    // SAFETY: the grown block holds at least the 100 old bytes.
    let kept = unsafe { std::slice::from_raw_parts(grown.as_ptr(), 100) };
    assert!(kept.iter().all(|&b| b == 0xA7), "contents lost in grow");
    arena
}

#[test]
fn grow_of_a_chunks_only_block_to_a_stricter_alignment_keeps_its_contents() {
    // The block sits at chunk + 32, which is not 64-aligned: growing the chunk and re-bumping
    // at offset 64 used to leave the bytes behind (or read them from the freed chunk).
    grow_keeps_contents(Layout::from_size_align(20_000, 64).unwrap());
}

#[test]
fn grow_of_a_chunks_only_block_that_only_needs_alignment_never_shrinks_the_chunk() {
    // Room is plenty, only the alignment is wrong: the chunk must not be "grown" to a smaller
    // size (a breach of the backing allocator's `grow` contract).
    grow_keeps_contents(Layout::from_size_align(200, 64).unwrap());
}

#[test]
fn grow_of_a_chunks_only_block_by_growing_the_chunk_still_works() {
    // Alignment the block already has: the kept chunk itself grows, no new chunk is taken.
    let arena = grow_keeps_contents(Layout::from_size_align(20_000, 16).unwrap());
    assert_eq!(
        arena.reserved_bytes(),
        ChainAllocator::<Scribbling>::CHAIN_NODE_OVERHEAD + 20_000
    );
}
