//! Fault injection through the backing allocator of an arena that a `LocalHandle` claims its
//! slabs from: at every backing call a workload reaches, the call fails (once, or from then on),
//! panics, or calls back into the very handle that is refilling its slab. Each time the handle
//! must answer `Err` or unwind cleanly, stay usable, keep every block it handed out disjoint and
//! intact, and, once the handle and the arena are dropped, leak nothing.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::blocks::{fill, intact, mixed_layout, tag, verify, Block};
use common::counting::SyncCounting;
use common::placement::PageAligned;
use common::scripted::{quiet_scripted_panics, ScriptedPanic};
use libdd_alloc::{AllocError, Allocator, Layout, LocalHandle, SyncChainAllocator, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

/// What the backing allocator does at its call number `at` (counted from 0 over `allocate`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hostility {
    None,
    Panic,
    /// Allocates from the handle in `HANDLE` from inside the backing call.
    Reenter,
}

type Arena<'c> = SyncChainAllocator<Hostile<'c>>;

/// Chunks on page boundaries: the sweeps below need every run of the workload to make the same
/// backing calls as the clean run, whatever the tests running beside it hold in the heap.
type Backing = PageAligned<System>;
const BACKING: Backing = PageAligned(System);

thread_local! {
    static HANDLE: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
    /// Blocks the re-entering backing allocator got from the handle.
    static REENTERED: Cell<Option<Block>> = const { Cell::new(None) };
}

/// A backing allocator over a [`SyncCounting`] (which fails on its own schedule and counts live
/// blocks) that also panics or re-enters the handle at one call.
struct Hostile<'c> {
    counting: &'c SyncCounting<Backing>,
    at: u64,
    what: Hostility,
    calls: Cell<u64>,
}

// SAFETY: forwards to `counting`; the extra behaviour hands out nothing itself.
unsafe impl Allocator for Hostile<'_> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let call = self.calls.get();
        self.calls.set(call + 1);
        if call == self.at {
            match self.what {
                Hostility::None => {}
                Hostility::Panic => std::panic::panic_any(ScriptedPanic {
                    method: "allocate",
                    call: call as usize,
                }),
                Hostility::Reenter => {
                    let handle = HANDLE.with(Cell::get) as *const LocalHandle<'_, Arena<'_>>;
                    // SAFETY: the test points `HANDLE` at its live handle for the whole run.
                    let handle = unsafe { &*handle };
                    let inner = Layout::new::<[u64; 3]>();
                    let block = handle.allocate(inner)?;
                    // SAFETY: fresh block, ours.
                    let record = unsafe { fill(block, inner.size(), tag(0xEE, call)) };
                    REENTERED.with(|r| r.set(Some(record)));
                }
            }
        }
        self.counting.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded caller contract.
        unsafe { self.counting.deallocate(ptr, layout) }
    }
}

/// Allocates mixed blocks through a handle on a small-chunk arena over `backing` (so it refills
/// its slab and the arena takes chunks often), grows and gives back some, and checks every block.
/// Returns how many allocations failed or unwound.
fn workload(
    counting: &SyncCounting<Backing>,
    at: u64,
    what: Hostility,
    retry_must_succeed: bool,
) -> usize {
    let backing = Hostile {
        counting,
        at,
        what,
        calls: Cell::new(0),
    };
    let arena = SyncChainAllocator::new_lazy_in(1024, backing).with_max_chunk_size(16 << 10);
    let mut failures = 0;
    {
        let local = arena.local();
        HANDLE.with(|h| h.set(&local as *const _ as *const ()));
        REENTERED.with(|r| r.set(None));
        let mut blocks: Vec<Block> = Vec::new();
        for seq in 0..3000u64 {
            let layout = mixed_layout(seq);
            let result = catch_unwind(AssertUnwindSafe(|| local.allocate(layout)));
            let block = match result {
                Ok(Ok(block)) => block,
                Ok(Err(AllocError)) | Err(_) => {
                    failures += 1;
                    // The handle must still serve what the backing allocator allows.
                    match local.allocate(layout) {
                        Ok(block) => block,
                        Err(AllocError) => {
                            assert!(
                                !retry_must_succeed,
                                "the handle stayed broken after fault {at}"
                            );
                            continue;
                        }
                    }
                }
            };
            assert_eq!(block.cast::<u8>().as_ptr() as usize % layout.align(), 0);
            // SAFETY: fresh block, ours.
            let record = unsafe { fill(block, layout.size(), tag(1, seq)) };
            if seq % 7 == 0 {
                let bigger = Layout::from_size_align(layout.size() * 2, layout.align()).unwrap();
                // SAFETY: `block` is of `layout`, from `local`.
                match catch_unwind(AssertUnwindSafe(|| unsafe {
                    local.grow(block.cast(), layout, bigger)
                })) {
                    Ok(Ok(grown)) => {
                        let moved = Block {
                            addr: grown.cast::<u8>().as_ptr() as usize,
                            ..record
                        };
                        // SAFETY: the grown block kept the old bytes.
                        assert!(unsafe { intact(&moved) });
                        // SAFETY: now of `bigger`; the scratch is given back.
                        unsafe { local.deallocate(grown.cast(), bigger) };
                        continue;
                    }
                    // The old block stays valid and intact.
                    Ok(Err(AllocError)) | Err(_) => failures += 1,
                }
            }
            blocks.push(record);
        }
        if let Some(reentered) = REENTERED.with(Cell::get) {
            assert_eq!(what, Hostility::Reenter);
            REENTRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            blocks.push(reentered);
        }
        // SAFETY: every block is live until the arena drops.
        let verified = unsafe { verify(&mut blocks) };
        assert_eq!(verified, Ok(()), "fault {what:?} at {at}");
        HANDLE.with(|h| h.set(std::ptr::null()));
    }
    drop(arena);
    assert_eq!(
        counting.live_blocks(),
        0,
        "chunks leaked after {what:?} at {at}"
    );
    failures
}

/// Workload runs in which the backing allocator did allocate from the refilling handle.
static REENTRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs the workload with `what` at every backing call a clean run makes.
fn at_every_call(what: Hostility) {
    let clean = SyncCounting::new(BACKING);
    assert_eq!(workload(&clean, u64::MAX, Hostility::None, true), 0);
    let calls = clean.calls();
    assert!(calls >= 8, "the workload made only {calls} backing calls");
    eprintln!("clean run: {calls} backing calls");
    for n in 0..=calls {
        match what {
            Hostility::None => {
                let once = SyncCounting::fail_on(BACKING, n);
                workload(&once, u64::MAX, Hostility::None, true);
                assert_eq!(
                    once.failures(),
                    u64::from(n < calls),
                    "fault {n} not reached"
                );
                let exhausted = SyncCounting::fail_from(BACKING, n);
                workload(&exhausted, u64::MAX, Hostility::None, false);
            }
            _ => {
                let counting = SyncCounting::new(BACKING);
                let failures = workload(&counting, n, what, true);
                if what == Hostility::Panic && n < calls {
                    assert!(failures > 0, "panic at call {n} not seen");
                }
            }
        }
    }
}

#[test]
fn a_failing_backing_allocator_at_every_call_gives_err_and_leaves_the_handle_usable() {
    at_every_call(Hostility::None);
}

#[test]
fn a_panicking_backing_allocator_at_every_call_unwinds_and_leaves_the_handle_usable() {
    // Only the injected panics are kept off stderr: a failing assertion of this test or of one
    // running beside it is still reported.
    quiet_scripted_panics();
    at_every_call(Hostility::Panic);
}

#[test]
fn a_backing_allocator_that_reenters_the_refilling_handle_gets_a_disjoint_block() {
    at_every_call(Hostility::Reenter);
    assert!(REENTRIES.load(std::sync::atomic::Ordering::Relaxed) > 0);
}
