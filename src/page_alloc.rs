//! [`PageAllocator`]: whole pages from the OS, mapped the way [`PageOptions`] asks.

use crate::os::{self, MapOptions};
use crate::page_blocks::{forward_page_blocks, PageBlocks};
use crate::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;

/// Which pages back a [`PageAllocator`] mapping.
///
/// Huge pages cut TLB misses for large, hot blocks; they waste memory on small ones (a block is
/// rounded up to a whole huge page with [`Explicit`](Self::Explicit)).
///
/// Available on Unix and Windows only, as [`PageAllocator`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HugePages {
    /// Normal pages only.
    #[default]
    Normal,
    /// Transparent huge pages: blocks of at least one huge page (2 MiB on x86-64) are aligned to
    /// the huge page size and advised with `madvise(MADV_HUGEPAGE)`. A hint: when THP is off
    /// (`/sys/kernel/mm/transparent_hugepage/enabled` is `never`) or no huge page is free, the
    /// kernel silently uses normal pages. No effect off Linux.
    Transparent,
    /// Explicit huge pages (`MAP_HUGETLB`; `MEM_LARGE_PAGES` on Windows), taken from the
    /// pool the administrator set up (`vm.nr_hugepages`; it is 0 by default). Each block is rounded
    /// up to whole huge pages. **Fallback:** when the system refuses (empty pool, no privilege,
    /// no such pages on this OS), the block is mapped with normal pages instead, with the same
    /// length; on Linux also with the same alignment and the [`Transparent`](Self::Transparent)
    /// advice.
    Explicit,
    /// As [`Explicit`](Self::Explicit) but with no fallback: allocation is `Err` when the system
    /// refuses huge pages.
    ExplicitOnly,
}

/// How a [`PageAllocator`] maps its blocks. A builder: start from [`PageOptions::new`] (every
/// option off, which maps exactly like [`VirtualAllocator`](crate::VirtualAllocator)) and turn
/// options on. Each option has a cost, listed with it; those the system may refuse say what
/// happens then.
///
/// # Examples
/// ```
/// use libdd_alloc::{HugePages, PageOptions};
/// let crash_handler = PageOptions::new().prefault(true).guard_pages_after(1);
/// let big_table = PageOptions::new().huge_pages(HugePages::Transparent);
/// assert_ne!(crash_handler, big_table);
/// ```
///
/// Available on Unix and Windows only, as [`PageAllocator`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PageOptions {
    prefault: bool,
    lock: bool,
    guard_pages_before: usize,
    guard_pages_after: usize,
    huge_pages: HugePages,
    no_reserve: bool,
}

impl PageOptions {
    /// Every option off: plain, lazily-backed, read-write pages.
    pub const fn new() -> Self {
        Self {
            prefault: false,
            lock: false,
            guard_pages_before: 0,
            guard_pages_after: 0,
            huge_pages: HugePages::Normal,
            no_reserve: false,
        }
    }

    /// Faults every page in when the block is mapped, so that first use takes no page fault and
    /// cannot fail for want of memory later (in a crash handler, say).
    ///
    /// Linux 5.14+: one `madvise(MADV_POPULATE_WRITE)`, which, unlike `MAP_POPULATE`, reports
    /// failure: allocation is `Err` when memory is short. Older kernels and other systems touch
    /// each page. **Cost:** about 1.2-1.9 µs per 4 KiB page at allocation, and the memory is
    /// resident from then on.
    pub const fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Locks each block into RAM (`mlock`; `VirtualLock` on Windows), which also faults it in:
    /// it is never swapped out.
    ///
    /// **May be refused:** unprivileged processes may lock at most `RLIMIT_MEMLOCK` bytes in all
    /// (often 64 KiB or 8 MiB); past it allocation is `Err` and the mapping is undone, so nothing
    /// leaks. **Cost:** the prefault cost, plus locked memory the system cannot reclaim.
    pub const fn lock(mut self, lock: bool) -> Self {
        self.lock = lock;
        self
    }

    /// Puts `pages` inaccessible (`PROT_NONE`) pages right after each block, so that a write
    /// past the end of the block's pages faults (SIGSEGV) instead of corrupting a neighbour.
    /// Bytes between the requested size and the end of the last page are not protected: put the
    /// object at the end of its block if that matters.
    ///
    /// **Cost:** address space only (guard pages are never backed by memory), one extra
    /// `mprotect`, and one more kernel mapping per block: a guarded mapping is split in two (three
    /// with guards on both sides), and every piece counts against `vm.max_map_count` (65530
    /// by default). Allocation is `Err` once that is exhausted: about 32 Ki blocks with guards
    /// after them, 21 Ki with guards on both sides. Not available with explicit huge pages.
    pub const fn guard_pages_after(mut self, pages: usize) -> Self {
        self.guard_pages_after = pages;
        self
    }

    /// As [`guard_pages_after`](Self::guard_pages_after), before each block: catches underruns
    /// (a stack growing down into it, negative indices). Same costs.
    pub const fn guard_pages_before(mut self, pages: usize) -> Self {
        self.guard_pages_before = pages;
        self
    }

    /// Which pages back each block: see [`HugePages`] for what each choice costs and how the
    /// system may refuse it.
    pub const fn huge_pages(mut self, huge_pages: HugePages) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Maps with `MAP_NORESERVE`: the block is not charged against the commit limit.
    ///
    /// Worth it only for large, sparsely used blocks under overcommit mode 0 (the default),
    /// whose heuristic may refuse one huge mapping. **Risk:** the memory is then promised by
    /// nobody: when RAM and swap run out, touching a page gets the process OOM-killed (or a
    /// SIGSEGV) instead of allocation returning `Err`. Mode 2 (strict) ignores the flag; off
    /// Linux it is ignored where it does not exist, and on Windows always. Not applied with
    /// explicit huge pages, where it would turn an empty pool into a SIGBUS on first touch.
    pub const fn no_reserve(mut self, no_reserve: bool) -> Self {
        self.no_reserve = no_reserve;
        self
    }
}

/// Allocates whole pages of virtual memory for each block, mapped as its [`PageOptions`] say:
/// prefaulted, locked, fenced by guard pages, backed by huge pages.
///
/// It behaves like [`VirtualAllocator`](crate::VirtualAllocator) otherwise: sizes round up to
/// whole pages (whole huge pages with [`HugePages::Explicit`]) and the block reports its
/// rounded length; fresh pages are zero; alignments above a page are honoured; zero-size layouts
/// map nothing. It implements [`Allocator`], so it can back a
/// [`LinearAllocator`](crate::LinearAllocator) or [`ChainAllocator`](crate::ChainAllocator).
/// Growing or shrinking a block stays in place while its rounded length is unchanged, and
/// otherwise maps a new block, copies and unmaps the old one.
///
/// # Errors
/// Every failure is `Err(AllocError)` and leaves nothing mapped: a size or guard count that
/// rounds past `isize::MAX`, an alignment the platform cannot meet, the OS refusing the mapping
/// (out of memory or address space, `vm.max_map_count`), `mlock` refused (`RLIMIT_MEMLOCK`),
/// prefaulting refused (out of memory, Linux 5.14+), or explicit huge pages refused with
/// [`HugePages::ExplicitOnly`].
///
/// # Signal safety
/// As for `VirtualAllocator`: on Linux every call is a raw syscall (`mmap`, `mprotect`,
/// `madvise`, `mlock`, `munmap`) that takes no lock and leaves `errno` alone, and the page size
/// was read by [`new`](Self::new). A prefaulting allocation takes time proportional to its size.
///
/// # Examples
/// ```
/// use libdd_alloc::{Allocator, Layout, LinearAllocator, PageAllocator, PageOptions};
///
/// // Memory for a crash handler: resident now, and an overrun faults instead of corrupting.
/// let pages = PageAllocator::new(PageOptions::new().prefault(true).guard_pages_after(1))?;
/// let arena = LinearAllocator::new_in(Layout::from_size_align(64 << 10, 8)?, pages)?;
/// let report = arena.allocate(Layout::array::<u8>(1000)?)?;
/// assert_eq!(report.len(), 1000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Platforms
/// Available on Unix and Windows only (`cfg(any(unix, windows))`): it needs an OS with
/// virtual memory. Bare-metal targets have the arenas over a buffer the caller owns
/// ([`LinearAllocator::from_buffer`](crate::arena::Linear::from_buffer),
/// [`static_arena!`](crate::static_arena)) and [`ChainAllocator`](crate::ChainAllocator) over an
/// allocator of their own instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageAllocator {
    options: PageOptions,
}

/// Where the pieces of one block lie, computed the same way on allocation and deallocation.
struct Geometry {
    /// The usable block: its size rounded up to pages (or to huge pages).
    len: usize,
    /// Bytes of guard pages before and after the block.
    before: usize,
    after: usize,
    /// `before + len + after`: the whole mapping.
    total: usize,
    page: usize,
}

impl PageAllocator {
    /// An allocator that maps as `options` say. Reads and caches the page size, so that
    /// allocation makes no query.
    ///
    /// # Errors
    /// `Err(AllocError)` when guard pages are combined with explicit huge pages (the kernel can
    /// only protect whole huge pages), or the page size cannot be read.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{HugePages, PageAllocator, PageOptions};
    /// assert!(PageAllocator::new(PageOptions::new().lock(true)).is_ok());
    /// let both = PageOptions::new().huge_pages(HugePages::Explicit).guard_pages_after(1);
    /// assert!(PageAllocator::new(both).is_err());
    /// ```
    pub fn new(options: PageOptions) -> Result<Self, AllocError> {
        os::page_size()?;
        let explicit = matches!(
            options.huge_pages,
            HugePages::Explicit | HugePages::ExplicitOnly
        );
        if explicit && (options.guard_pages_before != 0 || options.guard_pages_after != 0) {
            return Err(AllocError);
        }
        Ok(Self { options })
    }

    /// The options this allocator maps with.
    pub fn options(&self) -> PageOptions {
        self.options
    }

    fn explicit_huge_pages(&self) -> bool {
        matches!(
            self.options.huge_pages,
            HugePages::Explicit | HugePages::ExplicitOnly
        )
    }

    /// The size every block of `layout` is rounded up to: a page, or a huge page.
    fn granule(&self, page: usize) -> usize {
        if self.explicit_huge_pages() {
            os::huge_page_size(page)
        } else {
            page
        }
    }

    fn geometry(&self, layout: Layout) -> Result<Geometry, AllocError> {
        let page = os::page_size()?;
        let len = os::round_to_pages(layout.size(), self.granule(page)).ok_or(AllocError)?;
        let before = self
            .options
            .guard_pages_before
            .checked_mul(page)
            .ok_or(AllocError)?;
        let after = self
            .options
            .guard_pages_after
            .checked_mul(page)
            .ok_or(AllocError)?;
        let total = len
            .checked_add(before)
            .and_then(|sum| sum.checked_add(after))
            .filter(|&total| total <= isize::MAX as usize)
            .ok_or(AllocError)?;
        Ok(Geometry {
            len,
            before,
            after,
            total,
            page,
        })
    }

    /// Tries `MAP_HUGETLB`. `None` when the system refuses (or the alignment is beyond a huge
    /// page, which it cannot give), so the caller may fall back; `Some(Err)` when the mapping
    /// succeeded but locking or prefaulting it did not.
    fn map_explicit_huge(
        &self,
        geometry: &Geometry,
        align: usize,
    ) -> Option<Result<NonNull<[u8]>, AllocError>> {
        if align > os::huge_page_size(geometry.page) {
            return None;
        }
        let map_options = MapOptions {
            no_reserve: false,
            huge_tlb: true,
        };
        let base = os::map_pages(geometry.len, map_options).ok()?;
        // SAFETY: the mapping is fresh and ours; it has no guard pages (see `new`).
        let prepared = unsafe { self.prepare(base, base, geometry, false) };
        Some(match prepared {
            Ok(()) => Ok(NonNull::slice_from_raw_parts(base, geometry.len)),
            Err(error) => {
                // SAFETY: as above.
                unsafe { os::unmap(base, geometry.total) };
                Err(error)
            }
        })
    }

    /// Applies the options to a fresh mapping `base` whose block starts at `data`.
    ///
    /// # Safety
    /// `base` is a fresh read-write mapping of `geometry.total` bytes, `data = base + before`.
    unsafe fn prepare(
        &self,
        base: NonNull<u8>,
        data: NonNull<u8>,
        geometry: &Geometry,
        transparent: bool,
    ) -> Result<(), AllocError> {
        // SAFETY: every range below lies inside the fresh mapping, per the caller, and nothing
        // refers to it yet.
        unsafe {
            if geometry.before != 0 {
                os::protect_none(base, geometry.before)?;
            }
            if geometry.after != 0 {
                os::protect_none(data.add(geometry.len), geometry.after)?;
            }
            if transparent {
                os::advise_huge_pages(data, geometry.len);
            }
            if self.options.lock {
                // mlock faults every page in, so it also does what `prefault` asks.
                os::lock(data, geometry.len)?;
            } else if self.options.prefault {
                os::populate(data, geometry.len, geometry.page)?;
            }
        }
        Ok(())
    }
}

impl PageBlocks for PageAllocator {
    fn map_block(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let geometry = self.geometry(layout)?;
        let huge = os::huge_page_size(geometry.page);
        let mut align = layout.align().max(geometry.page);
        let transparent = match self.options.huge_pages {
            HugePages::Normal => false,
            // Only where transparent huge pages exist: elsewhere the huge alignment buys
            // nothing (Windows has none).
            HugePages::Transparent => os::TRANSPARENT_HUGE_PAGES && geometry.len >= huge,
            HugePages::Explicit | HugePages::ExplicitOnly => {
                // Explicit huge pages start on a huge page boundary.
                if let Some(block) = self.map_explicit_huge(&geometry, align.max(huge)) {
                    return block;
                }
                if self.options.huge_pages == HugePages::ExplicitOnly {
                    return Err(AllocError);
                }
                // The fallback keeps the huge alignment where transparent huge pages can use it
                // (`geometry.len` is whole huge pages).
                os::TRANSPARENT_HUGE_PAGES
            }
        };
        if transparent {
            align = align.max(huge);
        }
        let map_options = MapOptions {
            no_reserve: self.options.no_reserve,
            huge_tlb: false,
        };
        let base = os::map_pages_aligned(
            geometry.total,
            align,
            geometry.before,
            geometry.page,
            map_options,
        )?;
        // SAFETY: `before` is inside the mapping of `total >= before + len` bytes just made.
        let data = unsafe { base.add(geometry.before) };
        // SAFETY: the mapping is fresh and ours; nothing refers to any of it yet.
        match unsafe { self.prepare(base, data, &geometry, transparent) } {
            Ok(()) => Ok(NonNull::slice_from_raw_parts(data, geometry.len)),
            Err(error) => {
                // SAFETY: as above: undo the whole mapping, guards included.
                unsafe { os::unmap(base, geometry.total) };
                Err(error)
            }
        }
    }

    #[inline]
    fn block_len(&self, layout: Layout) -> Result<usize, AllocError> {
        Ok(self.geometry(layout)?.len)
    }

    unsafe fn unmap_block(&self, ptr: NonNull<u8>, layout: Layout) {
        if let Ok(geometry) = self.geometry(layout) {
            // SAFETY: the block came from `map_block` with this geometry: its mapping starts
            // `before` bytes earlier and is `total` long. The caller gives it up.
            unsafe { os::unmap(ptr.sub(geometry.before), geometry.total) };
        }
    }
}

// SAFETY: blocks are fresh mappings (disjoint, aligned as asked, valid until `deallocate`, which
// unmaps exactly the mapping `map_block` made: `geometry` depends only on the layout and the
// options, and every layout the contract allows for a block rounds to the same length). Copies
// of the allocator have the same options, so they are interchangeable.
unsafe impl Allocator for PageAllocator {
    forward_page_blocks!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_puts_guards_around_a_page_rounded_block() {
        let page = os::page_size().unwrap();
        let options = PageOptions::new()
            .guard_pages_before(2)
            .guard_pages_after(3);
        let allocator = PageAllocator::new(options).unwrap();
        let geometry = allocator
            .geometry(Layout::from_size_align(page + 1, 8).unwrap())
            .unwrap();
        assert_eq!(geometry.len, 2 * page);
        assert_eq!((geometry.before, geometry.after), (2 * page, 3 * page));
        assert_eq!(geometry.total, 7 * page);
    }

    #[test]
    fn every_size_up_to_the_returned_length_unmaps_the_same_mapping() {
        let page = os::page_size().unwrap();
        let allocator = PageAllocator::new(PageOptions::new().guard_pages_after(1)).unwrap();
        let requested = allocator
            .geometry(Layout::from_size_align(10, 8).unwrap())
            .unwrap();
        let returned = allocator
            .geometry(Layout::from_size_align(page, 8).unwrap())
            .unwrap();
        assert_eq!(requested.total, returned.total);
    }

    #[test]
    fn explicit_huge_pages_round_blocks_to_whole_huge_pages() {
        let page = os::page_size().unwrap();
        let allocator =
            PageAllocator::new(PageOptions::new().huge_pages(HugePages::Explicit)).unwrap();
        let geometry = allocator
            .geometry(Layout::from_size_align(1, 1).unwrap())
            .unwrap();
        assert_eq!(geometry.len, os::huge_page_size(page));
    }

    #[test]
    fn guard_counts_that_overflow_are_an_error() {
        let options = PageOptions::new().guard_pages_after(usize::MAX / 2);
        let allocator = PageAllocator::new(options).unwrap();
        assert!(allocator.allocate(Layout::new::<u8>()).is_err());
    }
}
