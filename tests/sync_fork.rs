//! Fork: blocks allocated in the parent, then `fork`; the child allocates from the same arena
//! (including growth), verifies its blocks and the parent's, and reports through its exit status.
//! The child uses only the arena and raw syscalls: after `fork` in a threaded process, `malloc`
//! may be locked forever by a thread that does not exist in the child.
#![cfg(unix)] // POSIX only: fork; Windows has no way to copy a process.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::blocks::{fill, intact, mixed_layout, tag, verify, Block};
use common::process::{in_child, Ended};
use libdd_alloc::{Allocator, Layout, SyncChainAllocator, SyncLinearAllocator, VirtualAllocator};

const PARENT_BLOCKS: usize = 10_000;
const CHILD_BLOCKS: usize = 10_000;

/// Exit statuses of the child.
const CHILD_OK: i32 = 0;
const CHILD_ALLOCATION_FAILED: i32 = 10;
const CHILD_PARENT_BLOCK_CHANGED: i32 = 11;
const CHILD_OVERLAP_OR_CORRUPTION: i32 = 12;
const CHILD_DID_NOT_GROW: i32 = 13;

/// Allocates `count` filled blocks of owner `owner` into `out` (which has the capacity).
fn allocate_filled(arena: &impl Allocator, owner: u64, count: usize, out: &mut Vec<Block>) -> bool {
    for seq in 0..count as u64 {
        let layout = mixed_layout(seq ^ owner);
        let Ok(block) = arena.allocate(layout) else {
            return false;
        };
        // SAFETY: fresh block, ours.
        out.push(unsafe { fill(block, layout.size(), tag(owner, seq)) });
    }
    true
}

/// The child's work, allocation-free except from `arena`; returns its exit status.
/// `grows`: the arena takes chunks on demand, and the child allocates enough to make it.
fn child(
    arena: &impl Allocator,
    reserved: impl Fn() -> usize,
    grows: bool,
    parent: &[Block],
    all: &mut Vec<Block>,
) -> i32 {
    let reserved_before = reserved();
    // `all` has capacity for parent and child blocks: pushes do not allocate.
    if !allocate_filled(arena, 2, CHILD_BLOCKS, all) {
        return CHILD_ALLOCATION_FAILED;
    }
    // SAFETY: the parent's blocks live in the child's copy of the arena.
    if !parent.iter().all(|b| unsafe { intact(b) }) {
        return CHILD_PARENT_BLOCK_CHANGED;
    }
    all.extend_from_slice(parent);
    // SAFETY: every block is live in the child.
    if unsafe { verify(all) }.is_err() {
        return CHILD_OVERLAP_OR_CORRUPTION;
    }
    if grows && reserved() == reserved_before {
        return CHILD_DID_NOT_GROW;
    }
    CHILD_OK
}

/// Allocates in the parent, forks, runs `child` in the child, and checks that the parent's
/// blocks are untouched by the child's allocations (copy-on-write) and that the parent can go
/// on allocating.
fn parent_and_child_both_allocate(
    arena: &impl Allocator,
    reserved: impl Fn() -> usize,
    grows: bool,
) {
    let mut parent = Vec::with_capacity(2 * PARENT_BLOCKS);
    assert!(allocate_filled(arena, 1, PARENT_BLOCKS, &mut parent));
    let mut scratch: Vec<Block> = Vec::with_capacity(PARENT_BLOCKS + CHILD_BLOCKS);
    // The child only runs code that does not take locks or allocate from the heap.
    let ended = in_child(|| child(arena, reserved, grows, &parent, &mut scratch));
    assert_eq!(ended, Ended::Exited(CHILD_OK), "child failed: {ended:?}");
    // The parent's arena did not see the child's allocations, and goes on as before.
    assert!(allocate_filled(arena, 3, PARENT_BLOCKS, &mut parent));
    // SAFETY: all of the parent's blocks are live.
    assert_eq!(unsafe { verify(&mut parent) }, Ok(()));
}

#[test]
fn child_allocates_from_a_sync_chain_arena_inherited_from_the_parent() {
    let arena = SyncChainAllocator::new_in(4096, VirtualAllocator {})
        .unwrap()
        .with_max_chunk_size(16 << 10);
    parent_and_child_both_allocate(&arena, || arena.reserved_bytes(), true);
}

#[test]
fn child_allocates_from_a_sync_linear_arena_inherited_from_the_parent() {
    let arena = SyncLinearAllocator::new_in(
        Layout::from_size_align(16 << 20, 4096).unwrap(),
        VirtualAllocator {},
    )
    .unwrap();
    parent_and_child_both_allocate(&arena, || arena.reserved_bytes(), false);
}
