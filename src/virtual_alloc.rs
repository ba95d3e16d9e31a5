//! [`VirtualAllocator`]: whole pages straight from the operating system.

use crate::os::{self, MapOptions};
use crate::page_blocks::{forward_page_blocks, PageBlocks};
use crate::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;

/// Allocates whole pages of virtual memory for each allocation, with `mmap` on Unix and
/// `VirtualAlloc` on Windows.
///
/// Meant for large blocks, above all as the backing allocator of an arena
/// (`LinearAllocator<VirtualAllocator>`, `ChainAllocator<VirtualAllocator>`), where it keeps the
/// process heap out of the picture entirely.
///
/// - Sizes are rounded up to whole pages; the returned block reports its rounded length.
/// - Fresh pages are zero, so [`allocate_zeroed`](Allocator::allocate_zeroed) costs no memset.
/// - Alignments up to a page are free. Larger ones are honoured: on Unix by mapping extra and
///   unmapping the misaligned head and tail; on Windows up to the 64 KiB allocation granularity
///   for free, beyond it by reserving a probe range, releasing it and reserving the aligned part
///   (retried if another thread maps into the range meanwhile; `Err` after 16 lost races).
/// - On Linux, [`grow`](Allocator::grow) uses `mremap`: the kernel moves page tables, not bytes.
///   [`shrink`](Allocator::shrink) unmaps the tail in place.
/// - Zero-size layouts get a dangling, aligned pointer and map nothing.
///
/// # Errors
/// Every failure is `Err(AllocError)`: a size that rounds past `isize::MAX`, an alignment that
/// cannot be honoured, the OS refusing (out of memory or address space, `vm.max_map_count`), or
/// the page size that cannot be read ([`os::page_size`]: a sandbox refusing every probe).
///
/// # Signal safety
/// Async-signal-safe on Linux and Android: each call is a raw `mmap`/`munmap`/`mremap` syscall,
/// takes no lock and leaves `errno` alone, and the page size is cached. Call
/// [`os::page_size`] once before installing a handler so even the first call makes no query.
///
/// # Examples
/// ```
/// use libdd_alloc::{Allocator, Layout, VirtualAllocator};
///
/// let pages = VirtualAllocator::default();
/// let block = pages.allocate(Layout::from_size_align(10_000, 8)?)?;
/// assert_eq!(block.len() % libdd_alloc::os::page_size()?, 0);
/// // SAFETY: the block came from `pages` with this layout.
/// unsafe { pages.deallocate(block.cast(), Layout::from_size_align(10_000, 8)?) };
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Platforms
/// Available on Unix and Windows only (`cfg(any(unix, windows))`): it needs an OS with
/// virtual memory. Bare-metal targets have the arenas over a buffer the caller owns
/// ([`LinearAllocator::from_buffer`](crate::arena::Linear::from_buffer),
/// [`static_arena!`](crate::static_arena)) and [`ChainAllocator`](crate::ChainAllocator) over an
/// allocator of their own instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VirtualAllocator {}

impl PageBlocks for VirtualAllocator {
    fn map_block(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let page = os::page_size()?;
        let len = os::round_to_pages(layout.size(), page).ok_or(AllocError)?;
        let ptr = os::map_pages_aligned(len, layout.align(), 0, page, MapOptions::default())?;
        Ok(NonNull::slice_from_raw_parts(ptr, len))
    }

    #[inline]
    fn block_len(&self, layout: Layout) -> Result<usize, AllocError> {
        os::round_to_pages(layout.size(), os::page_size()?).ok_or(AllocError)
    }

    unsafe fn unmap_block(&self, ptr: NonNull<u8>, layout: Layout) {
        if let Ok(len) = self.block_len(layout) {
            // SAFETY: the caller gives up the block, which is this whole mapping.
            unsafe { os::unmap(ptr, len) };
        }
    }

    /// Unmaps the tail pages of a block that shrinks; grows one with `mremap` on Linux, where
    /// the kernel moves page tables, not bytes.
    unsafe fn remap_block(
        &self,
        ptr: NonNull<u8>,
        old_len: usize,
        new_len: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        if new_len < old_len {
            // SAFETY: the tail pages are part of the caller's block and beyond the new length.
            unsafe { os::unmap(ptr.add(new_len), old_len - new_len) };
            return Some(ptr);
        }
        // mremap may only move a mapping to a page-aligned address, so larger alignments must
        // stay in place or take the copying path.
        let may_move = align <= os::page_size().ok()?;
        // SAFETY: the caller owns the whole mapping `[ptr, ptr + old_len)`.
        unsafe { os::remap(ptr, old_len, new_len, may_move) }.ok()
    }
}

// SAFETY: blocks are fresh mappings, valid until unmapped by `deallocate` (or moved by `grow`),
// with the requested alignment; copies of the unit struct are interchangeable.
unsafe impl Allocator for VirtualAllocator {
    forward_page_blocks!();
}
