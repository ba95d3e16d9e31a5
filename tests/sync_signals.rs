//! Signal storm: a 10 kHz `ITIMER_REAL` timer interrupts a loop that allocates from a lock-free
//! arena, and the `SIGALRM` handler allocates from the *same* arena, on the same thread. Every
//! block of both is filled with its own pattern and verified: a cursor update lost to the
//! interruption would hand out bytes twice and show up as an overlap or corruption.
//!
//! The same storm formats strings in the handler and the main loop with `format_in!` and
//! `ArenaString` (every string's text checked, no two overlapping), and races a handler against
//! the main loop at the limit of a `Budget` (never exceeded, every refusal an `Err`): once on a
//! `SyncChainAllocator` over a `Budgeted` backing allocator, once on a `SyncVirtualArena` whose
//! commits are charged to the budget (`new_with_budget`), released every round so that commits
//! are made, and refused, under the storm.
//!
//! The storm lasts until the handler has run [`HANDLER_RUNS_WANTED`] times, not for a fixed
//! time: on a loaded machine the process is descheduled, signals that arrive meanwhile merge
//! into one, and a fixed second once saw fewer than a thousand runs (issue 10 §4). Counting
//! runs makes the test as strong under any load; [`TIME_LIMIT`] only bounds a hang.
//!
//! The linear storms run on an arena over pages from the OS and on one over a buffer the caller
//! owns (`SyncLinearAllocator<Borrowed<'static>>`, the type of a `static_arena!`).
//!
//! `harness = false`: the process has one thread, so the process-directed `SIGALRM` always lands
//! on the thread that is allocating.
#![cfg_attr(not(unix), allow(dead_code, unused_imports))] // POSIX only: see `main`.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::blocks::{fill, intact, mixed_layout, tag, verify, Block};
use core::fmt::Write as _;
use libdd_alloc::{
    format_in, AllocError, Allocator, Arena, ArenaString, Budget, Budgeted, DropArena, Layout,
    LocalHandle, SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena, VirtualAllocator,
};
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The budget of the current budget storm, read by its handler.
static ACTIVE_BUDGET: AtomicPtr<Budget> = AtomicPtr::new(std::ptr::null_mut());
use std::time::{Duration, Instant};

/// Blocks kept by the main loop before each verify-and-reset round.
const ROUND: usize = 200_000;
/// Slots for the blocks the handler allocates in one round (preallocated, lock-free).
const HANDLER_SLOTS: usize = 1 << 16;
const HANDLER_OWNER: u64 = 0xFFFF;
/// Handler runs each storm waits for (an unloaded machine gets about 4000 a second).
const HANDLER_RUNS_WANTED: u64 = 3000;
/// A storm that has not seen its handler runs by then has hung: fail rather than wait forever.
const TIME_LIMIT: Duration = Duration::from_secs(300);
#[cfg(unix)]
const TIMER_INTERVAL_US: libc::suseconds_t = 100; // 10 kHz

static ARENA: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
static HANDLER_ADDR: [AtomicUsize; HANDLER_SLOTS] = [const { AtomicUsize::new(0) }; HANDLER_SLOTS];
static HANDLER_LEN: [AtomicUsize; HANDLER_SLOTS] = [const { AtomicUsize::new(0) }; HANDLER_SLOTS];
static HANDLER_TAG: [AtomicU64; HANDLER_SLOTS] = [const { AtomicU64::new(0) }; HANDLER_SLOTS];
static HANDLER_NEXT: AtomicUsize = AtomicUsize::new(0);
static HANDLER_RUNS: AtomicU64 = AtomicU64::new(0);
static HANDLER_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// The `SIGALRM` handler: allocates three blocks and a scratch block (given straight back)
/// from the arena in `ARENA`, fills and checks them, and records the three in the slots.
#[cfg(unix)]
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

#[cfg(unix)]
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

#[cfg(unix)]
fn set_timer(interval_us: libc::suseconds_t) {
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

#[cfg(unix)]
fn install_handler<A: Allocator>() {
    install(allocate_in_handler::<A>);
}

/// Installs `handler` for `SIGALRM`.
#[cfg(unix)]
fn install(handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction is valid; every handler here only uses async-signal-safe
    // operations (atomics, the arena under test, formatting into it).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
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

/// Allocates from `arena` until the timer's handler, which allocates from it too, has run
/// `HANDLER_RUNS_WANTED` times, in rounds of at most `ROUND` main blocks (at least two: the
/// first is always full); after each round (signal blocked) verifies every block and calls
/// `reset`.
#[cfg(unix)]
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
    let started = Instant::now();
    let wanted = || HANDLER_RUNS.load(Ordering::Relaxed) >= HANDLER_RUNS_WANTED;
    set_timer(TIMER_INTERVAL_US);
    let mut seq = 0u64;
    let mut done = false;
    while !done {
        assert!(
            started.elapsed() < TIME_LIMIT,
            "the handler ran only {} times in {TIME_LIMIT:?}",
            HANDLER_RUNS.load(Ordering::Relaxed)
        );
        // SAFETY: only shared use while the signal is unblocked; `reset` below runs with it
        // blocked, when nothing else refers to the arena.
        let shared = unsafe { &*arena };
        // The first round always fills up (so that a `reset` runs in the middle of the storm);
        // the last one ends once the handler has run often enough.
        let last_round_may_end = report.rounds > 0;
        while main_blocks.len() < ROUND && (seq % 1024 != 0 || !(last_round_may_end && wanted())) {
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
        done = (report.rounds > 0 && wanted()) || started.elapsed() >= TIME_LIMIT;
        if done {
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
    // A reset between rounds happened in the middle of the storm.
    assert!(report.rounds >= 2, "only {} round", report.rounds);
    // The storm ran until this was true, within its time limit.
    assert!(
        report.handler_runs >= HANDLER_RUNS_WANTED,
        "the handler ran only {} times",
        report.handler_runs
    );
    assert_eq!(report.handler_blocks as u64, report.handler_runs * 3);
}

#[cfg(unix)]
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

#[cfg(unix)]
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

/// A heap buffer handed out as `&'static mut`, as a `static_arena!`'s is, and freed on drop
/// (LeakSanitizer checks this binary). Drop it only after the arena over it.
struct LeakedBuffer(*mut [std::mem::MaybeUninit<u8>]);

impl LeakedBuffer {
    /// `len` bytes, untouched (no page is faulted in until the arena hands it out).
    fn new(len: usize) -> (Self, &'static mut [std::mem::MaybeUninit<u8>]) {
        let mut bytes = Vec::with_capacity(len);
        // SAFETY: `MaybeUninit` needs no initialisation, and the capacity is `len`.
        unsafe { bytes.set_len(len) };
        let raw = Box::into_raw(bytes.into_boxed_slice());
        // SAFETY: the box is live until `drop`, which the caller runs after the last use.
        (Self(raw), unsafe { &mut *raw })
    }
}

impl Drop for LeakedBuffer {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw` in `new`; the arena over it is gone.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// The storm on a lock-free arena over memory the caller owns, built as `static_arena!` builds
/// one (`from_buffer_const` over a `&'static mut`), so of the very type a `static` arena has.
#[cfg(unix)]
fn signal_handler_and_main_loop_never_overlap_in_a_borrowed_sync_linear_arena() {
    let (_buffer, bytes) = LeakedBuffer::new(256 << 20);
    let mut arena = SyncLinearAllocator::from_buffer_const(bytes);
    let report = storm(
        &mut arena,
        SyncLinearAllocator::reset,
        SyncLinearAllocator::used_bytes,
    );
    check("SyncLinearAllocator<Borrowed<'static>>", report);
}

/// A fresh 1 GiB reservation committed in the smallest steps (64 KiB).
fn fresh_virtual_arena() -> SyncVirtualArena {
    SyncVirtualArena::new(1 << 30)
        .unwrap()
        .with_max_commit_step(64 << 10)
}

#[cfg(unix)]
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

// ---- Formatting in the handler ----

const STRING_MAIN: u64 = 1;
const STRING_HANDLER: u64 = 2;

/// The text of string `seq` of `owner`: `"{owner}:{seq}:" + '-' * width + "|"`, width 0..150.
fn width(seq: u64) -> usize {
    (seq.wrapping_mul(0x9E37_79B9) % 150) as usize
}

/// `n` dashes, written one `char` at a time: `format_in!` takes no width from an argument.
struct Dashes(usize);

impl core::fmt::Display for Dashes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        (0..self.0).try_for_each(|_| f.write_char('-'))
    }
}

/// A `fmt::Write` sink over a stack buffer, to render the expected text without the heap.
struct StackText {
    bytes: [u8; 256],
    len: usize,
}

impl core::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Whether `text` is string `seq` of `owner`. No heap: usable in the handler.
fn is_expected(text: &str, owner: u64, seq: u64) -> bool {
    let mut expected = StackText {
        bytes: [0; 256],
        len: 0,
    };
    if write!(expected, "{owner}:{seq}:{:-<w$}|", "", w = width(seq)).is_err() {
        return false;
    }
    expected.bytes.get(..expected.len) == Some(text.as_bytes())
}

/// Builds string `seq` of `owner` in `arena`: with `format_in!` for even `seq`, and for odd
/// `seq` by pushing onto an `ArenaString` one character at a time (many small grows).
fn build_string<A: Arena>(
    arena: &A,
    owner: u64,
    seq: u64,
) -> Result<&str, libdd_alloc::AllocError> {
    if seq % 2 == 0 {
        return format_in!(arena, "{owner}:{seq}:{}|", Dashes(width(seq)));
    }
    let mut s = ArenaString::new_in(arena);
    write!(s, "{owner}:{seq}:").map_err(|_| libdd_alloc::AllocError)?;
    for _ in 0..width(seq) {
        s.try_push('-')?;
    }
    s.try_push('|')?;
    Ok(s.into_str())
}

/// The `SIGALRM` handler of the string storm: builds two strings in the arena in `ARENA`,
/// checks their text and records them in the slots.
extern "C" fn format_in_handler<A: Arena>(_signal: libc::c_int) {
    let arena = ARENA.load(Ordering::Acquire) as *const A;
    if arena.is_null() {
        return;
    }
    // SAFETY: `ARENA` points at a live arena while the signal is unblocked.
    let arena = unsafe { &*arena };
    let run = HANDLER_RUNS.fetch_add(1, Ordering::Relaxed);
    for k in 0..2 {
        let seq = run * 2 + k;
        let Ok(text) = build_string(arena, STRING_HANDLER, seq) else {
            HANDLER_FAILURES.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let slot = HANDLER_NEXT.fetch_add(1, Ordering::Relaxed);
        if slot >= HANDLER_SLOTS || !is_expected(text, STRING_HANDLER, seq) {
            HANDLER_FAILURES.fetch_add(1, Ordering::Relaxed);
            return;
        }
        HANDLER_ADDR[slot].store(text.as_ptr() as usize, Ordering::Relaxed);
        HANDLER_LEN[slot].store(text.len(), Ordering::Relaxed);
        HANDLER_TAG[slot].store(seq, Ordering::Relaxed);
    }
}

/// Checks that no two strings overlap and that each still holds its text.
///
/// # Safety
/// Every string is live.
unsafe fn verify_strings(strings: &mut [(Block, u64)]) {
    strings.sort_unstable_by_key(|(b, _)| b.addr);
    for pair in strings.windows(2) {
        let (a, b) = (pair[0].0, pair[1].0);
        assert!(a.addr + a.len <= b.addr, "strings overlap: {a:?} {b:?}");
    }
    for (block, owner) in strings.iter() {
        // SAFETY: per the caller; the bytes were written as UTF-8 text.
        let text = unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                block.addr as *const u8,
                block.len,
            ))
        };
        assert!(
            is_expected(text, *owner, block.tag),
            "string changed: {block:?} {text:?}"
        );
    }
}

/// The storm of `storm`, with strings: the main loop builds strings until the handler, which
/// builds them too, has run `HANDLER_RUNS_WANTED` times, in rounds (at least two); each round
/// (signal blocked) verifies all and resets.
#[cfg(unix)]
fn string_storm<A: Arena>(arena: &mut A, reset: fn(&mut A)) -> StormReport {
    let arena: *mut A = arena;
    install(format_in_handler::<A>);
    HANDLER_RUNS.store(0, Ordering::Relaxed);
    HANDLER_NEXT.store(0, Ordering::Relaxed);
    ARENA.store(arena.cast(), Ordering::Release);
    let mut strings: Vec<(Block, u64)> = Vec::with_capacity(ROUND + HANDLER_SLOTS);
    let mut report = StormReport {
        main_blocks: 0,
        handler_blocks: 0,
        handler_runs: 0,
        rounds: 0,
    };
    let started = Instant::now();
    let wanted = || HANDLER_RUNS.load(Ordering::Relaxed) >= HANDLER_RUNS_WANTED;
    set_timer(TIMER_INTERVAL_US);
    let mut seq = 0u64;
    let mut done = false;
    while !done {
        assert!(
            started.elapsed() < TIME_LIMIT,
            "the handler ran only {} times in {TIME_LIMIT:?}",
            HANDLER_RUNS.load(Ordering::Relaxed)
        );
        // SAFETY: only shared use while the signal is unblocked; `reset` runs with it blocked.
        let shared = unsafe { &*arena };
        // As in `storm`: the first round always fills up, later ones end once the handler has
        // run often enough.
        let last_round_may_end = report.rounds > 0;
        let mut main = 0;
        while main < ROUND / 10 && (seq % 256 != 0 || !(last_round_may_end && wanted())) {
            let text = build_string(shared, STRING_MAIN, seq).expect("main loop string");
            assert!(
                is_expected(text, STRING_MAIN, seq),
                "string changed under the main loop"
            );
            let block = Block {
                addr: text.as_ptr() as usize,
                len: text.len(),
                tag: seq,
            };
            strings.push((block, STRING_MAIN));
            main += 1;
            seq += 1;
        }
        done = report.rounds > 0 && wanted();
        if done {
            // Last round: stop the timer, so that every handler run is counted and verified.
            set_timer(0);
        }
        set_signal_blocked(true);
        report.handler_runs = HANDLER_RUNS.load(Ordering::Relaxed);
        let handler_count = HANDLER_NEXT.load(Ordering::Relaxed).min(HANDLER_SLOTS);
        strings.extend((0..handler_count).map(|i| {
            let block = Block {
                addr: HANDLER_ADDR[i].load(Ordering::Relaxed),
                len: HANDLER_LEN[i].load(Ordering::Relaxed),
                tag: HANDLER_TAG[i].load(Ordering::Relaxed),
            };
            (block, STRING_HANDLER)
        }));
        // SAFETY: every string is live until the reset below.
        unsafe { verify_strings(&mut strings) };
        assert_eq!(HANDLER_FAILURES.load(Ordering::Relaxed), 0);
        report.main_blocks += main;
        report.handler_blocks += handler_count;
        report.rounds += 1;
        strings.clear();
        HANDLER_NEXT.store(0, Ordering::Relaxed);
        // SAFETY: the signal is blocked and no string is referenced any more.
        reset(unsafe { &mut *arena });
        set_signal_blocked(false);
    }
    set_timer(0);
    set_signal_blocked(true);
    ARENA.store(std::ptr::null_mut(), Ordering::Release);
    set_signal_blocked(false);
    report
}

fn check_strings(name: &str, report: StormReport) {
    println!(
        "{name}, strings: {} rounds, {} main strings, {} handler runs, {} handler strings: text intact, no overlap",
        report.rounds, report.main_blocks, report.handler_runs, report.handler_blocks
    );
    assert!(report.rounds >= 2, "only {} round", report.rounds);
    assert!(
        report.handler_runs >= HANDLER_RUNS_WANTED,
        "the handler ran only {} times",
        report.handler_runs
    );
    assert_eq!(report.handler_blocks as u64, report.handler_runs * 2);
}

#[cfg(unix)]
fn handler_and_main_loop_format_intact_strings_in_a_sync_chain_arena() {
    // Small chunks: strings often outgrow their chunk, and a handler lands mid-growth.
    let mut arena = SyncChainAllocator::new_in(4096, VirtualAllocator {})
        .unwrap()
        .with_max_chunk_size(16 << 10);
    let report = string_storm(&mut arena, SyncChainAllocator::reset);
    check_strings("SyncChainAllocator", report);
}

#[cfg(unix)]
fn handler_and_main_loop_format_intact_strings_in_a_sync_linear_arena() {
    let mut arena = SyncLinearAllocator::new_in(
        Layout::from_size_align(64 << 20, 4096).unwrap(),
        VirtualAllocator {},
    )
    .unwrap();
    let report = string_storm(&mut arena, SyncLinearAllocator::reset);
    check_strings("SyncLinearAllocator", report);
}

#[cfg(unix)]
fn handler_and_main_loop_format_intact_strings_in_a_borrowed_sync_linear_arena() {
    let mut bytes = Vec::<u8>::with_capacity(64 << 20);
    let mut arena = SyncLinearAllocator::from_buffer(bytes.spare_capacity_mut());
    let report = string_storm(&mut arena, SyncLinearAllocator::reset);
    check_strings("SyncLinearAllocator<Borrowed<'_>>", report);
}

// ---- A handler racing the main loop at the limit of a budget ----

const BUDGET_LIMIT: usize = 192 << 10;
static STORM_BUDGET: Budget = Budget::new(BUDGET_LIMIT);
static VIRTUAL_STORM_BUDGET: Budget = Budget::new(BUDGET_LIMIT);
static HANDLER_REFUSALS: AtomicUsize = AtomicUsize::new(0);

type BudgetedArena = SyncChainAllocator<Budgeted<'static, VirtualAllocator>>;

/// The `SIGALRM` handler of the budget storm: three blocks from the budgeted arena in `ARENA`;
/// a refusal is counted, not a failure.
extern "C" fn allocate_at_the_limit_in_handler<A: Allocator>(_signal: libc::c_int) {
    let arena = ARENA.load(Ordering::Acquire) as *const A;
    let budget = ACTIVE_BUDGET.load(Ordering::Acquire);
    if arena.is_null() || budget.is_null() {
        return;
    }
    // SAFETY: `ARENA` points at a live arena while the signal is unblocked; the budget is a
    // `static`.
    let (arena, budget) = unsafe { (&*arena, &*budget) };
    let run = HANDLER_RUNS.fetch_add(1, Ordering::Relaxed);
    for k in 0..3 {
        let seq = run * 3 + k;
        let layout = mixed_layout(seq ^ 0xB0D9);
        let Ok(block) = arena.allocate(layout) else {
            HANDLER_REFUSALS.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // SAFETY: the block is fresh and ours.
        let record = unsafe { fill(block, layout.size(), tag(HANDLER_OWNER, seq)) };
        let slot = HANDLER_NEXT.fetch_add(1, Ordering::Relaxed);
        if slot >= HANDLER_SLOTS || budget.used() > BUDGET_LIMIT {
            HANDLER_FAILURES.fetch_add(1, Ordering::Relaxed);
            return;
        }
        HANDLER_ADDR[slot].store(record.addr, Ordering::Relaxed);
        HANDLER_LEN[slot].store(record.len, Ordering::Relaxed);
        HANDLER_TAG[slot].store(record.tag, Ordering::Relaxed);
    }
}

#[cfg(unix)]
fn handler_and_main_loop_racing_at_a_budget_limit_never_exceed_it() {
    let mut arena: BudgetedArena =
        SyncChainAllocator::new_in(4096, Budgeted::new(&STORM_BUDGET, VirtualAllocator {}))
            .unwrap()
            .with_max_chunk_size(8 << 10);
    budget_storm(
        &mut arena,
        &STORM_BUDGET,
        "Budgeted",
        BudgetedArena::reset,
        None,
    );
    drop(arena);
    assert_eq!(
        STORM_BUDGET.used(),
        0,
        "dropping the arena gives the whole budget back"
    );
}

#[cfg(unix)]
fn handler_and_main_loop_racing_at_the_budget_of_a_sync_virtual_arena_never_exceed_it() {
    // 64 KiB steps: the second step (to 256 KiB) passes the limit, so the arena falls back to
    // committing the bare need, page by page, while the handler races it.
    let mut arena = SyncVirtualArena::new_with_budget(64 << 20, &VIRTUAL_STORM_BUDGET)
        .unwrap()
        .with_max_commit_step(64 << 10);
    budget_storm(
        &mut arena,
        &VIRTUAL_STORM_BUDGET,
        "SyncVirtualArena",
        // Gives the pages back, and their charge: every round commits again under the storm.
        SyncVirtualArena::reset_and_release,
        Some(SyncVirtualArena::committed_bytes),
    );
    drop(arena);
    assert_eq!(
        VIRTUAL_STORM_BUDGET.used(),
        0,
        "dropping the arena gives the whole budget back"
    );
}

/// Allocates from `arena` (on `budget`) until the budget has refused 200 times, round after
/// round until the handler has run `HANDLER_RUNS_WANTED` times, while the timer's handler allocates from it too; after each round
/// (signal blocked) verifies every block, checks that the budget never passed its limit (and,
/// with `charged`, that it counts exactly that many bytes), and calls `reset`.
#[cfg(unix)]
fn budget_storm<A: Allocator>(
    arena: &mut A,
    budget: &'static Budget,
    name: &str,
    reset: fn(&mut A),
    charged: Option<fn(&A) -> usize>,
) {
    install(allocate_at_the_limit_in_handler::<A>);
    HANDLER_RUNS.store(0, Ordering::Relaxed);
    HANDLER_NEXT.store(0, Ordering::Relaxed);
    HANDLER_FAILURES.store(0, Ordering::Relaxed);
    HANDLER_REFUSALS.store(0, Ordering::Relaxed);
    ACTIVE_BUDGET.store(std::ptr::from_ref(budget).cast_mut(), Ordering::Release);
    let arena_ptr: *mut A = arena;
    ARENA.store(arena_ptr.cast(), Ordering::Release);
    let mut blocks: Vec<Block> = Vec::with_capacity(ROUND + HANDLER_SLOTS);
    let (mut main_ok, mut main_refused, mut handler_ok, mut rounds) = (0usize, 0usize, 0usize, 0);
    let mut seq = 0u64;
    let started = Instant::now();
    set_timer(TIMER_INTERVAL_US);
    let mut last = false;
    while !last {
        assert!(
            started.elapsed() < TIME_LIMIT,
            "the handler ran only {} times in {TIME_LIMIT:?}",
            HANDLER_RUNS.load(Ordering::Relaxed)
        );
        // SAFETY: shared use only while the signal is unblocked.
        let shared = unsafe { &*arena_ptr };
        // Allocate until the budget has refused 200 times: the handler meets it full, or
        // nearly, most of the time.
        let mut refused_this_round = 0;
        while refused_this_round < 200 {
            let layout = mixed_layout(seq);
            match shared.allocate(layout) {
                Ok(block) => {
                    // SAFETY: fresh block, ours.
                    blocks.push(unsafe { fill(block, layout.size(), tag(1, seq)) });
                    main_ok += 1;
                }
                Err(libdd_alloc::AllocError) => {
                    refused_this_round += 1;
                    main_refused += 1;
                }
            }
            assert!(budget.used() <= BUDGET_LIMIT);
            seq += 1;
        }
        last = rounds > 0 && HANDLER_RUNS.load(Ordering::Relaxed) >= HANDLER_RUNS_WANTED;
        if last {
            // Last round: stop the timer, so that every handler run is counted and verified.
            set_timer(0);
        }
        set_signal_blocked(true);
        let handler_count = HANDLER_NEXT.load(Ordering::Relaxed).min(HANDLER_SLOTS);
        blocks.extend((0..handler_count).map(|i| Block {
            addr: HANDLER_ADDR[i].load(Ordering::Relaxed),
            len: HANDLER_LEN[i].load(Ordering::Relaxed),
            tag: HANDLER_TAG[i].load(Ordering::Relaxed),
        }));
        // SAFETY: every block is live until the reset below.
        assert_eq!(unsafe { verify(&mut blocks) }, Ok(()));
        assert_eq!(HANDLER_FAILURES.load(Ordering::Relaxed), 0);
        assert!(budget.peak() <= BUDGET_LIMIT);
        if let Some(charged) = charged {
            // No commit is in flight: the budget counts the commit exactly.
            assert_eq!(budget.used(), charged(shared));
        }
        handler_ok += handler_count;
        rounds += 1;
        blocks.clear();
        HANDLER_NEXT.store(0, Ordering::Relaxed);
        // SAFETY: the signal is blocked and no block is referenced any more.
        reset(unsafe { &mut *arena_ptr });
        set_signal_blocked(false);
    }
    set_timer(0);
    set_signal_blocked(true);
    ARENA.store(std::ptr::null_mut(), Ordering::Release);
    ACTIVE_BUDGET.store(std::ptr::null_mut(), Ordering::Release);
    set_signal_blocked(false);
    let runs = HANDLER_RUNS.load(Ordering::Relaxed);
    let handler_refused = HANDLER_REFUSALS.load(Ordering::Relaxed);
    println!(
        "{name} at a budget: {rounds} rounds, main {main_ok} allocations / {main_refused} refusals, handler {runs} runs, \
         {handler_ok} allocations / {handler_refused} refusals, peak {} of {BUDGET_LIMIT}",
        budget.peak()
    );
    assert!(
        runs >= HANDLER_RUNS_WANTED,
        "the handler ran only {runs} times"
    );
    assert!(
        handler_ok > 0 && handler_refused > 0,
        "the handler never raced at the limit"
    );
    assert_eq!(handler_ok + handler_refused, runs as usize * 3);
    assert!(budget.peak() <= BUDGET_LIMIT);
    assert!(
        budget.peak() > BUDGET_LIMIT - (8 << 10),
        "the limit was never neared"
    );
}

/// A `LocalHandle` with the arena it borrows, as one `Allocator` the storm can reset: the handler
/// allocates from the very handle the main loop is allocating from.
#[cfg(unix)]
struct HandleOnArena {
    handle: ManuallyDrop<LocalHandle<'static, SyncChainAllocator<VirtualAllocator>>>,
    arena: Box<SyncChainAllocator<VirtualAllocator>>,
    /// `interrupted_allocations` of the handles dropped so far.
    interrupted_before: usize,
}

#[cfg(unix)]
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

#[cfg(unix)]
impl Drop for HandleOnArena {
    fn drop(&mut self) {
        // SAFETY: dropped once, before the arena.
        unsafe { ManuallyDrop::drop(&mut self.handle) };
    }
}

// SAFETY: forwards to the handle.
#[cfg(unix)]
unsafe impl Allocator for HandleOnArena {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.handle.allocate(layout)
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded caller contract.
        unsafe { self.handle.deallocate(ptr, layout) }
    }
}

#[cfg(unix)]
fn signal_handler_and_main_loop_never_overlap_through_one_local_handle() {
    libdd_alloc::os::page_size().unwrap();
    let mut arena = HandleOnArena::new();
    let report = storm(&mut arena, HandleOnArena::reset, HandleOnArena::used_bytes);
    let interrupted = arena.interrupted_allocations();
    // Which mark the handle was built with (src/sync/mark.rs; `build.rs` sets `asm_goto`).
    let mark = if cfg!(all(
        target_arch = "x86_64",
        target_pointer_width = "64",
        asm_goto
    )) {
        "x86_64 one-instruction (asm `dec`)"
    } else {
        "portable (load, store)"
    };
    println!("LocalHandle ({mark} mark): {interrupted} handler allocations landed inside a main-loop call on the handle");
    check("LocalHandle on SyncChainAllocator", report);
    // The point of the test: handlers did land inside the marked window.
    assert!(interrupted > 0, "no handler landed inside an allocation");
}

/// Bit 63 of a token's id: registered by the handler (else by the main loop).
const HANDLER_TOKEN: u64 = 1 << 63;
/// Where the handler of a drop storm registers its tokens (an arena or a handle).
static DROP_TARGET: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
static HANDLER_TOKEN_SEQ: AtomicU64 = AtomicU64::new(0);
static TOKENS_REGISTERED: AtomicUsize = AtomicUsize::new(0);
static TOKENS_REGISTERED_SUM: AtomicU64 = AtomicU64::new(0);
static TOKENS_DROPPED: AtomicUsize = AtomicUsize::new(0);
static TOKENS_DROPPED_SUM: AtomicU64 = AtomicU64::new(0);
/// The id of the last token dropped, by source (main loop, handler): each must be smaller.
static LAST_DROPPED: [AtomicU64; 2] = [const { AtomicU64::new(u64::MAX) }; 2];
static TOKENS_OUT_OF_ORDER: AtomicUsize = AtomicUsize::new(0);
static TOKENS_CORRUPT: AtomicUsize = AtomicUsize::new(0);

fn token_hash(id: u64) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// A value with drop glue and no heap data (the handler may not call `malloc`): its destructor
/// checks its contents (bytes handed out twice would have changed them), that it is dropped
/// newest first among its source's tokens, and counts itself.
struct Token {
    id: u64,
    check: u64,
}

impl Token {
    fn new(id: u64) -> Self {
        Self { id, check: !id }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if self.check != !self.id {
            TOKENS_CORRUPT.fetch_add(1, Ordering::Relaxed);
        }
        let source = usize::from(self.id & HANDLER_TOKEN != 0);
        if LAST_DROPPED[source].swap(self.id, Ordering::Relaxed) <= self.id {
            TOKENS_OUT_OF_ORDER.fetch_add(1, Ordering::Relaxed);
        }
        TOKENS_DROPPED.fetch_add(1, Ordering::Relaxed);
        TOKENS_DROPPED_SUM.fetch_add(token_hash(self.id), Ordering::Relaxed);
    }
}

/// The `SIGALRM` handler of a drop storm: registers two tokens on `DROP_TARGET`.
#[cfg(unix)]
extern "C" fn register_in_handler<R: DropArena>(_signal: libc::c_int) {
    let target = DROP_TARGET.load(Ordering::Acquire) as *const R;
    if target.is_null() {
        return;
    }
    // SAFETY: `DROP_TARGET` points at a live arena or handle while the signal is unblocked.
    let target = unsafe { &*target };
    HANDLER_RUNS.fetch_add(1, Ordering::Relaxed);
    for _ in 0..2 {
        let id = HANDLER_TOKEN | HANDLER_TOKEN_SEQ.fetch_add(1, Ordering::Relaxed);
        match target.try_alloc_owned(Token::new(id)) {
            Ok(token) if token.id == id => {
                TOKENS_REGISTERED.fetch_add(1, Ordering::Relaxed);
                TOKENS_REGISTERED_SUM.fetch_add(token_hash(id), Ordering::Relaxed);
            }
            _ => {
                HANDLER_FAILURES.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One round of a drop storm on `registrar` (which the handler registers on too, through
/// `DROP_TARGET`): registers main-loop tokens until `ROUND` or, if `may_end`, until the handler
/// has run often enough. Returns with the signal blocked and `DROP_TARGET` cleared.
#[cfg(unix)]
fn drop_round<R: DropArena>(registrar: &R, seq: &mut u64, may_end: bool) {
    install(register_in_handler::<R>);
    DROP_TARGET.store((registrar as *const R).cast_mut().cast(), Ordering::Release);
    set_signal_blocked(false);
    let wanted = || HANDLER_RUNS.load(Ordering::Relaxed) >= HANDLER_RUNS_WANTED;
    for _ in 0..ROUND {
        if may_end && *seq % 1024 == 0 && wanted() {
            break;
        }
        let token = registrar
            .try_alloc_owned(Token::new(*seq))
            .expect("main loop registration");
        assert_eq!(
            (token.id, token.check),
            (*seq, !*seq),
            "token changed under the main loop"
        );
        TOKENS_REGISTERED.fetch_add(1, Ordering::Relaxed);
        TOKENS_REGISTERED_SUM.fetch_add(token_hash(*seq), Ordering::Relaxed);
        *seq += 1;
    }
    set_signal_blocked(true);
    DROP_TARGET.store(std::ptr::null_mut(), Ordering::Release);
}

/// Registers tokens with destructors on `arena` (through `round`, on the arena or on a handle
/// of it) while the timer's handler registers more on the same target; after each round (the
/// signal blocked) `reset` must drop every token exactly once, newest first per source, intact.
#[cfg(unix)]
fn drop_storm<A>(arena: &mut A, reset: fn(&mut A), round: fn(&A, &mut u64, bool)) -> (usize, u64) {
    HANDLER_RUNS.store(0, Ordering::Relaxed);
    HANDLER_TOKEN_SEQ.store(0, Ordering::Relaxed);
    let started = Instant::now();
    set_signal_blocked(true);
    set_timer(TIMER_INTERVAL_US);
    let (mut rounds, mut seq) = (0, 0u64);
    loop {
        assert!(started.elapsed() < TIME_LIMIT, "the handler ran too rarely");
        round(arena, &mut seq, rounds > 0);
        rounds += 1;
        let done = rounds > 1 && HANDLER_RUNS.load(Ordering::Relaxed) >= HANDLER_RUNS_WANTED;
        for last in &LAST_DROPPED {
            last.store(u64::MAX, Ordering::Relaxed);
        }
        let registered = TOKENS_REGISTERED.swap(0, Ordering::Relaxed);
        let registered_sum = TOKENS_REGISTERED_SUM.swap(0, Ordering::Relaxed);
        reset(arena);
        assert_eq!(
            TOKENS_DROPPED.swap(0, Ordering::Relaxed),
            registered,
            "drop count"
        );
        assert_eq!(
            TOKENS_DROPPED_SUM.swap(0, Ordering::Relaxed),
            registered_sum,
            "dropped ids"
        );
        assert_eq!(
            TOKENS_OUT_OF_ORDER.load(Ordering::Relaxed),
            0,
            "not newest first"
        );
        assert_eq!(
            TOKENS_CORRUPT.load(Ordering::Relaxed),
            0,
            "a token was overwritten"
        );
        assert_eq!(HANDLER_FAILURES.load(Ordering::Relaxed), 0);
        if done {
            break;
        }
    }
    set_timer(0);
    set_signal_blocked(false);
    (rounds, HANDLER_RUNS.load(Ordering::Relaxed))
}

#[cfg(unix)]
fn handler_and_main_loop_register_values_that_are_each_dropped_once_at_reset() {
    fn on_arena<A: DropArena>(arena: &A, seq: &mut u64, may_end: bool) {
        drop_round(arena, seq, may_end);
    }
    fn on_handle(arena: &SyncVirtualArena, seq: &mut u64, may_end: bool) {
        let local = arena.local();
        drop_round(&local, seq, may_end);
    }
    let mut linear = SyncLinearAllocator::new_in(
        Layout::from_size_align(64 << 20, 4096).unwrap(),
        VirtualAllocator {},
    )
    .unwrap();
    let (rounds, runs) = drop_storm(&mut linear, SyncLinearAllocator::reset, on_arena);
    println!("drops on SyncLinearAllocator: {rounds} rounds, {runs} handler runs: every value dropped once, newest first, intact");
    let mut virtual_arena = SyncVirtualArena::new(1 << 30).unwrap();
    let (rounds, runs) = drop_storm(&mut virtual_arena, SyncVirtualArena::reset, on_arena);
    println!("drops on SyncVirtualArena: {rounds} rounds, {runs} handler runs: every value dropped once, newest first, intact");
    let (rounds, runs) = drop_storm(&mut virtual_arena, SyncVirtualArena::reset, on_handle);
    println!("drops through a LocalHandle on SyncVirtualArena: {rounds} rounds, {runs} handler runs: every value dropped once, newest first, intact");
    // Chunks of 64 KiB from `VirtualAllocator` (growth is one raw mmap: signal-safe), so the
    // values of a round span many chunks and the handler links some of them.
    fn on_chain_handle(arena: &SyncChainAllocator<VirtualAllocator>, seq: &mut u64, may_end: bool) {
        let local = arena.local();
        drop_round(&local, seq, may_end);
    }
    let mut chain = SyncChainAllocator::new_in(64 << 10, VirtualAllocator {})
        .unwrap()
        .with_max_chunk_size(64 << 10);
    let (rounds, runs) = drop_storm(&mut chain, SyncChainAllocator::reset, on_arena);
    println!("drops on SyncChainAllocator: {rounds} rounds, {runs} handler runs: every value dropped once, newest first, intact");
    let (rounds, runs) = drop_storm(&mut chain, SyncChainAllocator::reset, on_chain_handle);
    println!("drops through a LocalHandle on SyncChainAllocator: {rounds} rounds, {runs} handler runs: every value dropped once, newest first, intact");
}

#[cfg(unix)]
fn main() {
    signal_handler_and_main_loop_never_overlap_in_a_sync_chain_arena();
    handler_and_main_loop_register_values_that_are_each_dropped_once_at_reset();
    signal_handler_and_main_loop_never_overlap_in_a_sync_linear_arena();
    signal_handler_and_main_loop_never_overlap_in_a_borrowed_sync_linear_arena();
    signal_handler_and_main_loop_never_overlap_in_a_sync_virtual_arena();
    signal_handler_and_main_loop_never_overlap_through_one_local_handle();
    handler_and_main_loop_format_intact_strings_in_a_sync_chain_arena();
    handler_and_main_loop_format_intact_strings_in_a_sync_linear_arena();
    handler_and_main_loop_format_intact_strings_in_a_borrowed_sync_linear_arena();
    handler_and_main_loop_racing_at_a_budget_limit_never_exceed_it();
    handler_and_main_loop_racing_at_the_budget_of_a_sync_virtual_arena_never_exceed_it();
}

#[cfg(not(unix))]
fn main() {
    println!("sync_signals: skipped: needs setitimer and sigaction (POSIX signals)");
}
