//! std collections in a `SIGSEGV` handler while its own thread holds the malloc lock: the
//! `#[global_allocator]` is a `Divert` over `LockedMalloc` (`System` behind a spinlock, like a
//! `malloc` with one arena lock). A thread takes that lock and, inside it, writes to a page mapped
//! without access: a real `SIGSEGV` on the thread that holds the lock. The handler diverts its
//! thread, builds a `Vec<String>`, a `format!`ed report and a `serde_json` document, raises a
//! nested signal whose handler diverts and allocates too, then makes the page writable and
//! returns, so the faulting write completes and the lock is released. Any call into
//! `LockedMalloc` from the handler would spin forever on the lock its own thread holds: the
//! handler must finish before a watchdog fires, and `LockedMalloc` counts (and serves without
//! the lock, to fail with a message rather than hang) every call made from the handler while it
//! is diverted: there must be none.
#![cfg(any(target_os = "linux", target_os = "android"))] // thread diversion: gettid

use libdd_alloc::{Divert, Layout, SyncLinearAllocator, System, VirtualAllocator};
use std::alloc::GlobalAlloc;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `System` behind a spinlock. A thread that sets `FAULT_HERE` writes to `PAGE` (no access)
/// while it holds the lock.
struct LockedMalloc;

static LOCK: AtomicBool = AtomicBool::new(false);
static PAGE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
/// The thread the handler runs on, while the handler is diverted; 0 otherwise.
static HANDLER_THREAD: AtomicUsize = AtomicUsize::new(0);
/// Calls into `LockedMalloc` by the handler's thread while it was diverted.
static CALLS_WHILE_DIVERTED: AtomicUsize = AtomicUsize::new(0);
/// `dealloc`/`realloc` calls that handed `LockedMalloc` a block of the arena.
static ARENA_BLOCKS_PASSED_TO_MALLOC: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static FAULT_HERE: Cell<bool> = const { Cell::new(false) };
}

fn gettid() -> usize {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as usize }
}

impl LockedMalloc {
    /// Runs `f` under the lock; a call from the diverted handler is counted and run without it.
    fn with_lock<T>(ptr: *mut u8, f: impl FnOnce() -> T) -> T {
        let handler = HANDLER_THREAD.load(Ordering::Relaxed);
        if handler != 0 && handler == gettid() {
            CALLS_WHILE_DIVERTED.fetch_add(1, Ordering::Relaxed);
            return f();
        }
        if GLOBAL.arena().is_some_and(|arena| in_arena(arena, ptr)) {
            ARENA_BLOCKS_PASSED_TO_MALLOC.fetch_add(1, Ordering::Relaxed);
        }
        while LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        if FAULT_HERE.with(|f| f.replace(false)) {
            // SAFETY: not safe until the handler makes the page writable, which is the test.
            unsafe { PAGE.load(Ordering::Acquire).write_volatile(1) };
        }
        let result = f();
        LOCK.store(false, Ordering::Release);
        result
    }
}

// SAFETY: forwards to `System`.
unsafe impl GlobalAlloc for LockedMalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        Self::with_lock(std::ptr::null_mut(), || unsafe { System.alloc(layout) })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded caller contract.
        Self::with_lock(ptr, || unsafe { System.dealloc(ptr, layout) })
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        Self::with_lock(ptr, || unsafe { System.realloc(ptr, layout, size) })
    }
}

type Arena = SyncLinearAllocator<VirtualAllocator>;

#[global_allocator]
static GLOBAL: Divert<LockedMalloc, Arena> = Divert::new(LockedMalloc);

fn in_arena(arena: &Arena, ptr: *mut u8) -> bool {
    // The arena's blocks lie in its buffer, which starts at its first block.
    let start = ARENA_START.load(Ordering::Relaxed);
    (start..start + arena.reserved_bytes()).contains(&(ptr as usize))
}
static ARENA_START: AtomicUsize = AtomicUsize::new(0);

/// What the handlers leave for the test to check (the report's bytes stay in the arena).
static REPORT: AtomicPtr<String> = AtomicPtr::new(std::ptr::null_mut());
static JSON: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());
static SAW_LOCK_HELD: AtomicBool = AtomicBool::new(false);
static NESTED_REPORT_LEN: AtomicUsize = AtomicUsize::new(0);
static STILL_DIVERTED_AFTER_NESTED: AtomicBool = AtomicBool::new(false);
static HANDLER_DONE: AtomicBool = AtomicBool::new(false);
static HANDLER_FAILED: AtomicUsize = AtomicUsize::new(0);

const FRAMES: usize = 32;

extern "C" fn nested(signal: libc::c_int) {
    let Ok(_diverted) = GLOBAL.divert_thread() else {
        HANDLER_FAILED.store(2, Ordering::Relaxed);
        return;
    };
    let words: Vec<String> = (0..100).map(|i| format!("nested {signal} #{i}")).collect();
    NESTED_REPORT_LEN.store(words.concat().len(), Ordering::Relaxed);
}

extern "C" fn on_segv(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    SAW_LOCK_HELD.store(LOCK.load(Ordering::Relaxed), Ordering::Relaxed);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let fault = unsafe { (*info).si_addr() } as usize;
    {
        let Ok(_diverted) = GLOBAL.divert_thread() else {
            HANDLER_FAILED.store(1, Ordering::Relaxed);
            return;
        };
        HANDLER_THREAD.store(gettid(), Ordering::Relaxed);
        let frames: Vec<String> = (0..FRAMES)
            .map(|i| format!("  #{i:02} {:#018x}", fault + 16 * i))
            .collect();
        let report = format!(
            "=== crash report ===\nsignal: {signal}\nfault address: {fault:#x}\nframes:\n{}\n",
            frames.join("\n")
        );
        let json = serde_json::to_vec(&serde_json::json!({
            "signal": signal,
            "fault": fault,
            "frames": frames,
        }));
        // SAFETY: raising a signal on this thread; its handler diverts and allocates too.
        unsafe { libc::raise(libc::SIGUSR1) };
        STILL_DIVERTED_AFTER_NESTED.store(GLOBAL.is_diverted(), Ordering::Relaxed);
        match json {
            Ok(json) => JSON.store(Box::into_raw(Box::new(json)), Ordering::Release),
            Err(_) => HANDLER_FAILED.store(3, Ordering::Relaxed),
        }
        REPORT.store(Box::into_raw(Box::new(report)), Ordering::Release);
        // `frames` is dropped here, while diverted: its blocks go back to the arena.
    }
    HANDLER_THREAD.store(0, Ordering::Relaxed);
    let page = PAGE.load(Ordering::Acquire);
    // SAFETY: our own page: once writable, the faulting write succeeds when the handler returns.
    if unsafe { libc::mprotect(page.cast(), 4096, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
        // SAFETY: leave at once rather than fault forever.
        unsafe { libc::_exit(102) };
    }
    HANDLER_DONE.store(true, Ordering::Release);
}

/// Waits for `flag` without allocating; on timeout reports with write(2) and exits (a panic
/// would allocate and hang on the lock). Generous: it catches a deadlock, which never ends.
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

fn install(signal: libc::c_int, handler: usize, flags: libc::c_int) {
    // SAFETY: a zeroed sigaction is valid; the handlers are the test's own.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(libc::sigaction(signal, &action, std::ptr::null_mut()), 0);
    }
}

#[test]
fn segv_handler_formats_with_std_collections_while_its_thread_holds_the_malloc_lock() {
    let layout = Layout::from_size_align(1 << 20, 4096).unwrap();
    let arena: &'static Arena = Box::leak(Box::new(
        Arena::new_in(layout, VirtualAllocator {}).unwrap(),
    ));
    let probe = libdd_alloc::Allocator::allocate(arena, Layout::new::<u8>()).unwrap();
    ARENA_START.store(probe.cast::<u8>().as_ptr() as usize, Ordering::Relaxed);
    // SAFETY: the most recent block, given back.
    unsafe { libdd_alloc::Allocator::deallocate(arena, probe.cast(), Layout::new::<u8>()) };
    GLOBAL.prepare(arena).unwrap();
    // SAFETY: a fresh anonymous mapping without access.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    PAGE.store(page.cast(), Ordering::Release);
    type Action = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
    install(libc::SIGSEGV, on_segv as Action as usize, libc::SA_SIGINFO);
    install(
        libc::SIGUSR1,
        nested as extern "C" fn(libc::c_int) as usize,
        0,
    );

    let faulted = std::thread::spawn(|| {
        FAULT_HERE.with(|f| f.set(true));
        // Faults inside the allocator, lock held; the handler runs, then this goes on.
        drop(std::hint::black_box(Box::new([7u8; 32])));
        // Diversion over: the thread allocates from `LockedMalloc` again.
        let after: Vec<u64> = (0..1000).collect();
        (after.as_ptr() as usize, after.iter().sum::<u64>())
    });
    wait_or_die(
        &HANDLER_DONE,
        "the SIGSEGV handler (deadlock on the malloc lock?)",
    );
    let (after, sum) = faulted.join().unwrap();

    assert_eq!(HANDLER_FAILED.load(Ordering::Relaxed), 0);
    assert!(
        SAW_LOCK_HELD.load(Ordering::Relaxed),
        "the malloc lock was not held"
    );
    assert_eq!(
        CALLS_WHILE_DIVERTED.load(Ordering::Relaxed),
        0,
        "the diverted handler called the global allocator's backing malloc"
    );
    assert!(STILL_DIVERTED_AFTER_NESTED.load(Ordering::Relaxed));
    let nested_len: usize = (0..100)
        .map(|i| format!("nested {} #{i}", libc::SIGUSR1).len())
        .sum();
    assert_eq!(NESTED_REPORT_LEN.load(Ordering::Relaxed), nested_len);
    // SAFETY: set by the handler, which is done (Acquire above).
    let report = unsafe { Box::from_raw(REPORT.load(Ordering::Acquire)) };
    // SAFETY: as above.
    let json = unsafe { Box::from_raw(JSON.load(Ordering::Acquire)) };
    assert!(
        in_arena(arena, report.as_ptr() as *mut u8),
        "the report is not in the arena"
    );
    assert!(in_arena(arena, json.as_ptr() as *mut u8));
    let fault = page as usize;
    assert!(report.starts_with(&format!(
        "=== crash report ===\nsignal: 11\nfault address: {fault:#x}\nframes:\n  #00 {fault:#018x}\n"
    )));
    assert_eq!(report.lines().count(), 4 + FRAMES);
    let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(parsed["signal"], 11);
    assert_eq!(parsed["fault"].as_u64(), Some(fault as u64));
    assert_eq!(parsed["frames"].as_array().map(Vec::len), Some(FRAMES));
    assert_eq!(parsed["frames"][3], format!("  #03 {:#018x}", fault + 48));
    // After the diversion: `LockedMalloc` serves the thread again, and the handler's blocks,
    // freed here on another thread, go back to the arena, not to `LockedMalloc`.
    assert!(!in_arena(arena, after as *mut u8));
    assert_eq!(sum, 999 * 1000 / 2);
    let used = arena.used_bytes();
    assert!(used > 0);
    drop(report);
    drop(json);
    assert_eq!(ARENA_BLOCKS_PASSED_TO_MALLOC.load(Ordering::Relaxed), 0);
    assert!(arena.used_bytes() <= used);
    // SAFETY: our own mapping, no longer used.
    unsafe { libc::munmap(page, 4096) };
}
