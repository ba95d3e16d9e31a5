//! What [`VirtualAllocator`](crate::VirtualAllocator) and [`PageAllocator`](crate::PageAllocator)
//! share: every block is a mapping of whole pages of its own. Each says how it maps, measures and
//! unmaps one block ([`PageBlocks`]); the functions here are its `Allocator` methods over that
//! (zero-size layouts, resizing in place or by moving, what `grow_zeroed` must zero), and
//! [`forward_page_blocks!`] writes the `Allocator` methods as calls to them.

use crate::bump::dangling;
use crate::AllocError;
use core::alloc::Layout;
use core::ptr::NonNull;

/// How an allocator that gives each block its own mapping maps, measures and unmaps one block.
pub(crate) trait PageBlocks {
    /// Maps a fresh, zeroed block for the non-zero-size `layout`.
    fn map_block(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError>;

    /// The length of the block [`map_block`](Self::map_block) maps for the non-zero-size
    /// `layout`: its size rounded up to whole pages. Every layout that fits a block (any size up
    /// to its length, the block's alignment) gives the same length.
    fn block_len(&self, layout: Layout) -> Result<usize, AllocError>;

    /// Unmaps the block `ptr` of the non-zero-size `layout`, with whatever was mapped around it.
    ///
    /// # Safety
    /// `ptr` is a live block of `layout` from this allocator, which the caller gives up.
    unsafe fn unmap_block(&self, ptr: NonNull<u8>, layout: Layout);

    /// Resizes the mapping of the block `[ptr, ptr + old_len)` to `new_len` bytes (whole pages,
    /// another number of them) keeping its contents, in place or by moving it elsewhere where
    /// `align` allows; bytes past `old_len` are zero. `None` when it cannot (the default), and
    /// the block is then left as it was, for the caller to copy.
    ///
    /// # Safety
    /// `ptr` is a live block of this allocator, `old_len` long and aligned to `align`; if the
    /// block moves, its old addresses are dead.
    unsafe fn remap_block(
        &self,
        _ptr: NonNull<u8>,
        _old_len: usize,
        _new_len: usize,
        _align: usize,
    ) -> Option<NonNull<u8>> {
        None
    }
}

/// Writes the `Allocator` methods of an `unsafe impl Allocator` block of a [`PageBlocks`] type as
/// calls to the functions of this module: `forward_page_blocks!();`.
macro_rules! forward_page_blocks {
    () => {
        $crate::page_blocks::forward_page_blocks!(@allocate allocate allocate_zeroed);
        $crate::page_blocks::forward_page_blocks!(
            @resize grow => resize, grow_zeroed => grow_zeroed, shrink => resize
        );

        unsafe fn deallocate(&self, ptr: core::ptr::NonNull<u8>, layout: core::alloc::Layout) {
            // SAFETY: the caller keeps the `Allocator::deallocate` contract, which is the
            // function's.
            unsafe { $crate::page_blocks::deallocate(self, ptr, layout) }
        }
    };
    (@allocate $($method:ident)*) => {$(
        #[inline]
        fn $method(
            &self,
            layout: core::alloc::Layout,
        ) -> Result<core::ptr::NonNull<[u8]>, $crate::AllocError> {
            // Fresh pages are zero, so `allocate` is `allocate_zeroed`.
            $crate::page_blocks::allocate_zeroed(self, layout)
        }
    )*};
    (@resize $($method:ident => $function:ident),*) => {$(
        unsafe fn $method(
            &self,
            ptr: core::ptr::NonNull<u8>,
            old: core::alloc::Layout,
            new: core::alloc::Layout,
        ) -> Result<core::ptr::NonNull<[u8]>, $crate::AllocError> {
            // SAFETY: the caller keeps this method's `Allocator` contract, which is the
            // function's.
            unsafe { $crate::page_blocks::$function(self, ptr, old, new) }
        }
    )*};
}
pub(crate) use forward_page_blocks;

/// A fresh, zeroed block for `layout`: a dangling, aligned pointer that maps nothing for a zero
/// size.
#[inline]
pub(crate) fn allocate_zeroed(
    pages: &impl PageBlocks,
    layout: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    if layout.size() == 0 {
        return Ok(dangling(layout));
    }
    pages.map_block(layout)
}

/// Unmaps the block `ptr` of `layout`; a zero-size one maps nothing.
///
/// # Safety
/// The `Allocator::deallocate` contract: `ptr` is a live block of `layout` from `pages`.
pub(crate) unsafe fn deallocate(pages: &impl PageBlocks, ptr: NonNull<u8>, layout: Layout) {
    if layout.size() != 0 {
        // SAFETY: forwarded caller contract.
        unsafe { pages.unmap_block(ptr, layout) };
    }
}

/// Resizes the block `ptr` from `old` to `new`: in place while it keeps its number of pages and
/// its address suits `new`, else through [`PageBlocks::remap_block`], else by mapping a new
/// block, copying and unmapping the old one.
///
/// # Safety
/// The `Allocator::grow` (or `shrink`) contract: `ptr` is a live block of `old` from `pages`.
pub(crate) unsafe fn resize(
    pages: &impl PageBlocks,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    if old.size() != 0 && new.size() != 0 && ptr.as_ptr().addr() & (new.align() - 1) == 0 {
        let old_len = pages.block_len(old)?;
        let new_len = pages.block_len(new)?;
        if old_len == new_len {
            return Ok(NonNull::slice_from_raw_parts(ptr, new_len));
        }
        // SAFETY: `ptr` is a live block `old_len` long (forwarded caller contract), aligned to
        // `new.align()` as just checked.
        if let Some(moved) = unsafe { pages.remap_block(ptr, old_len, new_len, new.align()) } {
            return Ok(NonNull::slice_from_raw_parts(moved, new_len));
        }
    }
    let block = allocate_zeroed(pages, new)?;
    let keep = old.size().min(new.size());
    // SAFETY: the new block is a fresh mapping, distinct from the old; both hold `keep` bytes.
    // The caller gives the old block up.
    unsafe {
        core::ptr::copy_nonoverlapping(ptr.as_ptr(), block.cast::<u8>().as_ptr(), keep);
        deallocate(pages, ptr, old);
    }
    Ok(block)
}

/// [`resize`], then zeroes what `grow_zeroed` promises and fresh pages do not give: the bytes
/// from `old.size()` to the end of the old block's pages (or of the new block, if shorter).
/// Every byte of the new block past `old.size()` is then zero.
///
/// # Safety
/// The `Allocator::grow` contract: `ptr` is a live block of `old` from `pages`, and
/// `new.size() >= old.size()`.
pub(crate) unsafe fn grow_zeroed(
    pages: &impl PageBlocks,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    let old_len = if old.size() == 0 {
        0
    } else {
        pages.block_len(old)?
    };
    // SAFETY: forwarded caller contract.
    let block = unsafe { resize(pages, ptr, old, new) }?;
    // Bytes past the old pages are fresh (zero), whether the block stayed, was remapped or
    // moved; only the old block's slack after `old.size()` may hold old data.
    let dirty = NonNull::slice_from_raw_parts(block.cast::<u8>(), old_len.min(block.len()));
    // SAFETY: `dirty` is the start of the new block, which is ours, and
    // `old.size() <= min(old_len, new.size()) <= dirty.len()`.
    unsafe { crate::resize::zero_tail(dirty, old.size()) };
    Ok(block)
}

#[cfg(test)]
mod tests {
    use crate::{os, Allocator, PageAllocator, PageOptions, VirtualAllocator};
    use core::alloc::Layout;

    /// Fills every byte of a block of `old_size` (the caller may use its whole returned length),
    /// grows it zeroed to `new_size` and checks that exactly the bytes past `old_size` are zero.
    fn grow_zeroed_keeps_the_old_bytes_and_zeroes_all_the_rest(
        pages: &impl Allocator,
        old_size: usize,
        new_size: usize,
    ) {
        let old = Layout::from_size_align(old_size, 8).unwrap();
        let new = Layout::from_size_align(new_size, 8).unwrap();
        let block = pages.allocate(old).unwrap();
        // SAFETY: the block is ours and `block.len()` long; each call passes its layout.
        unsafe {
            block.cast::<u8>().write_bytes(0xA5, block.len());
            let grown = pages.grow_zeroed(block.cast(), old, new).unwrap();
            let bytes = grown.as_ref();
            assert!(bytes[..old_size].iter().all(|&b| b == 0xA5), "{old_size}");
            assert!(bytes[old_size..].iter().all(|&b| b == 0), "{old_size}");
            pages.deallocate(grown.cast(), new);
        }
    }

    #[test]
    fn grow_zeroed_zeroes_every_byte_past_the_old_size_in_place_remapped_or_moved() {
        let page = os::page_size().unwrap();
        let guarded = PageAllocator::new(PageOptions::new().guard_pages_after(1)).unwrap();
        // Within the same pages (in place), onto more pages (remapped or moved).
        for (old_size, new_size) in [(100, page / 2), (100, page), (page + 1, 3 * page)] {
            grow_zeroed_keeps_the_old_bytes_and_zeroes_all_the_rest(
                &VirtualAllocator {},
                old_size,
                new_size,
            );
            grow_zeroed_keeps_the_old_bytes_and_zeroes_all_the_rest(&guarded, old_size, new_size);
        }
    }
}
