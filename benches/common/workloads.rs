//! The workloads, generic over [`Arena`] so each arena's fast path is inlined into the same loop.
//!
//! Every allocation has its first byte written (so every arena touches the same memory) and its
//! pointer passed through [`black_box`] (so no allocation can be optimised away). Each `*_rep`
//! function is one repetition (fresh arena, the work, drop); the divan benches call those, and
//! the `Sample` functions time `Inputs::reps` of them for the interleaved comparison.

use super::contenders::{out_of_memory, Arena, Backing};
use super::{minor_faults, Capacity, Inputs, Sample, Workload};
use super::{PAGE_BATCH, PAGE_BLOCK, SMALL_FIRST_CHUNK, STRING_TABLE_HINT};
use core::alloc::Layout;
use core::ptr::NonNull;
use libdd_alloc::{Allocator, System};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The layout of [`Workload::Small`]: a compile-time constant, as with `Box::new_in`.
pub const SMALL: Layout = Layout::new::<[u64; 4]>();

/// Slack on top of a computed bound, so that arenas whose chunk size includes a header still fit
/// everything in one chunk.
const SLACK: usize = 4096;

/// Writes the first byte of a fresh block and hides the pointer from the optimiser.
#[inline(always)]
fn touch(ptr: NonNull<u8>, value: usize) {
    // SAFETY: `ptr` is a fresh block of at least one byte.
    unsafe { ptr.as_ptr().write(value as u8) };
    black_box(ptr);
}

/// `n` allocations of [`SMALL`]. Not inlined, so that its assembly and its instruction count can
/// be looked at per arena (`fill_small::<OursChain>`).
#[inline(never)]
pub fn fill_small<A: Arena>(arena: &A, n: usize) {
    for i in 0..n {
        touch(arena.alloc(SMALL), i);
    }
}

/// One allocation per layout of `layouts`.
#[inline(never)]
pub fn fill_mixed<A: Arena>(arena: &A, layouts: &[Layout]) {
    for (i, &layout) in layouts.iter().enumerate() {
        touch(arena.alloc(layout), i);
    }
}

fn per_op(elapsed: Duration, ops: usize) -> f64 {
    elapsed.as_secs_f64() * 1e9 / ops.max(1) as f64
}

/// Times `reps` calls of `rep`, each doing `ops` operations.
fn timed(reps: usize, ops: usize, mut rep: impl FnMut()) -> Sample {
    let faults = minor_faults();
    let start = Instant::now();
    for _ in 0..reps {
        rep();
    }
    let elapsed = start.elapsed();
    Sample {
        ns_per_op: per_op(elapsed, reps * ops),
        faults_per_op: (minor_faults() - faults) as f64 / (reps * ops).max(1) as f64,
        ..Sample::default()
    }
}

// ----- small fixed -----------------------------------------------------------------------------

/// The arena size of one repetition of [`Workload::Small`].
pub fn small_capacity(inputs: &Inputs) -> Capacity {
    let n = inputs.small_count;
    Capacity::one_chunk(n * SMALL.size() + SLACK, n)
}

/// One repetition of [`Workload::Small`].
pub fn small_rep<A: Arena>(inputs: &Inputs) {
    let arena = black_box(A::new(small_capacity(inputs)));
    fill_small(&arena, inputs.small_count);
}

pub fn small<A: Arena>(inputs: &Inputs) -> Sample {
    let reps = inputs.reps(Workload::Small);
    timed(reps, inputs.small_count, || small_rep::<A>(inputs))
}

// ----- mixed -----------------------------------------------------------------------------------

/// The arena size of one repetition of [`Workload::Mixed`].
pub fn mixed_capacity(inputs: &Inputs) -> Capacity {
    Capacity::one_chunk(inputs.mixed_bound + SLACK, inputs.mixed.len())
}

/// One repetition of [`Workload::Mixed`].
pub fn mixed_rep<A: Arena>(inputs: &Inputs) {
    let arena = black_box(A::new(mixed_capacity(inputs)));
    fill_mixed(&arena, &inputs.mixed);
}

pub fn mixed<A: Arena>(inputs: &Inputs) -> Sample {
    let reps = inputs.reps(Workload::Mixed);
    timed(reps, inputs.mixed.len(), || mixed_rep::<A>(inputs))
}

/// The memory of [`Workload::Mixed`] when the arena must grow: it starts with a
/// [`SMALL_FIRST_CHUNK`] chunk and takes `mixed_memory_passes` times the mixed layouts. Untimed.
/// `reserved` is `None` for fixed-size arenas, whose size is the caller's choice.
pub fn mixed_memory<A: Arena>(inputs: &Inputs) -> Sample {
    let passes = inputs.mixed_memory_passes;
    let capacity = Capacity {
        first_chunk: SMALL_FIRST_CHUNK,
        total: inputs.mixed_bound * passes + SLACK,
        count: inputs.mixed.len() * passes,
    };
    let arena = A::new(capacity);
    for _ in 0..passes {
        fill_mixed(&arena, &inputs.mixed);
    }
    let requested: usize = inputs.mixed.iter().map(|l| l.size()).sum::<usize>() * passes;
    Sample {
        reserved: if A::FIXED_SIZE {
            None
        } else {
            arena.reserved_bytes()
        },
        requested,
        ..Sample::default()
    }
}

// ----- string table ----------------------------------------------------------------------------

/// Interns every lookup of `inputs` into `arena`, as a profiler's string table does: a hit
/// returns the stored copy, a miss copies the string into the arena. Returns the set's length,
/// the string bytes copied and the arena's reserved bytes at the end.
#[inline(never)]
pub fn intern_all<A: Arena>(arena: &A, inputs: &Inputs) -> (usize, usize, Option<usize>) {
    let (len, copied) = intern(arena, &inputs.words, &inputs.lookups);
    (len, copied, arena.reserved_bytes())
}

/// Interns `words[i]` for each `i` of `lookups` into a fresh set over `arena`; returns the set's
/// length and the string bytes copied.
#[inline(always)]
fn intern<A: Arena>(arena: &A, words: &[String], lookups: &[u32]) -> (usize, usize) {
    let mut set: hashbrown::HashSet<&str> = hashbrown::HashSet::new();
    let mut copied = 0;
    for &index in lookups {
        let word = words[index as usize].as_str();
        let stored = set.get_or_insert_with(word, |word| {
            copied += word.len();
            arena.alloc_str(word)
        });
        black_box(stored);
    }
    (set.len(), copied)
}

/// The arena of the string table: a [`STRING_TABLE_HINT`] first chunk.
pub fn strings_capacity(inputs: &Inputs) -> Capacity {
    Capacity::one_chunk(STRING_TABLE_HINT, inputs.words.len())
}

/// One repetition of [`Workload::Strings`].
pub fn strings_rep<A: Arena>(inputs: &Inputs) -> (usize, Option<usize>) {
    let arena = black_box(A::new(strings_capacity(inputs)));
    let (len, copied, reserved) = intern_all(&arena, inputs);
    assert_eq!(len, inputs.words.len());
    (copied, reserved)
}

pub fn strings<A: Arena>(inputs: &Inputs) -> Sample {
    let reps = inputs.reps(Workload::Strings);
    let mut last = (0, None);
    let mut sample = timed(reps, inputs.lookups.len(), || {
        last = strings_rep::<A>(inputs)
    });
    sample.requested = last.0;
    sample.reserved = if A::FIXED_SIZE { None } else { last.1 };
    sample
}

// ----- Vec growth ------------------------------------------------------------------------------

/// The arena of [`Workload::VecGrowth`]: a [`SMALL_FIRST_CHUNK`] first chunk, so the `Vec`
/// outgrows it. Fixed-size arenas get room for every copy an arena without in-place growth makes.
pub fn vec_capacity(inputs: &Inputs) -> Capacity {
    Capacity {
        first_chunk: SMALL_FIRST_CHUNK,
        total: 3 * inputs.vec_len * 8 + SLACK,
        count: 64,
    }
}

/// One repetition of [`Workload::VecGrowth`]: the final `Vec` bytes and the arena's bytes.
pub fn vec_rep<A: Arena>(inputs: &Inputs) -> Option<(usize, Option<usize>)> {
    let arena = black_box(A::new(vec_capacity(inputs)));
    let vec_bytes = arena.vec_push(inputs.vec_len)?;
    Some((vec_bytes, arena.reserved_bytes()))
}

pub fn vec_growth<A: Arena>(inputs: &Inputs) -> Sample {
    let reps = inputs.reps(Workload::VecGrowth);
    let mut last = None;
    let mut sample = timed(reps, inputs.vec_len, || last = vec_rep::<A>(inputs));
    if let Some((vec_bytes, reserved)) = last {
        sample.requested = vec_bytes;
        sample.reserved = if A::FIXED_SIZE { None } else { reserved };
    }
    sample
}

/// The memory of one untimed repetition of [`Workload::VecGrowth`].
pub fn vec_memory<A: Arena>(inputs: &Inputs) -> Sample {
    let Some((vec_bytes, reserved)) = vec_rep::<A>(inputs) else {
        return Sample::default();
    };
    Sample {
        reserved: if A::FIXED_SIZE { None } else { reserved },
        requested: vec_bytes,
        ..Sample::default()
    }
}

// ----- reset cycles ----------------------------------------------------------------------------

/// One repetition of [`Workload::Reset`]: one arena, `reset_cycles` times `reset_batch`
/// allocations of [`SMALL`] and a reset.
pub fn reset_rep<A: Arena>(inputs: &Inputs) {
    let batch = inputs.reset_batch;
    let mut arena = black_box(A::new(Capacity::one_chunk(
        batch * SMALL.size() + SLACK,
        batch,
    )));
    for _ in 0..inputs.reset_cycles {
        fill_small(&arena, batch);
        arena.reset();
    }
}

pub fn reset_cycles<A: Arena>(inputs: &Inputs) -> Sample {
    let reps = inputs.reps(Workload::Reset);
    let ops = inputs.reset_cycles * inputs.reset_batch;
    timed(reps, ops, || reset_rep::<A>(inputs))
}

// ----- two threads -----------------------------------------------------------------------------

/// Runs `work` on two threads released together; the wall time from the first start to the last
/// finish.
fn on_two_threads(work: impl Fn() + Sync) -> Duration {
    let barrier = std::sync::Barrier::new(2);
    let run = || {
        barrier.wait();
        let start = Instant::now();
        work();
        (start, Instant::now())
    };
    let ((s0, e0), (s1, e1)) = std::thread::scope(|scope| {
        let other = scope.spawn(run);
        let mine = run();
        (mine, other.join().expect("thread"))
    });
    e0.max(e1) - s0.min(s1)
}

/// One repetition of [`Workload::TwoThreads`] for an arena two threads can share.
pub fn two_threads_rep<A: Arena + Sync>(inputs: &Inputs) -> Duration {
    let n = inputs.per_thread;
    let arena = A::new(Capacity::one_chunk(2 * n * SMALL.size() + SLACK, 2 * n));
    on_two_threads(|| fill_small(&arena, n))
}

pub fn two_threads<A: Arena + Sync>(inputs: &Inputs) -> Sample {
    let reps = inputs.reps(Workload::TwoThreads);
    let total: Duration = (0..reps).map(|_| two_threads_rep::<A>(inputs)).sum();
    Sample {
        ns_per_op: per_op(total, reps * 2 * inputs.per_thread),
        ..Sample::default()
    }
}

/// [`Workload::TwoThreads`] through thread-owned handles: each thread takes a `LocalHandle` on
/// one shared `SyncChainAllocator` (sized as for the shared arenas).
pub fn two_threads_local_rep(inputs: &Inputs) -> Duration {
    let n = inputs.per_thread;
    let arena = libdd_alloc::SyncChainAllocator::new_in(2 * n * SMALL.size() + SLACK, System)
        .unwrap_or_else(|_| out_of_memory());
    on_two_threads(|| {
        let local = arena.local();
        for i in 0..n {
            match local.allocate(SMALL) {
                Ok(block) => touch(block.cast(), i),
                Err(_) => out_of_memory(),
            }
        }
    })
}

pub fn two_threads_local(inputs: &Inputs) -> Sample {
    let reps = inputs.reps(Workload::TwoThreads);
    let total: Duration = (0..reps).map(|_| two_threads_local_rep(inputs)).sum();
    Sample {
        ns_per_op: per_op(total, reps * 2 * inputs.per_thread),
        ..Sample::default()
    }
}

/// [`Workload::TwoThreads`] through blink-alloc's per-thread `local()` proxies on one shared
/// `SyncBlinkAlloc`.
pub fn two_threads_blink_local_rep(inputs: &Inputs) -> Duration {
    let n = inputs.per_thread;
    let arena = blink_alloc::SyncBlinkAlloc::with_chunk_size_in(
        2 * n * SMALL.size() + SLACK,
        allocator_api2_04::alloc::Global,
    );
    on_two_threads(|| {
        let local = arena.local();
        for i in 0..n {
            match local.allocate(SMALL) {
                Ok(block) => touch(block.cast(), i),
                Err(_) => out_of_memory(),
            }
        }
    })
}

pub fn two_threads_blink_local(inputs: &Inputs) -> Sample {
    let reps = inputs.reps(Workload::TwoThreads);
    let total: Duration = (0..reps).map(|_| two_threads_blink_local_rep(inputs)).sum();
    Sample {
        ns_per_op: per_op(total, reps * 2 * inputs.per_thread),
        ..Sample::default()
    }
}

/// [`Workload::TwoThreads`] for `malloc`: each thread allocates its own blocks (freed after the
/// clock stops, as the arenas' are).
pub fn system_two_threads_rep(inputs: &Inputs) -> Duration {
    let n = inputs.per_thread;
    let blocks = std::sync::Mutex::new(Vec::with_capacity(2 * n));
    let elapsed = on_two_threads(|| {
        let mut mine = Vec::with_capacity(n);
        for i in 0..n {
            let ptr = match System.allocate(SMALL) {
                Ok(block) => block.cast::<u8>(),
                Err(_) => out_of_memory(),
            };
            touch(ptr, i);
            mine.push(ptr.as_ptr() as usize);
        }
        blocks.lock().expect("lock").extend(mine);
    });
    for addr in blocks.into_inner().expect("lock") {
        // SAFETY: each address is a live block from `System` with layout `SMALL`, freed once.
        unsafe { System.deallocate(NonNull::new(addr as *mut u8).expect("non-null"), SMALL) };
    }
    elapsed
}

pub fn system_two_threads(inputs: &Inputs) -> Sample {
    let reps = inputs.reps(Workload::TwoThreads);
    let total: Duration = (0..reps).map(|_| system_two_threads_rep(inputs)).sum();
    Sample {
        ns_per_op: per_op(total, reps * 2 * inputs.per_thread),
        ..Sample::default()
    }
}

// ----- pages -----------------------------------------------------------------------------------

/// The layout of [`Workload::Pages`].
pub const PAGE_LAYOUT: Layout = match Layout::from_size_align(PAGE_BLOCK, 16) {
    Ok(layout) => layout,
    Err(_) => panic!("page layout"),
};

/// One repetition of [`Workload::Pages`]: `page_batches` times, [`PAGE_BATCH`] blocks are
/// allocated, touched and freed.
pub fn pages_rep<P: Allocator + Backing>(inputs: &Inputs) {
    let pages = P::backing();
    let mut batch = [NonNull::<u8>::dangling(); PAGE_BATCH];
    for _ in 0..inputs.page_batches {
        for (i, slot) in batch.iter_mut().enumerate() {
            let ptr = match pages.allocate(PAGE_LAYOUT) {
                Ok(block) => block.cast::<u8>(),
                Err(_) => out_of_memory(),
            };
            touch(ptr, i);
            *slot = ptr;
        }
        for &ptr in &batch {
            // SAFETY: each block came from `pages` with `PAGE_LAYOUT` and is freed once.
            unsafe { pages.deallocate(ptr, PAGE_LAYOUT) };
        }
    }
}

pub fn pages<P: Allocator + Backing>(inputs: &Inputs) -> Sample {
    let reps = inputs.reps(Workload::Pages);
    timed(reps, inputs.page_batches * PAGE_BATCH, || {
        pages_rep::<P>(inputs)
    })
}

/// The callgrind driver's entry: one arena sized for the whole input, `n` allocations of the
/// small or mixed workload (at most `small_count` or `mixed.len()`), nothing timed.
pub fn count<A: Arena>(inputs: &Inputs, workload: Workload, n: usize) {
    match workload {
        Workload::Small => {
            let arena = black_box(A::new(small_capacity(inputs)));
            fill_small(&arena, n);
        }
        Workload::Mixed => {
            let arena = black_box(A::new(mixed_capacity(inputs)));
            fill_mixed(&arena, &inputs.mixed[..n]);
        }
        other => panic!("no instruction count for {}", other.name()),
    }
}

/// The callgrind driver's entry for the string table: the first `n` lookups (at most the
/// number of distinct words, so every one is a miss that copies its string into the arena).
pub fn count_strings<A: Arena>(inputs: &Inputs, n: usize) {
    let arena = black_box(A::new(strings_capacity(inputs)));
    intern(&arena, &inputs.words, &inputs.lookups[..n]);
}
