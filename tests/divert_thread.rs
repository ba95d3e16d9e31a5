//! Thread diversion with std collections, through a `Divert` `#[global_allocator]` over a
//! counting `System`: blocks allocated before the diversion are freed (leaked), grown and shrunk
//! (copied into the arena) while diverted without a call to `System`; the diversion ends and
//! `System` serves the thread again, while the arena's blocks, freed or grown afterwards, never
//! reach `System`; other threads allocate from `System` throughout. The tests of this binary run
//! in parallel threads, each diverting itself only.
#![cfg(any(target_os = "linux", target_os = "android"))] // thread diversion: gettid

use libdd_alloc::{Divert, SyncVirtualArena, System};
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// `System`, counting each thread's calls, and every block of the arena it is handed.
struct Counting;

thread_local! {
    static MY_CALLS: Cell<usize> = const { Cell::new(0) };
}
static ARENA_BLOCKS_PASSED_TO_SYSTEM: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    fn count(ptr: *mut u8) {
        MY_CALLS.with(|c| c.set(c.get() + 1));
        if GLOBAL.arena_contains(ptr) {
            ARENA_BLOCKS_PASSED_TO_SYSTEM.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: forwards to `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(std::ptr::null_mut());
        // SAFETY: forwarded caller contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::count(ptr);
        // SAFETY: forwarded caller contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        Self::count(ptr);
        // SAFETY: forwarded caller contract.
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Divert<Counting, SyncVirtualArena> = Divert::new(Counting);

fn prepare() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let arena = SyncVirtualArena::new(1 << 30).unwrap();
        GLOBAL.prepare(Box::leak(Box::new(arena))).unwrap();
    });
}

fn my_calls() -> usize {
    MY_CALLS.with(Cell::get)
}

fn in_arena<T: ?Sized>(ptr: *const T) -> bool {
    GLOBAL.arena_contains(ptr.cast())
}

#[test]
fn blocks_from_before_the_diversion_are_leaked_or_copied_and_never_reach_system() {
    prepare();
    let mut grown: Vec<u32> = (0..100).collect();
    let mut text = String::from("before");
    let freed = Box::new([7u64; 8]);
    let mut shrunk: Vec<u64> = Vec::with_capacity(1000);
    shrunk.extend(0..10);
    let calls = my_calls();
    let guard = GLOBAL.divert_thread().unwrap();
    grown.extend(100..10_000);
    text.push_str(", during the diversion");
    drop(freed);
    shrunk.shrink_to_fit();
    let made: Vec<String> = (0..100).map(|i| format!("{i}")).collect();
    assert_eq!(my_calls(), calls, "System was called while diverted");
    drop(guard);
    assert!(in_arena(grown.as_ptr()) && in_arena(text.as_ptr()) && in_arena(shrunk.as_ptr()));
    assert!(grown.iter().copied().eq(0..10_000));
    assert_eq!(text, "before, during the diversion");
    assert_eq!(
        (shrunk.capacity(), &shrunk[..]),
        (10, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9][..])
    );
    assert_eq!(made.iter().map(String::len).sum::<usize>(), 10 + 90 * 2);
    // Diversion over: freeing the arena's blocks does not reach System.
    drop((grown, shrunk, made));
    assert_eq!(my_calls(), calls);
    // Growing one moves it to System (one allocation), and its old bytes back to the arena.
    text.reserve(10_000);
    assert!(!in_arena(text.as_ptr()));
    for _ in 0..2 {
        text.push_str(" and after");
    }
    assert!(text.starts_with("before, during the diversion and after and after"));
    assert_eq!(my_calls(), calls + 1);
    assert_eq!(ARENA_BLOCKS_PASSED_TO_SYSTEM.load(Ordering::Relaxed), 0);
}

#[test]
fn allocation_resumes_from_system_when_the_diversion_ends() {
    prepare();
    let during = {
        let _guard = GLOBAL.divert_thread().unwrap();
        assert!(GLOBAL.is_diverted());
        let during: Vec<u64> = (0..1000).collect();
        assert!(in_arena(during.as_ptr()));
        during
    };
    assert!(!GLOBAL.is_diverted());
    let calls = my_calls();
    let after: Vec<u64> = during.iter().map(|x| x * 2).collect();
    let boxed = Box::new(format!("{}", after.len()));
    assert!(!in_arena(after.as_ptr()) && !in_arena(boxed.as_ptr()));
    assert!(my_calls() >= calls + 2);
    assert_eq!(after.iter().sum::<u64>(), 999 * 1000);
    drop(during);
    assert_eq!(ARENA_BLOCKS_PASSED_TO_SYSTEM.load(Ordering::Relaxed), 0);
}

#[test]
fn other_threads_allocate_from_system_while_one_is_diverted() {
    prepare();
    let stop = AtomicBool::new(false);
    let diverted = AtomicBool::new(false);
    let blocks_in_arena = AtomicUsize::new(0);
    let blocks_while_diverted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..2usize {
            let (stop, diverted) = (&stop, &diverted);
            let (in_it, counted) = (&blocks_in_arena, &blocks_while_diverted);
            s.spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let during = diverted.load(Ordering::Acquire);
                    let names: Vec<String> = (0..32).map(|i| format!("{t}-{i}")).collect();
                    let hits = names.iter().filter(|n| in_arena(n.as_ptr())).count()
                        + usize::from(in_arena(names.as_ptr()));
                    in_it.fetch_add(hits, Ordering::Relaxed);
                    if during && diverted.load(Ordering::Acquire) {
                        counted.fetch_add(names.len(), Ordering::Relaxed);
                    }
                }
            });
        }
        let guard = GLOBAL.divert_thread().unwrap();
        diverted.store(true, Ordering::Release);
        let mut mine: Vec<String> = Vec::new();
        // Until the other threads have allocated a good many blocks during the diversion.
        while blocks_while_diverted.load(Ordering::Relaxed) < 10_000 {
            mine.push(format!("{}", mine.len()));
            if mine.len() == 1000 {
                mine.clear();
            }
            std::thread::yield_now();
        }
        assert!(mine.iter().all(|s| in_arena(s.as_ptr())));
        diverted.store(false, Ordering::Release);
        drop(guard);
        stop.store(true, Ordering::Release);
    });
    assert_eq!(blocks_in_arena.load(Ordering::Relaxed), 0);
}
