//! Windows pages through `VirtualAlloc`/`VirtualFree`. Not compiled by CI (no Windows target
//! library on our machines); kept small and written against the documented API.

use super::MapOptions;
use crate::AllocError;
use core::ptr::NonNull;
use windows_sys::Win32::System::Memory::{
    GetLargePageMinimum, VirtualAlloc, VirtualFree, VirtualLock, VirtualProtect, VirtualQuery,
    MEMORY_BASIC_INFORMATION, MEM_COMMIT, MEM_DECOMMIT, MEM_LARGE_PAGES, MEM_RELEASE, MEM_RESERVE,
    PAGE_NOACCESS, PAGE_PROTECTION_FLAGS, PAGE_READWRITE,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};

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

/// Gives back `[ptr, ptr + len)`. A whole region (`ptr` is its base) is released; the tail of a
/// region (as `VirtualAllocator::shrink` gives back) cannot be released on Windows, so its pages
/// are decommitted instead and the address range goes with the rest of the region.
///
/// # Safety
/// `[ptr, ptr + len)` must be a region returned by [`map`] or a page-aligned tail of one, with no
/// live references into it.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    let mut info = core::mem::MaybeUninit::<MEMORY_BASIC_INFORMATION>::uninit();
    let size = core::mem::size_of::<MEMORY_BASIC_INFORMATION>();
    // SAFETY: VirtualQuery writes at most `size` bytes into `info` and reads no memory at `ptr`.
    let written = unsafe { VirtualQuery(ptr.as_ptr().cast(), info.as_mut_ptr(), size) };
    // SAFETY: a non-zero return means the struct was filled.
    let is_base =
        written != 0 && unsafe { info.assume_init() }.AllocationBase == ptr.as_ptr().cast();
    // SAFETY: the caller hands the range over. MEM_RELEASE takes the region base and size 0;
    // MEM_DECOMMIT takes any page-aligned range inside one region.
    let _ = unsafe {
        if is_base {
            VirtualFree(ptr.as_ptr().cast(), 0, MEM_RELEASE)
        } else {
            VirtualFree(ptr.as_ptr().cast(), len, MEM_DECOMMIT)
        }
    };
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
    page: usize,
) -> Result<NonNull<u8>, AllocError> {
    map_pages_aligned(len, align, 0, page, MapOptions::default())
}

/// Windows has no transparent large pages: nothing gains from aligning a block to one (and
/// an alignment above the 64 KiB allocation granularity cannot be had at all).
pub(crate) const TRANSPARENT_HUGE_PAGES: bool = false;

/// `GetLargePageMinimum`, or the normal page size when large pages are unsupported (it returns 0).
pub(super) fn query_huge_page_size(page: usize) -> usize {
    // SAFETY: GetLargePageMinimum takes no arguments and cannot fail.
    match unsafe { GetLargePageMinimum() } {
        0 => page,
        size => size,
    }
}

/// Reserves and commits `len` bytes of zeroed read-write memory; with `huge_tlb`, large pages
/// (`MEM_LARGE_PAGES`: needs `SeLockMemoryPrivilege` and a multiple of `GetLargePageMinimum`,
/// else `Err`). `no_reserve` has no Windows equivalent: a committed page is always charged.
pub(crate) fn map_pages(len: usize, options: MapOptions) -> Result<NonNull<u8>, AllocError> {
    let mut kind = MEM_RESERVE | MEM_COMMIT;
    if options.huge_tlb {
        kind |= MEM_LARGE_PAGES;
    }
    // SAFETY: a null address asks the system to choose a fresh region.
    let ptr = unsafe { VirtualAlloc(core::ptr::null(), len, kind, PAGE_READWRITE) };
    NonNull::new(ptr.cast::<u8>()).ok_or(AllocError)
}

/// Maps `len` bytes such that `base + offset` is aligned to `align`, and returns `base`.
/// Regions start at the allocation granularity, so this works when `align` is at most that and
/// `offset` is a multiple of `align`; anything else is `Err` (see [`map_aligned`]).
pub(crate) fn map_pages_aligned(
    len: usize,
    align: usize,
    offset: usize,
    page: usize,
    options: MapOptions,
) -> Result<NonNull<u8>, AllocError> {
    if align > page
        && (align > system_info().dwAllocationGranularity as usize || offset & (align - 1) != 0)
    {
        return Err(AllocError);
    }
    map_pages(len, options)
}

/// Reserves `len` bytes of address space (`MEM_RESERVE`, `PAGE_NOACCESS`): no memory and no
/// commit charge until parts are [`commit`]ted.
pub(crate) fn reserve(len: usize) -> Result<NonNull<u8>, AllocError> {
    // SAFETY: a null address asks the system to choose a fresh region.
    let ptr = unsafe { VirtualAlloc(core::ptr::null(), len, MEM_RESERVE, PAGE_NOACCESS) };
    NonNull::new(ptr.cast::<u8>()).ok_or(AllocError)
}

/// Commits `[ptr, ptr + len)` of a reservation read-write (`MEM_COMMIT`). Windows charges the
/// commit limit here, so an exhausted page file is an `Err` here, never a fault on first touch.
///
/// # Safety
/// The range must be part of a region reserved here.
pub(crate) unsafe fn commit(ptr: NonNull<u8>, len: usize) -> Result<(), AllocError> {
    // SAFETY: committing inside our own reservation; committed pages are zero or keep contents.
    let got = unsafe { VirtualAlloc(ptr.as_ptr().cast(), len, MEM_COMMIT, PAGE_READWRITE) };
    if got.is_null() {
        Err(AllocError)
    } else {
        Ok(())
    }
}

/// Makes `[ptr, ptr + len)` inaccessible (`PAGE_NOACCESS`), for guard pages. Not `PAGE_GUARD`,
/// which disarms itself after the first access.
///
/// # Safety
/// The range must be part of a region made here, with no live references to it.
pub(crate) unsafe fn protect_none(ptr: NonNull<u8>, len: usize) -> Result<(), AllocError> {
    let mut old: PAGE_PROTECTION_FLAGS = 0;
    // SAFETY: the caller owns the range; `old` is a valid place for the previous protection.
    let ok = unsafe { VirtualProtect(ptr.as_ptr().cast(), len, PAGE_NOACCESS, &mut old) };
    if ok == 0 {
        Err(AllocError)
    } else {
        Ok(())
    }
}

/// Locks `[ptr, ptr + len)` into the working set (`VirtualLock`). Fails past the process's
/// minimum working set size. Releasing the region unlocks it.
///
/// # Safety
/// The range must be committed memory of a region made here.
pub(crate) unsafe fn lock(ptr: NonNull<u8>, len: usize) -> Result<(), AllocError> {
    // SAFETY: the caller owns the committed range; locking does not change its contents.
    if unsafe { VirtualLock(ptr.as_ptr().cast(), len) } == 0 {
        Err(AllocError)
    } else {
        Ok(())
    }
}

/// Windows has no advice for transparent large pages.
///
/// # Safety
/// None needed; kept `unsafe` for the same signature on every platform.
pub(crate) unsafe fn advise_huge_pages(_ptr: NonNull<u8>, _len: usize) {}

/// Faults in every page of `[ptr, ptr + len)` by touching it.
///
/// # Safety
/// The range must be committed read-write memory; `page` must be the page size.
pub(crate) unsafe fn populate(ptr: NonNull<u8>, len: usize, page: usize) -> Result<(), AllocError> {
    // SAFETY: forwarded caller contract.
    unsafe { super::touch_pages(ptr, len, page) };
    Ok(())
}

/// Gives the pages of `[ptr, ptr + len)` back and commits them again, so they read back as
/// zero and stay usable. `MEM_RESET` would be cheaper but, like Linux's `MADV_FREE`, leaves
/// the contents undefined.
///
/// # Errors
/// `Err(AllocError)` when the decommit or the recommit is refused (the commit limit may be
/// reached in between): the pages may then be decommitted, and must be committed again before
/// use.
///
/// # Safety
/// The range must be committed read-write memory of a region made here, with no live
/// references to it.
pub(crate) unsafe fn release_pages(ptr: NonNull<u8>, len: usize) -> Result<(), AllocError> {
    // SAFETY: the caller hands over the contents; the range stays reserved.
    if unsafe { VirtualFree(ptr.as_ptr().cast(), len, MEM_DECOMMIT) } == 0 {
        return Err(AllocError);
    }
    // SAFETY: the range is still part of our reservation.
    unsafe { commit(ptr, len) }
}
