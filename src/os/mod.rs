//! The operating system's page allocator: the only module that talks to the OS.
//!
//! Every other module asks for whole pages through the functions here, so platform `cfg`s stay
//! in this folder. On Linux and Android the calls are raw syscalls (rustix's `linux_raw` backend):
//! they cannot be interposed by an `LD_PRELOAD`ed allocator and never write `errno`. On other Unix
//! systems they go through libc, and `errno` is saved and restored around each call. On Windows
//! they are `VirtualAlloc`/`VirtualFree`, which report errors through `GetLastError`, not `errno`.
//!
//! # Signal safety
//! [`page_size`] is cached after the first call (made by any arena constructor that maps pages),
//! so allocation paths never call `sysconf`. The map/unmap primitives are async-signal-safe in
//! practice on Linux: a raw `mmap` syscall takes no user-space lock.

use crate::AllocError;
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
/// Read from the OS once and cached; later calls are one relaxed atomic load, so this is cheap and
/// async-signal-safe after the first call.
///
/// # Errors
/// `Err(AllocError)` if the OS reports a page size that is not a power of two.
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
        let ptr = map(len).unwrap();
        // SAFETY: `map` returned `len` readable and writable bytes.
        let bytes = unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes.fill(0xA5);
        // SAFETY: the mapping is ours and no reference to it outlives this call.
        unsafe { unmap(ptr, len) };
    }

    #[test]
    fn map_of_an_absurd_size_is_an_error() {
        assert!(map(isize::MAX as usize & !0xFFFF).is_err());
    }
}
