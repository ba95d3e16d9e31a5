//! `LocalHandle`: thread-owned handles on one lock-free arena. Threads with a handle each never
//! overlap; threads *and* signal handlers that allocate from the interrupted thread's own handle
//! never overlap; a proptest against a model (a second arena allocated from directly) pins the
//! in-place operations and the exact accounting; 8 threads x 100,000 mixed allocations reserve
//! at most 1.15x what they request.
#![cfg_attr(not(unix), allow(unused_imports))] // the signal tests are POSIX only

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::blocks::{fill, intact, mixed_layout, tag, verify, Block};
use libdd_alloc::{
    Allocator, Layout, LocalHandle, SyncChainAllocator, SyncVirtualArena, System, VirtualAllocator,
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

#[derive(Clone, Debug)]
enum Op {
    Allocate { size: usize, align: usize },
    DeallocateLast,
    GrowLast { extra: usize },
    ShrinkLast { keep: usize },
    DeallocateOlder { back: usize },
}

/// Any operation, large blocks and growth past the slab included.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..600, 0u32..7).prop_map(|(size, shift)| Op::Allocate { size, align: 1 << shift }),
        2 => Just(Op::DeallocateLast),
        2 => (0usize..3000).prop_map(|extra| Op::GrowLast { extra }),
        2 => (0usize..600).prop_map(|keep| Op::ShrinkLast { keep }),
        1 => (1usize..8).prop_map(|back| Op::DeallocateOlder { back }),
    ]
}

/// Operations a lone handle serves from its slab alone (blocks that, with their worst-case
/// alignment padding, are at most an eighth of the first slab; no growth, which may move a
/// block the model grows in place): the handle must then be indistinguishable from the arena.
fn slab_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..=113, 0u32..5).prop_map(|(size, shift)| Op::Allocate { size, align: 1 << shift }),
        2 => Just(Op::DeallocateLast),
        2 => (0usize..128).prop_map(|keep| Op::ShrinkLast { keep }),
        1 => (1usize..8).prop_map(|back| Op::DeallocateOlder { back }),
    ]
}

/// Runs `ops` through a handle on one arena and directly on a model arena of the same kind;
/// blocks must stay disjoint, aligned and intact throughout. With `same_offsets`, the handle
/// (which grows its slab in place when alone) must also hand out the same offsets as the model
/// and leave the arena with the same statistics once dropped.
fn run_against_model(ops: &[Op], same_offsets: bool) {
    let arena = SyncChainAllocator::new_in(4 << 20, System).unwrap();
    let model = SyncChainAllocator::new_in(4 << 20, System).unwrap();
    let local = arena.local();
    let mut live: Vec<(Block, Layout, usize)> = Vec::new(); // block, layout, model address
    let base = local
        .allocate(Layout::new::<u8>())
        .unwrap()
        .cast::<u8>()
        .as_ptr() as usize;
    let model_base = model
        .allocate(Layout::new::<u8>())
        .unwrap()
        .cast::<u8>()
        .as_ptr() as usize;
    let mut seq = 0u64;
    for op in ops {
        seq += 1;
        match *op {
            Op::Allocate { size, align } => {
                let layout = Layout::from_size_align(size, align).unwrap();
                let block = local.allocate(layout).unwrap();
                let m = model.allocate(layout).unwrap();
                let addr = block.cast::<u8>().as_ptr() as usize;
                assert_eq!(addr % align, 0);
                // SAFETY: fresh block, ours.
                let record = unsafe { fill(block, size, tag(1, seq)) };
                live.push((record, layout, m.cast::<u8>().as_ptr() as usize));
            }
            Op::DeallocateLast => {
                if let Some((b, layout, m)) = live.pop() {
                    // SAFETY: live block of `layout` from each arena.
                    unsafe {
                        local.deallocate(NonNull::new(b.addr as *mut u8).unwrap(), layout);
                        model.deallocate(NonNull::new(m as *mut u8).unwrap(), layout);
                    }
                }
            }
            Op::DeallocateOlder { back } => {
                if live.len() > back {
                    let (b, layout, m) = live.remove(live.len() - 1 - back);
                    // SAFETY: as above.
                    unsafe {
                        local.deallocate(NonNull::new(b.addr as *mut u8).unwrap(), layout);
                        model.deallocate(NonNull::new(m as *mut u8).unwrap(), layout);
                    }
                }
            }
            Op::GrowLast { extra } | Op::ShrinkLast { keep: extra } => {
                let grow = matches!(op, Op::GrowLast { .. });
                if let Some((b, layout, m)) = live.pop() {
                    let size = if grow {
                        b.len + extra
                    } else {
                        extra.min(b.len).max(1)
                    };
                    let new = Layout::from_size_align(size, layout.align()).unwrap();
                    let ptr = NonNull::new(b.addr as *mut u8).unwrap();
                    let mptr = NonNull::new(m as *mut u8).unwrap();
                    // SAFETY: live blocks of `layout`; sizes ordered as grow/shrink require.
                    let (block, mblock) = unsafe {
                        if grow {
                            (
                                local.grow(ptr, layout, new).unwrap(),
                                model.grow(mptr, layout, new).unwrap(),
                            )
                        } else {
                            (
                                local.shrink(ptr, layout, new).unwrap(),
                                model.shrink(mptr, layout, new).unwrap(),
                            )
                        }
                    };
                    let kept = Block {
                        len: b.len.min(size),
                        ..b
                    };
                    let moved = Block {
                        addr: block.cast::<u8>().as_ptr() as usize,
                        ..kept
                    };
                    // SAFETY: the kept prefix was preserved (in place or copied).
                    assert!(unsafe { intact(&moved) });
                    // SAFETY: the block is ours, `size` bytes long.
                    let record = unsafe { fill(block, size, tag(1, seq)) };
                    live.push((record, new, mblock.cast::<u8>().as_ptr() as usize));
                }
            }
        }
        // Same offsets as the model: the handle is transparent for a lone thread.
        if let (true, Some((b, _, m))) = (same_offsets, live.last()) {
            assert_eq!(b.addr - base, m - model_base, "after {op:?}");
        }
        let mut blocks: Vec<Block> = live.iter().map(|(b, _, _)| *b).collect();
        // SAFETY: every block is live.
        assert_eq!(unsafe { verify(&mut blocks) }, Ok(()));
    }
    let handed_out = local.used_bytes();
    drop(local);
    assert!(arena.used_bytes() >= handed_out);
    if same_offsets {
        assert_eq!(arena.used_bytes(), model.used_bytes());
        assert_eq!(arena.reserved_bytes(), model.reserved_bytes());
    }
}

fn config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x10ca1),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_lone_handle_serving_from_its_slab_is_indistinguishable_from_the_arena(
        ops in prop::collection::vec(slab_op(), 1..300),
    ) {
        run_against_model(&ops, true);
    }

    #[test]
    fn a_handle_keeps_blocks_disjoint_aligned_and_intact_whatever_the_sizes(
        ops in prop::collection::vec(op(), 1..200),
    ) {
        run_against_model(&ops, false);
    }
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
