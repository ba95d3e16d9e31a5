//! Pages, residency and unmapped ranges, for the virtual memory tests.

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
pub fn resident_pages(addr: *const u8, len: usize) -> usize {
    let pages = len.div_ceil(page());
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the range, which must be mapped.
    let rc = unsafe { libc::mincore(addr as *mut _, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore failed: range not mapped");
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

/// Whether no page of `[addr, addr + len)` is mapped (`mincore` says `ENOMEM` for each).
pub fn all_unmapped(addr: *const u8, len: usize) -> bool {
    let page = page();
    (0..len.div_ceil(page)).all(|i| {
        let mut vec = 0u8;
        // SAFETY: mincore only inspects the page table; `vec` holds one page's byte.
        let rc = unsafe { libc::mincore(addr.wrapping_add(i * page) as *mut _, page, &mut vec) };
        rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM)
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
