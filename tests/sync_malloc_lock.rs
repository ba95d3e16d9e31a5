//! Malloc lock held: a thread is parked *inside* the global allocator, holding its lock, when a
//! signal arrives on that very thread, and the handler allocates (and grows) a
//! `SyncChainAllocator<VirtualAllocator>`. An arena that called `malloc` would wait for a lock
//! that its own thread holds: the deadlock of hhvm#4533, backward-cpp#97 and g3log#324. The
//! handler must finish before a watchdog fires.
#![cfg(unix)] // POSIX only: a signal delivered to the thread parked in malloc; Windows has no signals.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::blocks::{fill, intact, mixed_layout, tag};
use libdd_alloc::{Layout, SyncChainAllocator, System, VirtualAllocator};
use std::alloc::GlobalAlloc;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `System` behind a spinlock, like a `malloc` with one arena lock. A thread that sets
/// `PARK_HERE` stops inside, lock held, until `RELEASE`.
struct LockedMalloc;

static LOCK: AtomicBool = AtomicBool::new(false);
static PARKED: AtomicBool = AtomicBool::new(false);
static RELEASE: AtomicBool = AtomicBool::new(false);

thread_local! {
    static PARK_HERE: Cell<bool> = const { Cell::new(false) };
}

impl LockedMalloc {
    fn with_lock<T>(f: impl FnOnce() -> T) -> T {
        while LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        if PARK_HERE.with(|p| p.replace(false)) {
            PARKED.store(true, Ordering::Release);
            while !RELEASE.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        }
        let result = f();
        LOCK.store(false, Ordering::Release);
        result
    }
}

// SAFETY: forwards to `System` under a lock.
unsafe impl GlobalAlloc for LockedMalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        Self::with_lock(|| unsafe { System.alloc(layout) })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded caller contract.
        Self::with_lock(|| unsafe { System.dealloc(ptr, layout) })
    }
}

#[global_allocator]
static GLOBAL: LockedMalloc = LockedMalloc;

type Arena = SyncChainAllocator<VirtualAllocator>;

static ARENA: AtomicPtr<Arena> = AtomicPtr::new(std::ptr::null_mut());
static HANDLER_DONE: AtomicBool = AtomicBool::new(false);
static HANDLER_SAW_LOCK_HELD: AtomicBool = AtomicBool::new(false);
static HANDLER_GREW: AtomicBool = AtomicBool::new(false);
static HANDLER_BLOCKS_INTACT: AtomicUsize = AtomicUsize::new(0);
const HANDLER_BLOCKS: u64 = 64;

extern "C" fn allocate_in_handler(_signal: libc::c_int) {
    HANDLER_SAW_LOCK_HELD.store(LOCK.load(Ordering::Relaxed), Ordering::Relaxed);
    // SAFETY: the test stores a live arena before sending the signal.
    let arena = unsafe { &*ARENA.load(Ordering::Acquire) };
    let reserved = arena.reserved_bytes();
    let mut intact_blocks = 0;
    for seq in 0..HANDLER_BLOCKS {
        let layout = mixed_layout(seq);
        if let Ok(block) = arena.allocate(layout) {
            // SAFETY: fresh block, ours.
            let record = unsafe { fill(block, layout.size(), tag(9, seq)) };
            // SAFETY: still ours.
            if unsafe { intact(&record) } {
                intact_blocks += 1;
            }
        }
    }
    HANDLER_GREW.store(arena.reserved_bytes() > reserved, Ordering::Relaxed);
    HANDLER_BLOCKS_INTACT.store(intact_blocks, Ordering::Relaxed);
    HANDLER_DONE.store(true, Ordering::Release);
}

/// Waits for `flag` without allocating (the lock may be held); on timeout reports with write(2)
/// and exits, since a panic would allocate and hang. The watchdog catches a deadlock, which
/// never ends: its limit is generous, so a loaded machine that is slow to schedule the thread
/// or deliver the signal is not taken for one (it was 5 s).
fn wait_or_die(flag: &AtomicBool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !flag.load(Ordering::Acquire) {
        if Instant::now() > deadline {
            let message = b"watchdog: timed out waiting for ";
            // SAFETY: writing two valid buffers to stderr, then leaving without unwinding.
            unsafe {
                libc::write(2, message.as_ptr().cast(), message.len());
                libc::write(2, what.as_ptr().cast(), what.len());
                libc::write(2, b"\n".as_ptr().cast(), 1);
                libc::_exit(101);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn handler_allocation_completes_while_its_thread_holds_the_malloc_lock() {
    libdd_alloc::os::page_size().unwrap();
    let arena = Arena::new_in(4096, VirtualAllocator {})
        .unwrap()
        .with_max_chunk_size(4096);
    // Fill the first chunk, so that the handler's first allocation grows the arena.
    arena
        .allocate(Layout::from_size_align(arena.remaining_capacity(), 1).unwrap())
        .unwrap();
    ARENA.store(&arena as *const Arena as *mut Arena, Ordering::Release);
    // SAFETY: a zeroed sigaction is valid; the handler uses only atomics and the arena.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = allocate_in_handler as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
            0
        );
    }
    let thread_id = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: pthread_self has no preconditions.
            thread_id.store(unsafe { libc::pthread_self() } as usize, Ordering::Release);
            PARK_HERE.with(|p| p.set(true));
            // Parks inside the global allocator, holding its lock, until RELEASE.
            drop(std::hint::black_box(Box::new([0u8; 32])));
        });
        wait_or_die(&PARKED, "the thread to park inside malloc");
        let thread = thread_id.load(Ordering::Acquire) as libc::pthread_t;
        // SAFETY: the thread is alive (parked) and has a SIGUSR2 handler.
        let sent = unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
        if sent != 0 {
            RELEASE.store(true, Ordering::Release);
        }
        wait_or_die(&HANDLER_DONE, "the handler's arena allocation (deadlock?)");
        RELEASE.store(true, Ordering::Release);
    });
    assert!(
        HANDLER_SAW_LOCK_HELD.load(Ordering::Relaxed),
        "the malloc lock was not held"
    );
    assert!(
        HANDLER_GREW.load(Ordering::Relaxed),
        "the handler did not grow the arena"
    );
    assert_eq!(
        HANDLER_BLOCKS_INTACT.load(Ordering::Relaxed),
        HANDLER_BLOCKS as usize
    );
    ARENA.store(std::ptr::null_mut(), Ordering::Release);
}
