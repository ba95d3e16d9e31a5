//! Windows pages through `VirtualAlloc`/`VirtualFree`. Not compiled by CI (no Windows target
//! library on our machines); kept small and written against the documented API.

use crate::AllocError;
use core::ptr::NonNull;
use windows_sys::Win32::System::Memory::{
    VirtualAlloc, VirtualFree, MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_READWRITE,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};

/// Windows errors go to `GetLastError`, never to the C runtime's `errno`.
#[inline(always)]
pub(crate) fn keep_errno<T>(call: impl FnOnce() -> T) -> T {
    call()
}

fn system_info() -> SYSTEM_INFO {
    let mut info = core::mem::MaybeUninit::<SYSTEM_INFO>::uninit();
    // SAFETY: GetSystemInfo fills the whole struct and cannot fail.
    unsafe {
        GetSystemInfo(info.as_mut_ptr());
        info.assume_init()
    }
}

pub(super) fn query_page_size() -> usize {
    system_info().dwPageSize as usize
}

/// Reserves and commits `len` bytes of zeroed read-write memory.
pub(crate) fn map(len: usize) -> Result<NonNull<u8>, AllocError> {
    // SAFETY: a null address asks the system to choose a fresh region.
    let ptr = unsafe {
        VirtualAlloc(
            core::ptr::null(),
            len,
            MEM_RESERVE | MEM_COMMIT,
            PAGE_READWRITE,
        )
    };
    NonNull::new(ptr.cast::<u8>()).ok_or(AllocError)
}

/// Releases a whole region made by [`map`]; `len` is implied by the region on Windows.
///
/// # Safety
/// `ptr` must be the base of a region returned by [`map`], with no live references into it.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, _len: usize) {
    // SAFETY: the caller hands over the region; MEM_RELEASE requires size 0 and the base.
    let _ = unsafe { VirtualFree(ptr.as_ptr().cast(), 0, MEM_RELEASE) };
}

/// Windows cannot resize a region in place; the caller maps, copies and unmaps.
///
/// # Safety
/// None needed; kept `unsafe` for the same signature on every platform.
pub(crate) unsafe fn remap(
    _ptr: NonNull<u8>,
    _old_len: usize,
    _new_len: usize,
    _may_move: bool,
) -> Result<NonNull<u8>, AllocError> {
    Err(AllocError)
}

/// Regions start at the allocation granularity (64 KiB), so alignments up to it come for free;
/// a larger alignment cannot be had without racy reserve-release-retry loops, so it is an error.
pub(crate) fn map_aligned(
    len: usize,
    align: usize,
    _page: usize,
) -> Result<NonNull<u8>, AllocError> {
    if align > system_info().dwAllocationGranularity as usize {
        return Err(AllocError);
    }
    map(len)
}
