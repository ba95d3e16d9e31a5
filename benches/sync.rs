//! ns per allocation of the lock-free `SyncChainAllocator` against the `Cell` `ChainAllocator`
//! and blink-alloc's `SyncBlinkAlloc`, with one and two threads.
//!
//! ```text
//! cargo bench --bench sync
//! ```
//! Times are the allocating threads' CPU time (`CLOCK_THREAD_CPUTIME_ID`), so that a loaded
//! machine skews them less. Variants run interleaved, several times; the report is the median of
//! each, and its ratio to
//! `ChainAllocator` (single thread). Each run resets its arena and allocates `ALLOCATIONS` small
//! blocks (16-40 bytes, align 8) per thread, writing one byte of each. The arenas are kept across
//! runs and warmed up, so that a run measures the allocation path, not page faults on fresh
//! chunks (after `reset` each arena keeps its largest chunk).

use libdd_alloc::{ChainAllocator, Layout, SyncChainAllocator, System};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::Duration;

const ALLOCATIONS: usize = 1_000_000;
const RUNS: usize = 11;
/// One chunk holds a whole run (28 MB), so that no run allocates (and page-faults) a new chunk.
const CHUNK: usize = 64 << 20;

#[inline(always)]
fn layout(i: usize) -> Layout {
    // SAFETY: sizes 16..=40, alignment 8: always valid.
    unsafe { Layout::from_size_align_unchecked(16 + (i & 3) * 8, 8) }
}

/// Whether each run writes a byte of each block (as real code does) or only allocates.
static WRITE: AtomicBool = AtomicBool::new(true);

#[inline(always)]
fn touch(block: NonNull<[u8]>) {
    if WRITE.load(Ordering::Relaxed) {
        // SAFETY: the block is fresh and at least 16 bytes long.
        unsafe { block.cast::<u8>().as_ptr().write(1) };
    }
    black_box(block);
}

/// CPU time of the calling thread: unlike wall time, it does not count the time the thread
/// waits for a core on a loaded machine.
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Off Unix, wall time since the first call (std has no thread CPU clock); the bench is only
/// compiled there, never measured.
#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// CPU time of `ALLOCATIONS` allocations through `allocate` on this thread.
#[inline(always)]
fn single<F: Fn(Layout) -> NonNull<[u8]>>(allocate: F) -> Duration {
    let start = thread_cpu_time();
    for i in 0..ALLOCATIONS {
        touch(allocate(layout(i)));
    }
    thread_cpu_time() - start
}

/// The same on each of `threads` threads, started together: the CPU time of the slowest.
fn timed<F: Fn(Layout) -> NonNull<[u8]> + Sync>(threads: usize, allocate: F) -> Duration {
    if threads == 1 {
        return single(allocate);
    }
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    single(&allocate)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

/// The arenas, kept across runs: each run resets its arena first, so that runs after the
/// warm-up measure allocation, not first-touch page faults of fresh chunks.
struct Arenas {
    cell: ChainAllocator<System>,
    cell_per_thread: [ChainAllocator<System>; 2],
    sync_one: SyncChainAllocator<System>,
    sync_two: SyncChainAllocator<System>,
    blink_one: blink_alloc::SyncBlinkAlloc,
    blink_two: blink_alloc::SyncBlinkAlloc,
    floor_buffer: Vec<u8>,
}

fn chain_cell(arenas: &mut Arenas) -> Duration {
    arenas.cell.reset();
    let arena = &arenas.cell;
    single(|l| arena.allocate(l).unwrap())
}

/// `ChainAllocator` is not `Sync`: two threads, an arena each (the best a `Cell` arena can do).
fn chain_cell_per_thread(arenas: &mut Arenas) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = arenas
            .cell_per_thread
            .iter_mut()
            .map(|arena| {
                let barrier = &barrier;
                s.spawn(move || {
                    arena.reset();
                    barrier.wait();
                    let arena = &*arena;
                    single(|l| arena.allocate(l).unwrap())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

fn chain_sync(arena: &mut SyncChainAllocator<System>, threads: usize) -> Duration {
    use libdd_alloc::Allocator;
    arena.reset();
    let arena = &*arena;
    timed(threads, |l| arena.allocate(l).unwrap())
}

fn blink_sync(arena: &mut blink_alloc::SyncBlinkAlloc, threads: usize) -> Duration {
    arena.reset();
    let arena = &*arena;
    timed(threads, |l| arena.allocate(l).unwrap())
}

/// The floor of any arena that moves its cursor with an atomic read-modify-write: one
/// uncontended `fetch_add` per allocation over a preallocated buffer, no bounds check.
fn atomic_floor(arenas: &mut Arenas) -> Duration {
    let cursor = std::sync::atomic::AtomicUsize::new(0);
    let base = arenas.floor_buffer.as_mut_ptr();
    single(|l| {
        let offset = cursor.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: ALLOCATIONS blocks of at most 40 bytes fit in the buffer.
        let ptr = unsafe { NonNull::new_unchecked(base.add(offset)) };
        NonNull::slice_from_raw_parts(ptr, l.size())
    })
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e9 / ALLOCATIONS as f64
}

fn main() {
    let variants: [Variant; 7] = [
        ("ChainAllocator (Cell), 1 thread", chain_cell),
        ("SyncChainAllocator, 1 thread", |a| {
            chain_sync(&mut a.sync_one, 1)
        }),
        ("SyncBlinkAlloc, 1 thread", |a| {
            blink_sync(&mut a.blink_one, 1)
        }),
        (
            "ChainAllocator, 2 threads, one arena each",
            chain_cell_per_thread,
        ),
        ("SyncChainAllocator, 2 threads, one shared arena", |a| {
            chain_sync(&mut a.sync_two, 2)
        }),
        ("SyncBlinkAlloc, 2 threads, one shared arena", |a| {
            blink_sync(&mut a.blink_two, 2)
        }),
        ("floor: one atomic fetch_add per allocation", atomic_floor),
    ];
    let mut arenas = Arenas {
        cell: ChainAllocator::new_in(CHUNK, System).unwrap(),
        cell_per_thread: [
            ChainAllocator::new_in(CHUNK, System).unwrap(),
            ChainAllocator::new_in(CHUNK, System).unwrap(),
        ],
        sync_one: SyncChainAllocator::new_in(CHUNK, System).unwrap(),
        sync_two: SyncChainAllocator::new_in(CHUNK, System).unwrap(),
        blink_one: blink_alloc::SyncBlinkAlloc::new(),
        blink_two: blink_alloc::SyncBlinkAlloc::new(),
        floor_buffer: vec![0; ALLOCATIONS * 40],
    };
    for write in [true, false] {
        WRITE.store(write, Ordering::Relaxed);
        report(&variants, &mut arenas, write);
    }
}

type Variant = (&'static str, fn(&mut Arenas) -> Duration);

fn report(variants: &[Variant], arenas: &mut Arenas, write: bool) {
    // Warm-up: after a few rounds each arena keeps one chunk big enough for a whole run.
    for _ in 0..3 {
        for (_, run) in variants {
            run(arenas);
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for _ in 0..RUNS {
        for (i, (_, run)) in variants.iter().enumerate() {
            samples[i].push(run(arenas));
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    let what = if write {
        "allocate and write one byte"
    } else {
        "allocate only"
    };
    println!(
        "{what}: CPU ns per allocation per thread (median of {RUNS} interleaved runs, {ALLOCATIONS} allocations each)"
    );
    for ((name, _), ns) in variants.iter().zip(&medians) {
        println!(
            "  {name:<50} {ns:>7.2} ns   {:>5.2}x ChainAllocator",
            ns / medians[0]
        );
    }
}
