//! With the `asan-poison` feature, under AddressSanitizer, a write past the end of a block into
//! the free rest of its arena is reported (`use-after-poison`), as are writes into a block given
//! back, into the tail cut off by a shrink, and into blocks freed by a reset. Each case runs in a
//! child process (this test binary, re-run), because ASan aborts the process that misbehaves.
//!
//! Run by `scripts/asan.sh`; needs `RUSTFLAGS=-Zsanitizer=address` on nightly.
#![cfg(feature = "asan-poison")]

use libdd_alloc::{
    Allocator, Budget, ChainAllocator, Layout, LinearAllocator, System, VirtualArena,
};
use std::process::{Command, Output};
use std::ptr::NonNull;

const CASE: &str = "LIBDD_ALLOC_ASAN_CASE";

/// Writes one byte at `offset` from `block`, in a way the optimiser cannot drop.
fn poke(block: NonNull<[u8]>, offset: usize) {
    // SAFETY: deliberately not: the byte may be outside the block. The arena's memory is mapped
    // and writable either way; ASan decides whether the write is allowed.
    unsafe { block.cast::<u8>().as_ptr().add(offset).write_volatile(0x5A) };
}

fn bytes(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Runs one case; returns normally only if ASan let every access through.
fn run_case(case: &str) {
    let mut linear = LinearAllocator::new_in(bytes(4096), System).unwrap();
    let chain = ChainAllocator::new_in(4096, System).unwrap();
    match case {
        "linear-in-bounds" => {
            let block = linear.allocate(bytes(16)).unwrap();
            poke(block, 15);
            // SAFETY: live block of 16 bytes; 64 is larger.
            let grown = unsafe { linear.grow(block.cast(), bytes(16), bytes(64)) }.unwrap();
            poke(grown, 63);
        }
        "virtual-arena-dropped" | "budgeted-virtual-arena-released-and-dropped" => {
            // The arena poisons the free part of what it committed. Once it is dropped, the
            // next mapping at those addresses (made with a raw syscall, as the library's own
            // are, so ASan does not see it) must not inherit that poison. A budgeted arena
            // forgets its commit on `reset_and_release`: the poison must go with it.
            static BUDGET: Budget = Budget::new(1 << 20);
            let mut arena = if case == "virtual-arena-dropped" {
                VirtualArena::new(1 << 20).unwrap()
            } else {
                VirtualArena::new_with_budget(1 << 20, &BUDGET).unwrap()
            };
            let first = arena.allocate(bytes(16)).unwrap().cast::<u8>();
            if case != "virtual-arena-dropped" {
                arena.reset_and_release();
                assert_eq!(arena.committed_bytes(), 0);
            }
            drop(arena);
            let length = 64 << 10;
            // SAFETY: maps fresh anonymous memory at an address nothing is mapped at (the arena
            // unmapped it; MAP_FIXED_NOREPLACE fails rather than replace anything).
            let again = unsafe {
                libc::syscall(
                    libc::SYS_mmap,
                    first.as_ptr(),
                    length,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            assert_eq!(
                again as usize,
                first.as_ptr() as usize,
                "mmap at the old address"
            );
            let block = NonNull::slice_from_raw_parts(first, length);
            poke(block, 1000);
            poke(block, length - 1);
        }
        "linear-overrun" => poke(linear.allocate(bytes(16)).unwrap(), 16),
        "chain-overrun" => poke(chain.allocate(bytes(40)).unwrap(), 48),
        "released" => {
            let block = linear.allocate(bytes(16)).unwrap();
            // SAFETY: live block with this layout; given back (it is the most recent).
            unsafe { linear.deallocate(block.cast(), bytes(16)) };
            poke(block, 0);
        }
        "shrunk" => {
            let block = linear.allocate(bytes(64)).unwrap();
            // SAFETY: live block with layout of 64 bytes.
            let small = unsafe { linear.shrink(block.cast(), bytes(64), bytes(16)) }.unwrap();
            poke(small, 32);
        }
        "reset" => {
            let block = linear.allocate(bytes(64)).unwrap();
            linear.reset();
            poke(block, 0);
        }
        other => panic!("unknown case {other}"),
    }
}

fn run_child(case: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE, case)
        .output()
        .unwrap()
}

/// The entry point of the child processes; does nothing in the parent.
#[test]
fn child_entry_point() {
    if let Ok(case) = std::env::var(CASE) {
        run_case(&case);
    }
}

#[test]
fn accesses_inside_blocks_are_allowed() {
    let output = run_child("linear-in-bounds");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_dropped_virtual_arena_leaves_no_poison_on_its_addresses() {
    for case in [
        "virtual-arena-dropped",
        "budgeted-virtual-arena-released-and-dropped",
    ] {
        let output = run_child(case);
        assert!(
            output.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn writes_to_bytes_the_arena_has_not_handed_out_are_reported() {
    for case in [
        "linear-overrun",
        "chain-overrun",
        "released",
        "shrunk",
        "reset",
    ] {
        let output = run_child(case);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{case}: ASan let the write through"
        );
        assert!(
            stderr.contains("use-after-poison"),
            "{case}: not reported as use-after-poison:\n{stderr}"
        );
    }
}
