//! Outside review of `LocalHandle` (issue 11): each test pins one claim of the handle's docs or
//! of the issue, attacked from a side the handle's own tests do not cover. Deterministic tests
//! first, then real threads, then real signals (a per-thread `timer_create` timer at 10 kHz,
//! `SIGEV_THREAD_ID`, so that the standard harness's other threads are never interrupted;
//! signal tests are serialized by a lock).
#![cfg(unix)] // signals, timer_create and errno throughout: POSIX only

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::blocks::{fill, intact, verify, Block};
use common::mapping_order::SeenByTsan;
use common::{addr, layout, slots};
use libdd_alloc::{
    Allocator, Layout, LocalHandle, SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena,
    System,
};
use std::ptr::NonNull;

type Chain = SyncChainAllocator<System>;

// ---------------------------------------------------------------------------------------------
// In place: "its most recent block grows, shrinks and is given back in place".
// ---------------------------------------------------------------------------------------------

/// A block above an eighth of the slab is served by the arena directly; when it is the handle's
/// (and the arena's) most recent block it must still grow, shrink and be given back in place,
/// as it would on the arena itself.
#[test]
fn a_large_most_recent_block_grows_shrinks_and_is_given_back_in_place() {
    let arena = Chain::new_in(1 << 20, System).unwrap();
    let local = arena.local();
    local.allocate(layout(8, 8)).unwrap();
    let small = layout(4096, 8);
    let block = local.allocate(small).unwrap().cast::<u8>();
    // SAFETY: fresh block of `small`.
    unsafe { block.as_ptr().write_bytes(0xA5, small.size()) };
    let used = arena.used_bytes();
    let big = layout(16384, 8);
    // SAFETY: `block` is of `small`, from `local`.
    let grown = unsafe { local.grow(block, small, big) }.unwrap();
    assert_eq!(
        grown.cast::<u8>(),
        block,
        "grow moved the most recent block"
    );
    assert_eq!(arena.used_bytes(), used + big.size() - small.size());
    // SAFETY: now of `big`.
    let shrunk = unsafe { local.shrink(block, big, small) }.unwrap();
    assert_eq!(shrunk.cast::<u8>(), block);
    assert_eq!(
        arena.used_bytes(),
        used,
        "shrink did not give the tail back"
    );
    // SAFETY: now of `small`.
    unsafe { local.deallocate(block, small) };
    assert_eq!(
        arena.used_bytes(),
        used - small.size(),
        "deallocate gave nothing back"
    );
}

/// A `Vec<u8>` grown to 1 MiB through the handle, alone on its arena: on the arena directly
/// it grows in place and costs its capacity; through the handle it must not cost twice that.
#[test]
fn a_vec_grown_through_the_handle_costs_what_it_costs_on_the_arena() {
    /// Pushes 1 MiB and returns `used()` measured while the vector still lives.
    fn grow_vec<A: Allocator>(alloc: A, used: impl Fn() -> usize) -> usize {
        let mut v = allocator_api2::vec::Vec::new_in(alloc);
        for i in 0..(1usize << 20) {
            v.push(i as u8);
        }
        assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
        used()
    }
    let direct = Chain::new_in(4 << 20, System).unwrap();
    let d = grow_vec(&direct, || direct.used_bytes());
    let arena = Chain::new_in(4 << 20, System).unwrap();
    let local = arena.local();
    let l = grow_vec(&local, || arena.used_bytes());
    assert!(
        l * 100 <= d * 115,
        "through the handle {l} bytes, directly {d} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// Accounting as documented.
// ---------------------------------------------------------------------------------------------

/// "A request larger than an eighth of the slab size is served by the shared arena directly
/// and keeps the slab, so a replaced slab loses at most an eighth of itself."
#[test]
fn a_replaced_slab_loses_at_most_an_eighth_of_itself() {
    let arena = Chain::new_in(1 << 20, System).unwrap();
    let other = arena.local();
    let local = arena.local();
    local.allocate(layout(8, 8)).unwrap(); // the first slab, 1 KiB
    let slab = local.remaining_capacity() + 8;
    other.allocate(layout(8, 8)).unwrap(); // claimed after it: the slab cannot grow in place
                                           // Leave 250 bytes, then ask for 255: it does not fit, and 255 > 1024 / 8.
    local.allocate(layout(slab - 8 - 250, 1)).unwrap();
    let before = local.remaining_capacity();
    local.allocate(layout(255, 1)).unwrap();
    let kept_slab = local.remaining_capacity() == before;
    assert!(
        kept_slab || before <= slab / 8,
        "a {slab}-byte slab was replaced with {before} bytes unused"
    );
}

/// The same with alignment: a small request with a large alignment. Where the slab holds an
/// address of that alignment, bumping to it is what any bump arena does (the padding is the
/// price of the alignment, as on the arena itself); otherwise the slab must be kept.
#[test]
fn a_small_request_with_a_large_alignment_does_not_throw_away_the_slab() {
    let arena = Chain::new_in(1 << 20, System).unwrap();
    let other = arena.local();
    let local = arena.local();
    local.allocate(layout(8, 8)).unwrap();
    let slab = local.remaining_capacity() + 8;
    other.allocate(layout(8, 8)).unwrap();
    // Where the handle's cursor and its slab's end are (the probe byte is the cursor).
    let probe = addr(local.allocate(layout(1, 1)).unwrap());
    let before = local.remaining_capacity();
    let (cursor, limit) = (probe + 1, probe + 1 + before);
    let in_slab = cursor.next_multiple_of(4096);
    // 8 bytes, 4 KiB aligned: above the slab's room once padded.
    let aligned = local.allocate(layout(8, 4096)).unwrap();
    assert_eq!(addr(aligned) % 4096, 0);
    if in_slab + 8 <= limit {
        assert_eq!(
            addr(aligned),
            in_slab,
            "served from the slab, as the arena would"
        );
        assert_eq!(local.remaining_capacity(), limit - in_slab - 8);
    } else {
        let kept_slab = local.remaining_capacity() == before;
        assert!(
            kept_slab || before <= slab / 8,
            "an 8-byte request threw away {before} bytes of a {slab}-byte slab"
        );
    }
}

/// "A single thread's handle therefore leaves the arena's `used_bytes` exactly as if it had
/// allocated from the arena directly" was claimed; with a request the arena serves directly
/// (it does not fit the first slab and is above an eighth of it) the slab is no longer the
/// arena's last claim, and its unused tail stays counted: exactly that tail, as now documented.
#[test]
fn a_lone_handle_serving_a_large_request_leaves_the_arena_as_direct_allocation_plus_the_kept_tail()
{
    let direct = Chain::new_in(1 << 20, System).unwrap();
    let arena = Chain::new_in(1 << 20, System).unwrap();
    let tail = {
        let local = arena.local();
        for l in [layout(8, 8), layout(2000, 8), layout(8, 8)] {
            direct.allocate(l).unwrap();
            local.allocate(l).unwrap();
        }
        local.remaining_capacity()
    };
    assert!(tail > 0);
    assert_eq!(arena.used_bytes(), direct.used_bytes() + tail);
}

/// Across the chunk boundaries of a small-chunked chain (16 KiB), small requests only: the
/// handle's slabs (up to 64 KiB) must not get chunks of their own past the chain's bound, and
/// the handle must fill each chunk about as direct allocation does.
#[test]
fn a_lone_handle_across_chunks_takes_no_more_memory_than_direct_allocation() {
    let direct = Chain::new_in(4096, System)
        .unwrap()
        .with_max_chunk_size(16 << 10);
    let arena = Chain::new_in(4096, System)
        .unwrap()
        .with_max_chunk_size(16 << 10);
    {
        let local = arena.local();
        for i in 0..5000usize {
            let l = layout(1 + i % 64, 8);
            direct.allocate(l).unwrap();
            local.allocate(l).unwrap();
        }
    }
    let (used, reserved) = (arena.used_bytes(), arena.reserved_bytes());
    assert!(
        reserved <= direct.reserved_bytes() && used * 100 <= direct.used_bytes() * 101,
        "through a handle {used} used / {reserved} reserved, directly {} / {}",
        direct.used_bytes(),
        direct.reserved_bytes()
    );
}

// ---------------------------------------------------------------------------------------------
// Real signals: a 10 kHz timer aimed at the test's own thread.
// ---------------------------------------------------------------------------------------------

mod storm {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    /// One signal test at a time: they share the signal and the handler's body.
    pub static LOCK: Mutex<()> = Mutex::new(());
    /// The handler's body, a `fn()`, or 0.
    static BODY: AtomicUsize = AtomicUsize::new(0);
    pub const SIGNAL: libc::c_int = libc::SIGUSR1;
    pub const INTERVAL: Duration = Duration::from_micros(100); // 10 kHz
    /// Allocation time per signal test, with the signal unblocked.
    pub const STORM: Duration = Duration::from_millis(700);

    extern "C" fn on_signal(_: libc::c_int) {
        // SAFETY: errno is a thread-local int; the body may make syscalls (mmap).
        let errno = unsafe { *libc::__errno_location() };
        let body = BODY.load(Ordering::Acquire);
        if body != 0 {
            // SAFETY: only `fn()` values are stored.
            let body: fn() = unsafe { std::mem::transmute(body) };
            body();
        }
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
    }

    pub fn set_blocked(blocked: bool) {
        // SAFETY: plain libc calls on a local, initialised signal set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, SIGNAL);
            let how = if blocked {
                libc::SIG_BLOCK
            } else {
                libc::SIG_UNBLOCK
            };
            assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
        }
    }

    /// A timer that sends `SIGNAL` to the calling thread every `INTERVAL`, running `body` in
    /// the handler. Starts with the signal blocked; stops (and blocks it) when dropped.
    pub struct Timer(libc::timer_t);

    impl Timer {
        pub fn start(body: fn()) -> Self {
            set_blocked(true);
            BODY.store(body as usize, Ordering::Release);
            // SAFETY: a zeroed sigaction and sigevent are valid; the handler is
            // async-signal-safe as long as `body` is (the tests' bodies use atomics and the
            // arena under test only).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                assert_eq!(libc::sigaction(SIGNAL, &action, std::ptr::null_mut()), 0);
                let mut event: libc::sigevent = std::mem::zeroed();
                event.sigev_notify = libc::SIGEV_THREAD_ID;
                event.sigev_signo = SIGNAL;
                event.sigev_notify_thread_id = libc::gettid();
                let mut timer: libc::timer_t = std::mem::zeroed();
                assert_eq!(
                    libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer),
                    0
                );
                let ns = INTERVAL.as_nanos() as libc::c_long;
                let spec = libc::itimerspec {
                    it_interval: libc::timespec {
                        tv_sec: 0,
                        tv_nsec: ns,
                    },
                    it_value: libc::timespec {
                        tv_sec: 0,
                        tv_nsec: ns,
                    },
                };
                assert_eq!(
                    libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()),
                    0
                );
                Self(timer)
            }
        }
    }

    impl Drop for Timer {
        fn drop(&mut self) {
            set_blocked(true);
            // SAFETY: our timer, deleted once.
            unsafe { libc::timer_delete(self.0) };
            BODY.store(0, Ordering::Release);
        }
    }
}

/// Values given a `'static` address for a test (handlers reach them through static pointers),
/// freed at its end, newest first, once no handler can run.
struct Reclaim(Vec<Box<dyn FnOnce()>>);

impl Reclaim {
    fn leak<T: 'static>(&mut self, value: T) -> &'static mut T {
        let ptr = Box::into_raw(Box::new(value));
        // SAFETY: freed once, by `free`, after every use.
        self.0
            .push(Box::new(move || drop(unsafe { Box::from_raw(ptr) })));
        // SAFETY: live until `free`.
        unsafe { &mut *ptr }
    }

    /// # Safety
    /// Nothing refers to the values any more.
    unsafe fn free(self) {
        for free in self.0.into_iter().rev() {
            free();
        }
    }
}

/// Mapped by `VirtualAllocator` (raw syscalls), its chunk maps and unmaps ordered for TSan.
type VChain = SyncChainAllocator<SeenByTsan>;
type VHandle = LocalHandle<'static, VChain>;

/// The handle a handler reaches, as a profiler would: through a static pointer.
static HANDLE: std::sync::atomic::AtomicPtr<VHandle> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
const HANDLER_OWNER: u64 = 0xFFFF;

/// A small deterministic layout stream (1..=200 bytes, align 1..=32) for handler and main loop.
fn small_layout(seq: u64) -> Layout {
    let h = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
    layout(1 + (h as usize % 200), 1 << (h % 6))
}

/// Grows a filled block of `old` to `new` through `alloc`, checks the kept prefix and refills
/// it; `None` if the allocator refused.
///
/// # Safety
/// `block` is a live block of `alloc` with `old`, filled with `tag`'s pattern.
unsafe fn grow_checked<A: Allocator>(
    alloc: &A,
    block: &Block,
    old: Layout,
    new: Layout,
) -> Option<(NonNull<[u8]>, bool)> {
    let ptr = NonNull::new(block.addr as *mut u8)?;
    // SAFETY: per the caller.
    let grown = unsafe { alloc.grow(ptr, old, new) }.ok()?;
    let kept = Block {
        addr: addr(grown),
        ..*block
    };
    // SAFETY: the grown block is ours; its first `old.size()` bytes were copied or kept.
    let intact = unsafe { intact(&kept) };
    Some((grown, intact))
}

/// The handler of the reentrancy storms: through `HANDLE`, allocates a block, grows it, shrinks
/// it, keeps it; allocates a scratch block, grows it, and gives it back. Checks each step.
fn handler_allocates_grows_shrinks_and_frees() {
    let handle = HANDLE.load(std::sync::atomic::Ordering::Acquire);
    if handle.is_null() {
        return;
    }
    // SAFETY: `HANDLE` points at a live handle while the signal is unblocked.
    let handle = unsafe { &*handle };
    let run = slots::RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seq = run * 8;
    let (l1, l2) = (small_layout(seq), small_layout(seq + 1));
    let grown_layout = layout(l1.size() + l2.size(), l1.align());
    let Ok(first) = handle.allocate(l1) else {
        return slots::fail();
    };
    let tag = common::blocks::tag(HANDLER_OWNER, seq);
    // SAFETY: fresh block, ours.
    let record = unsafe { fill(first, l1.size(), tag) };
    // SAFETY: `record` is a live block of `handle` with `l1`, filled.
    let Some((grown, ok)) = (unsafe { grow_checked(handle, &record, l1, grown_layout) }) else {
        return slots::fail();
    };
    if !ok {
        return slots::fail();
    }
    // SAFETY: ours, of `grown_layout`.
    let record = unsafe { fill(grown, grown_layout.size(), tag) };
    let half = layout(grown_layout.size().div_ceil(2), grown_layout.align());
    // SAFETY: a live block of `grown_layout`.
    let Ok(shrunk) = (unsafe { handle.shrink(grown.cast(), grown_layout, half) }) else {
        return slots::fail();
    };
    let record = Block {
        addr: addr(shrunk),
        len: half.size(),
        tag: record.tag,
    };
    // SAFETY: the first `half` bytes were kept.
    if !unsafe { intact(&record) } {
        return slots::fail();
    }
    slots::record(record);
    // A scratch block, grown, then given back.
    let Ok(scratch) = handle.allocate(l2) else {
        return slots::fail();
    };
    // SAFETY: fresh, ours.
    let s = unsafe { fill(scratch, l2.size(), u64::MAX) };
    let big = layout(l2.size() * 3, l2.align());
    // SAFETY: live block of `l2`, filled.
    match unsafe { grow_checked(handle, &s, l2, big) } {
        // SAFETY: ours, of `big`, given back once.
        Some((g, true)) => unsafe { handle.deallocate(g.cast(), big) },
        _ => slots::fail(),
    }
}

/// One kept block of the main loop, with its layout (to grow, shrink or free it).
struct Kept {
    block: Block,
    layout: Layout,
}

/// The main loop of the reentrancy storms: on `handle`, allocates, grows its most recent block
/// (in place or moved), shrinks it, frees it, and grows a byte vector through it, while the
/// handler does the same on the same handle. `rounds` fresh arenas; verifies each with the
/// signal blocked.
fn reentrancy_storm(handler: fn()) -> (u64, usize, usize) {
    let _serial = storm::LOCK.lock().unwrap_or_else(|e| e.into_inner());
    slots::reset();
    let timer = storm::Timer::start(handler);
    let mut storm_time = std::time::Duration::ZERO;
    let (mut checked, mut interrupted) = (0, 0);
    let mut kept: Vec<Kept> = Vec::with_capacity(1 << 16);
    let mut all: Vec<Block> = Vec::with_capacity(1 << 17);
    let mut seq = 0u64;
    let mut arenas = Reclaim(Vec::new());
    while storm_time < storm::STORM {
        // Small chunks: slabs are grown, replaced and given back often.
        let arena: &'static VChain = arenas.leak(
            VChain::new_in(4096, SeenByTsan)
                .unwrap()
                .with_max_chunk_size(64 << 10),
        );
        let handle: *mut VHandle = Box::into_raw(Box::new(arena.local()));
        HANDLE.store(handle, std::sync::atomic::Ordering::Release);
        // SAFETY: freed below, after the handler can no longer reach it.
        let local = unsafe { &*handle };
        kept.clear();
        let start = std::time::Instant::now();
        storm::set_blocked(false);
        let mut vec = allocator_api2::vec::Vec::<u8, _>::new_in(local);
        for _ in 0..20_000 {
            seq += 1;
            match seq % 10 {
                0..=4 => {
                    let l = small_layout(seq);
                    let b = local.allocate(l).expect("main allocation");
                    // SAFETY: fresh, ours.
                    let block = unsafe { fill(b, l.size(), common::blocks::tag(1, seq)) };
                    kept.push(Kept { block, layout: l });
                }
                5 | 6 => {
                    if let Some(last) = kept.pop() {
                        let new = layout(last.layout.size() * 2 + 8, last.layout.align());
                        // SAFETY: a live block of `local` with its layout, filled.
                        let (g, ok) = unsafe { grow_checked(local, &last.block, last.layout, new) }
                            .expect("main grow");
                        assert!(ok, "grow lost the contents of block {:?}", last.block);
                        // SAFETY: ours, of `new`.
                        let block = unsafe { fill(g, new.size(), last.block.tag) };
                        kept.push(Kept { block, layout: new });
                    }
                }
                7 => {
                    if let Some(last) = kept.pop() {
                        let new = layout(last.layout.size().div_ceil(2), last.layout.align());
                        let ptr = NonNull::new(last.block.addr as *mut u8).unwrap();
                        // SAFETY: a live block with its layout.
                        let s = unsafe { local.shrink(ptr, last.layout, new) }.expect("shrink");
                        let block = Block {
                            addr: addr(s),
                            len: new.size(),
                            ..last.block
                        };
                        // SAFETY: the prefix was kept.
                        assert!(unsafe { intact(&block) }, "shrink lost contents");
                        kept.push(Kept { block, layout: new });
                    }
                }
                8 => {
                    if let Some(last) = kept.pop() {
                        let ptr = NonNull::new(last.block.addr as *mut u8).unwrap();
                        // SAFETY: a live block with its layout, freed once.
                        unsafe { local.deallocate(ptr, last.layout) };
                    }
                }
                _ => {
                    for _ in 0..24 {
                        vec.push(seq as u8);
                    }
                    if vec.len() > 64 << 10 {
                        vec = allocator_api2::vec::Vec::new_in(local);
                    }
                }
            }
            if let Some(last) = kept.last() {
                // SAFETY: live, filled.
                let unchanged = unsafe { intact(&last.block) };
                assert!(unchanged, "a block changed under the main loop");
            }
        }
        storm::set_blocked(true);
        storm_time += start.elapsed();
        all.clear();
        all.extend(kept.iter().map(|k| k.block));
        slots::drain(&mut all);
        checked += all.len();
        // SAFETY: every block is live (the arena is never reset).
        assert_eq!(unsafe { verify(&mut all) }, Ok(()));
        assert_eq!(
            slots::FAILURES.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        let payload: usize = all.iter().map(|b| b.len).sum();
        assert!(arena.used_bytes() >= payload, "used_bytes misses blocks");
        assert!(arena.used_bytes() >= local.used_bytes());
        interrupted += local.interrupted_allocations();
        drop(vec);
        HANDLE.store(std::ptr::null_mut(), std::sync::atomic::Ordering::Release);
        // SAFETY: the handler can no longer reach it (pointer cleared, signal blocked).
        drop(unsafe { Box::from_raw(handle) });
        // The arena is kept until the end: a handler block recorded late must stay mapped.
    }
    drop(timer);
    // SAFETY: the timer is gone and every handle dropped.
    unsafe { arenas.free() };
    let runs = slots::RUNS.load(std::sync::atomic::Ordering::Relaxed);
    (runs, checked, interrupted)
}

/// Handlers that allocate, grow, shrink and free on the handle the main loop is allocating,
/// growing, shrinking and freeing on: every block disjoint and intact, and some handlers did
/// land inside a main-loop call (they were served by the arena).
#[test]
fn handlers_that_grow_shrink_and_free_on_the_interrupted_handle_never_overlap_it() {
    let (runs, checked, interrupted) = reentrancy_storm(handler_allocates_grows_shrinks_and_frees);
    println!("{runs} handler runs, {checked} blocks checked, {interrupted} landed in a call");
    assert!(runs > 1000, "only {runs} handler runs");
    assert!(
        interrupted > 0,
        "no handler landed inside a call on the handle"
    );
}

/// A handler that creates its own handle on the arena the main loop's handle claims slabs from,
/// allocates and grows through it, drops it (its slab's tail given back when still the arena's
/// last claim, racing the interrupted handle's slab claim and growth), and also allocates from
/// the interrupted handle.
fn handler_creates_and_drops_its_own_handle() {
    let handle = HANDLE.load(std::sync::atomic::Ordering::Acquire);
    if handle.is_null() {
        return;
    }
    // SAFETY: `HANDLE` points at a live handle while the signal is unblocked.
    let interrupted = unsafe { &*handle };
    let run = slots::RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let own = interrupted.arena().local();
    for k in 0..3 {
        let seq = run * 8 + k;
        let l = small_layout(seq);
        let from = if k == 1 { interrupted } else { &own };
        let Ok(b) = from.allocate(l) else {
            return slots::fail();
        };
        // SAFETY: fresh, ours.
        slots::record(unsafe { fill(b, l.size(), common::blocks::tag(HANDLER_OWNER, seq)) });
    }
    // A scratch block of its own handle, given back before the handle goes.
    let l = layout(64, 8);
    if let Ok(b) = own.allocate(l) {
        // SAFETY: ours, given back once.
        unsafe {
            fill(b, 64, u64::MAX);
            own.deallocate(b.cast(), l);
        }
    }
}

#[test]
fn handlers_that_create_and_drop_handles_on_the_same_arena_never_overlap_the_interrupted_one() {
    let (runs, checked, _) = reentrancy_storm(handler_creates_and_drops_its_own_handle);
    println!("{runs} handler runs, {checked} blocks checked");
    assert!(runs > 1000, "only {runs} handler runs");
}

/// The slot a handle lives in for the drop storm, reached by the handler through `HANDLE`.
fn handler_allocates_through_the_static_pointer() {
    let handle = HANDLE.load(std::sync::atomic::Ordering::Acquire);
    if handle.is_null() {
        return;
    }
    let run = slots::RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the slot's memory stays valid for the whole test (it is leaked); see the test.
    let handle = unsafe { &*handle };
    let l = layout(16, 8);
    let Ok(b) = handle.allocate(l) else {
        return slots::fail();
    };
    // SAFETY: fresh, ours.
    slots::record(unsafe { fill(b, 16, common::blocks::tag(HANDLER_OWNER, run)) });
}

/// A profiler that reaches the thread's handle through a static pointer and drops the handle
/// with the signal unblocked: a handler that lands while `drop` gives the slab's tail back
/// (between its read of the cursor and the arena's compare-exchange) bumps a block out of that
/// tail, which the drop then hands back to the arena: the next arena allocation overlaps it.
///
/// The drop takes `&mut`, so the handler's access is outside Rust's aliasing rules; the other
/// operations of the handle are protected against exactly this by the mark, and `Drop` is the
/// one that is not. With the mark set for good in `drop`, the handler takes the shared path.
#[test]
fn a_handler_that_lands_in_drop_gets_a_block_the_arena_does_not_hand_out_again() {
    let _serial = storm::LOCK.lock().unwrap_or_else(|e| e.into_inner());
    slots::reset();
    let timer = storm::Timer::start(handler_allocates_through_the_static_pointer);
    let mut reclaim = Reclaim(Vec::new());
    let slot = reclaim.leak(std::mem::MaybeUninit::<VHandle>::uninit());
    let slot: *mut VHandle = slot.as_mut_ptr();
    let mut storm_time = std::time::Duration::ZERO;
    let mut main: Vec<Block> = Vec::with_capacity(1 << 16);
    let mut all: Vec<Block> = Vec::with_capacity(1 << 17);
    let mut seq = 0u64;
    let mut drops = 0usize;
    while storm_time < storm::STORM {
        let arena: &'static VChain = reclaim.leak(VChain::new_in(1 << 20, SeenByTsan).unwrap());
        main.clear();
        let start = std::time::Instant::now();
        storm::set_blocked(false);
        while main.len() < 8000 {
            // SAFETY: the slot is empty (never written, or dropped in place below).
            unsafe { slot.write(arena.local()) };
            HANDLE.store(slot, std::sync::atomic::Ordering::Release);
            // SAFETY: written just above.
            let local = unsafe { &*slot };
            for _ in 0..2 {
                seq += 1;
                let b = local.allocate(layout(8, 8)).unwrap();
                // SAFETY: fresh, ours.
                main.push(unsafe { fill(b, 8, common::blocks::tag(1, seq)) });
            }
            // SAFETY: dropped once; the slot's memory stays valid (leaked).
            unsafe { std::ptr::drop_in_place(slot) };
            HANDLE.store(std::ptr::null_mut(), std::sync::atomic::Ordering::Release);
            drops += 1;
            // What the arena hands out next: must not be a handler's block.
            seq += 1;
            let b = arena.allocate(layout(64, 8)).unwrap();
            // SAFETY: fresh, ours.
            main.push(unsafe { fill(b, 64, common::blocks::tag(2, seq)) });
        }
        storm::set_blocked(true);
        storm_time += start.elapsed();
        all.clear();
        all.extend_from_slice(&main);
        slots::drain(&mut all);
        // SAFETY: every block is live (arenas are leaked).
        assert_eq!(unsafe { verify(&mut all) }, Ok(()), "after {drops} drops");
        assert_eq!(
            slots::FAILURES.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
    drop(timer);
    // SAFETY: the timer is gone and the slot's handle dropped.
    unsafe { reclaim.free() };
    println!(
        "{drops} drops, {} handler runs",
        slots::RUNS.load(std::sync::atomic::Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------------------------
// Real threads: handles dropped and recreated (their slab tails given back) while other threads
// claim slabs and use the arena's own lock-free last-block path.
// ---------------------------------------------------------------------------------------------

/// What one thread of the race kept: its blocks, checked after all threads joined.
fn race_thread<A: Allocator>(alloc: &A, owner: u64, steps: u64, kept: &mut Vec<Block>) {
    let mut last: Option<(Block, Layout)> = None;
    for seq in 0..steps {
        let tag = common::blocks::tag(owner, seq);
        match seq % 6 {
            // Grow the most recent block (in place while it is last, else moved).
            3 => {
                if let Some((block, old)) = last.take() {
                    let new = layout(old.size() * 2, old.align());
                    // SAFETY: a live block of `alloc` with `old`, filled.
                    if let Some((g, ok)) = unsafe { grow_checked(alloc, &block, old, new) } {
                        assert!(ok, "grow lost contents");
                        // SAFETY: ours, of `new`.
                        last = Some((unsafe { fill(g, new.size(), block.tag) }, new));
                    } else {
                        last = Some((block, old));
                    }
                }
            }
            // Give the most recent block back (in place only if still last).
            5 => {
                if let Some((block, old)) = last.take() {
                    let ptr = NonNull::new(block.addr as *mut u8).unwrap();
                    // SAFETY: a live block with its layout, freed once.
                    unsafe { alloc.deallocate(ptr, old) };
                }
            }
            _ => {
                let l = small_layout(seq ^ owner);
                let Ok(b) = alloc.allocate(l) else { continue };
                if let Some((block, _)) = last.take() {
                    kept.push(block);
                }
                // SAFETY: fresh, ours.
                last = Some((unsafe { fill(b, l.size(), tag) }, l));
            }
        }
    }
    kept.extend(last.map(|(b, _)| b));
}

/// Two threads allocate through handles they drop and recreate every few hundred steps (each
/// drop gives its slab's tail back if the slab is still the arena's last claim), racing a third
/// thread that allocates, grows and frees on the arena directly (`release_last` and
/// `resize_last` on the same cursor): every kept block of every thread disjoint and intact.
fn handles_dropped_and_recreated_race_direct_use<A>(arena: &A, local: fn(&A) -> LocalHandle<'_, A>)
where
    A: libdd_alloc::LocalSource + Sync + common::Stats,
{
    let steps = 200_000u64;
    let mut kept: Vec<Vec<Block>> = std::thread::scope(|s| {
        let mut threads = Vec::new();
        for owner in 1..=2u64 {
            threads.push(s.spawn(move || {
                let mut kept = Vec::new();
                for round in 0..steps / 300 {
                    let local = local(arena);
                    race_thread(&local, owner << 20 | round, 300, &mut kept);
                }
                kept
            }));
        }
        threads.push(s.spawn(move || {
            let mut kept = Vec::new();
            race_thread(arena, 3, steps, &mut kept);
            kept
        }));
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut all: Vec<Block> = kept.iter_mut().flat_map(|k| k.drain(..)).collect();
    let payload: usize = all.iter().map(|b| b.len).sum();
    assert!(all.len() > 10_000);
    // SAFETY: every block is live until the arena drops.
    assert_eq!(unsafe { verify(&mut all) }, Ok(()));
    let used = arena.used();
    assert!(
        used >= payload,
        "used_bytes {used} misses blocks ({payload})"
    );
}

#[test]
fn handles_dropped_and_recreated_never_overlap_direct_use_of_a_sync_chain() {
    let arena = VChain::new_in(4096, SeenByTsan)
        .unwrap()
        .with_max_chunk_size(64 << 10);
    handles_dropped_and_recreated_race_direct_use(&arena, |a| a.local());
}

#[test]
fn handles_dropped_and_recreated_never_overlap_direct_use_of_a_sync_linear_arena() {
    // Large enough for most of the run, then full: the last steps fail and must change nothing.
    let arena = SyncLinearAllocator::new_in(layout(16 << 20, 4096), System).unwrap();
    handles_dropped_and_recreated_race_direct_use(&arena, |a| a.local());
}

#[test]
fn handles_dropped_and_recreated_never_overlap_direct_use_of_a_sync_virtual_arena() {
    let arena = SyncVirtualArena::new(1 << 30).unwrap();
    handles_dropped_and_recreated_race_direct_use(&arena, |a| a.local());
}

// ---------------------------------------------------------------------------------------------
// A backing allocator that re-enters the handle it backs, or panics, during a slab claim.
// ---------------------------------------------------------------------------------------------

mod reentrant {
    use libdd_alloc::{AllocError, Allocator, Layout, VirtualAllocator};
    use std::cell::Cell;
    use std::ptr::NonNull;

    /// 0: plain; 1: allocate 8 bytes from the handle in `HANDLE` (once per call); 2: panic.
    pub const PLAIN: u8 = 0;
    pub const REENTER: u8 = 1;
    pub const PANIC: u8 = 2;

    thread_local! {
        pub static MODE: Cell<u8> = const { Cell::new(PLAIN) };
        /// The handle to re-enter (a `*const Handle`).
        pub static HANDLE: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
        /// Blocks the re-entrant calls got, as (address, length).
        pub static GOT: Cell<[(usize, usize); 64]> = const { Cell::new([(0, 0); 64]) };
        pub static GOT_LEN: Cell<usize> = const { Cell::new(0) };
        static INSIDE: Cell<bool> = const { Cell::new(false) };
    }

    pub type Arena = libdd_alloc::SyncChainAllocator<Backing>;
    pub type Handle = libdd_alloc::LocalHandle<'static, Arena>;

    pub struct Backing;

    // SAFETY: forwards to `VirtualAllocator`; the re-entrant call allocates from an arena,
    // which hands out its own disjoint blocks.
    unsafe impl Allocator for Backing {
        fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
            match MODE.get() {
                PANIC => panic!("backing allocator panics"),
                REENTER if !INSIDE.get() => {
                    INSIDE.set(true);
                    let handle = HANDLE.get() as *const Handle;
                    // SAFETY: the test sets it to a live handle for the call.
                    if let Some(handle) = unsafe { handle.as_ref() } {
                        let l = Layout::from_size_align(8, 8).unwrap();
                        if let Ok(b) = handle.allocate(l) {
                            let n = GOT_LEN.get();
                            let mut got = GOT.get();
                            got[n % 64] = (b.cast::<u8>().as_ptr() as usize, 8);
                            GOT.set(got);
                            GOT_LEN.set(n + 1);
                        }
                    }
                    INSIDE.set(false);
                }
                _ => {}
            }
            VirtualAllocator {}.allocate(layout)
        }
        unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
            // SAFETY: forwarded caller contract.
            unsafe { VirtualAllocator {}.deallocate(ptr, layout) }
        }
    }
}

/// A backing allocator that calls back into the handle during the handle's slab claim (the
/// call finds the mark set and is served by the arena, which is itself mid-growth), then one
/// that panics there: the handle stays consistent, the panic clears the mark (later calls bump
/// in the slab again), and every block is disjoint and intact.
#[test]
fn a_backing_allocator_that_reenters_or_panics_during_a_slab_claim_leaves_the_handle_consistent() {
    use reentrant::*;
    let mut reclaim = Reclaim(Vec::new());
    let arena: &'static Arena = reclaim.leak(
        Arena::new_in(4096, Backing)
            .unwrap()
            .with_max_chunk_size(4096),
    );
    let local: &'static Handle = reclaim.leak(arena.local());
    HANDLE.set(local as *const Handle as *const ());
    let mut blocks = Vec::new();
    let mut seq = 0;
    let alloc = |blocks: &mut Vec<Block>, seq: &mut u64| {
        *seq += 1;
        let seq = *seq;
        let b = local.allocate(layout(40, 8)).unwrap();
        // SAFETY: fresh, ours.
        blocks.push(unsafe { fill(b, 40, common::blocks::tag(1, seq)) });
    };
    MODE.set(REENTER);
    for _ in 0..2000 {
        alloc(&mut blocks, &mut seq);
    }
    MODE.set(PLAIN);
    let reentered = GOT_LEN.get();
    assert!(
        reentered > 10,
        "the backing allocator re-entered {reentered} times"
    );
    assert_eq!(local.interrupted_allocations(), reentered);
    // Panics until the slab is full and a claim calls the backing allocator.
    MODE.set(PANIC);
    let mut panicked = 0;
    for _ in 0..100 {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            local.allocate(layout(40, 8))
        }));
        match r {
            Err(_) => panicked += 1,
            Ok(b) => {
                seq += 1;
                // SAFETY: fresh, ours.
                blocks.push(unsafe { fill(b.unwrap(), 40, common::blocks::tag(2, seq)) });
            }
        }
    }
    MODE.set(PLAIN);
    assert!(panicked > 0);
    // The mark was cleared: these bump in the slab, none is "interrupted".
    let interrupted = local.interrupted_allocations();
    for _ in 0..2000 {
        alloc(&mut blocks, &mut seq);
    }
    assert_eq!(local.interrupted_allocations(), interrupted);
    let got = GOT.get();
    blocks.extend(
        got[..reentered.min(64)]
            .iter()
            .map(|&(addr, len)| Block { addr, len, tag: 0 }),
    );
    // The re-entrant blocks were not filled: check overlap on all, contents on ours.
    let mut all = blocks.clone();
    for b in all.iter_mut().filter(|b| b.tag == 0) {
        // SAFETY: a live block of 8 bytes, ours now.
        *b = unsafe {
            fill(
                NonNull::slice_from_raw_parts(NonNull::new(b.addr as *mut u8).unwrap(), 8),
                8,
                0xBEEF,
            )
        };
    }
    // SAFETY: all live (arena leaked).
    assert_eq!(unsafe { verify(&mut all) }, Ok(()));
    HANDLE.set(std::ptr::null());
    // SAFETY: nothing refers to the handle or the arena any more.
    unsafe { reclaim.free() };
}
