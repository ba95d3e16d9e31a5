//! `VirtualArena` against the real kernel: a 64 GiB reservation, the resident set as pages are
//! touched and released, contiguous in-place growth, and commits refused by resource limits
//! (in child processes). Every test holds `exclusive()`, because several measure the whole
//! process's resident set.
#![cfg(any(target_os = "linux", windows))] // the resident set is read per platform

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

#[cfg(target_os = "linux")] // fork, setrlimit, /proc
use common::process::{in_child, set_limit, statm, Ended};
use common::process::{rss_bytes, vm_size_bytes};
use common::vm::{exclusive, page, touch};
use libdd_alloc::{Allocator, Layout, VirtualArena};

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
/// A reservation far larger than what the tests touch: 64 GiB; on 32-bit, 1 GiB of the 4 GiB
/// address space.
#[cfg(target_pointer_width = "64")]
const LARGE: usize = 64 * GIB;
#[cfg(target_pointer_width = "32")]
const LARGE: usize = GIB;

#[test]
#[cfg_attr(asan, ignore = "ASan's shadow memory inflates the resident set")]
fn reservation_of_64_gib_costs_address_space_not_memory() {
    let _guard = exclusive();
    let size_before = vm_size_bytes();
    let arena = VirtualArena::new(LARGE).unwrap();
    assert_eq!(arena.reservation_bytes(), LARGE);
    assert_eq!(arena.committed_bytes(), 0);
    // Slack: the test harness may unmap a finished test thread's stack between the two reads
    // (seen under load on Linux, and under Wine).
    let grew = vm_size_bytes().saturating_sub(size_before);
    assert!(
        grew >= LARGE - 16 * MIB,
        "VmSize grew by {} MiB",
        grew / MIB
    );
    let rss_before = rss_bytes();
    touch(&arena, 100 * MIB);
    let grew = rss_bytes() - rss_before;
    assert!(
        (99 * MIB..=108 * MIB).contains(&grew),
        "RSS grew by {} MiB",
        grew / MIB
    );
    assert_eq!(arena.used_bytes(), 100 * MIB);
    assert!((100 * MIB..=102 * MIB).contains(&arena.committed_bytes()));
}

#[test]
fn reset_and_release_gives_touched_pages_back_and_they_read_zero() {
    let _guard = exclusive();
    let mut arena = VirtualArena::new(GIB).unwrap();
    touch(&arena, 100 * MIB);
    let committed = arena.committed_bytes();
    let rss_full = rss_bytes();
    arena.reset_and_release();
    let dropped = rss_full.saturating_sub(rss_bytes());
    assert!(
        (99 * MIB..=104 * MIB).contains(&dropped),
        "RSS dropped by {} MiB",
        dropped / MIB
    );
    assert_eq!(arena.used_bytes(), 0);
    assert_eq!(arena.committed_bytes(), committed, "the commit is kept");
    let block = arena
        .allocate(Layout::from_size_align(100 * MIB, 8).unwrap())
        .unwrap();
    // SAFETY: the block is ours.
    assert!(unsafe { block.as_ref() }.iter().all(|&b| b == 0));
}

#[test]
fn plain_reset_keeps_pages_resident_and_reuses_addresses() {
    let _guard = exclusive();
    let mut arena = VirtualArena::new(GIB).unwrap();
    let first = arena.allocate(Layout::new::<u8>()).unwrap();
    touch(&arena, 20 * MIB);
    let rss_full = rss_bytes();
    arena.reset();
    assert!(rss_full - rss_bytes().min(rss_full) < MIB);
    assert_eq!(arena.allocate(Layout::new::<u8>()).unwrap(), first);
}

#[test]
fn allocate_zeroed_zeroes_bytes_reused_after_reset_or_deallocate() {
    let _guard = exclusive();
    let mut arena = VirtualArena::new(16 * MIB).unwrap();
    let layout = Layout::from_size_align(3 * MIB, 8).unwrap();
    let block = arena.allocate(layout).unwrap();
    // SAFETY: ours, 3 MiB.
    unsafe { block.cast::<u8>().write_bytes(0xFF, 3 * MIB) };
    arena.reset();
    let small = Layout::from_size_align(MIB, 8).unwrap();
    let a = arena.allocate_zeroed(small).unwrap();
    // SAFETY: ours.
    assert!(unsafe { a.as_ref() }.iter().all(|&b| b == 0));
    // SAFETY: ours, 1 MiB; then given back as the most recent block.
    unsafe {
        a.cast::<u8>().write_bytes(0x77, MIB);
        arena.deallocate(a.cast(), small);
    }
    let b = arena.allocate_zeroed(layout).unwrap();
    assert_eq!(b.cast::<u8>(), a.cast::<u8>());
    // SAFETY: ours.
    assert!(unsafe { b.as_ref() }.iter().all(|&b| b == 0));
}

#[test]
fn blocks_are_contiguous_in_allocation_order_across_commit_steps() {
    let _guard = exclusive();
    let arena = VirtualArena::new(GIB).unwrap();
    let layout = Layout::new::<[u8; 64]>();
    let first = arena.allocate(layout).unwrap().cast::<u8>().as_ptr();
    let count = 100_000; // 6.4 MB: many commit steps
    for i in 1..count {
        let block = arena.allocate(layout).unwrap().cast::<u8>().as_ptr();
        assert_eq!(block.addr(), first.addr() + 64 * i);
        // SAFETY: ours, 64 bytes.
        unsafe { block.write_bytes(i as u8, 64) };
    }
    // SAFETY: the range [first + 64, first + 64 * count) was handed out above.
    let all = unsafe { std::slice::from_raw_parts(first.add(64), 64 * (count - 1)) };
    assert!(all
        .chunks(64)
        .enumerate()
        .all(|(i, chunk)| chunk.iter().all(|&b| b == (i + 1) as u8)));
    assert_eq!(arena.used_bytes(), 64 * count);
}

#[test]
fn last_allocation_grows_in_place_up_to_the_whole_reservation() {
    let _guard = exclusive();
    let arena = VirtualArena::new(64 * MIB).unwrap();
    let mut bytes = allocator_api2::vec::Vec::with_capacity_in(16, &arena);
    bytes.push(0u8);
    let start = bytes.as_ptr();
    for i in 1..48 * MIB {
        bytes.push(i as u8);
    }
    assert_eq!(bytes.as_ptr(), start, "the vector never moved");
    assert!(bytes.iter().enumerate().all(|(i, &b)| b == i as u8));
    drop(bytes);

    let arena = VirtualArena::new(64 * MIB).unwrap();
    let one = Layout::from_size_align(page(), 8).unwrap();
    let all = Layout::from_size_align(64 * MIB, 8).unwrap();
    let block = arena.allocate(one).unwrap().cast::<u8>();
    // SAFETY: `block` is the arena's most recent block of `one`, then of `all`.
    unsafe {
        let grown = arena.grow(block, one, all).unwrap();
        assert_eq!(grown.cast::<u8>(), block);
        assert_eq!(arena.committed_bytes(), 64 * MIB);
        grown.cast::<u8>().add(64 * MIB - 1).write(1);
        let past = Layout::from_size_align(64 * MIB + 1, 8).unwrap();
        assert!(arena.grow(block, all, past).is_err());
    }
    assert_eq!(arena.remaining_capacity(), 0);
}

#[test]
fn stats_add_up_and_exhausting_the_reservation_is_an_error_that_changes_nothing() {
    let _guard = exclusive();
    let arena = VirtualArena::new(MIB).unwrap();
    let used = |arena: &VirtualArena| (arena.used_bytes(), arena.committed_bytes());
    arena.allocate(Layout::new::<u8>()).unwrap();
    arena
        .allocate(Layout::from_size_align(8, 8).unwrap())
        .unwrap();
    assert_eq!(used(&arena), (16, 64 << 10));
    assert_eq!(arena.reserved_bytes(), arena.committed_bytes());
    assert_eq!(arena.used_bytes() + arena.remaining_capacity(), MIB);
    let rest = Layout::from_size_align(MIB - 16, 8).unwrap();
    let too_much = Layout::from_size_align(MIB - 15, 8).unwrap();
    assert!(arena.has_capacity_for(rest));
    assert!(!arena.has_capacity_for(too_much));
    assert!(arena.allocate(too_much).is_err());
    assert_eq!(used(&arena), (16, 64 << 10));
    arena.allocate(rest).unwrap();
    assert_eq!(used(&arena), (MIB, MIB));
    assert!(arena.allocate(Layout::new::<u8>()).is_err());
}

#[test]
fn commit_steps_double_from_64_kib_to_the_maximum_step() {
    let _guard = exclusive();
    let arena = VirtualArena::new(GIB).unwrap();
    let byte = Layout::new::<u8>();
    let mut seen = Vec::new();
    for _ in 0..10 {
        // One byte past what is committed forces exactly one commit step.
        let gap = arena.committed_bytes() - arena.used_bytes();
        if gap > 0 {
            arena.allocate(Layout::array::<u8>(gap).unwrap()).unwrap();
        }
        arena.allocate(byte).unwrap();
        seen.push(arena.committed_bytes() >> 10);
    }
    assert_eq!(
        seen,
        [64, 128, 256, 512, 1024, 2048, 4096, 6144, 8192, 10240]
    );
}

#[cfg(target_os = "linux")] // fork and SIGSEGV
#[test]
#[cfg_attr(
    asan,
    ignore = "asan-poison reports the deliberate touch of bytes not handed out"
)]
fn touching_reserved_but_uncommitted_memory_faults() {
    let _guard = exclusive();
    let arena = VirtualArena::new(GIB).unwrap();
    let block = arena.allocate(Layout::new::<u8>()).unwrap().cast::<u8>();
    let committed_end = block.as_ptr().wrapping_add(arena.committed_bytes());
    let last_committed = committed_end.wrapping_sub(1);
    // SAFETY: the last committed byte is read-write (the arena has not handed it out, but the
    // child only proves it is accessible).
    let inside = in_child(|| unsafe {
        last_committed.write_volatile(1);
        0
    });
    assert_eq!(inside, Ended::Exited(0));
    // SAFETY: deliberately touches reserved, uncommitted memory: the kernel must stop it.
    let outside = in_child(|| unsafe {
        committed_end.write_volatile(1);
        0
    });
    assert_eq!(outside, Ended::Signaled(libc::SIGSEGV));
}

#[cfg(target_os = "linux")] // RLIMIT_AS in a forked child
#[test]
#[cfg_attr(
    qemu_user,
    ignore = "qemu-user accepts setrlimit(RLIMIT_AS/RLIMIT_DATA) but does not apply it"
)]
fn rlimit_as_below_the_reservation_makes_new_an_error_not_a_crash() {
    let _guard = exclusive();
    let headroom = 512 * MIB;
    let limit = (vm_size_bytes() + headroom) as u64;
    let ended = in_child(|| {
        if !set_limit(libc::RLIMIT_AS, limit) {
            return 10;
        }
        if VirtualArena::new(LARGE).is_ok() {
            return 11;
        }
        let Ok(arena) = VirtualArena::new(256 * MIB) else {
            return 12;
        };
        // RLIMIT_AS is charged for the whole reservation up front, so committing inside it
        // cannot exceed the limit.
        let layout = Layout::from_size_align(MIB, 8).unwrap();
        for _ in 0..256 {
            match arena.allocate(layout) {
                // SAFETY: ours, 1 MiB.
                Ok(block) => unsafe { block.cast::<u8>().write_volatile(1) },
                Err(_) => return 13,
            }
        }
        0
    });
    assert_eq!(ended, Ended::Exited(0));
}

#[cfg(target_os = "linux")] // RLIMIT_DATA in a forked child
#[test]
#[cfg_attr(
    qemu_user,
    ignore = "qemu-user accepts setrlimit(RLIMIT_AS/RLIMIT_DATA) but does not apply it"
)]
fn commit_refused_by_rlimit_data_is_an_error_at_the_commit_point() {
    let _guard = exclusive();
    let page = page();
    let ended = in_child(|| {
        let Ok(arena) = VirtualArena::new(GIB) else {
            return 10;
        };
        let arena = arena.with_max_commit_step(MIB);
        // statm's "data" is data_vm plus the stack: a limit 32 MiB above it leaves at least
        // 32 MiB of private writable memory to commit.
        let data = statm()[5] * page;
        if !set_limit(libc::RLIMIT_DATA, (data + 32 * MIB) as u64) {
            return 11;
        }
        let layout = Layout::from_size_align(MIB, 8).unwrap();
        let mut blocks = [std::ptr::null_mut::<u8>(); 64];
        let mut count = 0;
        while count < blocks.len() {
            match arena.allocate(layout) {
                Ok(block) => {
                    blocks[count] = block.cast::<u8>().as_ptr();
                    count += 1;
                }
                Err(_) => break,
            }
        }
        if !(28..=40).contains(&count) {
            return 12; // the limit did not stop the commits where it should
        }
        if arena.used_bytes() != count * MIB {
            return 13; // the refused allocation moved the cursor
        }
        for &block in &blocks[..count] {
            // SAFETY: every block handed out is committed and ours.
            unsafe { block.write_bytes(0x5A, MIB) };
        }
        // What is still committed can be handed out after the refusal.
        let gap = arena.committed_bytes() - arena.used_bytes();
        if gap > 0 && arena.allocate(Layout::array::<u8>(gap).unwrap()).is_err() {
            return 14;
        }
        0
    });
    assert_eq!(ended, Ended::Exited(0));
}
