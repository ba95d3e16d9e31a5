//! `LocalHandle`: thread-owned handles on one lock-free arena. Threads with a handle each never
//! overlap; threads *and* signal handlers that allocate from the interrupted thread's own handle
//! never overlap; proptests against a model (a twin arena allocated from directly, for each of
//! the three lock-free arenas) pin the in-place operations, growth of the most recent block
//! past the slab's end included, and the exact accounting; 8 threads x 100,000 mixed
//! allocations reserve at most 1.15x what they request.
#![cfg_attr(not(unix), allow(unused_imports))] // the signal tests are POSIX only

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::blocks::{fill, intact, mixed_layout, tag, verify, Block};
use common::Stats;
use libdd_alloc::{
    Allocator, Layout, LocalHandle, LocalSource, SyncChainAllocator, SyncLinearAllocator,
    SyncVirtualArena, System, VirtualAllocator,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Allocates `n` mixed blocks through `local`, each filled with a pattern of (`owner`, seq),
/// checked at once.
fn fill_blocks<A: libdd_alloc::LocalSource>(
    local: &LocalHandle<'_, A>,
    owner: u64,
    n: u64,
) -> Vec<Block> {
    (0..n)
        .map(|seq| {
            let layout = mixed_layout(seq ^ (owner << 20));
            let block = local.allocate(layout).unwrap();
            assert_eq!(block.cast::<u8>().as_ptr() as usize % layout.align(), 0);
            // SAFETY: fresh block, ours.
            let record = unsafe { fill(block, layout.size(), tag(owner, seq)) };
            // SAFETY: still ours.
            assert!(unsafe { intact(&record) });
            record
        })
        .collect()
}

#[test]
fn threads_with_a_handle_each_on_one_chain_arena_never_overlap() {
    // Backed by malloc, which ThreadSanitizer sees: a lost publish race unmaps its chunk, and
    // TSan cannot see that a raw munmap orders before the mmap that reuses the address.
    let arena = SyncChainAllocator::new_in(4096, System)
        .unwrap()
        .with_max_chunk_size(256 << 10);
    let mut all: Vec<Block> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let arena = &arena;
                s.spawn(move || fill_blocks(&arena.local(), t + 1, 50_000))
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let payload: usize = all.iter().map(|b| b.len).sum();
    assert!(arena.used_bytes() >= payload);
    // SAFETY: every block is live until the arena drops.
    assert_eq!(unsafe { verify(&mut all) }, Ok(()));
}

#[test]
fn threads_with_a_handle_each_on_one_virtual_arena_never_overlap() {
    let arena = SyncVirtualArena::new(1 << 30)
        .unwrap()
        .with_max_commit_step(64 << 10);
    let mut all: Vec<Block> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let arena = &arena;
                s.spawn(move || fill_blocks(&arena.local(), t + 1, 50_000))
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let payload: usize = all.iter().map(|b| b.len).sum();
    assert!(arena.used_bytes() >= payload);
    // SAFETY: every block is live until the arena drops.
    assert_eq!(unsafe { verify(&mut all) }, Ok(()));
}

// ---- threads plus signals ---------------------------------------------------------------------
#[cfg(unix)] // pthread_kill and sigaction
mod signals {
    use super::*;

    const WORKERS: usize = 2;
    const SLOTS: usize = 1 << 15;
    const HANDLER_OWNER: u64 = 0xF000;

    type Handle = LocalHandle<'static, SyncChainAllocator<VirtualAllocator>>;

    thread_local! {
        /// The handle of the worker thread the handler interrupts, and the worker's index.
        static MY_HANDLE: Cell<*const Handle> = const { Cell::new(std::ptr::null()) };
        static MY_INDEX: Cell<usize> = const { Cell::new(0) };
    }

    static SLOT_ADDR: [[AtomicUsize; SLOTS]; WORKERS] =
        [const { [const { AtomicUsize::new(0) }; SLOTS] }; WORKERS];
    static SLOT_LEN: [[AtomicUsize; SLOTS]; WORKERS] =
        [const { [const { AtomicUsize::new(0) }; SLOTS] }; WORKERS];
    static SLOT_TAG: [[AtomicU64; SLOTS]; WORKERS] =
        [const { [const { AtomicU64::new(0) }; SLOTS] }; WORKERS];
    static SLOT_NEXT: [AtomicUsize; WORKERS] = [const { AtomicUsize::new(0) }; WORKERS];
    static HANDLER_FAILURES: AtomicUsize = AtomicUsize::new(0);
    static THREAD_IDS: [AtomicUsize; WORKERS] = [const { AtomicUsize::new(0) }; WORKERS];

    /// The `SIGUSR1` handler: two blocks from the interrupted worker's own handle, filled, checked
    /// and recorded in that worker's slots (no heap), then a scratch block given straight back.
    extern "C" fn allocate_from_my_handle(_: libc::c_int) {
        let handle = MY_HANDLE.with(Cell::get);
        if handle.is_null() {
            return;
        }
        let worker = MY_INDEX.with(Cell::get);
        // SAFETY: a worker sets `MY_HANDLE` to its live handle and clears it (signal blocked)
        // before the handle goes away; the handler runs on that worker's thread.
        let handle = unsafe { &*handle };
        for _ in 0..2 {
            let slot = SLOT_NEXT[worker].load(Ordering::Relaxed);
            if slot >= SLOTS {
                return;
            }
            SLOT_NEXT[worker].store(slot + 1, Ordering::Relaxed);
            let seq = (worker * SLOTS + slot) as u64;
            let layout = mixed_layout(seq ^ 0xABCD);
            let Ok(block) = handle.allocate(layout) else {
                HANDLER_FAILURES.fetch_add(1, Ordering::Relaxed);
                return;
            };
            // SAFETY: fresh block, ours.
            let record = unsafe { fill(block, layout.size(), tag(HANDLER_OWNER, seq)) };
            // SAFETY: still ours.
            if !unsafe { intact(&record) } {
                HANDLER_FAILURES.fetch_add(1, Ordering::Relaxed);
            }
            SLOT_ADDR[worker][slot].store(record.addr, Ordering::Relaxed);
            SLOT_LEN[worker][slot].store(record.len, Ordering::Relaxed);
            SLOT_TAG[worker][slot].store(record.tag, Ordering::Relaxed);
        }
        let scratch = Layout::new::<[u64; 2]>();
        if let Ok(block) = handle.allocate(scratch) {
            // SAFETY: ours until given back right here.
            unsafe {
                fill(block, scratch.size(), u64::MAX);
                handle.deallocate(block.cast(), scratch);
            }
        }
    }

    fn block_sigusr1(blocked: bool) {
        // SAFETY: plain libc calls on a local, initialised signal set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            let how = if blocked {
                libc::SIG_BLOCK
            } else {
                libc::SIG_UNBLOCK
            };
            assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
        }
    }

    #[test]
    fn threads_and_signal_handlers_allocating_from_the_interrupted_threads_handle_never_overlap() {
        // SAFETY: a zeroed sigaction is valid; the handler uses atomics, thread-locals with const
        // initialisers and the handle under test.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = allocate_from_my_handle as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
                0
            );
        }
        libdd_alloc::os::page_size().unwrap();
        // Signal handlers need an async-signal-safe backing allocator (mmap, not malloc). One
        // 256 MiB first chunk holds the whole run, so no chunk is unmapped and mapped again at the
        // same address by another thread, an ordering ThreadSanitizer cannot see (raw syscalls).
        // Slab refills, the handlers' nested allocations and the claims of both workers all race
        // on that chunk's cursor.
        let arena: &'static SyncChainAllocator<VirtualAllocator> = Box::leak(Box::new(
            SyncChainAllocator::new_in(256 << 20, VirtualAllocator {}).unwrap(),
        ));
        // Kept reachable for LeakSanitizer: handlers may still reach the arena, so it is leaked.
        static KEPT: AtomicUsize = AtomicUsize::new(0);
        KEPT.store(arena as *const _ as usize, Ordering::Relaxed);
        let stop = AtomicBool::new(false);
        let started = AtomicUsize::new(0);
        let interrupted = AtomicUsize::new(0);
        let signals_sent = AtomicUsize::new(0);
        let mut main_blocks: Vec<Block> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|worker| {
                    let (stop, started, interrupted) = (&stop, &started, &interrupted);
                    s.spawn(move || {
                        let handle: Handle = arena.local();
                        MY_INDEX.with(|i| i.set(worker));
                        MY_HANDLE.with(|h| h.set(&handle));
                        // SAFETY: pthread_self has no preconditions.
                        THREAD_IDS[worker]
                            .store(unsafe { libc::pthread_self() } as usize, Ordering::Release);
                        started.fetch_add(1, Ordering::Release);
                        let mut blocks = Vec::with_capacity(1 << 20);
                        let mut seq = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            // Past the cap (a release build gets there well within the second
                            // of signals), keep allocating, but give each block back in place
                            // once checked, so that signals still land inside the handle's calls.
                            let keep =
                                blocks.len() < (1 << 20) && arena.remaining_capacity() > 4 << 20;
                            let layout = mixed_layout(seq);
                            let block = handle.allocate(layout).unwrap();
                            // SAFETY: fresh block, ours.
                            let record =
                                unsafe { fill(block, layout.size(), tag(worker as u64 + 1, seq)) };
                            // SAFETY: still ours; a handler handed the same bytes would change them.
                            assert!(unsafe { intact(&record) }, "block changed under the worker");
                            if keep {
                                blocks.push(record);
                            } else {
                                // SAFETY: allocated just above with `layout`, not used again.
                                unsafe { handle.deallocate(block.cast(), layout) };
                            }
                            seq += 1;
                        }
                        block_sigusr1(true);
                        MY_HANDLE.with(|h| h.set(std::ptr::null()));
                        interrupted.fetch_add(handle.interrupted_allocations(), Ordering::Relaxed);
                        blocks
                    })
                })
                .collect();
            while started.load(Ordering::Acquire) < WORKERS {
                std::hint::spin_loop();
            }
            let targets: Vec<libc::pthread_t> = THREAD_IDS
                .iter()
                .map(|id| id.load(Ordering::Acquire) as libc::pthread_t)
                .collect();
            // 10 kHz in all, alternating between the workers, for one second.
            let begin = Instant::now();
            let mut k = 0usize;
            while begin.elapsed() < Duration::from_secs(1)
                && !workers.iter().any(|w| w.is_finished())
            {
                // SAFETY: the thread is alive (not finished, and joined only below).
                unsafe { libc::pthread_kill(targets[k % WORKERS], libc::SIGUSR1) };
                signals_sent.fetch_add(1, Ordering::Relaxed);
                k += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            stop.store(true, Ordering::Relaxed);
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        assert_eq!(HANDLER_FAILURES.load(Ordering::Relaxed), 0);
        let mut all = std::mem::take(&mut main_blocks);
        let mut handler_blocks = 0;
        for worker in 0..WORKERS {
            let n = SLOT_NEXT[worker].load(Ordering::Relaxed).min(SLOTS);
            handler_blocks += n;
            all.extend((0..n).map(|i| Block {
                addr: SLOT_ADDR[worker][i].load(Ordering::Relaxed),
                len: SLOT_LEN[worker][i].load(Ordering::Relaxed),
                tag: SLOT_TAG[worker][i].load(Ordering::Relaxed),
            }));
        }
        println!(
            "{} worker blocks, {handler_blocks} handler blocks, {} signals sent, {} handler allocations inside a worker's call",
            all.len() - handler_blocks,
            signals_sent.load(Ordering::Relaxed),
            interrupted.load(Ordering::Relaxed)
        );
        assert!(
            handler_blocks >= 1000,
            "handlers ran too rarely: {handler_blocks} blocks"
        );
        // SAFETY: the arena is leaked, so every block is live.
        assert_eq!(unsafe { verify(&mut all) }, Ok(()));
    }
}

// ---- proptest against a model -----------------------------------------------------------------

/// The three lock-free arenas, each built the same way twice (one for a handle, one to allocate
/// from directly, the model), so that both start from the same state: page-aligned, and large
/// enough (4 MiB) that no test here needs a second chunk.
fn sync_chain() -> SyncChainAllocator<VirtualAllocator> {
    SyncChainAllocator::new_in(4 << 20, VirtualAllocator {}).unwrap()
}
fn sync_linear() -> SyncLinearAllocator<VirtualAllocator> {
    SyncLinearAllocator::new_in(
        Layout::from_size_align(4 << 20, 4096).unwrap(),
        VirtualAllocator {},
    )
    .unwrap()
}
fn sync_virtual() -> SyncVirtualArena {
    // Two at a time, beside the other tests' arenas: small enough for a 32-bit address space.
    SyncVirtualArena::new(64 << 20).unwrap()
}

/// The three arenas' `local()`, for tests generic over them.
trait SyncArena: LocalSource + Allocator + Stats + Sized {
    /// Whether `reserved_bytes` is all taken when the arena is built (a first chunk, a
    /// buffer), rather than committed as it goes (`SyncVirtualArena`).
    const RESERVES_AT_BUILD: bool;
    fn handle(&self) -> LocalHandle<'_, Self>;
}
macro_rules! sync_arena {
    ($($ty:ty: $at_build:literal),*) => {$(
        impl SyncArena for $ty {
            const RESERVES_AT_BUILD: bool = $at_build;
            fn handle(&self) -> LocalHandle<'_, Self> {
                self.local()
            }
        }
    )*};
}
sync_arena!(
    SyncChainAllocator<VirtualAllocator>: true,
    SyncLinearAllocator<VirtualAllocator>: true,
    SyncVirtualArena: false
);

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        size: usize,
        align: usize,
    },
    DeallocateLast,
    DeallocateOlder {
        back: usize,
    },
    /// Grows the block `back` places from the end of the live list by `extra` bytes.
    Grow {
        back: usize,
        extra: usize,
    },
    /// Shrinks the block `back` places from the end of the live list to `keep` bytes.
    Shrink {
        back: usize,
        keep: usize,
    },
}

/// The largest block a lone handle always serves from its slab: with its worst-case alignment
/// padding (15 bytes at 16) it is an eighth of the first slab; larger requests go to the arena.
const SMALL: usize = 113;

/// Any operation, large blocks and growth past the slab included.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..600, 0u32..7).prop_map(|(size, shift)| Op::Allocate { size, align: 1 << shift }),
        2 => Just(Op::DeallocateLast),
        1 => (1usize..8).prop_map(|back| Op::DeallocateOlder { back }),
        2 => (0usize..3000).prop_map(|extra| Op::Grow { back: 0, extra }),
        2 => (0usize..600).prop_map(|keep| Op::Shrink { back: 0, keep }),
    ]
}

/// Operations whose requests all fit: every block a lone handle allocates (or moves a block
/// to) is at most `SMALL` (so its slab serves it), and the model's first chunk holds them all.
/// A growth of the most recent block may be of any size (in place, past the slab's end too);
/// one of an older block moves it, so the runner keeps it within `SMALL`. The handle must then
/// be indistinguishable from the arena.
fn fitting_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..=SMALL, 0u32..5).prop_map(|(size, shift)| Op::Allocate { size, align: 1 << shift }),
        2 => Just(Op::DeallocateLast),
        1 => (1usize..8).prop_map(|back| Op::DeallocateOlder { back }),
        3 => (0usize..3000).prop_map(|extra| Op::Grow { back: 0, extra }),
        1 => (1usize..4, 0usize..SMALL).prop_map(|(back, extra)| Op::Grow { back, extra }),
        2 => (0usize..600).prop_map(|keep| Op::Shrink { back: 0, keep }),
        1 => (1usize..4, 0usize..SMALL).prop_map(|(back, keep)| Op::Shrink { back, keep }),
    ]
}

/// A live block on each side: the handle's (with its tag) and the model's (same size, filled
/// with the same tag).
struct Twin {
    block: Block,
    model: Block,
    layout: Layout,
}

fn ptr(block: &Block) -> NonNull<u8> {
    NonNull::new(block.addr as *mut u8).unwrap()
}

/// Runs `ops` through a handle on one arena and directly on a model arena built the same way;
/// blocks must stay disjoint, aligned and intact throughout. With `same_offsets`, the handle
/// (which grows its slab in place when alone) must also hand out the same offsets as the model,
/// grow in place exactly when the model does, and leave the arena with the same statistics once
/// dropped.
fn run_against_model<A: SyncArena>(make: fn() -> A, ops: &[Op], same_offsets: bool) {
    let (arena, model) = (make(), make());
    let (reserved, model_reserved) = (arena.reserved(), model.reserved());
    let local = arena.handle();
    let mut live: Vec<Twin> = Vec::new();
    let one = Layout::new::<u8>();
    let base = local.allocate(one).unwrap().cast::<u8>().as_ptr() as usize;
    let model_base = model.allocate(one).unwrap().cast::<u8>().as_ptr() as usize;
    // The model's cursor (its first free byte), from its statistics: one chunk throughout.
    let model_used = model.used();
    let model_cursor = || model_base + 1 + (model.used() - model_used);
    let mut seq = 0u64;
    for op in ops {
        seq += 1;
        match *op {
            Op::Allocate { size, align } => {
                let layout = Layout::from_size_align(size, align).unwrap();
                let block = local.allocate(layout).unwrap();
                let m = model.allocate(layout).unwrap();
                assert_eq!(block.cast::<u8>().as_ptr() as usize % align, 0);
                // SAFETY: fresh blocks, ours.
                let (block, model) =
                    unsafe { (fill(block, size, tag(1, seq)), fill(m, size, tag(1, seq))) };
                live.push(Twin {
                    block,
                    model,
                    layout,
                });
            }
            Op::DeallocateLast | Op::DeallocateOlder { .. } => {
                let back = match *op {
                    Op::DeallocateOlder { back } => back,
                    _ => 0,
                };
                if live.len() > back {
                    let twin = live.remove(live.len() - 1 - back);
                    // SAFETY: live blocks of `layout`, one from each arena.
                    unsafe {
                        local.deallocate(ptr(&twin.block), twin.layout);
                        model.deallocate(ptr(&twin.model), twin.layout);
                    }
                }
            }
            Op::Grow { back, extra } | Op::Shrink { back, keep: extra } => {
                let grow = matches!(op, Op::Grow { .. });
                if live.len() <= back {
                    continue;
                }
                let index = live.len() - 1 - back;
                let twin = &live[index];
                let len = twin.block.len;
                // In place (the model's most recent block) whatever the size; else it moves, to
                // a block the slab serves.
                let in_place = twin.model.addr + len == model_cursor();
                let size = if !grow {
                    extra.min(len).max(1)
                } else if in_place || !same_offsets || len + extra <= SMALL {
                    len + extra
                } else {
                    continue;
                };
                let new = Layout::from_size_align(size, twin.layout.align()).unwrap();
                // SAFETY: live blocks of `layout`; sizes ordered as grow/shrink require.
                let (block, mblock) = unsafe {
                    if grow {
                        (
                            local.grow(ptr(&twin.block), twin.layout, new).unwrap(),
                            model.grow(ptr(&twin.model), twin.layout, new).unwrap(),
                        )
                    } else {
                        (
                            local.shrink(ptr(&twin.block), twin.layout, new).unwrap(),
                            model.shrink(ptr(&twin.model), twin.layout, new).unwrap(),
                        )
                    }
                };
                let kept = len.min(size);
                for (old, now) in [(twin.block, block), (twin.model, mblock)] {
                    let moved = Block {
                        addr: now.cast::<u8>().as_ptr() as usize,
                        len: kept,
                        ..old
                    };
                    // SAFETY: the kept prefix was preserved (in place or copied).
                    assert!(unsafe { intact(&moved) }, "{op:?} lost contents");
                }
                // SAFETY: each block is ours, `size` bytes long.
                let (block, model) = unsafe {
                    (
                        fill(block, size, tag(1, seq)),
                        fill(mblock, size, tag(1, seq)),
                    )
                };
                live[index] = Twin {
                    block,
                    model,
                    layout: new,
                };
            }
        }
        if same_offsets {
            // The handle is transparent for a lone thread: every block where the model has it.
            for twin in &live {
                assert_eq!(
                    twin.block.addr - base,
                    twin.model.addr - model_base,
                    "after {op:?}"
                );
            }
        }
        let mut blocks: Vec<Block> = live.iter().map(|t| t.block).collect();
        // SAFETY: every block is live.
        assert_eq!(unsafe { verify(&mut blocks) }, Ok(()));
    }
    let handed_out = local.used_bytes();
    drop(local);
    assert!(arena.used() >= handed_out);
    // The same contents on both sides.
    for twin in &live {
        // SAFETY: live blocks of `twin.layout` on each side.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(twin.block.addr as *const u8, twin.block.len),
                std::slice::from_raw_parts(twin.model.addr as *const u8, twin.model.len),
            )
        };
        assert_eq!(a, b);
        // SAFETY: as above.
        assert!(unsafe { intact(&twin.model) });
    }
    if same_offsets {
        assert_eq!(arena.used(), model.used());
        if A::RESERVES_AT_BUILD {
            // One chunk (or buffer) throughout, as `model_cursor` assumes.
            assert_eq!(
                (arena.reserved(), model.reserved()),
                (reserved, model_reserved)
            );
        }
    }
}

fn config() -> Config {
    Config {
        cases: common::proptest_cases(256),
        rng_seed: RngSeed::Fixed(0x10ca1),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_lone_handle_whose_requests_fit_is_indistinguishable_from_the_sync_chain_arena(
        ops in prop::collection::vec(fitting_op(), 1..300),
    ) {
        run_against_model(sync_chain, &ops, true);
    }

    #[test]
    fn a_lone_handle_whose_requests_fit_is_indistinguishable_from_the_sync_linear_arena(
        ops in prop::collection::vec(fitting_op(), 1..300),
    ) {
        run_against_model(sync_linear, &ops, true);
    }

    #[test]
    fn a_lone_handle_whose_requests_fit_is_indistinguishable_from_the_sync_virtual_arena(
        ops in prop::collection::vec(fitting_op(), 1..300),
    ) {
        run_against_model(sync_virtual, &ops, true);
    }

    #[test]
    fn a_handle_keeps_blocks_disjoint_aligned_and_intact_whatever_the_sizes(
        ops in prop::collection::vec(op(), 1..200),
    ) {
        run_against_model(sync_chain, &ops, false);
    }
}

// ---- the most recent block grows in place across the slab's end -----------------------------

/// 128 blocks of 8 bytes fill the first 1 KiB slab exactly; growing the last one to 24 bytes
/// must grow the slab in place, then the block, as the arena grows its own last block: 1040
/// bytes either way (it used to copy the block into the grown slab: 1048).
fn growing_the_last_block_past_a_full_slab_uses_what_direct_allocation_uses<A>(make: fn() -> A)
where
    A: SyncArena,
{
    let (arena, direct) = (make(), make());
    let (arena_base, direct_base) = (arena.used(), direct.used());
    let (small, big) = (
        Layout::from_size_align(8, 8).unwrap(),
        Layout::from_size_align(24, 8).unwrap(),
    );
    {
        let local = arena.handle();
        let mut last = None;
        for i in 0..128u64 {
            let (block, direct_block) = (
                local.allocate(small).unwrap(),
                direct.allocate(small).unwrap(),
            );
            // SAFETY: fresh blocks of 8 bytes, ours.
            unsafe {
                block.cast::<u64>().write(i);
                direct_block.cast::<u64>().write(i);
            }
            last = Some((block.cast::<u8>(), direct_block.cast::<u8>()));
        }
        assert_eq!(local.remaining_capacity(), 0, "the first slab is full");
        let (last, direct_last) = last.unwrap();
        // SAFETY: the most recent blocks of `small`, from `local` and from `direct`.
        let (grown, direct_grown) = unsafe {
            (
                local.grow(last, small, big).unwrap(),
                direct.grow(direct_last, small, big).unwrap(),
            )
        };
        assert_eq!(
            direct_grown.cast::<u8>(),
            direct_last,
            "the arena grows in place"
        );
        assert_eq!(grown.cast::<u8>(), last, "the handle grows in place too");
        // SAFETY: the first 8 bytes were kept.
        assert_eq!(unsafe { grown.cast::<u64>().read() }, 127);
        assert_eq!(local.used_bytes(), 1040);
    }
    assert_eq!(direct.used() - direct_base, 1040);
    assert_eq!(arena.used() - arena_base, 1040);
}

#[test]
fn a_lone_handles_last_block_grows_in_place_across_the_slabs_end_on_every_sync_arena() {
    growing_the_last_block_past_a_full_slab_uses_what_direct_allocation_uses(sync_chain);
    growing_the_last_block_past_a_full_slab_uses_what_direct_allocation_uses(sync_linear);
    growing_the_last_block_past_a_full_slab_uses_what_direct_allocation_uses(sync_virtual);
}

/// How often a `Vec<u8>` of 200,000 pushes moves (its buffer's address changes).
fn moves_of_a_vec_of_200_000_pushes<A: Allocator>(allocator: &A) -> usize {
    let mut v = allocator_api2::vec::Vec::new_in(allocator);
    let (mut moves, mut at) = (0, None);
    for i in 0..200_000u32 {
        v.push(i as u8);
        let now = v.as_ptr();
        if at.is_some_and(|at| at != now) {
            moves += 1;
        }
        at = Some(now);
    }
    assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
    moves
}

fn a_lone_handles_vec_moves_as_often_as_on_the_arena<A>(make: fn() -> A)
where
    A: SyncArena,
{
    let (arena, direct) = (make(), make());
    let direct_moves = moves_of_a_vec_of_200_000_pushes(&direct);
    let local = arena.handle();
    assert_eq!(moves_of_a_vec_of_200_000_pushes(&local), direct_moves);
}

#[test]
fn a_vec_on_a_lone_handle_moves_exactly_as_often_as_on_the_arena_directly() {
    a_lone_handles_vec_moves_as_often_as_on_the_arena(sync_chain);
    a_lone_handles_vec_moves_as_often_as_on_the_arena(sync_linear);
    a_lone_handles_vec_moves_as_often_as_on_the_arena(sync_virtual);
}

// ---- memory ----------------------------------------------------------------------------------

/// The benchmarks' mixed workload (`benches/common`): sizes 1..=128, alignments 1..=16, from a
/// fixed-seed xorshift, so the alignment padding is what any bump arena pays.
#[test]
fn eight_threads_of_mixed_allocations_reserve_at_most_1_15_times_what_they_request() {
    let arena = SyncChainAllocator::new_in(4 << 20, System).unwrap();
    let requested: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8u64)
            .map(|t| {
                let arena = &arena;
                s.spawn(move || {
                    let local = arena.local();
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                    (0..100_000)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let size = 1 + (x % 128) as usize;
                            let layout =
                                Layout::from_size_align(size, 1 << ((x >> 8) % 5)).unwrap();
                            local.allocate(layout).unwrap();
                            size
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let ratio = arena.reserved_bytes() as f64 / requested as f64;
    println!(
        "reserved {} / requested {requested} = {ratio:.3}",
        arena.reserved_bytes()
    );
    assert!(ratio <= 1.15, "reserved/requested = {ratio:.3}");
}

/// A growth of the most recent block past the slab's end that needs a commit the budget
/// refuses fails whole (the block intact, the handle usable, the budget never passed); one the
/// budget allows then grows in place, and the handle's drop leaves the arena at what it handed
/// out.
#[test]
fn a_growth_past_the_slabs_end_refused_by_the_budget_fails_whole_and_a_smaller_one_stays_in_place()
{
    static BUDGET: libdd_alloc::Budget = libdd_alloc::Budget::new(256 << 10);
    let arena = SyncVirtualArena::new_with_budget(64 << 20, &BUDGET).unwrap();
    let base = arena.used_bytes();
    let local = arena.local();
    let small = Layout::from_size_align(8, 8).unwrap();
    let first = local.allocate(small).unwrap();
    // SAFETY: a fresh block of 8 bytes, ours.
    let first = unsafe { fill(first, 8, tag(1, 1)) };
    let ptr = NonNull::new(first.addr as *mut u8).unwrap();
    for refused in [1 << 20, 300 << 10, (256 << 10) + 1] {
        let big = Layout::from_size_align(refused, 8).unwrap();
        // SAFETY: the most recent block of `small`, from `local`.
        assert!(unsafe { local.grow(ptr, small, big) }.is_err(), "{refused}");
        // SAFETY: still live, of `small`.
        assert!(unsafe { intact(&first) });
        assert!(BUDGET.peak() <= 256 << 10);
    }
    let allowed = Layout::from_size_align(100 << 10, 8).unwrap();
    // SAFETY: as above.
    let grown = unsafe { local.grow(ptr, small, allowed) }.unwrap();
    assert_eq!(
        grown.cast::<u8>(),
        ptr,
        "grown in place past the slab's end"
    );
    // SAFETY: the first 8 bytes were kept.
    assert!(unsafe { intact(&first) });
    assert_eq!(local.used_bytes(), 100 << 10);
    let other = local.allocate(small).unwrap().cast::<u8>().as_ptr() as usize;
    assert_eq!(other, ptr.as_ptr() as usize + (100 << 10));
    drop(local);
    assert_eq!(arena.used_bytes() - base, (100 << 10) + 8);
    assert!(BUDGET.peak() <= 256 << 10);
}

/// One thread grows its handle's most recent block past the slab's end again and again (in
/// place while the slab is the arena's last claim) while others allocate from the arena
/// directly and through handles of their own, on each of the three lock-free arenas (chain
/// chunks of at most 64 KiB, so growths also meet a chunk's end): no two blocks overlap, every
/// block keeps its contents, and the growth stays in place at least sometimes.
fn growth_past_the_slabs_end_racing_other_claims<A: SyncArena + Sync>(arena: &A) {
    let in_place = AtomicU64::new(0);
    let mut all: Vec<Block> = std::thread::scope(|s| {
        let grower = s.spawn(|| {
            let local = arena.handle();
            let mut blocks = Vec::new();
            for seq in 0..10_000u64 {
                let small = Layout::from_size_align(8 + (seq as usize % 40), 8).unwrap();
                let b = local.allocate(small).unwrap();
                // SAFETY: fresh, ours.
                let block = unsafe { fill(b, small.size(), tag(1, seq)) };
                if local.remaining_capacity() >= 4096 {
                    blocks.push(block); // a fresh slab: fill it first, do not grow across it
                    continue;
                }
                let past = local.remaining_capacity() + 1 + (seq as usize * 7919) % 3000;
                let big = Layout::from_size_align(small.size() + past, 8).unwrap();
                // SAFETY: the most recent block of `small`, from `local`.
                let g = unsafe { local.grow(b.cast(), small, big) }.unwrap();
                let moved = Block {
                    addr: g.cast::<u8>().as_ptr() as usize,
                    ..block
                };
                // SAFETY: the first bytes were kept or copied.
                assert!(unsafe { intact(&moved) }, "lost contents at {seq}");
                if moved.addr == block.addr {
                    in_place.fetch_add(1, Ordering::Relaxed);
                }
                // SAFETY: ours, of `big`.
                blocks.push(unsafe { fill(g, big.size(), tag(1, seq)) });
            }
            blocks
        });
        let direct = s.spawn(|| {
            let local = arena.handle();
            let mut blocks = Vec::new();
            for seq in 0..40_000u64 {
                let l = mixed_layout(seq);
                let b = if seq % 2 == 0 {
                    arena.allocate(l)
                } else {
                    local.allocate(l)
                }
                .unwrap();
                // SAFETY: fresh, ours.
                blocks.push(unsafe { fill(b, l.size(), tag(2, seq)) });
            }
            blocks
        });
        let mut all = grower.join().unwrap();
        all.extend(direct.join().unwrap());
        all
    });
    // SAFETY: every block is live until the arena drops.
    assert_eq!(unsafe { verify(&mut all) }, Ok(()));
    assert!(in_place.load(Ordering::Relaxed) > 0, "never in place");
}

#[test]
fn growth_past_the_slabs_end_racing_other_threads_claims_never_overlaps() {
    growth_past_the_slabs_end_racing_other_claims(
        &SyncChainAllocator::new_in(4096, VirtualAllocator {})
            .unwrap()
            .with_max_chunk_size(64 << 10),
    );
    growth_past_the_slabs_end_racing_other_claims(&SyncVirtualArena::new(256 << 20).unwrap());
    growth_past_the_slabs_end_racing_other_claims(
        &SyncLinearAllocator::new_in(
            Layout::from_size_align(256 << 20, 8).unwrap(),
            VirtualAllocator {},
        )
        .unwrap(),
    );
}
