//! ns per allocation of the lock-free `SyncChainAllocator` (shared, and through thread-owned
//! `LocalHandle`s) against the `Cell` `ChainAllocator`, bumpalo with an arena per thread and
//! blink-alloc's `SyncBlinkAlloc` (shared, and through its `local()` handles), with 1, 2 and 8
//! threads. Each row's ratio is to the row named in its last column, measured in the same run.
//! Then the memory of 8 threads x 100,000 mixed allocations through handles on one arena.
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

use libdd_alloc::{Allocator, ChainAllocator, Layout, SyncChainAllocator, System};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::Duration;

const ALLOCATIONS: usize = 1_000_000;
const RUNS: usize = 11;
/// One chunk holds a whole single-thread run (28 MB; 4 chunks for 8 threads' 224 MB), so that no
/// run allocates (and page-faults) a new chunk.
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
    local_one: SyncChainAllocator<System>,
    local_two: SyncChainAllocator<System>,
    local_eight: SyncChainAllocator<System>,
    sync_eight: SyncChainAllocator<System>,
    bumpalo_per_thread: Vec<bumpalo::Bump>,
    blink_local_two: blink_alloc::SyncBlinkAlloc,
    blink_local_eight: blink_alloc::SyncBlinkAlloc,
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
    arena.reset();
    let arena = &*arena;
    timed(threads, |l| arena.allocate(l).unwrap())
}

fn blink_sync(arena: &mut blink_alloc::SyncBlinkAlloc, threads: usize) -> Duration {
    arena.reset();
    let arena = &*arena;
    timed(threads, |l| arena.allocate(l).unwrap())
}

/// `threads` threads started together, each running `work` on its own state made by `make`
/// (outside the clock): the CPU time of the slowest.
fn per_thread<S, M: Fn(usize) -> S + Sync, W: Fn(&S) -> Duration + Sync>(
    threads: usize,
    make: M,
    work: W,
) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, make, work) = (&barrier, &make, &work);
                s.spawn(move || {
                    let state = make(t);
                    barrier.wait();
                    work(&state)
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

/// Each thread takes a `LocalHandle` on one shared `SyncChainAllocator`.
fn chain_local(arena: &mut SyncChainAllocator<System>, threads: usize) -> Duration {
    arena.reset();
    let arena = &*arena;
    per_thread(
        threads,
        |_| arena.local(),
        |local| single(|l| local.allocate(l).unwrap()),
    )
}

/// Each thread takes blink-alloc's `local()` proxy on one shared `SyncBlinkAlloc`.
fn blink_local(arena: &mut blink_alloc::SyncBlinkAlloc, threads: usize) -> Duration {
    arena.reset();
    let arena = &*arena;
    per_thread(
        threads,
        |_| arena.local(),
        |local| single(|l| local.allocate(l).unwrap()),
    )
}

/// bumpalo, one arena per thread (what a profiler does without a shareable fast arena).
fn bumpalo_per_thread(arenas: &mut Arenas, threads: usize) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = arenas.bumpalo_per_thread[..threads]
            .iter_mut()
            .map(|bump| {
                let barrier = &barrier;
                s.spawn(move || {
                    bump.reset();
                    barrier.wait();
                    let bump = &*bump;
                    single(|l| {
                        let ptr = bump.try_alloc_layout(l).unwrap();
                        NonNull::slice_from_raw_parts(ptr, l.size())
                    })
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
    // (name, run, index of the row it is compared with)
    let variants: [Variant; 17] = [
        ("ChainAllocator (Cell), 1 thread", chain_cell, 0),
        (
            "SyncChainAllocator, 1 thread",
            |a| chain_sync(&mut a.sync_one, 1),
            0,
        ),
        (
            "SyncBlinkAlloc, 1 thread",
            |a| blink_sync(&mut a.blink_one, 1),
            0,
        ),
        (
            "LocalHandle on SyncChainAllocator, 1 thread",
            |a| chain_local(&mut a.local_one, 1),
            0,
        ),
        ("bumpalo, 1 thread", |a| bumpalo_per_thread(a, 1), 0),
        (
            "ChainAllocator, 2 threads, one arena each",
            chain_cell_per_thread,
            5,
        ),
        (
            "bumpalo, 2 threads, one arena each",
            |a| bumpalo_per_thread(a, 2),
            6,
        ),
        (
            "SyncChainAllocator, 2 threads, one shared arena",
            |a| chain_sync(&mut a.sync_two, 2),
            6,
        ),
        (
            "SyncBlinkAlloc, 2 threads, one shared arena",
            |a| blink_sync(&mut a.blink_two, 2),
            6,
        ),
        (
            "LocalHandle, 2 threads, one shared arena",
            |a| chain_local(&mut a.local_two, 2),
            6,
        ),
        (
            "SyncBlinkAlloc::local(), 2 threads, one shared arena",
            |a| blink_local(&mut a.blink_local_two, 2),
            6,
        ),
        (
            "bumpalo, 8 threads, one arena each",
            |a| bumpalo_per_thread(a, 8),
            11,
        ),
        (
            "SyncChainAllocator, 8 threads, one shared arena",
            |a| chain_sync(&mut a.sync_eight, 8),
            11,
        ),
        (
            "LocalHandle, 8 threads, one shared arena",
            |a| chain_local(&mut a.local_eight, 8),
            11,
        ),
        (
            "SyncBlinkAlloc::local(), 8 threads, one shared arena",
            |a| blink_local(&mut a.blink_local_eight, 8),
            11,
        ),
        (
            "floor: one atomic fetch_add per allocation",
            atomic_floor,
            0,
        ),
        (
            "LocalHandle, 1 thread (again, for the spread)",
            |a| chain_local(&mut a.local_one, 1),
            0,
        ),
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
        local_one: SyncChainAllocator::new_in(CHUNK, System).unwrap(),
        local_two: SyncChainAllocator::new_in(CHUNK, System).unwrap(),
        local_eight: SyncChainAllocator::new_in(4 * CHUNK, System).unwrap(),
        sync_eight: SyncChainAllocator::new_in(4 * CHUNK, System).unwrap(),
        bumpalo_per_thread: (0..8)
            .map(|_| bumpalo::Bump::with_capacity(CHUNK))
            .collect(),
        blink_local_two: blink_alloc::SyncBlinkAlloc::new(),
        blink_local_eight: blink_alloc::SyncBlinkAlloc::new(),
    };
    let only_write = std::env::args().any(|a| a == "--write-only");
    for write in [true, false] {
        if !write && only_write {
            continue;
        }
        WRITE.store(write, Ordering::Relaxed);
        report(&variants, &mut arenas, write);
    }
    local_memory();
}

/// 8 threads x 100,000 mixed allocations (sizes 1..=128, alignments 1..=16, fixed seed) through
/// `LocalHandle`s on one `SyncChainAllocator` (4 MiB chunks): bytes reserved from the backing
/// allocator over bytes requested.
fn local_memory() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 100_000;
    let arena = SyncChainAllocator::new_in(4 << 20, System).unwrap();
    let requested: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let arena = &arena;
                s.spawn(move || {
                    let local = arena.local();
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                    let mut requested = 0;
                    for _ in 0..PER_THREAD {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let layout =
                            Layout::from_size_align(1 + (x % 128) as usize, 1 << ((x >> 8) % 5))
                                .unwrap();
                        let block = local.allocate(layout).unwrap();
                        touch(block);
                        requested += layout.size();
                    }
                    requested
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!(
        "memory: {THREADS} threads x {PER_THREAD} mixed allocations through LocalHandles on one SyncChainAllocator: \
         reserved {} / requested {requested} = {:.3}; used {} = {:.3}",
        arena.reserved_bytes(),
        arena.reserved_bytes() as f64 / requested as f64,
        arena.used_bytes(),
        arena.used_bytes() as f64 / requested as f64,
    );
}

type Variant = (&'static str, fn(&mut Arenas) -> Duration, usize);

fn report(variants: &[Variant], arenas: &mut Arenas, write: bool) {
    // Warm-up: after a few rounds each arena keeps one chunk big enough for a whole run.
    for _ in 0..3 {
        for (_, run, _) in variants {
            run(arenas);
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for _ in 0..RUNS {
        for (i, (_, run, _)) in variants.iter().enumerate() {
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
    for ((name, _, reference), ns) in variants.iter().zip(&medians) {
        println!(
            "  {name:<54} {ns:>7.2} ns   {:>5.2}x {}",
            ns / medians[*reference],
            variants[*reference].0
        );
    }
}
