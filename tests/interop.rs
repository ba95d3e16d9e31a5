//! Our allocators under allocator-api2 0.3 and 0.4 (features `allocator-api2-03`,
//! `allocator-api2-04`) and `core::alloc::Allocator` (feature `nightly`, nightly compiler).
//!
//! Run with `cargo test --test interop --features allocator-api2-03,allocator-api2-04` and
//! `cargo +nightly test --test interop --features nightly`.
#![cfg(any(
    feature = "allocator-api2-03",
    feature = "allocator-api2-04",
    feature = "nightly"
))]
#![cfg_attr(feature = "nightly", feature(allocator_api))]

use libdd_alloc::{ChainAllocator, Layout, LinearAllocator, System, VirtualAllocator};

fn linear(size: usize) -> LinearAllocator<System> {
    LinearAllocator::new_in(Layout::from_size_align(size, 64).unwrap(), System).unwrap()
}

#[cfg(feature = "allocator-api2-03")]
mod api03 {
    use super::*;
    use allocator_api2_03::alloc::{AllocError, Allocator};
    use allocator_api2_03::{boxed::Box, vec::Vec};
    use libdd_alloc::Rewind;

    fn allocate_u64s<A: Allocator>(alloc: &A, n: usize) -> Result<usize, AllocError> {
        let block = alloc.allocate(Layout::array::<u64>(n).unwrap())?;
        Ok(block.len())
    }

    #[test]
    fn api03_vec_grows_in_place_in_a_linear_arena() {
        let arena = linear(4096);
        let mut v = Vec::new_in(&arena);
        for i in 0..1000u32 {
            v.push(i);
        }
        assert_eq!(v.iter().map(|&x| x as u64).sum::<u64>(), 999 * 1000 / 2);
        // The Vec is the most recent block, so every doubling grew it in place.
        assert_eq!(arena.used_bytes(), v.capacity() * 4);
    }

    #[test]
    fn api03_box_and_vec_work_in_chain_arenas_and_scopes() {
        let mut arena = ChainAllocator::new_in(1024, System).unwrap();
        let used = arena.used_bytes();
        arena.scope(|scope| {
            let b = Box::new_in([7u8; 3000], &*scope);
            assert!(b.iter().all(|&x| x == 7));
            let mut v = Vec::with_capacity_in(10, &*scope);
            v.extend_from_slice(b"hello");
            assert_eq!(&v[..], b"hello");
        });
        assert_eq!(arena.used_bytes(), used);
    }

    #[test]
    fn api03_errors_map_to_api03_alloc_error() {
        let arena = linear(64);
        assert_eq!(allocate_u64s(&arena, 8), Ok(64));
        assert_eq!(allocate_u64s(&arena, 1), Err(AllocError));
    }

    #[test]
    fn api03_virtual_allocator_hands_out_whole_pages() {
        let page = libdd_alloc::os::page_size().unwrap();
        assert_eq!(allocate_u64s(&VirtualAllocator {}, 10), Ok(page));
        let mut v: Vec<u8, _> = Vec::new_in(VirtualAllocator {});
        v.extend_from_slice(&[1; 10]);
        assert!(v.capacity() >= 10);
        assert_eq!(v.iter().map(|&x| x as usize).sum::<usize>(), 10);
    }
}

#[cfg(feature = "allocator-api2-04")]
mod api04 {
    use super::*;
    use allocator_api2_04::alloc::{AllocError, Allocator};
    use allocator_api2_04::vec::Vec;
    use libdd_alloc::Arena;

    #[test]
    fn api04_vec_in_a_chain_arena_keeps_its_contents() {
        let arena = ChainAllocator::new_in(256, System).unwrap();
        let mut v = Vec::new_in(&arena);
        for i in 0..10_000u64 {
            v.push(i * 3);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
        let s = arena.try_alloc_str("still usable").unwrap();
        assert_eq!(s, "still usable");
    }

    #[test]
    fn api04_errors_map_to_api04_alloc_error() {
        let arena = linear(64);
        let result = Allocator::allocate(&arena, Layout::new::<[u8; 65]>());
        assert_eq!(result, Err(AllocError));
    }
}

#[cfg(feature = "nightly")]
mod core_api {
    use super::*;
    use core::alloc::{AllocError, Allocator};

    #[test]
    fn std_vec_and_box_live_in_our_arenas() {
        let arena = linear(4096);
        let mut v = std::vec::Vec::new_in(&arena);
        v.extend(0..100u32);
        assert_eq!(arena.used_bytes(), v.capacity() * 4);
        let chain = ChainAllocator::new_in(1024, VirtualAllocator {}).unwrap();
        let b = std::boxed::Box::new_in(*b"boxed", &chain);
        assert_eq!(&*b, b"boxed");
    }

    #[test]
    fn core_errors_map_to_core_alloc_error() {
        let arena = linear(64);
        let result = Allocator::allocate(&arena, Layout::new::<[u8; 65]>());
        assert_eq!(result, Err(AllocError));
    }
}
