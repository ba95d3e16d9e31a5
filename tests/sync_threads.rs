//! Many threads allocating from one lock-free arena: every block is filled with a pattern unique
//! to its thread and sequence number and verified afterwards, so that a byte handed out twice, or
//! given back while still in use, shows up as an overlap or as corruption.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::blocks::{fill, intact, mixed_layout, tag, verify, Block};
use common::mapping_order;
use libdd_alloc::{
    AllocError, Allocator, Layout, SyncChainAllocator, SyncLinearAllocator, VirtualAllocator,
};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

const PER_THREAD: u64 = 200_000;

/// `VirtualAllocator` that counts what it hands out and takes back, to prove that a lost publish
/// race returns its chunk and that drop returns everything.
#[derive(Default)]
struct Counting {
    live_bytes: AtomicUsize,
    live_chunks: AtomicUsize,
    allocations: AtomicUsize,
}

// SAFETY: forwards to `VirtualAllocator`, only counting.
unsafe impl Allocator for &Counting {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let block = VirtualAllocator {}.allocate(layout)?;
        mapping_order::mapped();
        self.live_bytes.fetch_add(block.len(), Ordering::Relaxed);
        self.live_chunks.fetch_add(1, Ordering::Relaxed);
        self.allocations.fetch_add(1, Ordering::Relaxed);
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.live_bytes.fetch_sub(layout.size(), Ordering::Relaxed);
        self.live_chunks.fetch_sub(1, Ordering::Relaxed);
        mapping_order::unmapping();
        // SAFETY: forwarded caller contract.
        unsafe { VirtualAllocator {}.deallocate(ptr, layout) };
    }
}

/// One thread's share of the work: mostly plain allocations; every 7th block is grown right
/// after allocation (in place when still last, else by copy); every 11th step allocates a
/// scratch block and gives it straight back (freed in place only if no other thread allocated
/// after it). Returns the blocks that stay allocated, and the end of the highest scratch block.
fn hammer(arena: &impl Allocator, thread: u64) -> (Vec<Block>, usize) {
    let mut blocks = Vec::with_capacity(PER_THREAD as usize);
    let mut scratch_end = 0;
    for seq in 0..PER_THREAD {
        let layout = mixed_layout(seq.wrapping_mul(thread + 1) ^ thread);
        let mut block = arena.allocate(layout).expect("arena has room");
        assert_eq!(block.cast::<u8>().as_ptr() as usize % layout.align(), 0);
        let mut size = layout.size();
        if seq % 7 == 0 {
            let bigger = Layout::from_size_align(size * 2, layout.align()).unwrap();
            // SAFETY: fill the old block so that a copying grow has something to keep.
            let before = unsafe { fill(block, size, tag(thread, seq)) };
            // SAFETY: `block` came from `arena` with `layout`; `bigger` is larger.
            block = unsafe { arena.grow(block.cast(), layout, bigger) }.expect("grow");
            let kept = Block {
                addr: block.cast::<u8>().as_ptr() as usize,
                ..before
            };
            // SAFETY: grow keeps the first `size` bytes.
            assert!(unsafe { intact(&kept) }, "grow lost the contents");
            size = bigger.size();
        }
        if seq % 11 == 0 {
            let scratch = arena.allocate(layout).expect("arena has room");
            scratch_end = scratch_end.max(scratch.cast::<u8>().as_ptr() as usize + layout.size());
            // SAFETY: the scratch block is ours until given back, which happens right here.
            unsafe {
                fill(scratch, layout.size(), u64::MAX);
                arena.deallocate(scratch.cast(), layout);
            }
        }
        // SAFETY: the block is ours, `size` bytes long.
        blocks.push(unsafe { fill(block, size, tag(thread, seq)) });
    }
    (blocks, scratch_end)
}

/// Runs `hammer` on `threads` threads against one arena and verifies every block. Returns the
/// blocks and the end of the highest scratch block any thread gave back.
fn run_threads(arena: &(impl Allocator + Sync), threads: u64) -> (Vec<Block>, usize) {
    let mut scratch_end = 0;
    let mut all: Vec<Block> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || hammer(arena, t)))
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            let (blocks, end) = handle.join().unwrap();
            all.extend(blocks);
            scratch_end = scratch_end.max(end);
        }
        all
    });
    assert_eq!(all.len() as u64, threads * PER_THREAD);
    // SAFETY: every block is live: the arena outlives this function's caller's use.
    assert_eq!(unsafe { verify(&mut all) }, Ok(()));
    (all, scratch_end)
}

fn linear_arena_is_shared_without_overlap(threads: u64) {
    let backing = Counting::default();
    let arena =
        SyncLinearAllocator::new_in(Layout::from_size_align(512 << 20, 4096).unwrap(), &backing)
            .unwrap();
    // The start of the buffer: where the first block of the empty arena goes.
    let probe = arena.allocate(Layout::new::<u8>()).unwrap();
    let start = probe.cast::<u8>().as_ptr() as usize;
    // SAFETY: the most recent (only) block, given back: the arena is empty again.
    unsafe { arena.deallocate(probe.cast(), Layout::new::<u8>()) };
    let (blocks, scratch_end) = run_threads(&arena, threads);
    // Exact accounting: the cursor sits at the end of the last live block, or of a scratch block
    // that another thread's allocation kept from being given back (one that ended the arena when
    // it was freed). Which thread's block comes first in the buffer is up to the race.
    let end = blocks.iter().map(|b| b.addr + b.len).max().unwrap();
    let used = arena.used_bytes();
    assert!(
        used == end - start || (used > end - start && used <= scratch_end - start),
        "used {used} is neither the end of the last block ({}) nor of a kept scratch block (<= {})",
        end - start,
        scratch_end.saturating_sub(start)
    );
    let payload: usize = blocks.iter().map(|b| b.len).sum();
    assert!(arena.used_bytes() >= payload);
    assert_eq!(
        arena.used_bytes() + arena.remaining_capacity(),
        arena.reserved_bytes()
    );
    drop(arena);
    assert_eq!(backing.live_bytes.load(Ordering::Relaxed), 0);
}

fn chain_arena_is_shared_without_overlap_or_leak(threads: u64) {
    let backing = Counting::default();
    {
        // Small chunks: many growth races between threads.
        let arena = SyncChainAllocator::new_in(16 << 10, &backing)
            .unwrap()
            .with_max_chunk_size(64 << 10);
        let (blocks, _) = run_threads(&arena, threads);
        // Nothing leaks: every chunk the backing allocator still holds is one the arena counts,
        // so chunks that lost a publish race went back.
        assert_eq!(
            arena.reserved_bytes(),
            backing.live_bytes.load(Ordering::Relaxed)
        );
        let chunks = backing.live_chunks.load(Ordering::Relaxed);
        let lost = backing.allocations.load(Ordering::Relaxed) - chunks;
        println!("{threads} threads: {chunks} chunks published, {lost} lost a race and went back");
        let payload: usize = blocks.iter().map(|b| b.len).sum();
        let overhead = chunks * SyncChainAllocator::<&Counting>::CHAIN_NODE_OVERHEAD;
        assert!(arena.used_bytes() >= payload + overhead);
        assert_eq!(
            arena.used_bytes() + arena.remaining_capacity(),
            arena.reserved_bytes()
        );
    }
    assert_eq!(backing.live_bytes.load(Ordering::Relaxed), 0);
    assert_eq!(backing.live_chunks.load(Ordering::Relaxed), 0);
}

#[test]
fn two_threads_never_overlap_in_a_sync_linear_arena() {
    linear_arena_is_shared_without_overlap(2);
}

#[test]
fn eight_threads_never_overlap_in_a_sync_linear_arena() {
    linear_arena_is_shared_without_overlap(8);
}

#[test]
fn two_threads_never_overlap_in_a_sync_chain_arena_and_no_chunk_leaks() {
    chain_arena_is_shared_without_overlap_or_leak(2);
}

#[test]
fn eight_threads_never_overlap_in_a_sync_chain_arena_and_no_chunk_leaks() {
    chain_arena_is_shared_without_overlap_or_leak(8);
}
