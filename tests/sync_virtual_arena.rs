//! `SyncVirtualArena` against real threads and the real kernel: many threads racing through the
//! commit frontier, a 64 GiB reservation, a commit refused by `RLIMIT_DATA` (in a child process),
//! pages given back by `reset_and_release`, and no call to the global allocator. The signal storm
//! (a handler allocating from the arena the interrupted loop allocates from) is in
//! `tests/sync_signals.rs`, which owns its process's signals. Every test holds `exclusive()`:
//! several measure the whole process's resident set.
#![cfg(any(target_os = "linux", windows))] // the resident set is read per platform

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::addr;
use common::blocks::{fill, intact, mixed_layout, tag, verify, Block};
use common::counting::{global_calls_during, CountingGlobal};
#[cfg(target_os = "linux")] // fork, setrlimit, /proc
use common::process::{in_child, set_soft_limit, statm, Ended};
use common::process::{rss_bytes, vm_size_bytes};
use common::vm::{exclusive, page, touch};
use libdd_alloc::{Allocator, Layout, SyncVirtualArena};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
/// A reservation far larger than what the tests touch: 64 GiB; on 32-bit, 1 GiB of the 4 GiB
/// address space.
#[cfg(target_pointer_width = "64")]
const LARGE: usize = 64 * GIB;
#[cfg(target_pointer_width = "32")]
const LARGE: usize = GIB;
/// The thread tests' reservation: 4 GiB; on 32-bit 1.5 GiB, still more than the threads use.
#[cfg(target_pointer_width = "64")]
const THREADS_RESERVATION: usize = 4 * GIB;
#[cfg(target_pointer_width = "32")]
const THREADS_RESERVATION: usize = 3 * GIB / 2;
const PER_THREAD: u64 = 200_000;
/// The smallest commit step: the threads cross a commit frontier every 64 KiB.
const STEP: usize = 64 * KIB;

#[global_allocator]
static GLOBAL: CountingGlobal = CountingGlobal;

// ---- Threads racing through the commit frontier ----

/// One thread's share: mixed small layouts, every 1009th a 16-48 KiB block (so a thread often
/// crosses the frontier itself), every 7th grown right after allocation (in place when still
/// last, committing as needed; else by copy), every 11th step a scratch block given straight
/// back. Returns the blocks that stay allocated, filled with the thread's pattern, and the end of
/// the highest scratch block (a scratch block is only given back if it is still the most recent
/// block of the whole arena, so another thread's allocation can leave it in place).
fn hammer(arena: &SyncVirtualArena, thread: u64) -> (Vec<Block>, usize) {
    let mut blocks = Vec::with_capacity(PER_THREAD as usize);
    let mut scratch_end = 0;
    for seq in 0..PER_THREAD {
        let layout = if seq % 1009 == 0 {
            Layout::from_size_align(16 * KIB + (seq as usize * 7919) % (32 * KIB), 64).unwrap()
        } else {
            mixed_layout(seq.wrapping_mul(thread + 1) ^ thread)
        };
        let mut block = arena.allocate(layout).expect("arena has room");
        assert_eq!(addr(block) % layout.align(), 0);
        let mut size = layout.size();
        if seq % 7 == 0 {
            let bigger = Layout::from_size_align(size * 2, layout.align()).unwrap();
            // SAFETY: fill the old block so that a copying grow has something to keep.
            let before = unsafe { fill(block, size, tag(thread, seq)) };
            // SAFETY: `block` came from `arena` with `layout`; `bigger` is larger.
            block = unsafe { arena.grow(block.cast(), layout, bigger) }.expect("grow");
            let kept = Block {
                addr: addr(block),
                ..before
            };
            // SAFETY: grow keeps the first `size` bytes.
            assert!(unsafe { intact(&kept) }, "grow lost the contents");
            size = bigger.size();
        }
        if seq % 11 == 0 {
            let scratch = arena.allocate(layout).expect("arena has room");
            scratch_end = scratch_end.max(addr(scratch) + layout.size());
            // SAFETY: the scratch block is ours until given back, which happens right here.
            unsafe {
                fill(scratch, layout.size(), u64::MAX);
                arena.deallocate(scratch.cast(), layout);
            }
        }
        // SAFETY: the block is ours, `size` bytes long.
        blocks.push(unsafe { fill(block, size, tag(thread, seq)) });
    }
    (blocks, scratch_end)
}

fn threads_share_the_arena_without_overlap(threads: u64) {
    let _guard = exclusive();
    let arena = SyncVirtualArena::new(THREADS_RESERVATION)
        .unwrap()
        .with_max_commit_step(STEP);
    // The start of the reservation: where the first block of an empty arena goes.
    let probe = arena.allocate(Layout::new::<u8>()).unwrap();
    let start = addr(probe);
    // SAFETY: the most recent (only) block, given back: the arena is empty again.
    unsafe { arena.deallocate(probe.cast(), Layout::new::<u8>()) };
    assert_eq!(arena.used_bytes(), 0);
    let mut scratch_end = 0;
    let mut blocks: Vec<Block> = std::thread::scope(|s| {
        let arena = &arena;
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || hammer(arena, t)))
            .collect();
        let mut blocks = Vec::new();
        for handle in handles {
            let (mine, end) = handle.join().unwrap();
            blocks.extend(mine);
            scratch_end = scratch_end.max(end);
        }
        blocks
    });
    assert_eq!(blocks.len() as u64, threads * PER_THREAD);
    // SAFETY: every block is live: the arena is still here.
    assert_eq!(unsafe { verify(&mut blocks) }, Ok(()));

    // Exact accounting: the cursor sits at the end of the last live block, or of a scratch block
    // that another thread's allocation kept from being given back (one that ended the arena when
    // it was freed). Which thread's block comes first in the reservation is up to the race.
    let end = blocks.iter().map(|b| b.addr + b.len).max().unwrap();
    let used = arena.used_bytes();
    assert!(
        used == end - start || (used > end - start && used <= scratch_end - start),
        "used {used} is neither the end of the last block ({}) nor of a kept scratch block (<= {})",
        end - start,
        scratch_end.saturating_sub(start)
    );
    let payload: usize = blocks.iter().map(|b| b.len).sum();
    assert!(used >= payload);
    assert_eq!(used + arena.remaining_capacity(), arena.reservation_bytes());
    // Every block is inside the committed prefix, and racing committers did not over-commit:
    // each commits at most one step past a block it was about to claim.
    let committed = arena.committed_bytes();
    assert!(end - start <= committed);
    assert_eq!(committed % page(), 0);
    let largest_block = 2 * 48 * KIB;
    assert!(
        committed <= used + STEP + largest_block + page(),
        "{} KiB committed for {} KiB used",
        committed / KIB,
        used / KIB
    );
    println!(
        "{threads} threads: {} blocks, {} MiB used, {} MiB committed",
        blocks.len(),
        used / MIB,
        committed / MIB
    );
}

#[test]
fn two_threads_never_overlap_while_racing_through_the_commit_frontier() {
    threads_share_the_arena_without_overlap(2);
}

#[test]
fn eight_threads_never_overlap_while_racing_through_the_commit_frontier() {
    threads_share_the_arena_without_overlap(8);
}

#[test]
fn the_last_block_grows_in_place_across_commit_steps_while_it_stays_last() {
    let _guard = exclusive();
    let arena = SyncVirtualArena::new(64 * MIB).unwrap();
    let mut bytes = allocator_api2::vec::Vec::with_capacity_in(16, &arena);
    bytes.push(0u8);
    let start = bytes.as_ptr();
    for i in 1..24 * MIB {
        bytes.push(i as u8);
    }
    assert_eq!(bytes.as_ptr(), start, "the vector never moved");
    assert!(bytes.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert!(arena.committed_bytes() >= bytes.capacity());
}

// ---- The kernel: reservation, commit refusal, release ----

#[test]
fn reservation_of_64_gib_costs_address_space_not_memory() {
    let _guard = exclusive();
    let size_before = vm_size_bytes();
    let arena = SyncVirtualArena::new(LARGE).unwrap();
    assert_eq!(arena.reservation_bytes(), LARGE);
    assert_eq!(arena.committed_bytes(), 0);
    // The thread of the test that ran before may unmap its stack meanwhile (Wine does).
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
    let mut arena = SyncVirtualArena::new(GIB).unwrap();
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
fn allocate_zeroed_zeroes_bytes_given_back_by_another_thread() {
    let _guard = exclusive();
    let arena = SyncVirtualArena::new(16 * MIB).unwrap();
    let layout = Layout::from_size_align(64 * KIB, 8).unwrap();
    let given_back = std::thread::scope(|s| {
        s.spawn(|| {
            let block = arena.allocate(layout).unwrap();
            // SAFETY: ours, 64 KiB; then given back as the most recent block.
            unsafe {
                block.cast::<u8>().write_bytes(0xEE, 64 * KIB);
                arena.deallocate(block.cast(), layout);
            }
            addr(block)
        })
        .join()
        .unwrap()
    });
    assert_eq!(arena.used_bytes(), 0);
    let block = arena.allocate_zeroed(layout).unwrap();
    assert_eq!(addr(block), given_back);
    // SAFETY: ours.
    assert!(unsafe { block.as_ref() }.iter().all(|&b| b == 0));
}

#[cfg(target_os = "linux")] // RLIMIT_DATA in a forked child
#[test]
#[cfg_attr(
    qemu_user,
    ignore = "qemu-user accepts setrlimit(RLIMIT_AS/RLIMIT_DATA) but does not apply it"
)]
fn commit_refused_by_rlimit_data_is_an_err_that_claims_nothing_and_the_arena_recovers() {
    let _guard = exclusive();
    let page = page();
    let ended = in_child(|| {
        let Ok(arena) = SyncVirtualArena::new(GIB) else {
            return 10;
        };
        let arena = arena.with_max_commit_step(MIB);
        // statm's "data" is data_vm plus the stack: a limit 32 MiB above it leaves at least
        // 32 MiB of private writable memory to commit.
        let data = statm()[5] * page;
        if !set_soft_limit(libc::RLIMIT_DATA, (data + 32 * MIB) as u64) {
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
        let committed = arena.committed_bytes();
        if arena.allocate(layout).is_ok() || arena.committed_bytes() != committed {
            return 14; // a second refusal must change nothing either
        }
        for &block in &blocks[..count] {
            // SAFETY: every block handed out is committed and ours.
            unsafe { block.write_bytes(0x5A, MIB) };
        }
        // What is still committed can be handed out after the refusal.
        let gap = committed - arena.used_bytes();
        if gap > 0 && arena.allocate(Layout::array::<u8>(gap).unwrap()).is_err() {
            return 15;
        }
        // Once the limit is lifted, the same allocation commits and succeeds.
        // u64::MAX: RLIM_INFINITY, which is a u32 on 32-bit.
        if !set_soft_limit(libc::RLIMIT_DATA, u64::MAX) {
            return 16;
        }
        match arena.allocate(layout) {
            // SAFETY: ours, 1 MiB: committed, or this write faults and the test fails.
            Ok(block) => unsafe { block.cast::<u8>().write_bytes(0x5A, MIB) },
            Err(_) => return 17,
        }
        if arena.used_bytes() != committed + MIB {
            return 18;
        }
        0
    });
    assert_eq!(ended, Ended::Exited(0));
}

// ---- No hidden heap ----

#[test]
fn allocation_commit_resize_reset_and_release_never_call_the_global_allocator() {
    let _guard = exclusive();
    let mut arena = SyncVirtualArena::new(256 * MIB)
        .unwrap()
        .with_max_commit_step(STEP);
    let calls = global_calls_during(|| {
        for seq in 0..20_000u64 {
            // ~1.2 MB in all: about twenty commit steps.
            let layout = mixed_layout(seq);
            let block = arena.allocate(layout).unwrap();
            if seq % 5 == 0 {
                let bigger = Layout::from_size_align(layout.size() * 3, layout.align()).unwrap();
                // SAFETY: the most recent block, grown in place (committing when it must).
                let grown = unsafe { arena.grow(block.cast(), layout, bigger) }.unwrap();
                assert_eq!(addr(grown), addr(block));
                // SAFETY: the grown block, shrunk back in place.
                unsafe { arena.shrink(grown.cast(), bigger, layout) }.unwrap();
            }
            if seq % 13 == 0 {
                let zeroed = arena.allocate_zeroed(layout).unwrap();
                // SAFETY: the most recent block, given back.
                unsafe { arena.deallocate(zeroed.cast(), layout) };
            }
        }
        let big = arena
            .allocate(Layout::from_size_align(8 * MIB, 4096).unwrap())
            .unwrap();
        assert_eq!(big.len(), 8 * MIB);
        arena.reset();
        arena.allocate(Layout::new::<u64>()).unwrap();
        arena.reset_and_release();
        let fresh = SyncVirtualArena::new(GIB).unwrap();
        fresh.allocate(Layout::new::<[u8; 100]>()).unwrap();
        drop(fresh);
    });
    assert!(arena.committed_bytes() >= 9 * MIB);
    assert_eq!(calls, 0, "the arena called the global allocator");
    // The counter works: a Vec is seen.
    assert!(global_calls_during(|| drop(std::hint::black_box(vec![1u8; 16]))) >= 1);
}
