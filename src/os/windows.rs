//! Windows pages through `VirtualAlloc`/`VirtualFree`. CI builds and runs the test suite under
//! Wine (`scripts/test-windows.sh`), whose `VirtualAlloc` is a reimplementation, not Windows'.
//!
//! Windows places every region at a multiple of the allocation granularity (64 KiB) and frees a
//! region only whole, from its base. So an alignment the granularity does not give is had by
//! reserving a larger probe region, releasing it, and reserving inside the range it occupied
//! ([`map_pages_aligned`]); the uncommitted pages it may leave before the block tell [`unmap`]
//! to release the whole region.

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

/// Gives back `[ptr, ptr + len)`. A whole region is released: one whose base is `ptr`, or that
/// has only reserved, never committed, pages before `ptr` (the padding [`map_pages_aligned`]
/// leaves). Any other range, such as the tail of a region that `VirtualAllocator::shrink` gives
/// back, cannot be released on Windows: its pages are decommitted instead, and the address range
/// goes with the rest of the region.
///
/// # Safety
/// `[ptr, ptr + len)` must be a block returned by [`map_pages`], [`map_pages_aligned`]
/// or [`reserve`], or a page-aligned tail of one, with no live references into it.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: forwarded caller contract.
    let _ = unsafe { give_back(ptr, len) };
}

/// What [`give_back`] did with a range, for the tests: they cannot check afterwards that an
/// address is free, since another thread of the process may map it the moment it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))] // only the tests read what was released
enum GivenBack {
    /// `VirtualFree(MEM_RELEASE)` of the whole region starting at this address succeeded.
    Released(*mut u8),
    /// `VirtualFree(MEM_DECOMMIT)` of the range succeeded; its address range stays reserved.
    Decommitted,
    /// `VirtualQuery` or `VirtualFree` failed: nothing was given back.
    Failed,
}

/// [`unmap`], saying what it did.
///
/// # Safety
/// As for [`unmap`].
unsafe fn give_back(ptr: NonNull<u8>, len: usize) -> GivenBack {
    let Some(here) = query(ptr.as_ptr()) else {
        return GivenBack::Failed;
    };
    let region = here.AllocationBase.cast::<u8>();
    let whole_region = region == ptr.as_ptr()
        || query(region).is_some_and(|head| {
            head.State == MEM_RESERVE && region.wrapping_add(head.RegionSize) == ptr.as_ptr()
        });
    // SAFETY: the caller hands the range over. MEM_RELEASE takes the region base and size 0;
    // MEM_DECOMMIT takes any page-aligned range inside one region.
    unsafe {
        if whole_region {
            if VirtualFree(region.cast(), 0, MEM_RELEASE) != 0 {
                return GivenBack::Released(region);
            }
        } else if VirtualFree(ptr.as_ptr().cast(), len, MEM_DECOMMIT) != 0 {
            return GivenBack::Decommitted;
        }
    }
    GivenBack::Failed
}

/// `VirtualQuery` of the page at `addr`: its region's base, and the run of pages from `addr`
/// that share its state (free, reserved or committed) and protection. `None` when it fails.
fn query(addr: *const u8) -> Option<MEMORY_BASIC_INFORMATION> {
    let mut info = core::mem::MaybeUninit::<MEMORY_BASIC_INFORMATION>::uninit();
    let size = core::mem::size_of::<MEMORY_BASIC_INFORMATION>();
    // SAFETY: VirtualQuery writes at most `size` bytes into `info` and reads no memory at `addr`.
    let written = unsafe { VirtualQuery(addr.cast(), info.as_mut_ptr(), size) };
    // SAFETY: a non-zero return means the struct was filled.
    (written != 0).then(|| unsafe { info.assume_init() })
}

/// Windows has no transparent large pages: nothing gains from aligning a block to one.
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

/// How often [`map_pages_aligned`] tries again when another thread maps into the range it has
/// just released, before it gives up with `Err`.
const PLACEMENT_TRIES: usize = 16;

/// Maps `len` read-write bytes such that `base + offset` is aligned to `align` (a power of two;
/// `offset` a multiple of the page size, at most `len`), and returns `base`.
///
/// When the allocation granularity gives the alignment (`align` at most 64 KiB and `offset` a
/// multiple of it), this is one `VirtualAlloc`. Otherwise a probe region of
/// `len + align - page` bytes is reserved to find free address space, released, and the block is
/// reserved again inside that range, starting at the granularity boundary at or below `base`;
/// the pages between that boundary and `base` stay reserved, never committed, which is how
/// [`unmap`] recognises the whole region. Another thread may map into the range between the
/// release and the reservation (Windows has no atomic way to do this before `VirtualAlloc2`,
/// Windows 10 1803): that try is repeated, [`PLACEMENT_TRIES`] times at most.
///
/// # Errors
/// `Err(AllocError)` when the address space is exhausted, the commit is refused, every try lost
/// its range to another thread, or `huge_tlb` is asked for with an alignment the granularity
/// does not give (large pages must be reserved and committed in one call).
pub(crate) fn map_pages_aligned(
    len: usize,
    align: usize,
    offset: usize,
    page: usize,
    options: MapOptions,
) -> Result<NonNull<u8>, AllocError> {
    let granularity = system_info().dwAllocationGranularity as usize;
    if align <= page || (align <= granularity && offset & (align - 1) == 0) {
        return map_pages(len, options);
    }
    if options.huge_tlb || !granularity.is_power_of_two() {
        return Err(AllocError);
    }
    let probe_len = len.checked_add(align - page).ok_or(AllocError)?;
    for _ in 0..PLACEMENT_TRIES {
        let probe = reserve(probe_len)?;
        let probe_start = probe.as_ptr().addr();
        // `base` is at most `align - page` past the probe's start and `base + len` inside it.
        let base = probe_start
            .checked_add(offset)
            .and_then(|start| crate::bump::align_up(start, align))
            .map(|aligned| aligned - offset);
        // SAFETY: the probe is our fresh reservation; nothing refers to it.
        unsafe { VirtualFree(probe.as_ptr().cast(), 0, MEM_RELEASE) };
        let base = base.ok_or(AllocError)?;
        let region_start = base & !(granularity - 1);
        let region_len = base - region_start + len;
        // SAFETY: asks for address space at `region_start`, inside the range the probe held;
        // VirtualAlloc fails rather than touch memory that another thread has mapped meanwhile.
        let region = unsafe {
            VirtualAlloc(
                probe.as_ptr().with_addr(region_start).cast(),
                region_len,
                MEM_RESERVE,
                PAGE_NOACCESS,
            )
        };
        let Some(region) = NonNull::new(region.cast::<u8>()) else {
            continue;
        };
        // SAFETY: `base` lies inside the region just reserved.
        let block = unsafe { region.add(base - region_start) };
        // SAFETY: `[base, base + len)` is the tail of our fresh reservation.
        if unsafe { commit(block, len) }.is_err() {
            // SAFETY: the region is ours and nothing refers to it.
            unsafe { VirtualFree(region.as_ptr().cast(), 0, MEM_RELEASE) };
            return Err(AllocError);
        }
        return Ok(block);
    }
    Err(AllocError)
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

#[cfg(test)]
mod tests {
    //! The tests check the state of regions while they hold them, and what `VirtualFree` did
    //! when they give them back, never the state of an address after it is released: any other
    //! thread of the process (a parallel test, the harness starting the next test's thread, the
    //! heap growing) may map it again at once.

    use super::*;

    fn page() -> usize {
        super::super::page_size().unwrap()
    }

    fn state(addr: *const u8) -> u32 {
        query(addr).unwrap().State
    }

    fn region_of(addr: *const u8) -> *mut u8 {
        query(addr).unwrap().AllocationBase.cast()
    }

    #[test]
    fn aligned_block_after_an_unaligned_offset_is_released_whole_with_its_padding() {
        let page = page();
        for align in [16 * page, 1 << 20, 8 << 20] {
            let base =
                map_pages_aligned(4 * page, align, page, page, MapOptions::default()).unwrap();
            assert_eq!((base.as_ptr().addr() + page) % align, 0);
            let region = region_of(base.as_ptr());
            assert!(
                region < base.as_ptr(),
                "an unaligned offset needs padding before the block"
            );
            let padding = query(region).unwrap();
            assert_eq!(padding.State, MEM_RESERVE, "the padding is never committed");
            assert_eq!(region.wrapping_add(padding.RegionSize), base.as_ptr());
            assert_eq!(state(base.as_ptr()), MEM_COMMIT);
            // SAFETY: the four pages are committed read-write and ours.
            let bytes = unsafe { core::slice::from_raw_parts_mut(base.as_ptr(), 4 * page) };
            assert!(bytes.iter().all(|&b| b == 0));
            bytes.fill(0x3C);
            // SAFETY: the mapping is ours; `bytes` is not used again.
            let given_back = unsafe { give_back(base, 4 * page) };
            assert_eq!(
                given_back,
                GivenBack::Released(region),
                "the padding goes with the block: the region is released from its base"
            );
        }
    }

    #[test]
    fn alignment_above_the_granularity_starts_a_region_and_needs_no_padding() {
        let page = page();
        let align = 4 << 20;
        let base = map_pages_aligned(3 * page, align, 0, page, MapOptions::default()).unwrap();
        assert_eq!(base.as_ptr().addr() % align, 0);
        assert_eq!(region_of(base.as_ptr()), base.as_ptr());
        // SAFETY: the mapping is ours.
        let given_back = unsafe { give_back(base, 3 * page) };
        assert_eq!(given_back, GivenBack::Released(base.as_ptr()));
    }

    #[test]
    fn tail_of_a_padded_block_is_decommitted_and_the_rest_released_later() {
        let page = page();
        let base = map_pages_aligned(4 * page, 1 << 20, page, page, MapOptions::default()).unwrap();
        let region = region_of(base.as_ptr());
        // SAFETY: the last two pages are ours and nothing refers to them.
        let tail = unsafe { give_back(base.add(2 * page), 2 * page) };
        assert_eq!(
            tail,
            GivenBack::Decommitted,
            "a tail cannot be released alone"
        );
        // SAFETY: the first two pages stay committed read-write.
        unsafe { base.as_ptr().add(page).write(9) };
        // SAFETY: as above.
        assert_eq!(unsafe { base.as_ptr().add(page).read() }, 9);
        // SAFETY: the tail lies inside the region, which is still ours.
        let tail_info = query(unsafe { base.as_ptr().add(2 * page) }).unwrap();
        assert_eq!(
            tail_info.State, MEM_RESERVE,
            "the tail's pages are decommitted"
        );
        assert_eq!(tail_info.AllocationBase.cast::<u8>(), region);
        assert_eq!(state(base.as_ptr()), MEM_COMMIT, "the head is untouched");
        // SAFETY: the rest of the block is ours.
        let rest = unsafe { give_back(base, 2 * page) };
        assert_eq!(rest, GivenBack::Released(region));
    }

    /// Sets the flag when dropped, so that a failed assertion still stops the competing thread
    /// (the scope would otherwise wait for it forever).
    struct StopOnDrop<'a>(&'a core::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, core::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn aligned_mapping_racing_another_mapping_thread_is_aligned_or_an_error() {
        let page = page();
        let align = 1 << 20;
        let stop = core::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // Competes for the address space the probes release.
                while !stop.load(core::sync::atomic::Ordering::Relaxed) {
                    let other = reserve(2 << 20).unwrap();
                    // SAFETY: our own reservation.
                    unsafe { unmap(other, 2 << 20) };
                }
            });
            let _stop = StopOnDrop(&stop);
            let mut mapped = 0;
            for round in 0..500u32 {
                let byte = round as u8;
                let Ok(base) =
                    map_pages_aligned(2 * page, align, page, page, MapOptions::default())
                else {
                    continue;
                };
                mapped += 1;
                assert_eq!((base.as_ptr().addr() + page) % align, 0);
                let region = query(base.as_ptr()).unwrap().AllocationBase;
                let granularity = system_info().dwAllocationGranularity as usize;
                assert_eq!(region.addr(), base.as_ptr().addr() & !(granularity - 1));
                // SAFETY: both pages are committed read-write and ours.
                unsafe {
                    base.as_ptr().add(page).write_bytes(byte, page);
                    assert_eq!(base.as_ptr().add(2 * page - 1).read(), byte);
                    assert_eq!(
                        give_back(base, 2 * page),
                        GivenBack::Released(region.cast())
                    );
                }
            }
            // Losing all but a few races would mean the retry is broken.
            assert!(
                mapped >= 400,
                "only {mapped} of 500 aligned mappings succeeded"
            );
        });
    }
}
