//! [`VirtualAllocator`]: whole pages straight from the operating system.

use crate::bump::dangling;
use crate::{os, AllocError, Allocator};
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

/// The number of bytes a block of `layout` really occupies: its size rounded up to pages.
#[inline]
fn mapped_len(layout: Layout) -> Result<usize, AllocError> {
    os::round_to_pages(layout.size(), os::page_size()?).ok_or(AllocError)
}

/// Maps a fresh, zeroed block for the non-zero-size `layout`.
fn map_block(layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
    let page = os::page_size()?;
    let len = os::round_to_pages(layout.size(), page).ok_or(AllocError)?;
    let ptr = if layout.align() <= page {
        os::map(len)?
    } else {
        os::map_aligned(len, layout.align(), page)?
    };
    Ok(NonNull::slice_from_raw_parts(ptr, len))
}

// SAFETY: blocks are fresh mappings, valid until unmapped by `deallocate` (or moved by `grow`),
// with the requested alignment; copies of the unit struct are interchangeable.
unsafe impl Allocator for VirtualAllocator {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.allocate_zeroed(layout)
    }

    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        map_block(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        // The caller passes a layout that fits the block, so it rounds to the mapped length.
        if let Ok(len) = mapped_len(layout) {
            // SAFETY: the caller guarantees the block is ours and no longer used.
            unsafe { os::unmap(ptr, len) };
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract for `grow` is exactly `resize`'s.
        unsafe { self.resize(ptr, old, new) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: as for `grow`.
        let block = unsafe { self.resize(ptr, old, new) }?;
        // Bytes past the old mapped length are fresh pages (zero); only the slack between the
        // old size and the end of its last page may hold old data.
        let old_len = if old.size() == 0 { 0 } else { mapped_len(old)? };
        let dirty_end = old_len.min(new.size());
        if dirty_end > old.size() {
            // SAFETY: `[old.size(), dirty_end)` is inside the new block, which we own.
            unsafe {
                block
                    .cast::<u8>()
                    .add(old.size())
                    .write_bytes(0, dirty_end - old.size())
            };
        }
        Ok(block)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract for `shrink` is exactly `resize`'s.
        unsafe { self.resize(ptr, old, new) }
    }
}

impl VirtualAllocator {
    /// Resizes a block, in place when the OS can, else by moving it.
    ///
    /// # Safety
    /// `ptr` is a block of `old` from this allocator, as the `Allocator::grow` contract says.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() == 0 {
            return self.allocate_zeroed(new);
        }
        let page = os::page_size()?;
        let old_len = mapped_len(old)?;
        if new.size() == 0 {
            // SAFETY: the caller gives the block up.
            unsafe { self.deallocate(ptr, old) };
            return Ok(dangling(new));
        }
        let new_len = os::round_to_pages(new.size(), page).ok_or(AllocError)?;
        let aligned = ptr.as_ptr().addr() & (new.align() - 1) == 0;
        if aligned && new_len == old_len {
            return Ok(NonNull::slice_from_raw_parts(ptr, new_len));
        }
        if aligned && new_len < old_len {
            // SAFETY: the tail pages are part of the caller's block and beyond the new size.
            unsafe { os::unmap(ptr.add(new_len), old_len - new_len) };
            return Ok(NonNull::slice_from_raw_parts(ptr, new_len));
        }
        // mremap may only move a mapping to a page-aligned address, so larger alignments must
        // stay in place or take the copying path.
        let may_move = new.align() <= page;
        if aligned {
            // SAFETY: the caller owns the whole mapping `[ptr, ptr + old_len)`.
            if let Ok(moved) = unsafe { os::remap(ptr, old_len, new_len, may_move) } {
                return Ok(NonNull::slice_from_raw_parts(moved, new_len));
            }
        }
        let block = map_block(new)?;
        let keep = old.size().min(new.size());
        // SAFETY: both blocks are ours, distinct mappings, each at least `keep` bytes long.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), block.cast::<u8>().as_ptr(), keep);
            os::unmap(ptr, old_len);
        }
        Ok(block)
    }
}
