//! Adversarial review of `Divert` (issue 19 part 3): each test is one attack on the protocol, in
//! a binary of its own whose `#[global_allocator]` is a `Divert` over `Oracle`, `System` that
//! counts every call made on a thread that `Divert` says is diverted (there must be none) and
//! every block of the arena it is handed (there must be none). The tests run one at a time
//! (`SERIAL`): some take every thread slot, and the signal tests own `SIGUSR1`/`SIGUSR2`.
//! Fork and leaked-guard attacks run in forked children, so that what they leave diverted does
//! not reach the other tests; children report through their exit status and a parent watchdog
//! kills one that hangs.
#![cfg(all(
    any(target_os = "linux", target_os = "android"),
    target_pointer_width = "64"
))] // thread diversion
    // 64-bit only: the attacks reserve a 2 GiB arena and use 64-bit sizes; the 32-bit run covers
    // Divert with tests/divert_*.rs.

use libdd_alloc::{Divert, SyncVirtualArena, System};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Barrier, Mutex, Once};
use std::time::{Duration, Instant};

/// `System`, checking every call against what `Divert` promises.
struct Oracle;

/// Calls into `Oracle` from a thread that was diverted at the time.
static CALLS_WHILE_DIVERTED: AtomicUsize = AtomicUsize::new(0);
/// `dealloc`/`realloc` calls that handed `Oracle` a block of the arena.
static ARENA_BLOCKS_TO_SYSTEM: AtomicUsize = AtomicUsize::new(0);

impl Oracle {
    fn check(ptr: *mut u8) {
        if GLOBAL.is_diverted() {
            CALLS_WHILE_DIVERTED.fetch_add(1, Relaxed);
        }
        if GLOBAL.arena_contains(ptr) {
            ARENA_BLOCKS_TO_SYSTEM.fetch_add(1, Relaxed);
        }
    }
}

// SAFETY: forwards to `System`.
unsafe impl GlobalAlloc for Oracle {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(std::ptr::null_mut());
        // SAFETY: forwarded caller contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(std::ptr::null_mut());
        // SAFETY: forwarded caller contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::check(ptr);
        // SAFETY: forwarded caller contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        Self::check(ptr);
        // SAFETY: forwarded caller contract.
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Divert<Oracle, SyncVirtualArena> = Divert::new(Oracle);

/// One test at a time; a failed test poisons nothing the next one needs.
static SERIAL: Mutex<()> = Mutex::new(());

/// Prepares the arena once (2 GiB reserved, committed as used) and takes the test lock.
fn setup() -> std::sync::MutexGuard<'static, ()> {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let arena = SyncVirtualArena::new(2 << 30).unwrap();
        GLOBAL.prepare(Box::leak(Box::new(arena))).unwrap();
    });
    let lock = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    assert!(
        !GLOBAL.is_diverted(),
        "a previous test left this thread diverted"
    );
    lock
}

/// Fails the test if the oracle saw a broken promise.
fn assert_oracle_clean() {
    assert_eq!(
        CALLS_WHILE_DIVERTED.load(Relaxed),
        0,
        "System was called while diverted"
    );
    assert_eq!(
        ARENA_BLOCKS_TO_SYSTEM.load(Relaxed),
        0,
        "an arena block reached System"
    );
}

fn in_arena<T: ?Sized>(ptr: *const T) -> bool {
    GLOBAL.arena_contains(ptr.cast())
}

/// A value that tells blocks apart: `seed` spread over a word.
fn pattern(seed: usize, i: usize) -> u64 {
    (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64
}

// ---------------------------------------------------------------------------------------------
// Signals landing inside Divert's own calls, and nested handlers' guards dropped out of order.
// ---------------------------------------------------------------------------------------------

static HANDLER_RUNS: AtomicUsize = AtomicUsize::new(0);
static NESTED_RUNS: AtomicUsize = AtomicUsize::new(0);
/// Each kind of failure a handler found (it cannot panic: that would unwind out of `extern "C"`).
static HANDLER_REFUSED: AtomicUsize = AtomicUsize::new(0);
static HANDLER_NOT_IN_ARENA: AtomicUsize = AtomicUsize::new(0);
static HANDLER_CORRUPT: AtomicUsize = AtomicUsize::new(0);
static HANDLER_LOST_DIVERSION: AtomicUsize = AtomicUsize::new(0);
static HANDLER_KEPT_DIVERSION: AtomicUsize = AtomicUsize::new(0);
/// Whether the interrupted code holds a guard of its own (then the thread stays diverted after
/// the handler's guards go).
static INTERRUPTED_IS_DIVERTED: AtomicBool = AtomicBool::new(false);

/// What each handler does: diverts, builds std collections, checks they are in the arena and
/// intact, and ends its diversion. `depth` 0 also raises a nested signal in the middle and, at
/// the end, takes a second guard and drops the first one before it (out of order).
fn handler_body(depth: usize) {
    let Ok(first) = GLOBAL.divert_thread() else {
        HANDLER_REFUSED.fetch_add(1, Relaxed);
        return;
    };
    let seed = HANDLER_RUNS.fetch_add(1, Relaxed) * 2 + depth;
    let words: Vec<u64> = (0..48).map(|i| pattern(seed, i)).collect();
    let text = format!("handler {seed} depth {depth}: {:?}", &words[..3]);
    if !in_arena(words.as_ptr()) || !in_arena(text.as_ptr()) {
        HANDLER_NOT_IN_ARENA.fetch_add(1, Relaxed);
    }
    if depth == 0 && seed % 3 == 0 {
        // SAFETY: raising a signal on this thread; its handler diverts and allocates too.
        unsafe { libc::raise(libc::SIGUSR2) };
        if !GLOBAL.is_diverted() {
            HANDLER_LOST_DIVERSION.fetch_add(1, Relaxed);
        }
    }
    let second = GLOBAL.divert_thread();
    drop(first); // out of order: the later guard still diverts the thread
    if second.is_ok() {
        let more: Vec<String> = (0..8).map(|i| format!("{seed}/{i}")).collect();
        if !GLOBAL.is_diverted() || !more.iter().all(|s| in_arena(s.as_ptr())) {
            HANDLER_LOST_DIVERSION.fetch_add(1, Relaxed);
        }
    }
    let intact = words
        .iter()
        .enumerate()
        .all(|(i, &w)| w == pattern(seed, i))
        && text.starts_with(&format!("handler {seed} depth {depth}: "));
    if !intact {
        HANDLER_CORRUPT.fetch_add(1, Relaxed);
    }
    drop((words, text));
    drop(second);
    let expected = INTERRUPTED_IS_DIVERTED.load(Relaxed) || depth > 0;
    if GLOBAL.is_diverted() && !expected {
        HANDLER_KEPT_DIVERSION.fetch_add(1, Relaxed);
    }
}

extern "C" fn on_usr1(_: libc::c_int) {
    handler_body(0);
}

extern "C" fn on_usr2(_: libc::c_int) {
    NESTED_RUNS.fetch_add(1, Relaxed);
    handler_body(1);
}

fn install(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction is valid; the handler is the test's own.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(libc::sigaction(signal, &action, std::ptr::null_mut()), 0);
    }
}

/// The interrupted thread's work: `Vec`, `String` and `Box` allocated, grown, shrunk and freed,
/// each checked against its pattern. Returns how many blocks it checked.
fn churn(round: usize) -> usize {
    let mut words: Vec<u64> = Vec::new();
    for i in 0..200 {
        words.push(pattern(round, i));
    }
    let boxed = Box::new([pattern(round, 7); 16]);
    let mut text = String::with_capacity(4);
    for i in 0..20 {
        text.push_str(&i.to_string());
    }
    words.truncate(50);
    words.shrink_to_fit();
    assert!(words
        .iter()
        .enumerate()
        .all(|(i, &w)| w == pattern(round, i)));
    assert!(boxed.iter().all(|&w| w == pattern(round, 7)));
    assert_eq!(text, (0..20).map(|i| i.to_string()).collect::<String>());
    3
}

/// Runs `churn` on this thread for `signals` signals sent by another thread with `pthread_kill`.
fn churn_under_signals(signals: usize) {
    // SAFETY: pthread_self has no preconditions.
    let target = unsafe { libc::pthread_self() };
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let done = &done;
        let target = target as usize;
        s.spawn(move || {
            for i in 0..signals {
                // SAFETY: the target thread is alive until `done` (it waits for this thread).
                unsafe { libc::pthread_kill(target as libc::pthread_t, libc::SIGUSR1) };
                if i % 8 == 0 {
                    std::thread::yield_now();
                }
            }
            done.store(true, SeqCst);
        });
        let mut round = 0;
        while !done.load(SeqCst) {
            churn(round);
            round += 1;
        }
    });
}

#[test]
fn signals_inside_divert_calls_and_nested_out_of_order_guards_keep_every_promise() {
    let _serial = setup();
    install(libc::SIGUSR1, on_usr1);
    install(libc::SIGUSR2, on_usr2);
    // Not diverted: signals land in the fast path, in `System`, and in the slow path (a guard
    // is alive while the handler runs, so the interrupted thread's calls go through it).
    INTERRUPTED_IS_DIVERTED.store(false, Relaxed);
    churn_under_signals(20_000);
    assert!(!GLOBAL.is_diverted());
    // Diverted: signals land between the diversion check and the arena call, in the arena's
    // compare-exchange, and in guard creation and drop of the handler's own guards.
    {
        let _guard = GLOBAL.divert_thread().unwrap();
        INTERRUPTED_IS_DIVERTED.store(true, Relaxed);
        churn_under_signals(20_000);
        INTERRUPTED_IS_DIVERTED.store(false, Relaxed);
    }
    assert!(!GLOBAL.is_diverted());
    let runs = HANDLER_RUNS.load(Relaxed);
    assert!(
        runs > 100,
        "only {runs} handler runs: the attack did not happen"
    );
    assert!(NESTED_RUNS.load(Relaxed) > 10, "no nested handler ran");
    assert_eq!(
        HANDLER_REFUSED.load(Relaxed),
        0,
        "a handler could not divert"
    );
    assert_eq!(
        HANDLER_NOT_IN_ARENA.load(Relaxed),
        0,
        "a handler block outside the arena"
    );
    assert_eq!(
        HANDLER_CORRUPT.load(Relaxed),
        0,
        "a handler block was overwritten"
    );
    assert_eq!(
        HANDLER_LOST_DIVERSION.load(Relaxed),
        0,
        "a guard stopped diverting"
    );
    assert_eq!(
        HANDLER_KEPT_DIVERSION.load(Relaxed),
        0,
        "diversion outlived the guards"
    );
    assert_oracle_clean();
}

// ---------------------------------------------------------------------------------------------
// More threads than slots.
// ---------------------------------------------------------------------------------------------

const THREADS: usize = 80;
const SLOTS: usize = 64;

#[test]
fn more_threads_than_slots_diverting_at_once_are_refused_cleanly() {
    let _serial = setup();
    let barrier = Barrier::new(THREADS);
    let granted = AtomicUsize::new(0);
    let wrong = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (barrier, granted, wrong) = (&barrier, &granted, &wrong);
            s.spawn(move || {
                let guard = GLOBAL.divert_thread();
                barrier.wait(); // every thread has tried: the table is full
                let mine: Vec<u64> = (0..64).map(|i| pattern(t, i)).collect();
                match &guard {
                    Ok(_) => {
                        granted.fetch_add(1, Relaxed);
                        // A nested guard finds no slot, and the thread stays diverted.
                        let nested = GLOBAL.divert_thread();
                        let bad =
                            nested.is_ok() || !GLOBAL.is_diverted() || !in_arena(mine.as_ptr());
                        drop(nested);
                        if bad || !GLOBAL.is_diverted() {
                            wrong.fetch_add(1, Relaxed);
                        }
                    }
                    Err(_) => {
                        if GLOBAL.is_diverted() || in_arena(mine.as_ptr()) {
                            wrong.fetch_add(1, Relaxed);
                        }
                    }
                }
                barrier.wait(); // every thread has checked before any guard goes
                if !mine.iter().enumerate().all(|(i, &w)| w == pattern(t, i)) {
                    wrong.fetch_add(1, Relaxed);
                }
                drop(mine);
                drop(guard);
                if GLOBAL.is_diverted() {
                    wrong.fetch_add(1, Relaxed);
                }
            });
        }
    });
    assert_eq!(granted.load(Relaxed), SLOTS);
    assert_eq!(wrong.load(Relaxed), 0);
    // Every slot came back.
    let guards: Vec<_> = (0..SLOTS)
        .map(|_| GLOBAL.divert_thread().unwrap())
        .collect();
    assert!(GLOBAL.divert_thread().is_err());
    drop(guards);
    assert!(!GLOBAL.is_diverted());
    assert_oracle_clean();
}

#[test]
fn threads_churning_guards_past_the_table_never_see_each_others_diversion() {
    let _serial = setup();
    let wrong = AtomicUsize::new(0);
    let granted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (wrong, granted, refused) = (&wrong, &granted, &refused);
            s.spawn(move || {
                for round in 0..300 {
                    let seed = t * 1000 + round;
                    match GLOBAL.divert_thread() {
                        Ok(guard) => {
                            granted.fetch_add(1, Relaxed);
                            let mine: Vec<u64> = (0..32).map(|i| pattern(seed, i)).collect();
                            if !in_arena(mine.as_ptr()) || !GLOBAL.is_diverted() {
                                wrong.fetch_add(1, Relaxed);
                            }
                            std::thread::yield_now();
                            if !mine.iter().enumerate().all(|(i, &w)| w == pattern(seed, i)) {
                                wrong.fetch_add(1, Relaxed);
                            }
                            drop(mine);
                            drop(guard);
                        }
                        Err(_) => {
                            refused.fetch_add(1, Relaxed);
                        }
                    }
                    let free: Vec<u64> = (0..32).map(|i| pattern(seed, i)).collect();
                    if in_arena(free.as_ptr()) || GLOBAL.is_diverted() {
                        wrong.fetch_add(1, Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(wrong.load(Relaxed), 0);
    assert!(granted.load(Relaxed) > 0);
    eprintln!(
        "granted {} refused {}",
        granted.load(Relaxed),
        refused.load(Relaxed)
    );
    assert_oracle_clean();
}

// ---------------------------------------------------------------------------------------------
// Blocks crossing the boundary.
// ---------------------------------------------------------------------------------------------

#[test]
fn resizing_system_blocks_while_diverted_copies_them_and_never_calls_system() {
    let _serial = setup();
    let mut shrunk: Vec<u64> = (0..1000).map(|i| pattern(1, i)).collect();
    let mut grown: Vec<u8> = vec![0xa5; 100];
    let huge: Vec<u8> = vec![0x5a; 1 << 20];
    let guard = GLOBAL.divert_thread().unwrap();
    shrunk.truncate(3);
    shrunk.shrink_to_fit(); // realloc to a smaller size: copied into the arena
    assert!(in_arena(shrunk.as_ptr()));
    assert_eq!(shrunk, [pattern(1, 0), pattern(1, 1), pattern(1, 2)]);
    grown.resize(10_000, 0x11);
    assert!(in_arena(grown.as_ptr()));
    assert!(grown[..100].iter().all(|&b| b == 0xa5) && grown[100..].iter().all(|&b| b == 0x11));
    // SAFETY: GlobalAlloc contract kept: live blocks with their layouts, nonzero sizes.
    unsafe {
        // Beyond what the arena can hold: null, and the original is still the caller's.
        let layout = Layout::from_size_align(1 << 20, 1).unwrap();
        let moved = GLOBAL.realloc(huge.as_ptr().cast_mut(), layout, 4 << 30);
        assert!(moved.is_null());
        assert!(huge.iter().all(|&b| b == 0x5a));
        // Huge alignments are refused, never wrapped.
        for shift in [32, 40, 62] {
            let layout = Layout::from_size_align(1 << shift, 1 << shift).unwrap();
            assert!(GLOBAL.alloc(layout).is_null(), "align 1 << {shift}");
            assert!(GLOBAL.alloc_zeroed(layout).is_null(), "align 1 << {shift}");
        }
        // A big alignment that does fit is honoured, and given back in place.
        let layout = Layout::from_size_align(8, 1 << 21).unwrap();
        let aligned = GLOBAL.alloc(layout);
        assert!(!aligned.is_null() && aligned.addr() % (1 << 21) == 0 && in_arena(aligned));
        GLOBAL.dealloc(aligned, layout);
    }
    drop(huge); // a System block freed while diverted: leaked
    drop(guard);
    // After the diversion: the copies are arena blocks, freed to the arena or moved to System.
    shrunk.extend(0..100);
    assert!(!in_arena(shrunk.as_ptr()));
    assert_eq!(shrunk[..3], [pattern(1, 0), pattern(1, 1), pattern(1, 2)]);
    drop(grown);
    assert_oracle_clean();
}

#[test]
fn zeroed_blocks_over_bytes_given_back_while_diverted_are_zero() {
    let _serial = setup();
    let _guard = GLOBAL.divert_thread().unwrap();
    for size in [8, 100, 4096, 100_000] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: GlobalAlloc contract kept: nonzero sizes, blocks freed with their layouts.
        unsafe {
            let dirty = GLOBAL.alloc(layout);
            assert!(in_arena(dirty));
            dirty.write_bytes(0xee, size);
            GLOBAL.dealloc(dirty, layout); // the last block: its bytes go back
            let zeroed = GLOBAL.alloc_zeroed(layout);
            assert_eq!(zeroed, dirty, "the bytes given back are reused");
            assert!(std::slice::from_raw_parts(zeroed, size)
                .iter()
                .all(|&b| b == 0));
            // Grown in place over dirty bytes: `Vec` does not ask for zeroes, `realloc` keeps
            // the head.
            zeroed.write_bytes(0x11, size);
            let grown = GLOBAL.realloc(zeroed, layout, 2 * size);
            assert!(std::slice::from_raw_parts(grown, size)
                .iter()
                .all(|&b| b == 0x11));
            GLOBAL.dealloc(grown, Layout::from_size_align(2 * size, 8).unwrap());
        }
    }
    assert_oracle_clean();
}

/// In a child, so that no other thread of the test process sees the process diversion.
#[test]
fn a_thread_diversion_outlives_a_process_diversion_dropped_before_it() {
    let _serial = setup();
    let status = in_child(|| {
        let process = GLOBAL.divert_process().unwrap();
        let thread = GLOBAL.divert_thread().unwrap();
        drop(process);
        let during: Vec<u64> = (0..100).collect();
        if !GLOBAL.is_diverted() || !in_arena(during.as_ptr()) {
            return 8;
        }
        let other = std::thread::scope(|s| {
            s.spawn(|| {
                let other: Vec<u64> = (0..100).collect();
                GLOBAL.is_diverted() || in_arena(other.as_ptr())
            })
            .join()
            .unwrap()
        });
        drop(during);
        drop(thread);
        if other || GLOBAL.is_diverted() {
            return 9;
        }
        if CALLS_WHILE_DIVERTED.load(Relaxed) + ARENA_BLOCKS_TO_SYSTEM.load(Relaxed) != 0 {
            return 4;
        }
        0
    });
    assert_eq!(status, 0);
}

#[test]
fn arena_blocks_freed_on_another_thread_after_the_diversion_never_overlap_new_ones() {
    let _serial = setup();
    let (send, receive) = std::sync::mpsc::sync_channel::<Vec<usize>>(4);
    let wrong = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let wrong = &wrong;
        s.spawn(move || {
            // Frees and grows the diverted thread's blocks while it allocates more.
            for (n, blocks) in receive.into_iter().enumerate() {
                for (k, raw) in blocks.into_iter().enumerate() {
                    // SAFETY: a `Box<[u64; 16]>` leaked by the other thread, given here once.
                    let boxed = unsafe { Box::from_raw(raw as *mut [u64; 16]) };
                    if boxed.iter().any(|&w| w != pattern(raw, 0)) {
                        wrong.fetch_add(1, Relaxed);
                    }
                    if (n + k) % 2 == 0 {
                        let mut grown = Vec::from(boxed as Box<[u64]>);
                        grown.extend([1, 2, 3]); // moves to System
                        if in_arena(grown.as_ptr())
                            || grown[..16].iter().any(|&w| w != pattern(raw, 0))
                        {
                            wrong.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        });
        for _round in 0..2000 {
            let guard = GLOBAL.divert_thread().unwrap();
            let blocks: Vec<Box<[u64; 16]>> = (0..8)
                .map(|_| {
                    let mut b = Box::new([0u64; 16]);
                    let key = &*b as *const _ as usize;
                    b.fill(pattern(key, 0));
                    b
                })
                .collect();
            std::thread::yield_now();
            for b in &blocks {
                let key = &**b as *const _ as usize;
                if !in_arena(key as *const u8) || b.iter().any(|&w| w != pattern(key, 0)) {
                    wrong.fetch_add(1, Relaxed);
                }
            }
            let raw: Vec<usize> = blocks
                .into_iter()
                .map(|b| Box::into_raw(b) as usize)
                .collect();
            drop(guard);
            let raw = raw.clone(); // the list itself moves to System before it crosses
            send.send(raw).unwrap();
        }
        drop(send);
    });
    assert_eq!(wrong.load(Relaxed), 0);
    assert_oracle_clean();
}

// ---------------------------------------------------------------------------------------------
// `prepare` racing with allocation on other threads (a `Divert` of the test's own, called
// directly: the global one is prepared once for the binary).
// ---------------------------------------------------------------------------------------------

#[test]
fn prepare_racing_with_allocation_and_diversion_on_other_threads() {
    let _serial = setup();
    let divert: &'static Divert<System, SyncVirtualArena> =
        Box::leak(Box::new(Divert::new(System)));
    let prepared = AtomicBool::new(false);
    let wrong = AtomicUsize::new(0);
    let diverted_after = AtomicUsize::new(0);
    let word = Layout::new::<u64>();
    std::thread::scope(|s| {
        for t in 0..4usize {
            let (prepared, wrong, diverted_after) = (&prepared, &wrong, &diverted_after);
            s.spawn(move || {
                for round in 0..20_000usize {
                    let was_prepared = prepared.load(SeqCst);
                    let guard = (round % 4 == 0).then(|| divert.divert_thread());
                    let diverted = matches!(guard, Some(Ok(_)));
                    if was_prepared && guard.as_ref().is_some_and(Result::is_err) {
                        wrong.fetch_add(1, Relaxed);
                    }
                    if diverted && was_prepared {
                        diverted_after.fetch_add(1, Relaxed);
                    }
                    // SAFETY: GlobalAlloc contract kept: nonzero size, freed with its layout.
                    unsafe {
                        let block = divert.alloc(word);
                        if block.is_null() || divert.arena_contains(block) != diverted {
                            wrong.fetch_add(1, Relaxed);
                        }
                        block.cast::<u64>().write(pattern(t, round));
                        std::hint::black_box(block);
                        if block.cast::<u64>().read() != pattern(t, round) {
                            wrong.fetch_add(1, Relaxed);
                        }
                        divert.dealloc(block, word);
                    }
                    drop(guard);
                }
            });
        }
        std::thread::sleep(Duration::from_millis(2));
        let arena = SyncVirtualArena::new(1 << 30).unwrap();
        divert.prepare(Box::leak(Box::new(arena))).unwrap();
        prepared.store(true, SeqCst);
    });
    assert_eq!(wrong.load(Relaxed), 0);
    assert!(!divert.is_diverted());
    assert_oracle_clean();
}

// ---------------------------------------------------------------------------------------------
// Fork and leaked guards, in children.
// ---------------------------------------------------------------------------------------------

/// Forks; the child runs `child` and exits with its status (panics exit 99); the parent waits
/// at most 60 s and returns the status.
fn in_child(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: fork; the child only runs `child` and leaves with `_exit`. glibc's malloc is
    // fork-safe, and the tests run one at a time.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        // SAFETY: leave the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
            return libc::WEXITSTATUS(status);
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("child hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Exit status of a child that found a thread diverted which holds no guard.
const DIVERTED_WITHOUT_A_GUARD: i32 = 3;

/// Spawns 32 threads alive at once in this (child) process, so that they take every cached
/// stack, and returns `DIVERTED_WITHOUT_A_GUARD` if any of them starts out diverted, after
/// checking that what it then does keeps the memory promises.
fn spawned_threads_start_undiverted() -> i32 {
    let barrier = Barrier::new(32);
    let diverted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..32 {
            let (barrier, diverted) = (&barrier, &diverted);
            s.spawn(move || {
                let here = GLOBAL.is_diverted();
                let v: Vec<u64> = (0..100).map(|i| pattern(5, i)).collect();
                assert_eq!(in_arena(v.as_ptr()), here);
                diverted.fetch_add(usize::from(here), Relaxed);
                barrier.wait();
            });
        }
    });
    if CALLS_WHILE_DIVERTED.load(Relaxed) + ARENA_BLOCKS_TO_SYSTEM.load(Relaxed) != 0 {
        return 4;
    }
    if diverted.load(Relaxed) != 0 {
        return DIVERTED_WITHOUT_A_GUARD;
    }
    0
}

/// A `fork` while another thread holds a `ThreadDiversion` (a profiler's handler running on it,
/// say): in the child that thread does not exist, its guard is never dropped, and its identity
/// (the thread pointer) stays in the table. glibc puts the dead threads' stacks, with their
/// control blocks, in its stack cache at `fork`, so the child's next thread got that identity
/// and was diverted for good (found by this test); `forget_other_threads` in the child ends it.
#[test]
// Under qemu-user (aarch64 CI) the fork child exits 127 before it reports (not yet explained);
// natively on x86_64 the test runs and is the one that found the bug.
#[cfg_attr(qemu_user, ignore = "the fork child exits 127 under qemu-user")]
fn fork_while_another_thread_holds_a_guard_leaves_no_thread_of_the_child_diverted() {
    let _serial = setup();
    let held = AtomicBool::new(false);
    let release = AtomicBool::new(false);
    let status = std::thread::scope(|s| {
        s.spawn(|| {
            let _guard = GLOBAL.divert_thread().unwrap();
            held.store(true, SeqCst);
            while !release.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        while !held.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let status = in_child(|| {
            if GLOBAL.is_diverted() {
                return 2;
            }
            GLOBAL.forget_other_threads();
            spawned_threads_start_undiverted()
        });
        release.store(true, SeqCst);
        status
    });
    assert!(!GLOBAL.is_diverted());
    assert_eq!(
        status, 0,
        "a thread of the fork child was diverted by the guard of a parent's thread"
    );
    assert_oracle_clean();
}

/// The documented hazard of a leaked guard (`mem::forget`): the thread's identity stays
/// diverted, and a later thread that gets it is diverted from its start. Pinned here as memory
/// safe: that thread's blocks come from the arena, the `System` blocks it frees (its spawn
/// closure, made by its parent) are leaked, and nothing crosses over.
#[test]
fn a_leaked_guard_diverts_a_later_thread_with_its_identity_without_breaking_memory() {
    let _serial = setup();
    let status = in_child(|| {
        std::thread::spawn(|| std::mem::forget(GLOBAL.divert_thread().unwrap()))
            .join()
            .unwrap();
        match spawned_threads_start_undiverted() {
            DIVERTED_WITHOUT_A_GUARD => 0, // the documented reuse, memory intact
            0 => 5,                        // no reuse seen: the test exercised nothing
            other => other,
        }
    });
    assert_eq!(status, 0);
}

/// A fork child that diverts the whole process, as documented, while the parent has a thread
/// diverted: the child's own calls never reach `System`, and after its guard ends it allocates
/// from `System` again.
#[test]
fn process_diversion_in_a_child_forked_while_a_thread_was_diverted() {
    let _serial = setup();
    let held = AtomicBool::new(false);
    let release = AtomicBool::new(false);
    let status = std::thread::scope(|s| {
        s.spawn(|| {
            let _guard = GLOBAL.divert_thread().unwrap();
            held.store(true, SeqCst);
            while !release.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        while !held.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let status = in_child(|| {
            let guard = GLOBAL.divert_process().unwrap();
            let report: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
            if !report.iter().all(|l| in_arena(l.as_ptr())) {
                return 6;
            }
            drop(report);
            drop(guard);
            let after = Box::new([1u8; 64]);
            if in_arena(after.as_ptr()) || GLOBAL.is_diverted() {
                return 7;
            }
            if CALLS_WHILE_DIVERTED.load(Relaxed) + ARENA_BLOCKS_TO_SYSTEM.load(Relaxed) != 0 {
                return 4;
            }
            0
        });
        release.store(true, SeqCst);
        status
    });
    assert_eq!(status, 0);
    assert_oracle_clean();
}
