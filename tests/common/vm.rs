//! Pages, residency and unmapped ranges, for the virtual memory tests: `mincore` on Unix,
//! `QueryWorkingSetEx` and `VirtualQuery` on Windows.

use libdd_alloc::{Allocator, Layout};
use std::sync::{Mutex, MutexGuard};

const MIB: usize = 1 << 20;

/// Serialises the tests of one binary that measure the process (RSS, address space) or check
/// that freed addresses are unmapped, so a neighbouring test's mappings cannot interfere.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn page() -> usize {
    libdd_alloc::os::page_size().unwrap()
}

/// How many pages of `[addr, addr + len)` are resident, per `mincore`.
#[cfg(unix)]
pub fn resident_pages(addr: *const u8, len: usize) -> usize {
    let pages = len.div_ceil(page());
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the range, which must be mapped.
    let rc = unsafe { libc::mincore(addr as *mut _, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore failed: range not mapped");
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

/// Whether no page of `[addr, addr + len)` is mapped (`mincore` says `ENOMEM` for each).
#[cfg(unix)]
pub fn all_unmapped(addr: *const u8, len: usize) -> bool {
    let page = page();
    (0..len.div_ceil(page)).all(|i| {
        let mut vec = 0u8;
        // SAFETY: mincore only inspects the page table; `vec` holds one page's byte.
        let rc = unsafe { libc::mincore(addr.wrapping_add(i * page) as *mut _, page, &mut vec) };
        rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM)
    })
}

/// How many pages of `[addr, addr + len)` are in the working set, per `QueryWorkingSetEx`.
#[cfg(windows)]
pub fn resident_pages(addr: *const u8, len: usize) -> usize {
    use windows_sys::Win32::System::ProcessStatus::{
        K32QueryWorkingSetEx, PSAPI_WORKING_SET_EX_INFORMATION,
    };
    use windows_sys::Win32::System::Threading::GetCurrentProcess;
    let page = page();
    let mut entries: Vec<PSAPI_WORKING_SET_EX_INFORMATION> = (0..len.div_ceil(page))
        .map(|i| {
            // SAFETY: a zeroed entry is valid; only its address is set.
            let mut entry: PSAPI_WORKING_SET_EX_INFORMATION = unsafe { std::mem::zeroed() };
            entry.VirtualAddress = addr.wrapping_add(i * page) as *mut _;
            entry
        })
        .collect();
    let bytes = std::mem::size_of_val(entries.as_slice()) as u32;
    // SAFETY: `entries` holds `bytes` bytes of entries whose addresses the call fills in about.
    let ok =
        unsafe { K32QueryWorkingSetEx(GetCurrentProcess(), entries.as_mut_ptr().cast(), bytes) };
    assert_ne!(ok, 0, "QueryWorkingSetEx failed");
    // Bit 0 of the attributes: the page is valid (in the working set).
    // SAFETY: every variant of the union is a plain integer.
    entries
        .iter()
        .filter(|entry| unsafe { entry.VirtualAttributes.Flags } & 1 != 0)
        .count()
}

/// Whether no page of `[addr, addr + len)` is reserved or committed (`VirtualQuery` says
/// `MEM_FREE` for each).
#[cfg(windows)]
pub fn all_unmapped(addr: *const u8, len: usize) -> bool {
    use windows_sys::Win32::System::Memory::{VirtualQuery, MEMORY_BASIC_INFORMATION, MEM_FREE};
    let page = page();
    (0..len.div_ceil(page)).all(|i| {
        // SAFETY: a zeroed struct is valid; VirtualQuery reads no memory at the address.
        unsafe {
            let mut info: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
            let size = std::mem::size_of::<MEMORY_BASIC_INFORMATION>();
            VirtualQuery(addr.wrapping_add(i * page).cast(), &mut info, size) != 0
                && info.State == MEM_FREE
        }
    })
}

/// Allocates `bytes` from `arena` in 1 MiB blocks and writes every page of them.
pub fn touch(arena: &impl Allocator, bytes: usize) {
    let layout = Layout::from_size_align(MIB, 8).unwrap();
    for _ in 0..bytes / MIB {
        let block = arena.allocate(layout).unwrap();
        // SAFETY: the block is ours and 1 MiB long.
        unsafe { block.cast::<u8>().write_bytes(0xC3, MIB) };
    }
}
