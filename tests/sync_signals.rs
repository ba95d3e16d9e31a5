//! Signal storm: a 5 kHz `ITIMER_REAL` timer interrupts a loop that allocates from a lock-free
//! arena, and the `SIGALRM` handler allocates from the *same* arena, on the same thread. Every
//! block of both is filled with its own pattern and verified: a cursor update lost to the
//! interruption would hand out bytes twice and show up as an overlap or corruption.
//!
//! `harness = false`: the process has one thread, so the process-directed `SIGALRM` always lands
//! on the thread that is allocating.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::blocks::{fill, intact, mixed_layout, tag, verify, Block};
use libdd_alloc::{
    AllocError, Allocator, Layout, LocalHandle, SyncChainAllocator, SyncLinearAllocator,
    SyncVirtualArena, VirtualAllocator,
};
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Blocks kept by the main loop before each verify-and-reset round.
const ROUND: usize = 200_000;
/// Slots for the blocks the handler allocates in one round (preallocated, lock-free).
const HANDLER_SLOTS: usize = 1 << 16;
const HANDLER_OWNER: u64 = 0xFFFF;
const STORM: Duration = Duration::from_secs(1);
const TIMER_INTERVAL_US: i64 = 100; // 10 kHz

static ARENA: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
static HANDLER_ADDR: [AtomicUsize; HANDLER_SLOTS] = [const { AtomicUsize::new(0) }; HANDLER_SLOTS];
static HANDLER_LEN: [AtomicUsize; HANDLER_SLOTS] = [const { AtomicUsize::new(0) }; HANDLER_SLOTS];
static HANDLER_TAG: [AtomicU64; HANDLER_SLOTS] = [const { AtomicU64::new(0) }; HANDLER_SLOTS];
static HANDLER_NEXT: AtomicUsize = AtomicUsize::new(0);
static HANDLER_RUNS: AtomicU64 = AtomicU64::new(0);
static HANDLER_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// The `SIGALRM` handler: allocates three blocks and a scratch block (given straight back)
/// from the arena in `ARENA`, fills and checks them, and records the three in the slots.
extern "C" fn allocate_in_handler<A: Allocator>(_signal: libc::c_int) {
    let arena = ARENA.load(Ordering::Acquire) as *const A;
    if arena.is_null() {
        return;
    }
    // SAFETY: `ARENA` points at a live arena while the signal is unblocked.
    let arena = unsafe { &*arena };
    let run = HANDLER_RUNS.fetch_add(1, Ordering::Relaxed);
    for k in 0..3 {
        let seq = run * 4 + k;
        let layout = mixed_layout(seq ^ 0x5EED);
        let Ok(block) = arena.allocate(layout) else {
            HANDLER_FAILURES.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // SAFETY: the block is fresh and ours.
        let record = unsafe { fill(block, layout.size(), tag(HANDLER_OWNER, seq)) };
        let slot = HANDLER_NEXT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: just filled, still ours.
        if slot >= HANDLER_SLOTS || !unsafe { intact(&record) } {
            HANDLER_FAILURES.fetch_add(1, Ordering::Relaxed);
            return;
        }
        HANDLER_ADDR[slot].store(record.addr, Ordering::Relaxed);
        HANDLER_LEN[slot].store(record.len, Ordering::Relaxed);
        HANDLER_TAG[slot].store(record.tag, Ordering::Relaxed);
    }
    let scratch = Layout::new::<[u64; 3]>();
    if let Ok(block) = arena.allocate(scratch) {
        // SAFETY: ours until given back right here.
        unsafe {
            fill(block, scratch.size(), u64::MAX);
            arena.deallocate(block.cast(), scratch);
        }
    }
}

fn set_signal_blocked(blocked: bool) {
    // SAFETY: plain libc calls on a local, initialised signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        let how = if blocked {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
    }
}

fn set_timer(interval_us: i64) {
    let interval = libc::timeval {
        tv_sec: 0,
        tv_usec: interval_us,
    };
    let timer = libc::itimerval {
        it_interval: interval,
        it_value: interval,
    };
    // SAFETY: setitimer with a valid value and no old-value pointer.
    let status = unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    assert_eq!(status, 0);
}

fn install_handler<A: Allocator>() {
    // SAFETY: a zeroed sigaction is valid; the handler only uses async-signal-safe operations
    // (atomics and the arena under test).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = allocate_in_handler::<A> as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut()),
            0
        );
    }
}

struct StormReport {
    main_blocks: usize,
    handler_blocks: usize,
    handler_runs: u64,
    rounds: usize,
}

/// Allocates from `arena` for `STORM` (allocation time) while the timer's handler allocates from it too, in
/// rounds of at most `ROUND` main blocks; after each round (signal blocked) verifies every block
/// and calls `reset`.
fn storm<A: Allocator>(
    arena: &mut A,
    reset: fn(&mut A),
    used_bytes: fn(&A) -> usize,
) -> StormReport {
    let arena: *mut A = arena;
    install_handler::<A>();
    HANDLER_RUNS.store(0, Ordering::Relaxed);
    HANDLER_NEXT.store(0, Ordering::Relaxed);
    ARENA.store(arena.cast(), Ordering::Release);
    let mut main_blocks: Vec<Block> = Vec::with_capacity(ROUND);
    let mut all: Vec<Block> = Vec::with_capacity(ROUND + HANDLER_SLOTS);
    let mut report = StormReport {
        main_blocks: 0,
        handler_blocks: 0,
        handler_runs: 0,
        rounds: 0,
    };
    // Time spent allocating with the signal unblocked; verification (blocked) does not count.
    let mut storm_time = Duration::ZERO;
    set_timer(TIMER_INTERVAL_US);
    let mut seq = 0u64;
    while storm_time < STORM {
        let start = Instant::now();
        let left = STORM - storm_time;
        // SAFETY: only shared use while the signal is unblocked; `reset` below runs with it
        // blocked, when nothing else refers to the arena.
        let shared = unsafe { &*arena };
        while main_blocks.len() < ROUND && (seq % 1024 != 0 || start.elapsed() < left) {
            let layout = mixed_layout(seq);
            let block = shared.allocate(layout).expect("main loop allocation");
            // SAFETY: fresh block, ours.
            let record = unsafe { fill(block, layout.size(), tag(1, seq)) };
            // SAFETY: still ours; a handler that got the same bytes would have changed them.
            let unchanged = unsafe { intact(&record) };
            assert!(unchanged, "block changed under the main loop");
            main_blocks.push(record);
            seq += 1;
        }
        storm_time += start.elapsed();
        if storm_time >= STORM {
            // Last round: stop the timer, so that every handler run is counted and verified.
            set_timer(0);
        }
        set_signal_blocked(true);
        report.handler_runs = HANDLER_RUNS.load(Ordering::Relaxed);
        let handler_count = HANDLER_NEXT.load(Ordering::Relaxed).min(HANDLER_SLOTS);
        all.clear();
        all.extend_from_slice(&main_blocks);
        all.extend((0..handler_count).map(|i| Block {
            addr: HANDLER_ADDR[i].load(Ordering::Relaxed),
            len: HANDLER_LEN[i].load(Ordering::Relaxed),
            tag: HANDLER_TAG[i].load(Ordering::Relaxed),
        }));
        let payload: usize = all.iter().map(|b| b.len).sum();
        assert!(used_bytes(shared) >= payload, "used_bytes misses blocks");
        // SAFETY: every block is live until the reset below.
        assert_eq!(unsafe { verify(&mut all) }, Ok(()));
        assert_eq!(HANDLER_FAILURES.load(Ordering::Relaxed), 0);
        report.main_blocks += main_blocks.len();
        report.handler_blocks += handler_count;
        report.rounds += 1;
        main_blocks.clear();
        HANDLER_NEXT.store(0, Ordering::Relaxed);
        // SAFETY: the signal is blocked and no block is referenced any more.
        reset(unsafe { &mut *arena });
        set_signal_blocked(false);
    }
    set_timer(0);
    set_signal_blocked(true);
    ARENA.store(std::ptr::null_mut(), Ordering::Release);
    set_signal_blocked(false);
    report
}

fn check(name: &str, report: StormReport) {
    println!(
        "{name}: {} rounds, {} main blocks, {} handler runs, {} handler blocks: no overlap, no corruption",
        report.rounds, report.main_blocks, report.handler_runs, report.handler_blocks
    );
    // 10 kHz for one second; signals that arrive while one is pending merge, and a loaded
    // machine delivers fewer: demand a tenth.
    assert!(
        report.handler_runs >= 1000,
        "the handler ran only {} times",
        report.handler_runs
    );
    assert_eq!(report.handler_blocks as u64, report.handler_runs * 3);
}

fn signal_handler_and_main_loop_never_overlap_in_a_sync_chain_arena() {
    libdd_alloc::os::page_size().unwrap();
    // Small chunks: the handler and the main loop both grow the arena often, and a handler
    // often lands in the middle of the main loop's growth.
    let mut arena = SyncChainAllocator::new_in(4096, VirtualAllocator {})
        .unwrap()
        .with_max_chunk_size(16 << 10);
    let report = storm(
        &mut arena,
        SyncChainAllocator::reset,
        SyncChainAllocator::used_bytes,
    );
    check("SyncChainAllocator", report);
}

fn signal_handler_and_main_loop_never_overlap_in_a_sync_linear_arena() {
    let mut arena = SyncLinearAllocator::new_in(
        Layout::from_size_align(256 << 20, 4096).unwrap(),
        VirtualAllocator {},
    )
    .unwrap();
    let report = storm(
        &mut arena,
        SyncLinearAllocator::reset,
        SyncLinearAllocator::used_bytes,
    );
    check("SyncLinearAllocator", report);
}

/// A fresh 1 GiB reservation committed in the smallest steps (64 KiB).
fn fresh_virtual_arena() -> SyncVirtualArena {
    SyncVirtualArena::new(1 << 30)
        .unwrap()
        .with_max_commit_step(64 << 10)
}

fn signal_handler_and_main_loop_never_overlap_in_a_sync_virtual_arena() {
    let mut arena = fresh_virtual_arena();
    // Each round starts from a fresh reservation (not `reset`, which keeps the commit), so every
    // round crosses the commit frontier a few hundred times: a handler that lands while the main
    // loop is committing must commit for itself, and must not be handed uncommitted bytes.
    let report = storm(
        &mut arena,
        |arena| *arena = fresh_virtual_arena(),
        SyncVirtualArena::used_bytes,
    );
    check("SyncVirtualArena", report);
}

/// A `LocalHandle` with the arena it borrows, as one `Allocator` the storm can reset: the handler
/// allocates from the very handle the main loop is allocating from.
struct HandleOnArena {
    handle: ManuallyDrop<LocalHandle<'static, SyncChainAllocator<VirtualAllocator>>>,
    arena: Box<SyncChainAllocator<VirtualAllocator>>,
    /// `interrupted_allocations` of the handles dropped so far.
    interrupted_before: usize,
}

impl HandleOnArena {
    fn new() -> Self {
        // Small chunks and a small chunk bound: slabs are claimed, grown and replaced often,
        // and a handler often lands in the middle of a refill.
        let arena = Box::new(
            SyncChainAllocator::new_in(4096, VirtualAllocator {})
                .unwrap()
                .with_max_chunk_size(64 << 10),
        );
        Self {
            handle: Self::handle(&arena),
            arena,
            interrupted_before: 0,
        }
    }

    /// Handler allocations that landed inside a main-loop call on the handle, over all rounds.
    fn interrupted_allocations(&self) -> usize {
        self.interrupted_before + self.handle.interrupted_allocations()
    }

    fn handle(
        arena: &SyncChainAllocator<VirtualAllocator>,
    ) -> ManuallyDrop<LocalHandle<'static, SyncChainAllocator<VirtualAllocator>>> {
        // SAFETY: the arena is boxed and outlives the handle (dropped first in `reset` and drop).
        ManuallyDrop::new(unsafe {
            std::mem::transmute::<
                LocalHandle<'_, SyncChainAllocator<VirtualAllocator>>,
                LocalHandle<'static, SyncChainAllocator<VirtualAllocator>>,
            >(arena.local())
        })
    }

    fn reset(&mut self) {
        self.interrupted_before = self.interrupted_allocations();
        // SAFETY: dropped once and replaced at once.
        unsafe { ManuallyDrop::drop(&mut self.handle) };
        self.arena.reset();
        self.handle = Self::handle(&self.arena);
    }

    /// The arena's: it counts the handle's slabs and the blocks the handler got from the
    /// shared arena when it interrupted an allocation.
    fn used_bytes(&self) -> usize {
        self.arena.used_bytes()
    }
}

impl Drop for HandleOnArena {
    fn drop(&mut self) {
        // SAFETY: dropped once, before the arena.
        unsafe { ManuallyDrop::drop(&mut self.handle) };
    }
}

// SAFETY: forwards to the handle.
unsafe impl Allocator for HandleOnArena {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.handle.allocate(layout)
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded caller contract.
        unsafe { self.handle.deallocate(ptr, layout) }
    }
}

fn signal_handler_and_main_loop_never_overlap_through_one_local_handle() {
    libdd_alloc::os::page_size().unwrap();
    let mut arena = HandleOnArena::new();
    let report = storm(&mut arena, HandleOnArena::reset, HandleOnArena::used_bytes);
    let interrupted = arena.interrupted_allocations();
    println!("LocalHandle: {interrupted} handler allocations landed inside a main-loop call on the handle");
    check("LocalHandle on SyncChainAllocator", report);
    // The point of the test: handlers did land inside the marked window.
    assert!(interrupted > 0, "no handler landed inside an allocation");
}

fn main() {
    signal_handler_and_main_loop_never_overlap_in_a_sync_chain_arena();
    signal_handler_and_main_loop_never_overlap_in_a_sync_linear_arena();
    signal_handler_and_main_loop_never_overlap_in_a_sync_virtual_arena();
    signal_handler_and_main_loop_never_overlap_through_one_local_handle();
}
