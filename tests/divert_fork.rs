//! std collections in the child of `fork` while other threads hammer `malloc`: the
//! `#[global_allocator]` is a `Divert` over `LockedMalloc` (`System` behind a spinlock that, like
//! many allocators, does nothing about `fork`). Two threads allocate and free in a loop while the
//! main thread forks 1,000 times; a child forked while a hammering thread held the lock inherits
//! it held, by a thread that does not exist in the child, forever. Each child diverts the whole
//! process first thing, then uses `Vec`, `String`, `format!`, a `HashMap` and `serde_json` into a
//! `Vec`, checks the results and that it made no call into `LockedMalloc`, and reports through its
//! exit status. A child that called `LockedMalloc` with the lock held would spin forever: a
//! watchdog kills any child older than 60 s, and the whole test must end within 600 s. The
//! children that found the lock held are counted: at least one must have, or the test did not
//! exercise the hazard.
#![cfg(unix)] // fork

use libdd_alloc::{Divert, Layout, SyncLinearAllocator, System, VirtualAllocator};
use std::alloc::GlobalAlloc;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `System` behind a spinlock, counting every call.
struct LockedMalloc;

static LOCK: AtomicBool = AtomicBool::new(false);
static CALLS: AtomicUsize = AtomicUsize::new(0);

impl LockedMalloc {
    fn with_lock<T>(f: impl FnOnce() -> T) -> T {
        CALLS.fetch_add(1, Ordering::Relaxed);
        while LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
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
        Self::with_lock(|| unsafe { System.alloc(layout) })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded caller contract.
        Self::with_lock(|| unsafe { System.dealloc(ptr, layout) })
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        Self::with_lock(|| unsafe { System.realloc(ptr, layout, size) })
    }
}

type Arena = SyncLinearAllocator<VirtualAllocator>;

#[global_allocator]
static GLOBAL: Divert<LockedMalloc, Arena> = Divert::new(LockedMalloc);

const FORKS: usize = 1_000;

/// Exit statuses of a child.
const OK_LOCK_FREE: i32 = 0;
const OK_LOCK_HELD: i32 = 1;
const NOT_DIVERTED: i32 = 10;
const WRONG_RESULT: i32 = 11;
const CALLED_MALLOC: i32 = 12;

/// The child's work with std collections; returns whether every result is right.
fn child_work(child: usize) -> bool {
    let names: Vec<String> = (0..64).map(|i| format!("frame-{child}-{i}")).collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        index.insert(name.clone(), i);
    }
    let mut text = String::new();
    for name in &names {
        text.push_str(name);
        text.push(';');
    }
    let Ok(json) = serde_json::to_vec(&serde_json::json!({ "child": child, "names": names }))
    else {
        return false;
    };
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&json) else {
        return false;
    };
    index.len() == 64
        && index.get(&format!("frame-{child}-63")) == Some(&63)
        && text.matches(';').count() == 64
        && parsed["child"].as_u64() == Some(child as u64)
        && parsed["names"][17] == format!("frame-{child}-17")
}

/// Runs in the forked child: only `_exit` leaves it.
fn child(child: usize) -> ! {
    let lock_held = LOCK.load(Ordering::Relaxed);
    let calls = CALLS.load(Ordering::Relaxed);
    let status = match GLOBAL.divert_process() {
        Err(_) => NOT_DIVERTED,
        Ok(_diverted) => {
            if !child_work(child) {
                WRONG_RESULT
            } else if CALLS.load(Ordering::Relaxed) != calls {
                CALLED_MALLOC
            } else if lock_held {
                OK_LOCK_HELD
            } else {
                OK_LOCK_FREE
            }
        }
    };
    // SAFETY: leave without exit handlers or destructors.
    unsafe { libc::_exit(status) }
}

/// The child the watchdog may kill, 0 for none.
static RUNNING_CHILD: AtomicI32 = AtomicI32::new(0);
static TEST_DONE: AtomicBool = AtomicBool::new(false);
const CHILD_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_thousand_fork_children_use_std_collections_while_threads_hammer_malloc() {
    let deadline = Instant::now() + Duration::from_secs(600);
    let layout = Layout::from_size_align(8 << 20, 4096).unwrap();
    let arena = Arena::new_in(layout, VirtualAllocator {}).unwrap();
    GLOBAL.prepare(Box::leak(Box::new(arena))).unwrap();
    let stop = AtomicBool::new(false);
    let mut statuses: HashMap<i32, usize> = HashMap::new();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let stop = &stop;
            s.spawn(move || {
                let mut keep: Vec<Box<[u64]>> = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    keep.push(vec![t ^ i; 1 + (i % 64) as usize].into_boxed_slice());
                    if keep.len() > 256 {
                        keep.clear();
                    }
                    i += 1;
                }
            });
        }
        // Kills a child that hangs (a deadlock on the inherited lock), so that the loop below
        // sees it as killed and the test fails instead of hanging.
        s.spawn(|| {
            let mut seen = (0, Instant::now());
            while !TEST_DONE.load(Ordering::Relaxed) {
                let pid = RUNNING_CHILD.load(Ordering::Relaxed);
                if pid != seen.0 {
                    seen = (pid, Instant::now());
                } else if pid != 0 && seen.1.elapsed() > CHILD_LIMIT {
                    // SAFETY: signalling our own child, not yet reaped.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        for n in 0..FORKS {
            // SAFETY: the child diverts before anything allocates, then only `_exit`s.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                child(n);
            }
            RUNNING_CHILD.store(pid, Ordering::Relaxed);
            let mut status = 0;
            // SAFETY: waiting for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            RUNNING_CHILD.store(0, Ordering::Relaxed);
            let outcome = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -libc::WTERMSIG(status)
            };
            *statuses.entry(outcome).or_default() += 1;
            if !matches!(outcome, OK_LOCK_FREE | OK_LOCK_HELD) || Instant::now() > deadline {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        TEST_DONE.store(true, Ordering::Relaxed);
    });
    let ok = statuses.get(&OK_LOCK_FREE).unwrap_or(&0) + statuses.get(&OK_LOCK_HELD).unwrap_or(&0);
    assert_eq!(
        ok, FORKS,
        "children by exit status (negative: killed by that signal): {statuses:?}"
    );
    assert!(
        statuses.get(&OK_LOCK_HELD).is_some_and(|&n| n > 0),
        "no child was forked while the malloc lock was held: {statuses:?}"
    );
    println!("children by exit status: {statuses:?}");
}
