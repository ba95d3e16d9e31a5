//! errno preserved: a signal handler that allocates from a `SyncChainAllocator<VirtualAllocator>`,
//! including a growth that makes an `mmap` syscall and a growth that the kernel refuses, leaves
//! the interrupted code's `errno` as it was. (C code that interrupted between a failing call and
//! its `errno` check would otherwise report the wrong error.)
#![cfg(unix)] // POSIX only: signal handlers and errno; Windows has neither to interrupt a thread with.

use libdd_alloc::{Layout, SyncChainAllocator, VirtualAllocator};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};

type Arena = SyncChainAllocator<VirtualAllocator>;

static ARENA: AtomicPtr<Arena> = AtomicPtr::new(std::ptr::null_mut());
static ERRNO_AT_ENTRY: AtomicI32 = AtomicI32::new(0);
static ERRNO_AT_EXIT: AtomicI32 = AtomicI32::new(0);
static GREW: AtomicBool = AtomicBool::new(false);
static REFUSED: AtomicBool = AtomicBool::new(false);

const MARKER: i32 = 4242;

/// A mapping the kernel refuses with ENOMEM, which libc would store in errno: 64 TiB, once.
#[cfg(target_pointer_width = "64")]
const ABSURD: (usize, usize) = (1 << 46, 1);
/// On 32-bit no size up to `isize::MAX` is absurd by itself: 1.5 GiB three times, which a 4 GiB
/// address space cannot hold.
#[cfg(target_pointer_width = "32")]
const ABSURD: (usize, usize) = (3 << 29, 3);
/// A length no address space holds, for the libc control (which takes any `size_t`).
#[cfg(target_pointer_width = "64")]
const LIBC_ABSURD: usize = 1 << 46;
#[cfg(target_pointer_width = "32")]
const LIBC_ABSURD: usize = usize::MAX & !0xFFFF;

fn errno() -> i32 {
    // SAFETY: the calling thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = value };
}

extern "C" fn allocate_in_handler(_signal: libc::c_int) {
    ERRNO_AT_ENTRY.store(errno(), Ordering::Relaxed);
    // SAFETY: the test stores a live arena before raising the signal.
    let arena = unsafe { &*ARENA.load(Ordering::Acquire) };
    let reserved = arena.reserved_bytes();
    // The newest chunk is full: this takes a new chunk, one mmap.
    if let Ok(block) = arena.allocate(Layout::new::<[u64; 8]>()) {
        // SAFETY: fresh block, ours.
        unsafe { block.cast::<u8>().write_bytes(1, 64) };
        GREW.store(arena.reserved_bytes() > reserved, Ordering::Relaxed);
    }
    let (size, tries) = ABSURD;
    let absurd = Layout::from_size_align(size, 8).unwrap_or(Layout::new::<u8>());
    let refused = (0..tries).any(|_| arena.allocate(absurd).is_err());
    REFUSED.store(refused, Ordering::Relaxed);
    ERRNO_AT_EXIT.store(errno(), Ordering::Relaxed);
}

#[test]
fn handler_allocation_with_growth_leaves_errno_unchanged() {
    libdd_alloc::os::page_size().unwrap();
    let arena = Arena::new_in(4096, VirtualAllocator {})
        .unwrap()
        .with_max_chunk_size(4096);
    arena
        .allocate(Layout::from_size_align(arena.remaining_capacity(), 1).unwrap())
        .unwrap();
    assert_eq!(arena.remaining_capacity(), 0);
    ARENA.store(&arena as *const Arena as *mut Arena, Ordering::Release);

    // SAFETY: a zeroed sigaction is valid; the handler uses only atomics and the arena.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = allocate_in_handler as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
    set_errno(MARKER);
    // SAFETY: raise delivers SIGUSR1 to this thread, whose handler is installed above; it
    // returns after the handler ran.
    let raised = unsafe { libc::raise(libc::SIGUSR1) };
    let after = errno();
    assert_eq!(raised, 0);
    assert!(
        GREW.load(Ordering::Relaxed),
        "the handler did not grow the arena"
    );
    assert!(
        REFUSED.load(Ordering::Relaxed),
        "the absurd allocation did not fail"
    );
    assert_eq!(ERRNO_AT_ENTRY.load(Ordering::Relaxed), MARKER);
    assert_eq!(ERRNO_AT_EXIT.load(Ordering::Relaxed), MARKER);
    assert_eq!(after, MARKER);
    ARENA.store(std::ptr::null_mut(), Ordering::Release);
}

/// The control: the same refused mapping made through libc does overwrite errno, so the test
/// above would notice an OS layer that went through libc without saving errno.
#[test]
fn refused_mmap_through_libc_would_clobber_errno() {
    set_errno(MARKER);
    // SAFETY: an anonymous mapping request with a null hint touches no existing memory.
    let result = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LIBC_ABSURD,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_eq!(result, libc::MAP_FAILED);
    assert_eq!(errno(), libc::ENOMEM);
}
