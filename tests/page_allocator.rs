//! `PageAllocator` options and `VirtualAllocator` against the real kernel: alignment, residency,
//! guard pages (in child processes), huge pages and limits the system may enforce. Every test
//! holds `exclusive()`: the sweeps check that freed addresses are unmapped, which another test
//! mapping pages at the same moment could make look false.
#![cfg(any(target_os = "linux", windows))] // residency and unmapping are read per platform

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

#[cfg(target_os = "linux")] // fork, setrlimit, /proc
use common::process::{
    drop_root, in_child, read_proc_number, set_limit, statm, Ended, CANNOT_DROP_ROOT,
};
use common::vm::{all_unmapped, exclusive, page, resident_pages};
use libdd_alloc::{
    Allocator, ChainAllocator, HugePages, Layout, LinearAllocator, PageAllocator, PageOptions,
    VirtualAllocator,
};
use std::ptr::NonNull;

/// Options the sweep covers, with the guard pages before and after each block.
fn options_under_test() -> [(PageOptions, usize, usize); 4] {
    [
        (PageOptions::new(), 0, 0),
        (
            PageOptions::new()
                .guard_pages_before(1)
                .guard_pages_after(2),
            1,
            2,
        ),
        (PageOptions::new().prefault(true).guard_pages_after(1), 0, 1),
        (PageOptions::new().no_reserve(true), 0, 0),
    ]
}

/// Allocates every size of 1-32 pages at every power-of-two alignment of 1-32 pages, keeps one
/// row of blocks alive at a time, fills each whole block with its own byte, checks that no fill
/// overwrote another block, then frees the row and checks that every page (guards included)
/// is gone from the address space. Uses no heap and does not panic, so that it can run in a
/// forked child: `Err` names the property that failed.
fn sweep(
    allocator: &impl Allocator,
    guard_before: usize,
    guard_after: usize,
) -> Result<(), SweepFailure> {
    let page = page();
    for size_pages in 1..=32usize {
        let mut blocks = [(NonNull::<[u8]>::from(&mut [][..]), Layout::new::<()>(), 0u8); 6];
        for (i, slot) in blocks.iter_mut().enumerate() {
            let align = page << i;
            let layout = Layout::from_size_align(size_pages * page, align)
                .map_err(|_| SweepFailure::Refused)?;
            let block = allocator
                .allocate(layout)
                .map_err(|_| SweepFailure::Refused)?;
            let start = block.cast::<u8>().as_ptr();
            if start.addr() % align != 0 {
                return Err(SweepFailure::Misaligned);
            }
            if block.len() != size_pages * page {
                return Err(SweepFailure::WrongLength);
            }
            let fill = (size_pages * 8 + i) as u8;
            // SAFETY: the block is ours and `block.len()` bytes long.
            unsafe { std::ptr::write_bytes(start, fill, block.len()) };
            *slot = (block, layout, fill);
        }
        for &(block, _, fill) in &blocks {
            // SAFETY: still allocated.
            let bytes = unsafe { block.as_ref() };
            if !bytes.iter().all(|&b| b == fill) {
                return Err(SweepFailure::Overwritten);
            }
        }
        for (block, layout, _) in blocks {
            let start = block.cast::<u8>().as_ptr();
            // SAFETY: allocated above with `layout`, not used again.
            unsafe { allocator.deallocate(block.cast(), layout) };
            let mapping = start.wrapping_sub(guard_before * page);
            let mapping_len = (guard_before + size_pages + guard_after) * page;
            if !all_unmapped(mapping, mapping_len) {
                return Err(SweepFailure::LeftMapped);
            }
        }
    }
    Ok(())
}

/// What a sweep found wrong; the discriminant is a forked child's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SweepFailure {
    Refused = 10,
    Misaligned,
    WrongLength,
    Overwritten,
    LeftMapped,
}

/// Runs `sweep` where no other thread can map pages into the ranges it has just freed (which
/// would make "every freed page is unmapped" look false: the test harness's threads map their
/// stacks and malloc arenas at any time). On Linux that is a forked child, which has one thread;
/// on Windows, the process, under `exclusive()`.
fn sweep_alone(
    allocator: &impl Allocator,
    guard_before: usize,
    guard_after: usize,
) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        let ended = in_child(|| match sweep(allocator, guard_before, guard_after) {
            Ok(()) => 0,
            Err(failure) => failure as i32,
        });
        match ended {
            Ended::Exited(0) => Ok(()),
            other => Err(format!(
                "sweep child ended with {other:?} (an exit status is a SweepFailure discriminant)"
            )),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        sweep(allocator, guard_before, guard_after).map_err(|failure| format!("{failure:?}"))
    }
}

#[test]
fn virtual_allocator_alignment_sweep_maps_aligned_writable_blocks_and_unmaps_them() {
    let _guard = exclusive();
    assert_eq!(sweep_alone(&VirtualAllocator::default(), 0, 0), Ok(()));
}

#[test]
fn page_allocator_alignment_sweep_holds_for_every_option() {
    let _guard = exclusive();
    for (options, before, after) in options_under_test() {
        let allocator = PageAllocator::new(options).unwrap();
        assert_eq!(
            sweep_alone(&allocator, before, after),
            Ok(()),
            "{options:?}"
        );
    }
}

#[test]
#[cfg_attr(
    qemu_user,
    ignore = "qemu-user 7.2 ignores madvise other than MADV_DONTNEED and returns success"
)]
fn prefaulted_block_is_resident_before_it_is_touched() {
    let _guard = exclusive();
    let page = page();
    let layout = Layout::from_size_align(64 * page, 8).unwrap();
    let lazy = PageAllocator::new(PageOptions::new()).unwrap();
    let prefaulted = PageAllocator::new(PageOptions::new().prefault(true)).unwrap();
    let block = lazy.allocate(layout).unwrap();
    assert_eq!(resident_pages(block.cast().as_ptr(), block.len()), 0);
    let ready = prefaulted.allocate(layout).unwrap();
    assert_eq!(resident_pages(ready.cast().as_ptr(), ready.len()), 64);
    // SAFETY: both blocks came from their allocators with `layout`.
    unsafe {
        lazy.deallocate(block.cast(), layout);
        prefaulted.deallocate(ready.cast(), layout);
    }
}

#[test]
#[cfg_attr(
    qemu_user,
    ignore = "qemu-user 7.2 ignores madvise other than MADV_DONTNEED and returns success"
)]
fn prefault_populates_the_block_but_not_its_guard_pages() {
    let _guard = exclusive();
    let page = page();
    let layout = Layout::from_size_align(8 * page, 8).unwrap();
    let options = PageOptions::new()
        .prefault(true)
        .guard_pages_before(1)
        .guard_pages_after(1);
    let allocator = PageAllocator::new(options).unwrap();
    let block = allocator.allocate(layout).unwrap();
    let start = block.cast::<u8>().as_ptr();
    assert_eq!(resident_pages(start, 8 * page), 8);
    assert_eq!(resident_pages(start.wrapping_sub(page), page), 0);
    assert_eq!(resident_pages(start.wrapping_add(8 * page), page), 0);
    // SAFETY: allocated above with `layout`.
    unsafe { allocator.deallocate(block.cast(), layout) };
}

#[test]
fn locked_block_is_resident_before_it_is_touched() {
    let _guard = exclusive();
    let page = page();
    let layout = Layout::from_size_align(4 * page, 8).unwrap();
    let allocator = PageAllocator::new(PageOptions::new().lock(true)).unwrap();
    let block = allocator.allocate(layout).unwrap();
    assert_eq!(resident_pages(block.cast().as_ptr(), block.len()), 4);
    // SAFETY: allocated above with `layout`.
    unsafe { allocator.deallocate(block.cast(), layout) };
}

/// Allocates a guarded block in the parent, then has a child write at `offset` from its start.
#[cfg(target_os = "linux")] // fork
fn child_writes_at(options: PageOptions, offset: isize) -> Ended {
    let page = page();
    let layout = Layout::from_size_align(2 * page, 8).unwrap();
    let allocator = PageAllocator::new(options).unwrap();
    let block = allocator.allocate(layout).unwrap();
    let target = block.cast::<u8>().as_ptr().wrapping_offset(offset);
    let ended = in_child(|| {
        // SAFETY: deliberately out of bounds when `offset` points at a guard page: the point
        // of the test is that the kernel stops this write.
        unsafe { target.write_volatile(0xEE) };
        0
    });
    // SAFETY: allocated above with `layout`.
    unsafe { allocator.deallocate(block.cast(), layout) };
    ended
}

#[cfg(target_os = "linux")] // fork and SIGSEGV
#[test]
fn write_one_byte_past_a_guarded_block_kills_the_child_with_sigsegv() {
    let _guard = exclusive();
    let after = PageOptions::new().guard_pages_after(1);
    let end = 2 * page() as isize;
    assert_eq!(child_writes_at(after, end - 1), Ended::Exited(0));
    assert_eq!(child_writes_at(after, end), Ended::Signaled(libc::SIGSEGV));
}

#[cfg(target_os = "linux")] // fork and SIGSEGV
#[test]
fn write_one_byte_before_a_guarded_block_kills_the_child_with_sigsegv() {
    let _guard = exclusive();
    let before = PageOptions::new().guard_pages_before(1);
    assert_eq!(child_writes_at(before, 0), Ended::Exited(0));
    assert_eq!(child_writes_at(before, -1), Ended::Signaled(libc::SIGSEGV));
}

#[cfg(target_os = "linux")] // RLIMIT_MEMLOCK
#[test]
fn mlock_past_rlimit_memlock_is_an_error_and_leaks_no_mapping() {
    let _guard = exclusive();
    let page = page();
    let allocator = PageAllocator::new(PageOptions::new().lock(true)).unwrap();
    let small = Layout::from_size_align(4 * page, 8).unwrap();
    let large = Layout::from_size_align(1 << 20, 8).unwrap();
    let ended = in_child(|| {
        if !drop_root() {
            return CANNOT_DROP_ROOT;
        }
        if !set_limit(libc::RLIMIT_MEMLOCK, 64 << 10) {
            return 10;
        }
        let before = statm()[0];
        if allocator.allocate(large).is_ok() {
            return 11;
        }
        if statm()[0] != before {
            return 12; // the refused mapping was not undone
        }
        match allocator.allocate(small) {
            // SAFETY: allocated just above with `small`.
            Ok(block) => unsafe { allocator.deallocate(block.cast(), small) },
            Err(_) => return 13,
        }
        0
    });
    if ended == Ended::Exited(CANNOT_DROP_ROOT) {
        eprintln!("skipped: running as root and cannot drop CAP_IPC_LOCK");
        return;
    }
    assert_eq!(ended, Ended::Exited(0));
}

#[cfg(target_os = "linux")] // /proc/sys/vm
fn explicit_huge_pages_configured() -> bool {
    let pool = read_proc_number("/proc/sys/vm/nr_hugepages").unwrap_or(0);
    let overcommit = read_proc_number("/proc/sys/vm/nr_overcommit_hugepages").unwrap_or(0);
    pool + overcommit > 0
}

#[cfg(target_os = "linux")] // the pool is read from /proc
#[test]
fn explicit_only_huge_pages_fail_cleanly_when_the_pool_is_empty() {
    let _guard = exclusive();
    let allocator =
        PageAllocator::new(PageOptions::new().huge_pages(HugePages::ExplicitOnly)).unwrap();
    let layout = Layout::from_size_align(100_000, 8).unwrap();
    let result = allocator.allocate(layout);
    assert_eq!(result.is_ok(), explicit_huge_pages_configured());
    if let Ok(block) = result {
        // SAFETY: allocated above with `layout`.
        unsafe { allocator.deallocate(block.cast(), layout) };
    }
}

#[cfg(target_os = "linux")] // the fallback keeps the huge alignment only with THP
#[test]
fn explicit_huge_pages_fall_back_to_normal_pages_of_the_same_shape() {
    let _guard = exclusive();
    let huge = 2 << 20;
    let allocator = PageAllocator::new(PageOptions::new().huge_pages(HugePages::Explicit)).unwrap();
    let layout = Layout::from_size_align(100_000, 8).unwrap();
    let block = allocator.allocate(layout).unwrap();
    let start = block.cast::<u8>().as_ptr();
    assert_eq!(block.len(), huge);
    assert_eq!(start.addr() % huge, 0);
    // SAFETY: the block is ours and `huge` bytes long.
    unsafe { std::ptr::write_bytes(start, 0xAB, huge) };
    // SAFETY: allocated above with `layout`.
    unsafe { allocator.deallocate(block.cast(), layout) };
    assert!(all_unmapped(start, huge));
}

#[test]
fn guard_pages_with_explicit_huge_pages_are_refused_up_front() {
    let _guard = exclusive();
    let options = PageOptions::new()
        .huge_pages(HugePages::Explicit)
        .guard_pages_before(1);
    assert!(PageAllocator::new(options).is_err());
}

/// The `THPeligible` line of the mapping that starts at `addr`, from `/proc/self/smaps`.
#[cfg(target_os = "linux")]
fn thp_eligible(addr: usize) -> Option<bool> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let header = format!("{addr:x}-");
    let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&header));
    lines.next()?;
    let line = lines.find(|line| line.starts_with("THPeligible:"))?;
    Some(line.ends_with('1'))
}

#[cfg(target_os = "linux")] // transparent huge pages
#[test]
#[cfg_attr(
    qemu_user,
    ignore = "qemu-user 7.2 ignores madvise other than MADV_DONTNEED and returns success"
)]
fn transparent_huge_pages_align_large_blocks_and_advise_the_kernel() {
    let _guard = exclusive();
    let huge = 2 << 20;
    let allocator =
        PageAllocator::new(PageOptions::new().huge_pages(HugePages::Transparent)).unwrap();
    let layout = Layout::from_size_align(2 * huge, 8).unwrap();
    let block = allocator.allocate(layout).unwrap();
    let start = block.cast::<u8>().as_ptr().addr();
    assert_eq!(start % huge, 0);
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    if mode.is_ok_and(|mode| !mode.contains("[never]")) {
        assert_eq!(thp_eligible(start), Some(true));
    }
    // SAFETY: allocated above with `layout`.
    unsafe { allocator.deallocate(block.cast(), layout) };
}

#[test]
fn page_allocator_backs_linear_and_chain_arenas() {
    let _guard = exclusive();
    let pages = PageAllocator::new(PageOptions::new().prefault(true).guard_pages_after(1)).unwrap();
    let linear =
        LinearAllocator::new_in(Layout::from_size_align(1 << 16, 8).unwrap(), pages).unwrap();
    let chain = ChainAllocator::new_in(1 << 16, pages).unwrap();
    let mut numbers = allocator_api2::vec::Vec::new_in(&linear);
    let mut strings = allocator_api2::vec::Vec::new_in(&chain);
    for i in 0..5000u32 {
        if i < 4000 {
            numbers.push(i);
        }
        strings.push([i as u8; 24]);
    }
    assert!(numbers.iter().enumerate().all(|(i, &n)| n == i as u32));
    assert!(strings.iter().enumerate().all(|(i, s)| s[0] == i as u8));
    assert!(chain.reserved_bytes() >= 5000 * 24);
}

#[test]
fn grow_within_the_same_pages_stays_in_place_and_past_them_keeps_contents() {
    let _guard = exclusive();
    let page = page();
    let allocator = PageAllocator::new(PageOptions::new().guard_pages_after(1)).unwrap();
    let small = Layout::from_size_align(100, 8).unwrap();
    let same_pages = Layout::from_size_align(page, 8).unwrap();
    let bigger = Layout::from_size_align(3 * page, 8).unwrap();
    let block = allocator.allocate(small).unwrap().cast::<u8>();
    // SAFETY: 100 bytes of our block.
    unsafe { std::ptr::write_bytes(block.as_ptr(), 0x11, 100) };
    // SAFETY: `block` is a live block of `small`; each step passes the layout it now has.
    unsafe {
        let grown = allocator
            .grow(block, small, same_pages)
            .unwrap()
            .cast::<u8>();
        assert_eq!(grown, block);
        let moved = allocator.grow_zeroed(grown, same_pages, bigger).unwrap();
        let bytes = moved.as_ref();
        assert!(bytes[..100].iter().all(|&b| b == 0x11));
        assert!(bytes[100..].iter().all(|&b| b == 0));
        allocator.deallocate(moved.cast(), bigger);
    }
}

#[test]
fn zero_size_layouts_map_nothing() {
    let _guard = exclusive();
    let allocator = PageAllocator::new(PageOptions::new().guard_pages_after(1)).unwrap();
    let layout = Layout::from_size_align(0, 4096).unwrap();
    let block = allocator.allocate(layout).unwrap();
    assert_eq!(block.len(), 0);
    assert_eq!(block.cast::<u8>().as_ptr().addr() % 4096, 0);
    // SAFETY: a zero-size block of `layout`.
    unsafe { allocator.deallocate(block.cast(), layout) };
}
