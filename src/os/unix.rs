//! Unix pages through rustix: raw syscalls on Linux/Android, libc (with `errno` kept) elsewhere.

use crate::AllocError;
use core::ffi::c_void;
use core::ptr::NonNull;
use rustix::mm::{MapFlags, ProtFlags};

/// Runs an OS call without letting it change `errno`, which the interrupted code may be about
/// to read. On Linux rustix makes raw syscalls that never touch `errno`, so this is free.
#[inline(always)]
pub(crate) fn keep_errno<T>(call: impl FnOnce() -> T) -> T {
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let saved = errno::errno();
        let result = call();
        errno::set_errno(saved);
        result
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        call()
    }
}

pub(super) fn query_page_size() -> usize {
    keep_errno(rustix::param::page_size)
}

/// Maps `len` bytes (a non-zero multiple of the page size) of fresh, zeroed, read-write,
/// private anonymous memory.
///
/// # Errors
/// `Err(AllocError)` when the OS refuses (`ENOMEM`, address space or map count exhausted).
pub(crate) fn map(len: usize) -> Result<NonNull<u8>, AllocError> {
    map_with(len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE)
}

/// Maps `len` bytes of private anonymous memory with the given protection and flags.
pub(crate) fn map_with(
    len: usize,
    prot: ProtFlags,
    flags: MapFlags,
) -> Result<NonNull<u8>, AllocError> {
    // SAFETY: a null hint without MAP_FIXED creates a new mapping and cannot disturb any
    // existing memory.
    let result = keep_errno(|| unsafe {
        rustix::mm::mmap_anonymous(core::ptr::null_mut(), len, prot, flags)
    });
    match result {
        Ok(addr) => NonNull::new(addr.cast::<u8>()).ok_or(AllocError),
        Err(_) => Err(AllocError),
    }
}

/// Unmaps `[ptr, ptr + len)`. Failure is ignored: it can only mean the range was not mapped,
/// and there is nothing better to do in a deallocation path than to leak it.
///
/// # Safety
/// The range must be a page-aligned part of a mapping made here, with no live references to it.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller hands over the range.
    let _ = keep_errno(|| unsafe { rustix::mm::munmap(ptr.as_ptr().cast::<c_void>(), len) });
}

/// Resizes the mapping `[ptr, ptr + old_len)` to `new_len` bytes with `mremap`, moving it if
/// `may_move`. Grown bytes are zero. Linux only; elsewhere always `Err`, and the caller copies.
///
/// # Safety
/// The range must be a whole mapping made here; if it moves, the old addresses are dead.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) unsafe fn remap(
    ptr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    may_move: bool,
) -> Result<NonNull<u8>, AllocError> {
    let flags = if may_move {
        rustix::mm::MremapFlags::MAYMOVE
    } else {
        rustix::mm::MremapFlags::empty()
    };
    // SAFETY: the caller owns the whole mapping; mremap either resizes it or fails untouched.
    let result = unsafe { rustix::mm::mremap(ptr.as_ptr().cast(), old_len, new_len, flags) };
    match result {
        Ok(addr) => NonNull::new(addr.cast::<u8>()).ok_or(AllocError),
        Err(_) => Err(AllocError),
    }
}

/// `mremap` is Linux-only: elsewhere the caller maps, copies and unmaps.
///
/// # Safety
/// None needed; kept `unsafe` for the same signature on every platform.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) unsafe fn remap(
    _ptr: NonNull<u8>,
    _old_len: usize,
    _new_len: usize,
    _may_move: bool,
) -> Result<NonNull<u8>, AllocError> {
    Err(AllocError)
}

/// Maps `len` bytes aligned to `align` (a power of two larger than a page): maps
/// `len + align - page` bytes and unmaps the misaligned head and the unused tail.
pub(crate) fn map_aligned(
    len: usize,
    align: usize,
    page: usize,
) -> Result<NonNull<u8>, AllocError> {
    let slack = align - page;
    let total = len.checked_add(slack).ok_or(AllocError)?;
    if total > isize::MAX as usize {
        return Err(AllocError);
    }
    let base = map(total)?;
    let base_addr = base.as_ptr().addr();
    let head = base_addr.wrapping_neg() & (align - 1);
    let tail = slack - head;
    // SAFETY: head and tail are page multiples (both `base` and `align` are page aligned) inside
    // the mapping just made; nothing refers to them.
    unsafe {
        if head != 0 {
            unmap(base, head);
        }
        let aligned = base.add(head);
        if tail != 0 {
            unmap(aligned.add(len), tail);
        }
        Ok(aligned)
    }
}
