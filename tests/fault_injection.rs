//! Fault injection: the backing allocator fails on the N-th call, for every N a workload reaches,
//! and the address space is capped with `RLIMIT_AS` in a child process. Every failure must come
//! back as `Err` (never a panic or an abort), leave the arena's statistics and live blocks as they
//! were, leave the arena usable, and leak nothing.
//!
//! Then the scripted suite: at every call index k of the workload, the k-th backing call
//! (whatever its method) fails, panics (before or after doing its work), or re-enters the
//! arena it backs. After each run every
//! live block (the re-entrant ones included) holds its pattern, no two overlap, nothing was
//! freed twice, and a panic leaks at most what the backing allocator had handed out.
#![cfg_attr(not(unix), allow(unused_imports, dead_code))] // the RLIMIT_AS test is POSIX only

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::counting::SyncCounting;
use common::fill::{fill, holds};
#[cfg(unix)] // fork and setrlimit
use common::process::{in_child, mapped_pages, set_limit, under_valgrind, Ended};
use common::scripted::{quiet_scripted_panics, Action, Scripted, ScriptedPanic};
use libdd_alloc::{
    AllocError, Allocator, ChainAllocator, HugePages, Layout, LinearAllocator, PageAllocator,
    PageOptions, Rewind, SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena, System,
    VirtualAllocator, VirtualArena,
};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

/// The statistics every arena has, so one workload drives them all.
trait Arena: Allocator + Rewind {
    fn stats(&self) -> (usize, usize, usize);
    fn reset_all(&mut self);
}

impl<A: Allocator> Arena for ChainAllocator<A> {
    fn stats(&self) -> (usize, usize, usize) {
        (
            self.used_bytes(),
            self.reserved_bytes(),
            self.remaining_capacity(),
        )
    }
    fn reset_all(&mut self) {
        self.reset();
    }
}

impl<A: Allocator> Arena for LinearAllocator<A> {
    fn stats(&self) -> (usize, usize, usize) {
        (
            self.used_bytes(),
            self.reserved_bytes(),
            self.remaining_capacity(),
        )
    }
    fn reset_all(&mut self) {
        self.reset();
    }
}

impl<A: Allocator> Arena for SyncChainAllocator<A> {
    fn stats(&self) -> (usize, usize, usize) {
        (
            self.used_bytes(),
            self.reserved_bytes(),
            self.remaining_capacity(),
        )
    }
    fn reset_all(&mut self) {
        self.reset();
    }
}

impl<A: Allocator> Arena for SyncLinearAllocator<A> {
    fn stats(&self) -> (usize, usize, usize) {
        (
            self.used_bytes(),
            self.reserved_bytes(),
            self.remaining_capacity(),
        )
    }
    fn reset_all(&mut self) {
        self.reset();
    }
}

/// A block the workload owns, filled with the pattern of `seed`.
struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    seed: u8,
}

/// Drives an arena through allocations that take several chunks, grows (in place, of a chunk's
/// only block, and by moving), grow_zeroed, shrinks, deallocations, a rewind and a reset,
/// checking after every failed step that nothing changed. With `retry_must_succeed` (a one-shot
/// fault), the step is retried and must then succeed: the arena is still usable after a failure.
///
/// The arena sits in a `RefCell`, as a backing allocator that re-enters it would need: `&self`
/// calls borrow it, `reset` and `rewind` borrow it mutably (a re-entry then panics, as a
/// `RefCell` user's would).
struct Workload<'a, T: Arena> {
    arena: &'a RefCell<T>,
    live: Vec<Live>,
    next_seed: u8,
    retry_must_succeed: bool,
    failures: usize,
    /// The scripted backing allocator, if any: the blocks its re-entry hook got are checked
    /// with the workload's own.
    scripted: Option<&'a Scripted>,
    /// The live block being resized: after a panic out of the resize its state is unknown (a
    /// backing `grow` may have moved it before panicking), so it is dropped from `live`.
    in_flight: Option<usize>,
}

impl<'a, T: Arena> Workload<'a, T> {
    fn new(arena: &'a RefCell<T>, retry_must_succeed: bool) -> Self {
        Self {
            arena,
            live: Vec::new(),
            next_seed: 1,
            retry_must_succeed,
            failures: 0,
            scripted: None,
            in_flight: None,
        }
    }

    /// After a panic: forgets the block whose resize the panic interrupted.
    fn forget_in_flight(&mut self) {
        if let Some(index) = self.in_flight.take() {
            self.live.remove(index);
        }
    }

    /// Every live block holds its pattern, and no two overlap (re-entrant blocks included).
    fn verify_all(&self) {
        let mut ranges = Vec::new();
        for block in &self.live {
            // SAFETY: every `Live` is a block of the arena that the workload owns.
            assert!(unsafe { holds(block.ptr, block.layout.size(), usize::from(block.seed)) });
            ranges.push((block.ptr.as_ptr().addr(), block.layout.size()));
        }
        if let Some(scripted) = self.scripted {
            scripted.check_reentered();
            let reentered = scripted.reentered();
            ranges.extend(
                reentered
                    .iter()
                    .map(|&(ptr, len)| (ptr.as_ptr().addr(), len)),
            );
            for &(addr, len) in &ranges {
                assert!(
                    !scripted.is_freed(addr, len),
                    "a live block at {addr:#x}+{len} lies in memory the arena gave back"
                );
            }
        }
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            assert!(
                pair[0].0 + pair[0].1 <= pair[1].0,
                "blocks overlap: {:#x}+{} and {:#x}",
                pair[0].0,
                pair[0].1,
                pair[1].0
            );
        }
    }

    /// Checks everything, then forgets the re-entrant blocks: the arena is about to free them.
    fn before_freeing(&self) {
        self.verify_all();
        if let Some(scripted) = self.scripted {
            scripted.forget_reentered();
        }
    }

    /// Checks a failure changed nothing and counts it.
    fn failed(&mut self, before: (usize, usize, usize)) {
        assert_eq!(
            self.arena.borrow().stats(),
            before,
            "a failed call changed the statistics"
        );
        self.verify_all();
        self.failures += 1;
    }

    fn allocate(&mut self, size: usize, align: usize) {
        let layout = Layout::from_size_align(size, align).unwrap();
        let before = self.arena.borrow().stats();
        let result = self.arena.borrow().allocate(layout);
        let block = match result {
            Ok(block) => block,
            Err(AllocError) => {
                self.failed(before);
                if !self.retry_must_succeed {
                    return;
                }
                let retry = self.arena.borrow().allocate(layout);
                retry.expect("allocation after a failure")
            }
        };
        let ptr = block.cast::<u8>();
        assert_eq!(ptr.as_ptr().addr() % align, 0);
        let seed = self.next_seed;
        self.next_seed = self.next_seed.wrapping_add(1);
        // SAFETY: the block is fresh and `size` bytes long.
        unsafe { fill(ptr, size, usize::from(seed)) };
        self.live.push(Live { ptr, layout, seed });
    }

    /// Grows (or, if `new_size` is smaller, shrinks) live block `index`.
    fn resize(&mut self, index: usize, new_size: usize, align: usize, zeroed: bool) {
        let Some(block) = self.live.get(index) else {
            return;
        };
        let (ptr, old, seed) = (block.ptr, block.layout, block.seed);
        let new = Layout::from_size_align(new_size, align).unwrap();
        let call = |arena: &T| {
            // SAFETY: the block is live, from `arena`, with layout `old`.
            unsafe {
                if new.size() < old.size() {
                    arena.shrink(ptr, old, new)
                } else if zeroed {
                    arena.grow_zeroed(ptr, old, new)
                } else {
                    arena.grow(ptr, old, new)
                }
            }
        };
        let before = self.arena.borrow().stats();
        self.in_flight = Some(index);
        let result = call(&self.arena.borrow());
        let block = match result {
            Ok(block) => block,
            Err(AllocError) => {
                // The old block is still the caller's, contents intact (checked by `failed`).
                self.in_flight = None;
                self.failed(before);
                if !self.retry_must_succeed {
                    return;
                }
                self.in_flight = Some(index);
                let retry = call(&self.arena.borrow());
                retry.expect("resize after a failure")
            }
        };
        self.in_flight = None;
        let ptr = block.cast::<u8>();
        assert_eq!(ptr.as_ptr().addr() % align, 0);
        let kept = old.size().min(new.size());
        // SAFETY: the resized block is ours and at least `new.size()` long.
        unsafe {
            assert!(
                holds(ptr, kept, usize::from(seed)),
                "contents lost in a resize"
            );
            if zeroed && new.size() > old.size() {
                let tail = core::slice::from_raw_parts(ptr.add(kept).as_ptr(), new.size() - kept);
                assert!(tail.iter().all(|&b| b == 0), "grow_zeroed tail not zero");
            }
            fill(ptr, new.size(), usize::from(seed));
        }
        self.live[index] = Live {
            ptr,
            layout: new,
            seed,
        };
    }

    fn deallocate(&mut self, index: usize) {
        if index < self.live.len() {
            let block = self.live.remove(index);
            // SAFETY: the block is live, from the arena, with this layout.
            unsafe { self.arena.borrow().deallocate(block.ptr, block.layout) };
        }
    }

    fn reset(&mut self) {
        self.before_freeing();
        self.live.clear();
        self.arena.borrow_mut().reset_all();
        let (used, reserved, remaining) = self.arena.borrow().stats();
        assert_eq!(used + remaining, reserved);
    }

    /// Takes a checkpoint, runs `scratch` (which only allocates and resizes blocks of its own),
    /// and rewinds: the blocks from before the checkpoint stay, the scratch ones are freed.
    fn rewind_after(&mut self, scratch: impl FnOnce(&mut Self)) {
        let checkpoint = self.arena.borrow().checkpoint();
        let kept = self.live.len();
        let before = self.arena.borrow().stats();
        scratch(self);
        self.before_freeing();
        self.live.truncate(kept);
        self.arena.borrow_mut().rewind(checkpoint);
        self.verify_all();
        let after = self.arena.borrow().stats();
        assert_eq!(after.0 + after.2, after.1, "used + remaining != reserved");
        // The checkpoint's own chunk is never grown in place here (the scratch blocks follow a
        // block in it), so the rewind restores the statistics exactly; unless a re-entrant
        // call took a chunk while the backing allocator was growing one, which links the grown
        // chunk one deeper (see `ChainAllocator`'s grow).
        if self.scripted.is_none_or(|s| !s.reentered_yet()) {
            assert_eq!(after, before, "rewind did not restore the statistics");
        }
    }

    fn run(&mut self) {
        for i in 0..48 {
            self.allocate(1 + (i * 37) % 200, 1 << (i % 7));
        }
        let last = self.live.len().saturating_sub(1);
        for size in [512, 2048, 8192, 32 << 10, 100 << 10] {
            self.resize(last, size, 8, false);
        }
        self.resize(3, 3000, 16, false);
        self.resize(5, 1000, 8, true);
        self.resize(7, 10, 1, false);
        self.resize(9, 4, 4096, false);
        self.deallocate(self.live.len().saturating_sub(1));
        self.deallocate(0);
        self.allocate(64 << 10, 64);
        self.rewind_after(|w| {
            for i in 0..6 {
                w.allocate(100 + i * 700, 16);
            }
            let last = w.live.len().saturating_sub(1);
            w.resize(last, 40 << 10, 16, false);
            w.allocate(20 << 10, 8);
            // Last, a small block in a fresh chunk with room to spare: a rewind that freed that
            // chunk but left the cursor in it would hand the room out again.
            w.allocate(100, 8);
        });
        self.allocate(300, 8);
        self.reset();
        for i in 0..20 {
            self.allocate(1 + (i * 91) % 3000, 1 << (i % 5));
        }
        let last = self.live.len().saturating_sub(1);
        self.resize(last, 200 << 10, 8, true);
        self.resize(0, 5000, 8, false);
        self.verify_all();
    }
}

/// Runs the workload on the arena `make` built over `backing` (if it could) and checks nothing
/// leaked once the arena is dropped. Returns the number of failures the workload saw.
fn workload<A: Allocator, T: Arena>(
    backing: &SyncCounting<A>,
    arena: Result<T, AllocError>,
    retry: bool,
) -> usize {
    let arena = match arena {
        Ok(arena) => RefCell::new(arena),
        Err(AllocError) => {
            assert_eq!(backing.live_blocks(), 0, "failed constructor leaked");
            return 1;
        }
    };
    let mut workload = Workload::new(&arena, retry);
    workload.run();
    let failures = workload.failures;
    drop(arena);
    assert_eq!(backing.live_blocks(), 0, "chunks leaked");
    assert_eq!(backing.live_bytes(), 0, "bytes leaked");
    failures
}

/// Every N from 0 to past the last call of a clean run, in both fault modes: `run` builds an
/// arena over the backing allocator it is given and passes it to [`workload`]. To cover another
/// arena, call this with a closure that builds it. Returns how many calls the clean run made.
fn every_fault<A: Allocator + Copy>(
    inner: A,
    run: impl Fn(&SyncCounting<A>, bool) -> usize,
) -> u64 {
    every_fault_of(inner, Growth::InPlaceToo, run)
}

/// How an arena's chunks grow, which a clean run of the workload must show.
#[derive(PartialEq)]
enum Growth {
    /// New chunks, and a chunk's only block grown by growing the chunk (`ChainAllocator`).
    InPlaceToo,
    /// New chunks only: the backing allocator is never asked to grow (`SyncChainAllocator`,
    /// whose chunks another thread may be reading).
    NewChunksOnly,
}

/// [`every_fault`], for an arena whose chunks grow as `growth` says.
fn every_fault_of<A: Allocator + Copy>(
    inner: A,
    growth: Growth,
    run: impl Fn(&SyncCounting<A>, bool) -> usize,
) -> u64 {
    let clean = SyncCounting::new(inner);
    assert_eq!(run(&clean, true), 0);
    let calls = clean.calls();
    assert!(
        calls >= 5,
        "workload too small to test anything: {calls} calls"
    );
    match growth {
        Growth::InPlaceToo => assert!(clean.grows() > 0, "workload never grew a chunk in place"),
        Growth::NewChunksOnly => {
            assert_eq!(
                clean.grows(),
                0,
                "a chunk was grown by the backing allocator"
            );
            assert_eq!(
                calls,
                clean.allocations(),
                "only allocations were asked for"
            );
        }
    }
    eprintln!(
        "clean run: {calls} backing calls, {} chunk grows",
        clean.grows()
    );
    for n in 0..=calls {
        let one_shot = SyncCounting::fail_on(inner, n);
        run(&one_shot, true);
        assert_eq!(
            one_shot.failures(),
            u64::from(n < calls),
            "fault {n} not reached"
        );

        let exhausted = SyncCounting::fail_from(inner, n);
        run(&exhausted, false);
        assert!(exhausted.failures() > 0 || n == calls);
    }
    calls
}

/// A chain with small chunks (1 KiB, doubling to 16 KiB), so the workload takes several.
fn small_chain<A: Allocator>(backing: A, lazy: bool) -> Result<ChainAllocator<A>, AllocError> {
    let arena = if lazy {
        ChainAllocator::new_lazy_in(1024, backing)
    } else {
        ChainAllocator::new_in(1024, backing)?
    };
    Ok(arena.with_max_chunk_size(16 << 10))
}

#[test]
fn chain_over_malloc_survives_a_failure_at_every_backing_call() {
    every_fault(System, |backing, retry| {
        workload(backing, small_chain(backing, false), retry)
    });
    every_fault(System, |backing, retry| {
        workload(backing, small_chain(backing, true), retry)
    });
}

#[test]
fn chain_over_mmap_survives_a_failure_at_every_backing_call() {
    every_fault(VirtualAllocator {}, |backing, retry| {
        workload(backing, small_chain(backing, false), retry)
    });
}

/// A lock-free chain with small chunks (1 KiB, doubling to 16 KiB), so the workload takes
/// several.
fn small_sync_chain<A: Allocator>(
    backing: A,
    lazy: bool,
) -> Result<SyncChainAllocator<A>, AllocError> {
    let arena = if lazy {
        SyncChainAllocator::new_lazy_in(1024, backing)
    } else {
        SyncChainAllocator::new_in(1024, backing)?
    };
    Ok(arena.with_max_chunk_size(16 << 10))
}

#[test]
fn sync_chain_over_malloc_survives_a_failure_at_every_backing_call() {
    let calls = every_fault_of(System, Growth::NewChunksOnly, |backing, retry| {
        workload(backing, small_sync_chain(backing, false), retry)
    });
    // The first chunk, the doubling ones, and those for the blocks too big for them.
    assert!(calls >= 8, "only {calls} chunks");
    every_fault_of(System, Growth::NewChunksOnly, |backing, retry| {
        workload(backing, small_sync_chain(backing, true), retry)
    });
}

#[test]
fn sync_chain_over_mmap_survives_a_failure_at_every_backing_call() {
    every_fault_of(
        VirtualAllocator {},
        Growth::NewChunksOnly,
        |backing, retry| workload(backing, small_sync_chain(backing, false), retry),
    );
}

#[test]
fn sync_chain_grow_that_fails_keeps_the_old_block_and_the_arena_usable() {
    let backing = SyncCounting::fail_from(System, 1);
    let arena = SyncChainAllocator::new_in(4096, &backing).unwrap();
    let old = Layout::from_size_align(1000, 8).unwrap();
    let ptr = arena.allocate(old).unwrap().cast::<u8>();
    // SAFETY: fresh block of 1000 bytes.
    unsafe { fill(ptr, 1000, 42) };
    let before = arena.stats();
    let new = Layout::from_size_align(1 << 20, 8).unwrap();
    // SAFETY: `ptr` is live with layout `old`.
    assert!(unsafe { arena.grow(ptr, old, new) }.is_err());
    assert_eq!(arena.stats(), before);
    // SAFETY: the failed grow left the block ours.
    assert!(unsafe { holds(ptr, 1000, 42) });
    // The failed grow left the block the most recent one: it still grows in place.
    let bigger = Layout::from_size_align(2000, 8).unwrap();
    // SAFETY: `ptr` is live with layout `old`.
    let grown = unsafe { arena.grow(ptr, old, bigger) }.unwrap();
    assert_eq!(grown.cast::<u8>(), ptr);
    assert_eq!(arena.used_bytes(), before.0 + 1000);
    drop(arena);
    assert_eq!(backing.live_blocks(), 0);
}

#[test]
fn sync_linear_constructor_failure_is_an_error_and_leaks_nothing() {
    let backing = SyncCounting::fail_on(System, 0);
    let result = SyncLinearAllocator::new_in(Layout::from_size_align(4096, 16).unwrap(), &backing);
    assert!(result.is_err());
    assert_eq!((backing.calls(), backing.live_blocks()), (1, 0));
    // The next call is not failed: the same backing allocator then serves the buffer.
    let arena =
        SyncLinearAllocator::new_in(Layout::from_size_align(4096, 16).unwrap(), &backing).unwrap();
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (1, 4096));
    drop(arena);
    assert_eq!((backing.live_blocks(), backing.live_bytes()), (0, 0));
}

#[test]
fn sync_linear_stays_usable_after_failures_from_running_out_of_room() {
    let backing = SyncCounting::new(System);
    let arena =
        SyncLinearAllocator::new_in(Layout::from_size_align(16 << 10, 64).unwrap(), &backing)
            .unwrap();
    let arena = RefCell::new(arena);
    let mut workload = Workload::new(&arena, false);
    workload.run();
    // 16 KiB cannot hold the workload: allocations and grows failed, each leaving the arena
    // unchanged (checked in `failed`), and later steps still succeeded.
    assert!(workload.failures > 0);
    assert!(workload.live.len() > 10);
    drop(arena);
    assert_eq!((backing.allocations(), backing.deallocations()), (1, 1));
    assert_eq!((backing.calls(), backing.live_bytes()), (1, 0));
}

#[test]
fn linear_constructor_failure_is_an_error_and_leaks_nothing() {
    let backing = SyncCounting::fail_on(System, 0);
    let result = LinearAllocator::new_in(Layout::from_size_align(4096, 16).unwrap(), &backing);
    assert!(result.is_err());
    assert_eq!((backing.calls(), backing.live_blocks()), (1, 0));
}

#[test]
fn linear_stays_usable_after_failures_from_running_out_of_room() {
    let backing = SyncCounting::new(System);
    let arena =
        LinearAllocator::new_in(Layout::from_size_align(16 << 10, 64).unwrap(), &backing).unwrap();
    let arena = RefCell::new(arena);
    let mut workload = Workload::new(&arena, false);
    workload.run();
    // 16 KiB cannot hold the workload: allocations and grows failed, each leaving the arena
    // unchanged (checked in `failed`), and later steps still succeeded.
    assert!(workload.failures > 0);
    assert!(workload.live.len() > 10);
    drop(arena);
    assert_eq!((backing.allocations(), backing.deallocations()), (1, 1));
    assert_eq!(backing.live_bytes(), 0);
    assert_eq!(
        backing.calls(),
        1,
        "a linear arena calls its backing allocator once"
    );
}

#[test]
fn chain_grow_that_fails_keeps_the_old_block_and_the_arena_usable() {
    let backing = SyncCounting::fail_from(System, 1);
    let arena = ChainAllocator::new_in(4096, &backing).unwrap();
    let old = Layout::from_size_align(1000, 8).unwrap();
    let ptr = arena.allocate(old).unwrap().cast::<u8>();
    // SAFETY: fresh block of 1000 bytes.
    unsafe { fill(ptr, 1000, 42) };
    let before = (arena.used_bytes(), arena.reserved_bytes());
    let new = Layout::from_size_align(1 << 20, 8).unwrap();
    // SAFETY: `ptr` is live with layout `old`.
    assert!(unsafe { arena.grow(ptr, old, new) }.is_err());
    assert_eq!((arena.used_bytes(), arena.reserved_bytes()), before);
    // SAFETY: the failed grow left the block ours.
    assert!(unsafe { holds(ptr, 1000, 42) });
    // Room left in the chunk is still handed out, next to the old block.
    let next = arena.allocate(Layout::new::<u64>()).unwrap().cast::<u8>();
    assert_eq!(next.as_ptr().addr(), ptr.as_ptr().addr() + 1000);
    drop(arena);
    assert_eq!(backing.live_blocks(), 0);
}

const HEADROOM: usize = 64 << 20;

/// The child of `rlimit_as_makes_virtual_memory_allocators_return_err`: caps its address space
/// at what it has plus 64 MiB, then checks that every allocator that maps memory answers `Err`
/// past the cap (`VirtualAllocator` and the arenas on it, `VirtualArena`, `SyncVirtualArena`,
/// `PageAllocator`). Exit codes name the failed check.
#[cfg(unix)]
fn address_space_capped_child() -> i32 {
    let Ok(page) = libdd_alloc::os::page_size() else {
        return 2;
    };
    let Some(pages) = mapped_pages() else {
        return 3;
    };
    if !set_limit(libc::RLIMIT_AS, (pages * page + HEADROOM) as u64) {
        return 4;
    }
    let pages_allocator = VirtualAllocator {};
    let big = Layout::from_size_align(4 * HEADROOM, 8).unwrap_or(Layout::new::<u8>());
    if pages_allocator.allocate(big).is_ok() {
        return 10;
    }
    let big_aligned = Layout::from_size_align(HEADROOM, 2 << 20).unwrap_or(Layout::new::<u8>());
    if pages_allocator.allocate(big_aligned).is_ok() {
        return 11;
    }
    let small = Layout::from_size_align(1 << 20, 8).unwrap_or(Layout::new::<u8>());
    let Ok(block) = pages_allocator.allocate(small) else {
        return 12;
    };
    let ptr = block.cast::<u8>();
    // SAFETY: a fresh block of 1 MiB.
    unsafe { fill(ptr, small.size(), 7) };
    // SAFETY: `ptr` is live with layout `small`; `big` is larger.
    if unsafe { pages_allocator.grow(ptr, small, big) }.is_ok() {
        return 13;
    }
    // SAFETY: the failed grow left the block ours.
    if !unsafe { holds(ptr, small.size(), 7) } {
        return 14;
    }
    // SAFETY: live block with layout `small`.
    unsafe { pages_allocator.deallocate(ptr, small) };

    if LinearAllocator::new_in(big, pages_allocator).is_ok() {
        return 15;
    }
    if SyncLinearAllocator::new_in(big, pages_allocator).is_ok() {
        return 40;
    }

    // Reserve-then-commit arenas: a reservation past the cap is refused at construction; one
    // within it works, and gives its address space back on drop.
    if VirtualArena::new(4 * HEADROOM).is_ok() || SyncVirtualArena::new(4 * HEADROOM).is_ok() {
        return 41;
    }
    for sync in [false, true] {
        let piece = Layout::from_size_align(HEADROOM / 2, 4096).unwrap_or(Layout::new::<u8>());
        let (block, used) = if sync {
            let Ok(arena) = SyncVirtualArena::new(HEADROOM / 2 + (1 << 20)) else {
                return 42;
            };
            (arena.allocate(piece).map(|_| ()), arena.used_bytes())
        } else {
            let Ok(arena) = VirtualArena::new(HEADROOM / 2 + (1 << 20)) else {
                return 43;
            };
            (arena.allocate(piece).map(|_| ()), arena.used_bytes())
        };
        if block.is_err() || used != piece.size() {
            return 44;
        }
    }

    // PageAllocator, with guard pages and prefault, and with transparent huge pages: past the
    // cap `Err`, and a failed grow keeps the block.
    let guarded = PageOptions::new()
        .guard_pages_before(1)
        .guard_pages_after(2)
        .prefault(true);
    let huge = PageOptions::new().huge_pages(HugePages::Transparent);
    for options in [guarded, huge] {
        let Ok(pages) = PageAllocator::new(options) else {
            return 45;
        };
        if pages.allocate(big).is_ok() {
            return 46;
        }
        let Ok(block) = pages.allocate(small) else {
            return 47;
        };
        let ptr = block.cast::<u8>();
        // SAFETY: a fresh block of 1 MiB.
        unsafe { fill(ptr, small.size(), 9) };
        // SAFETY: `ptr` is live with layout `small`; `big` is larger.
        if unsafe { pages.grow(ptr, small, big) }.is_ok() {
            return 48;
        }
        // SAFETY: the failed grow left the block ours.
        if !unsafe { holds(ptr, small.size(), 9) } {
            return 49;
        }
        // SAFETY: live block with layout `small`.
        unsafe { pages.deallocate(ptr, small) };
    }
    let Ok(chain) = ChainAllocator::new_in(1 << 20, pages_allocator) else {
        return 16;
    };
    let piece = Layout::from_size_align(256 << 10, 16).unwrap_or(Layout::new::<u8>());
    let mut served = 0;
    let mut refused = false;
    for _ in 0..10_000 {
        let before = (chain.used_bytes(), chain.reserved_bytes());
        if chain.allocate(piece).is_ok() {
            served += 1;
            continue;
        }
        refused = true;
        if (chain.used_bytes(), chain.reserved_bytes()) != before {
            return 17;
        }
        break;
    }
    if !refused {
        return 18;
    }
    if served < 8 {
        return 19;
    }
    if chain.has_capacity_for(Layout::new::<u64>()) && chain.allocate(Layout::new::<u64>()).is_err()
    {
        return 20;
    }
    drop(chain);
    // Dropping the chain gave its pages back: the same headroom is available again.
    let half = Layout::from_size_align(HEADROOM / 2, 8).unwrap_or(Layout::new::<u8>());
    let Ok(again) = pages_allocator.allocate(half) else {
        return 21;
    };
    // SAFETY: live block with layout `half`.
    unsafe { pages_allocator.deallocate(again.cast(), half) };
    0
}

#[cfg(unix)] // RLIMIT_AS in a forked child
#[test]
#[cfg_attr(
    qemu_user,
    ignore = "qemu-user accepts setrlimit(RLIMIT_AS/RLIMIT_DATA) but does not apply it"
)]
fn rlimit_as_makes_virtual_memory_allocators_return_err() {
    if under_valgrind() {
        // Valgrind manages the address space itself, and checks a forked child for leaks of the
        // heap it inherited: the child's result would not be ours. ASan runs it (asan.sh).
        eprintln!("skipped under valgrind: it owns the address space of the process");
        return;
    }
    let ended = in_child(address_space_capped_child);
    assert_eq!(
        ended,
        Ended::Exited(0),
        "address-space-capped child failed check {ended:?}"
    );
}

// ---- The scripted suite: fail, panic or re-enter at every backing call ----

/// The suite's re-entry hook: allocates 24 bytes from the arena in the `RefCell` at `context`,
/// borrowing it as any `RefCell` user would. While the arena is borrowed mutably (`reset`,
/// `rewind`) the borrow fails and the hook gives up, as a `try_borrow` user would (a panicking
/// one is the `Panic` action at the same call).
///
/// # Safety
/// `context` is the address of a live `RefCell<T>`.
unsafe fn reenter<T: Arena>(context: *const ()) -> Option<NonNull<[u8]>> {
    // SAFETY: per the caller.
    let cell = unsafe { &*context.cast::<RefCell<T>>() };
    let arena = cell.try_borrow().ok()?;
    arena.allocate(Layout::from_size_align(24, 8).unwrap()).ok()
}

/// Runs `f`; `true` if the script's panic came out of it. Any other panic (a failed check)
/// goes on unwinding: `catch_unwind` must not swallow the test's own assertions.
fn scripted_panic_in(f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => false,
        Err(payload) if payload.is::<ScriptedPanic>() => true,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// What one scripted run saw.
#[derive(Default)]
struct Outcome {
    panicked: bool,
    /// Blocks the re-entry hook got (each checked until the arena freed it).
    reentered_blocks: usize,
    leaked_blocks: usize,
    leaked_bytes: usize,
}

/// Runs the workload on the arena `make` builds over `backing`, with `backing`'s script, then
/// uses the arena again and drops it (each phase under `catch_unwind`), and checks: every live
/// block, the re-entrant ones included, holds its pattern and none overlap (in
/// `Workload::verify_all`), nothing was freed twice, and nothing leaked unless a panic was
/// raised, in which case the leak is at most what the backing allocator ever had out.
fn scripted_run<'s, T: Arena + 's>(
    backing: &'s Scripted,
    make: impl FnOnce(&'s Scripted) -> Result<T, AllocError>,
) -> Outcome {
    quiet_scripted_panics();
    let mut outcome = Outcome::default();
    let mut built = None;
    outcome.panicked = scripted_panic_in(|| built = Some(make(backing)));
    let arena = match built {
        Some(Ok(arena)) => RefCell::new(arena),
        _ => {
            // The constructor failed or panicked: it left nothing behind, except the block a
            // backing allocator allocated before panicking.
            let leak = usize::from(outcome.panicked);
            assert!(backing.live_blocks() <= leak, "a failed constructor leaked");
            assert_eq!(backing.bad_frees(), 0);
            outcome.leaked_blocks = backing.live_blocks();
            outcome.leaked_bytes = backing.live_bytes();
            return outcome;
        }
    };
    // SAFETY: `arena` outlives the hook, which is removed before `arena` is dropped.
    unsafe { backing.set_hook(Some((reenter::<T>, (&arena as *const RefCell<T>).cast()))) };
    let mut workload = Workload::new(&arena, true);
    workload.scripted = Some(backing);
    outcome.panicked |= scripted_panic_in(|| workload.run());
    workload.forget_in_flight();
    // Used again, whatever happened: the blocks still live are intact (checked first), and
    // the arena still serves, resizes and resets.
    outcome.panicked |= scripted_panic_in(|| {
        workload.verify_all();
        workload.allocate(8, 8);
        workload.allocate(3000, 64);
        let last = workload.live.len().saturating_sub(1);
        workload.resize(last, 70_000, 64, true);
        workload.allocate(10, 1);
        workload.verify_all();
        workload.reset();
        workload.allocate(500, 8);
        workload.verify_all();
    });
    workload.forget_in_flight();
    workload.before_freeing();
    drop(workload);
    // SAFETY: no hook: nothing refers to `arena` from the backing allocator any more.
    unsafe { backing.set_hook(None) };
    outcome.panicked |= scripted_panic_in(|| drop(arena));

    assert_eq!(
        backing.bad_frees(),
        0,
        "a block was freed twice (or never allocated)"
    );
    assert_eq!(
        outcome.panicked,
        backing.panics() > 0,
        "a panic that the script did not raise"
    );
    outcome.reentered_blocks = backing.reentered_total();
    outcome.leaked_blocks = backing.live_blocks();
    outcome.leaked_bytes = backing.live_bytes();
    if !outcome.panicked {
        assert_eq!(outcome.leaked_blocks, 0, "leaked without a panic");
    }
    assert!(
        outcome.leaked_bytes <= backing.peak_bytes(),
        "leaked more than was ever allocated"
    );
    outcome
}

/// The number of backing calls of a clean scripted run of the arena `$make` builds.
macro_rules! clean_calls {
    ($make:expr) => {{
        let backing = Scripted::new();
        let outcome = scripted_run(&backing, $make);
        assert!(!outcome.panicked && outcome.leaked_blocks == 0);
        backing.calls()
    }};
}

/// Runs [`scripted_run`] for each action at each call index of a clean run (and one past it),
/// for the arena `$make` builds over a `&Scripted`; prints and returns the totals.
macro_rules! every_scripted_call {
    ($name:expr, $make:expr) => {{
        let calls = clean_calls!($make);
        let mut totals = Totals::default();
        for at in 0..=calls {
            for action in [
                Action::Fail,
                Action::Panic,
                Action::PanicAfter,
                Action::Reenter,
            ] {
                let backing = Scripted::at(at, action);
                let outcome = scripted_run(&backing, $make);
                assert_eq!(
                    backing.fired().len(),
                    usize::from(at < calls),
                    "call {at} of {calls} not reached ({action:?})"
                );
                totals.add(action, &outcome);
            }
        }
        totals.report($name, calls);
        totals
    }};
}

#[derive(Default, Debug)]
struct Totals {
    runs: usize,
    panics: usize,
    reentered_blocks: usize,
    leaky_runs: usize,
    max_leaked_blocks: usize,
    max_leaked_bytes: usize,
}

impl Totals {
    fn add(&mut self, action: Action, outcome: &Outcome) {
        self.runs += 1;
        self.panics += usize::from(outcome.panicked);
        if action == Action::Reenter {
            self.reentered_blocks += outcome.reentered_blocks;
        }
        if outcome.leaked_blocks > 0 {
            self.leaky_runs += 1;
        }
        self.max_leaked_blocks = self.max_leaked_blocks.max(outcome.leaked_blocks);
        self.max_leaked_bytes = self.max_leaked_bytes.max(outcome.leaked_bytes);
    }

    fn report(&self, name: &str, calls: usize) {
        eprintln!(
            "{name}: {calls} backing calls x 4 actions = {} runs; {} panicked, {} re-entrant \
             blocks stayed valid; {} runs leaked (after a panic), at most {} blocks / {} bytes",
            self.runs,
            self.panics,
            self.reentered_blocks,
            self.leaky_runs,
            self.max_leaked_blocks,
            self.max_leaked_bytes
        );
    }
}

#[test]
fn chain_survives_a_failure_panic_or_reentry_at_every_backing_call() {
    for lazy in [false, true] {
        let totals = every_scripted_call!("ChainAllocator", |b| small_chain(b, lazy));
        assert!(totals.panics > 0 && totals.reentered_blocks > 0);
    }
}

#[test]
fn sync_chain_survives_a_failure_panic_or_reentry_at_every_backing_call() {
    for lazy in [false, true] {
        let totals = every_scripted_call!("SyncChainAllocator", |b| small_sync_chain(b, lazy));
        assert!(totals.panics > 0 && totals.reentered_blocks > 0);
    }
}

/// The buffer of the linear arenas: room for the whole workload.
fn linear_buffer() -> Layout {
    Layout::from_size_align(1 << 20, 64).unwrap()
}

#[test]
fn linear_survives_a_failure_panic_or_reentry_at_every_backing_call() {
    let totals = every_scripted_call!("LinearAllocator", |b| LinearAllocator::new_in(
        linear_buffer(),
        b
    ));
    // The constructor's allocation and drop's deallocation: both may panic.
    assert!(totals.panics >= 2);
}

#[test]
fn sync_linear_survives_a_failure_panic_or_reentry_at_every_backing_call() {
    let totals = every_scripted_call!("SyncLinearAllocator", |b| SyncLinearAllocator::new_in(
        linear_buffer(),
        b
    ));
    assert!(totals.panics >= 2);
}

/// A re-entrant allocation inside the lock-free arena's `allocate` publishes a chunk first; the
/// outer call then loses the race, carves its block from the winner's chunk and gives its own
/// chunk back. Re-entry at every call, and a panic one or two calls later: at the re-entrant
/// call's own allocation, or at the deallocation that follows (the lost-race chunk when the
/// outer block fits the winner's chunk, or a `reset`/`rewind`/drop one); each leaks at most.
#[test]
fn sync_chain_panic_right_after_a_reentrant_allocation_only_leaks() {
    let calls = clean_calls!(|b| small_sync_chain(b, true));
    let mut lost_race_panics = 0;
    for at in 0..calls {
        for later in 1..=2 {
            let script = [(at, Action::Reenter), (at + later, Action::Panic)];
            let backing = Scripted::over(System, &script);
            let outcome = scripted_run(&backing, |b| small_sync_chain(b, true));
            if backing.fired() == [("allocate", Action::Reenter), ("deallocate", Action::Panic)]
                && outcome.panicked
            {
                lost_race_panics += 1;
                assert!(outcome.leaked_blocks >= 1);
            }
        }
    }
    eprintln!(
        "{lost_race_panics} runs re-entered in `allocate` and panicked in the next `deallocate`"
    );
    assert!(
        lost_race_panics > 0,
        "no run gave a chunk back right after re-entering"
    );
}
