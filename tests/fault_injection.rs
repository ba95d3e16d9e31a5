//! Fault injection: the backing allocator fails on the N-th call, for every N a workload reaches,
//! and the address space is capped with `RLIMIT_AS` in a child process. Every failure must come
//! back as `Err` (never a panic or an abort), leave the arena's statistics and live blocks as they
//! were, leave the arena usable, and leak nothing.
#![cfg_attr(not(unix), allow(unused_imports, dead_code))] // the RLIMIT_AS test is POSIX only

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::counting::SyncCounting;
use common::fill::{fill, holds};
#[cfg(unix)] // fork and setrlimit
use common::process::{in_child, mapped_pages, set_limit, under_valgrind, Ended};
use libdd_alloc::{
    AllocError, Allocator, ChainAllocator, HugePages, Layout, LinearAllocator, PageAllocator,
    PageOptions, SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena, System,
    VirtualAllocator, VirtualArena,
};
use std::ptr::NonNull;

/// The statistics every arena has, so one workload drives them all.
trait Arena: Allocator {
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
/// only block, and by moving), grow_zeroed, shrinks, deallocations and a reset, checking after
/// every failed step that nothing changed. With `retry_must_succeed` (a one-shot fault), the step
/// is retried and must then succeed: the arena is still usable after a failure.
struct Workload<'a, T: Arena> {
    arena: &'a mut T,
    live: Vec<Live>,
    next_seed: u8,
    retry_must_succeed: bool,
    failures: usize,
}

impl<T: Arena> Workload<'_, T> {
    fn verify_all(&self) {
        for block in &self.live {
            // SAFETY: every `Live` is a block of the arena that the workload owns.
            assert!(unsafe { holds(block.ptr, block.layout.size(), usize::from(block.seed)) });
        }
    }

    /// Checks a failure changed nothing and counts it.
    fn failed(&mut self, before: (usize, usize, usize)) {
        assert_eq!(
            self.arena.stats(),
            before,
            "a failed call changed the statistics"
        );
        self.verify_all();
        self.failures += 1;
    }

    fn allocate(&mut self, size: usize, align: usize) {
        let layout = Layout::from_size_align(size, align).unwrap();
        let before = self.arena.stats();
        let block = match self.arena.allocate(layout) {
            Ok(block) => block,
            Err(AllocError) => {
                self.failed(before);
                if !self.retry_must_succeed {
                    return;
                }
                self.arena
                    .allocate(layout)
                    .expect("allocation after a failure")
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
        let before = self.arena.stats();
        let block = match call(self.arena) {
            Ok(block) => block,
            Err(AllocError) => {
                // The old block is still the caller's, contents intact (checked by `failed`).
                self.failed(before);
                if !self.retry_must_succeed {
                    return;
                }
                call(self.arena).expect("resize after a failure")
            }
        };
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
            unsafe { self.arena.deallocate(block.ptr, block.layout) };
        }
    }

    fn reset(&mut self) {
        self.verify_all();
        self.live.clear();
        self.arena.reset_all();
        let (used, reserved, remaining) = self.arena.stats();
        assert_eq!(used + remaining, reserved);
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
    let mut arena = match arena {
        Ok(arena) => arena,
        Err(AllocError) => {
            assert_eq!(backing.live_blocks(), 0, "failed constructor leaked");
            return 1;
        }
    };
    let mut workload = Workload {
        arena: &mut arena,
        live: Vec::new(),
        next_seed: 1,
        retry_must_succeed: retry,
        failures: 0,
    };
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
    let mut arena =
        SyncLinearAllocator::new_in(Layout::from_size_align(16 << 10, 64).unwrap(), &backing)
            .unwrap();
    let mut workload = Workload {
        arena: &mut arena,
        live: Vec::new(),
        next_seed: 1,
        retry_must_succeed: false,
        failures: 0,
    };
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
    let mut arena =
        LinearAllocator::new_in(Layout::from_size_align(16 << 10, 64).unwrap(), &backing).unwrap();
    let mut workload = Workload {
        arena: &mut arena,
        live: Vec::new(),
        next_seed: 1,
        retry_must_succeed: false,
        failures: 0,
    };
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
