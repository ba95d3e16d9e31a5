//! ns per allocation of the lock-free `SyncChainAllocator` against the `Cell` `ChainAllocator`
//! and blink-alloc's `SyncBlinkAlloc`, with one and two threads.
//!
//! ```text
//! cargo bench --bench sync
//! ```
//! Variants run interleaved, several times; the report is the median of each, and its ratio to
//! `ChainAllocator` (single thread). Each run allocates `ALLOCATIONS` small blocks (16-40 bytes,
//! align 8) per thread into a fresh arena with 64 KiB first chunks, writing one byte of each;
//! chunk growth is part of the cost.

use libdd_alloc::{ChainAllocator, Layout, SyncChainAllocator, System};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const ALLOCATIONS: usize = 1_000_000;
const RUNS: usize = 11;
const CHUNK: usize = 64 << 10;

#[inline(always)]
fn layout(i: usize) -> Layout {
    // SAFETY: sizes 16..=40, alignment 8: always valid.
    unsafe { Layout::from_size_align_unchecked(16 + (i & 3) * 8, 8) }
}

#[inline(always)]
fn touch(block: NonNull<[u8]>) {
    // SAFETY: the block is fresh and at least 16 bytes long.
    unsafe { block.cast::<u8>().as_ptr().write(1) };
    black_box(block);
}

/// Time for `ALLOCATIONS` allocations through `allocate` on this thread.
#[inline(always)]
fn single<F: Fn(Layout) -> NonNull<[u8]>>(allocate: F) -> Duration {
    let start = Instant::now();
    for i in 0..ALLOCATIONS {
        touch(allocate(layout(i)));
    }
    start.elapsed()
}

/// The same on each of `threads` threads, started together: the wall time of the slowest.
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

fn chain_cell() -> Duration {
    use libdd_alloc::Allocator;
    let arena = ChainAllocator::new_in(CHUNK, System).unwrap();
    single(|l| arena.allocate(l).unwrap())
}

/// `ChainAllocator` is not `Sync`: two threads, an arena each (the best a `Cell` arena can do).
fn chain_cell_per_thread(threads: usize) -> Duration {
    use libdd_alloc::Allocator;
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let arena = ChainAllocator::new_in(CHUNK, System).unwrap();
                    barrier.wait();
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

fn chain_sync(threads: usize) -> Duration {
    use libdd_alloc::Allocator;
    let arena = SyncChainAllocator::new_in(CHUNK, System).unwrap();
    timed(threads, |l| arena.allocate(l).unwrap())
}

fn blink_sync(threads: usize) -> Duration {
    let arena = blink_alloc::SyncBlinkAlloc::new();
    timed(threads, |l| arena.allocate(l).unwrap())
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e9 / ALLOCATIONS as f64
}

fn main() {
    type Variant = (&'static str, fn() -> Duration);
    let variants: [Variant; 6] = [
        ("ChainAllocator (Cell), 1 thread", chain_cell),
        ("SyncChainAllocator, 1 thread", || chain_sync(1)),
        ("SyncBlinkAlloc, 1 thread", || blink_sync(1)),
        ("ChainAllocator, 2 threads, one arena each", || {
            chain_cell_per_thread(2)
        }),
        ("SyncChainAllocator, 2 threads, one shared arena", || {
            chain_sync(2)
        }),
        ("SyncBlinkAlloc, 2 threads, one shared arena", || {
            blink_sync(2)
        }),
    ];
    // Warm up allocator and CPU.
    for (_, run) in &variants {
        run();
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for _ in 0..RUNS {
        for (i, (_, run)) in variants.iter().enumerate() {
            samples[i].push(run());
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    println!("ns per allocation per thread (median of {RUNS} interleaved runs, {ALLOCATIONS} allocations each)");
    for ((name, _), ns) in variants.iter().zip(&medians) {
        println!(
            "{name:<50} {ns:>7.2} ns   {:>5.2}x ChainAllocator",
            ns / medians[0]
        );
    }
}
