//! `&arena` as the allocator of `allocator_api2::vec::Vec`, `allocator_api2::boxed::Box` and
//! `hashbrown::HashMap`, with 100,000 elements each, for every arena and backing allocator.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use common::layout;
use libdd_alloc::{Allocator, ChainAllocator, LinearAllocator, System, VirtualAllocator};

const N: usize = 100_000;

/// `arena` is used as `&arena`: the form users write.
fn vec_of_n<A: Allocator>(arena: &A) {
    let mut v = Vec::new_in(arena);
    for i in 0..N as u64 {
        v.push(i * 3 + 1);
    }
    assert_eq!(v.len(), N);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3 + 1));
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(&v[..], &[1, 4, 7, 10, 13, 16, 19, 22, 25, 28]);
}

fn boxes_of_n<A: Allocator>(arena: &A) {
    let boxes: std::vec::Vec<Box<u64, &A>> = (0..N as u64)
        .map(|i| Box::new_in(i ^ 0x5555, arena))
        .collect();
    assert!(boxes
        .iter()
        .enumerate()
        .all(|(i, b)| **b == i as u64 ^ 0x5555));
    // Distinct boxes never share memory.
    let mut addrs: std::vec::Vec<usize> =
        boxes.iter().map(|b| &**b as *const u64 as usize).collect();
    addrs.sort_unstable();
    assert!(addrs.windows(2).all(|w| w[1] - w[0] >= 8));
    drop(boxes);
    // A boxed slice of N elements, through Vec::into_boxed_slice (a shrink).
    let mut v = Vec::with_capacity_in(N + 7, arena);
    v.extend((0..N as u32).map(|i| i.wrapping_mul(2_654_435_761)));
    let slice: Box<[u32], &A> = v.into_boxed_slice();
    assert_eq!(slice.len(), N);
    assert!(slice
        .iter()
        .enumerate()
        .all(|(i, &x)| x == (i as u32).wrapping_mul(2_654_435_761)));
}

fn map_of_n<A: Allocator>(arena: &A) {
    let mut map = hashbrown::HashMap::new_in(arena);
    for i in 0..N as u64 {
        assert!(map
            .insert(i, i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .is_none());
    }
    assert_eq!(map.len(), N);
    for i in 0..N as u64 {
        assert_eq!(map.get(&i), Some(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    }
    assert_eq!(
        map.keys().copied().sum::<u64>(),
        (N as u64 - 1) * N as u64 / 2
    );
    for i in (0..N as u64).step_by(2) {
        assert!(map.remove(&i).is_some());
    }
    assert_eq!(map.len(), N / 2);
    assert!(map.keys().all(|k| k % 2 == 1));
}

/// Big enough for every test below with its waste: the map's tables add up to about twice the
/// final one (each resize allocates a new table after the old).
fn linear_system() -> LinearAllocator<System> {
    LinearAllocator::new_in(layout(16 << 20, 16), System).unwrap()
}

fn linear_virtual() -> LinearAllocator<VirtualAllocator> {
    LinearAllocator::new_in(layout(16 << 20, 16), VirtualAllocator {}).unwrap()
}

#[test]
fn vec_of_100_000_in_each_arena_keeps_its_contents() {
    vec_of_n(&linear_system());
    vec_of_n(&linear_virtual());
    vec_of_n(&ChainAllocator::new_in(4096, System).unwrap());
    vec_of_n(&ChainAllocator::new_in(4096, VirtualAllocator {}).unwrap());
}

#[test]
fn boxes_of_100_000_in_each_arena_keep_their_contents() {
    boxes_of_n(&linear_system());
    boxes_of_n(&linear_virtual());
    boxes_of_n(&ChainAllocator::new_in(4096, System).unwrap());
    boxes_of_n(&ChainAllocator::new_in(4096, VirtualAllocator {}).unwrap());
}

#[test]
fn hash_map_of_100_000_in_each_arena_keeps_its_contents() {
    map_of_n(&linear_system());
    map_of_n(&linear_virtual());
    map_of_n(&ChainAllocator::new_in(4096, System).unwrap());
    map_of_n(&ChainAllocator::new_in(4096, VirtualAllocator {}).unwrap());
}

#[test]
fn vec_push_in_linear_allocator_grows_in_place_and_wastes_nothing() {
    fn run<A: Allocator>(arena: LinearAllocator<A>) {
        let mut v: Vec<u64, _> = Vec::new_in(&arena);
        v.push(0);
        let start = v.as_ptr();
        let mut capacities = 1;
        let mut cap = v.capacity();
        for i in 1..N as u64 {
            v.push(i);
            if v.capacity() != cap {
                cap = v.capacity();
                capacities += 1;
                assert_eq!(
                    v.as_ptr(),
                    start,
                    "grow of the last allocation stays in place"
                );
            }
        }
        assert!(
            capacities > 10,
            "the vector really grew ({capacities} capacities)"
        );
        assert_eq!(
            arena.used_bytes(),
            v.capacity() * 8,
            "no block wasted on the way"
        );
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    }
    run(linear_system());
    run(linear_virtual());
}

/// A `Vec` that is the only block of its chunk grows by growing the chunk (the backing
/// allocator's `grow`: `realloc`, or `mremap` for pages), so the arena holds little more than
/// the vector's final capacity.
#[test]
fn vec_push_in_chain_allocator_keeps_reserved_bytes_within_1_3x_of_capacity() {
    fn run<A: Allocator>(arena: ChainAllocator<A>) {
        let mut v: Vec<u64, _> = Vec::new_in(&arena);
        for i in 0..N as u64 {
            v.push(i);
        }
        let capacity_bytes = v.capacity() * 8;
        let reserved = arena.reserved_bytes();
        assert!(
            reserved as f64 <= 1.3 * capacity_bytes as f64,
            "reserved {reserved} bytes for a capacity of {capacity_bytes}"
        );
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    }
    run(ChainAllocator::new_in(4096, System).unwrap());
    run(ChainAllocator::new_in(4096, VirtualAllocator {}).unwrap());
    run(ChainAllocator::new_lazy_in(4096, System));
}

#[test]
fn vec_in_chain_allocator_keeps_contents_when_other_blocks_force_moves() {
    let arena = ChainAllocator::new_in(4096, System).unwrap();
    let mut v: Vec<u32, _> = Vec::new_in(&arena);
    let mut others = std::vec::Vec::new();
    for i in 0..N as u32 {
        v.push(i);
        if i % 1000 == 0 {
            // Another block after the vector: its next grow must move it.
            let b = Box::new_in(i, &arena);
            others.push(b);
        }
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    assert!(others
        .iter()
        .enumerate()
        .all(|(i, b)| **b == i as u32 * 1000));
}
