//! The operating system's page allocator: the only module that talks to the OS.
//!
//! Available on Unix and Windows only (`cfg(any(unix, windows))`): bare-metal targets have no
//! `os` module.
//!
//! Every other module asks for whole pages through the functions here, so platform `cfg`s stay
//! in this folder. On Linux the calls are raw syscalls (rustix's `linux_raw` backend, on x86,
//! x86_64, arm, aarch64 and riscv64): they cannot be interposed by an `LD_PRELOAD`ed allocator
//! and never write `errno`. On Android, the other Unix systems and Linux on other architectures
//! rustix goes through libc, and `errno` is saved and restored around each call. On Windows they
//! are `VirtualAlloc`/`VirtualFree`, which report errors through `GetLastError`, not `errno`.
//!
//! Besides mapping pages, the layer offers the virtual memory controls the page allocator and the
//! reserve-then-commit arena need, under platform-neutral names: `reserve` (address space
//! only), `commit` (make part of it read-write: where a refusal shows up as `Err`),
//! `protect_none` (guard pages), `lock`, `populate` (prefault), `advise_huge_pages`,
//! `release_pages` (give pages back, keep the range), and `map_pages` with `MapOptions`.
//!
//! # Signal safety
//! Every path that needs the page size (allocation, growth, deallocation: `VirtualAllocator`'s
//! `deallocate` rounds the length to pages) reads it through [`page_size`], which is one relaxed
//! load of a cached value after the first call in the process (made by any arena constructor
//! that maps pages). On Linux even that first read makes no libc call: it is a few raw
//! zero-length `mprotect`, `madvise` and `msync` syscalls that change nothing (whose answers must
//! agree). Elsewhere it is libc `sysconf(_SC_PAGESIZE)` with
//! `errno` kept, and on 32-bit x86 Linux rustix's first syscall in the process finds the vDSO
//! through libc (`dlsym`): there, call [`page_size`] once before installing a handler. The
//! map/unmap primitives are async-signal-safe in practice on Linux: a raw `mmap` syscall takes
//! no user-space lock.

use crate::AllocError;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

/// The page size, or 0 before the first successful read.
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The size of a virtual memory page, in bytes: the unit in which [`VirtualAllocator`] hands out
/// memory.
///
/// Read from the OS once and cached; later calls are one relaxed atomic load. On Linux the first
/// read is raw zero-length `mprotect(addr, 0, PROT_NONE)` syscalls (13 with 4 KiB pages, at most
/// 31), which change no mapping: the page size is the smallest power of two the kernel accepts
/// as a page-aligned address, taken only when the answers prove it (the one below was rejected
/// as misaligned, this one accepted). `madvise(addr, 0, MADV_NORMAL)` and
/// `msync(addr, 0, MS_ASYNC)` are asked the same way, so that a sandbox refusing `mprotect` (a
/// seccomp filter answering `EPERM` or `ENOSYS`) leaves two ways to find it, and one lying about
/// some addresses only is caught: every probe that proves a page size must prove the same one.
/// No libc call, no `errno` write, no panic.
/// Elsewhere the first read is libc `sysconf(_SC_PAGESIZE)` (Windows: `GetSystemInfo`), with
/// `errno` kept.
///
/// # Signal safety
/// Async-signal-safe on Linux x86_64, aarch64, arm and riscv64, from the first call. Elsewhere
/// only once cached, so call it before installing a handler: off Linux the first read is libc,
/// and on 32-bit x86 Linux the first syscall rustix makes in the process looks up the vDSO's
/// syscall entry through libc (`dlsym`, `getauxval`), which may take the dynamic loader's lock.
///
/// # Errors
/// `Err(AllocError)` if the OS reports a page size that is not a power of two; on Linux, when
/// none of the three probes answers in a way that proves a page size (a sandbox refusing
/// `mprotect`, `madvise` and `msync`), or two prove different ones (a sandbox lying about some
/// addresses). Every allocator that needs the page size then fails with
/// `Err` too. A failure is not cached: the next call probes again.
///
/// # Examples
/// ```
/// let page = libdd_alloc::os::page_size()?;
/// assert!(page.is_power_of_two());
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
///
/// [`VirtualAllocator`]: crate::VirtualAllocator
#[inline]
pub fn page_size() -> Result<usize, AllocError> {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => read_and_cache_page_size(),
        size => Ok(size),
    }
}

#[cold]
fn read_and_cache_page_size() -> Result<usize, AllocError> {
    let size = query_page_size();
    if !size.is_power_of_two() {
        return Err(AllocError);
    }
    // Racing initialisers all store the same value.
    PAGE_SIZE.store(size, Ordering::Relaxed);
    Ok(size)
}

/// How [`map_pages`] maps fresh read-write memory. Each field is a request that a platform
/// without the feature ignores (`no_reserve`) or refuses with `Err` (`huge_tlb`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MapOptions {
    /// `MAP_NORESERVE`: do not count the mapping against the commit limit (overcommit modes 0
    /// and 1 honour it; mode 2 ignores it). Ignored where the flag does not exist.
    pub no_reserve: bool,
    /// `MAP_HUGETLB` / `MEM_LARGE_PAGES`: back the mapping with explicit huge pages. The length
    /// must be a multiple of [`huge_page_size`]. `Err` when the pool is empty or the platform has
    /// no such pages.
    pub huge_tlb: bool,
}

/// Resizes a mapping in place or moves it: `mremap`, which only Linux has (`unix.rs`). Here
/// always `Err`: Windows cannot resize a region in place, nor the other Unix systems a mapping,
/// so the caller maps, copies and unmaps.
///
/// # Safety
/// None needed; kept `unsafe` for the same signature on every platform.
#[cfg(not(target_os = "linux"))]
pub(crate) unsafe fn remap(
    _ptr: NonNull<u8>,
    _old_len: usize,
    _new_len: usize,
    _may_move: bool,
) -> Result<NonNull<u8>, AllocError> {
    Err(AllocError)
}

/// The size of a huge page: the span one page-table page maps at the next level up.
///
/// On Linux that is `(page / 8) * page` (eight-byte entries): 2 MiB with 4 KiB pages, 32 MiB with
/// 16 KiB pages, 512 MiB with 64 KiB pages, which is what both transparent huge pages and the
/// default `MAP_HUGETLB` pool use. Windows asks `GetLargePageMinimum`.
pub(crate) fn huge_page_size(page: usize) -> usize {
    query_huge_page_size(page)
}

/// Faults in every page of `[ptr, ptr + len)` by reading and writing back one byte per page,
/// which leaves the contents unchanged. The portable way to prefault.
///
/// # Safety
/// The range must be mapped readable and writable, and `page` must be the page size.
pub(crate) unsafe fn touch_pages(ptr: NonNull<u8>, len: usize, page: usize) {
    let mut offset = 0;
    while offset < len {
        // SAFETY: `offset < len`, so the byte is inside the caller's read-write range; volatile
        // so the compiler cannot drop a store of the value just loaded.
        unsafe {
            let byte = ptr.as_ptr().add(offset);
            byte.write_volatile(byte.read_volatile());
        }
        offset += page;
    }
}

/// Rounds `size` up to whole pages; a zero size stays zero. `None` when the result would not fit
/// in an `isize` (the largest object Rust allows).
#[inline]
pub(crate) fn round_to_pages(size: usize, page: usize) -> Option<usize> {
    let rounded = crate::bump::align_up(size, page)?;
    if rounded > isize::MAX as usize {
        return None;
    }
    Some(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_cached_and_a_power_of_two() {
        let first = page_size().unwrap();
        assert!(first.is_power_of_two());
        assert_eq!(PAGE_SIZE.load(Ordering::Relaxed), first);
        assert_eq!(page_size().unwrap(), first);
    }

    #[cfg(unix)]
    #[test]
    fn queried_page_size_is_the_one_libc_reports() {
        // SAFETY: sysconf with a valid name has no preconditions.
        let libc_page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        assert_eq!(query_page_size(), usize::try_from(libc_page).unwrap());
        #[cfg(target_os = "linux")]
        // SAFETY: getauxval with any key has no preconditions.
        assert_eq!(query_page_size() as u64, unsafe {
            libc::getauxval(libc::AT_PAGESZ) as u64
        });
    }

    #[test]
    fn round_to_pages_rejects_sizes_past_isize_max() {
        assert_eq!(round_to_pages(0, 4096), Some(0));
        assert_eq!(round_to_pages(1, 4096), Some(4096));
        assert_eq!(round_to_pages(8192, 4096), Some(8192));
        assert_eq!(round_to_pages(isize::MAX as usize, 4096), None);
        assert_eq!(round_to_pages(usize::MAX, 4096), None);
    }

    #[test]
    fn map_gives_zeroed_writable_pages_and_unmap_returns_them() {
        let page = page_size().unwrap();
        let len = 3 * page;
        let ptr = map_pages(len, MapOptions::default()).unwrap();
        // SAFETY: `map` returned `len` readable and writable bytes.
        let bytes = unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes.fill(0xA5);
        // SAFETY: the mapping is ours and no reference to it outlives this call.
        unsafe { unmap(ptr, len) };
    }

    #[test]
    fn committed_part_of_a_reservation_is_writable_and_released_pages_read_back_zero() {
        let page = page_size().unwrap();
        let base = reserve(64 * page).unwrap();
        // SAFETY: the first four pages of our reservation.
        unsafe { commit(base, 4 * page) }.unwrap();
        // SAFETY: committed read-write above.
        let bytes = unsafe { core::slice::from_raw_parts_mut(base.as_ptr(), 4 * page) };
        bytes.fill(0x5A);
        // SAFETY: committed, ours, and `bytes` is not used again before it is re-read below.
        unsafe { release_pages(base, 4 * page) }.unwrap();
        // SAFETY: still committed read-write.
        let bytes = unsafe { core::slice::from_raw_parts(base.as_ptr(), 4 * page) };
        assert!(bytes.iter().all(|&b| b == 0));
        // SAFETY: the whole reservation is ours.
        unsafe { unmap(base, 64 * page) };
    }

    #[test]
    fn populate_and_lock_keep_contents() {
        let page = page_size().unwrap();
        let ptr = map_pages(2 * page, MapOptions::default()).unwrap();
        // SAFETY: fresh read-write mapping of two pages.
        unsafe {
            ptr.as_ptr().write(7);
            populate(ptr, 2 * page, page).unwrap();
            lock(ptr, 2 * page).unwrap();
            assert_eq!(ptr.as_ptr().read(), 7);
            assert_eq!(ptr.as_ptr().add(page).read(), 0);
            unmap(ptr, 2 * page);
        }
    }

    #[test]
    fn map_pages_aligned_aligns_the_offset_not_the_base() {
        let page = page_size().unwrap();
        let align = 16 * page;
        let base = map_pages_aligned(4 * page, align, page, page, MapOptions::default()).unwrap();
        assert_eq!((base.as_ptr().addr() + page) % align, 0);
        // SAFETY: the mapping is ours.
        unsafe { unmap(base, 4 * page) };
    }

    #[test]
    fn huge_page_size_is_a_power_of_two_multiple_of_the_page() {
        let page = page_size().unwrap();
        let huge = huge_page_size(page);
        assert!(huge.is_power_of_two() && huge >= page);
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        assert_eq!(huge, 2 << 20);
    }

    #[test]
    fn map_of_an_absurd_size_is_an_error() {
        // Past the 64-bit address space; on 32-bit, where 2 GiB may map, past the 4 GiB one.
        #[cfg(target_pointer_width = "64")]
        let absurd = isize::MAX as usize & !0xFFFF;
        #[cfg(target_pointer_width = "32")]
        let absurd = usize::MAX & !0xFFFF;
        assert!(map_pages(absurd, MapOptions::default()).is_err());
    }
}
