//! The same calls against this crate and against libdd-alloc 1.0.0 (the `upstream`
//! dev-dependency), side by side: the names exist and behave alike, and the intended
//! differences are pinned as assertions.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::layout;
use libdd_alloc::{
    AllocError, Allocator, ChainAllocator, Layout, LinearAllocator, System, VirtualAllocator,
};

/// A deterministic mix of layouts: sizes 1..=300, alignments 1..=`max_align`.
fn layouts(count: usize, max_align: usize) -> Vec<Layout> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let size = 1 + (state % 300) as usize;
            let align =
                1usize << ((state >> 32) as usize % (max_align.trailing_zeros() as usize + 1));
            layout(size, align)
        })
        .collect()
}

/// Layouts to ask `has_capacity_for` about, aligned at most to `max_align` (padding beyond the
/// buffer's own alignment depends on where each buffer happens to be).
fn probes(max_align: usize) -> Vec<Layout> {
    let all = vec![
        layout(1, 1),
        layout(8, 8),
        layout(64, 64),
        layout(100, 4),
        layout(1000, 16),
        layout(4096, 4096),
    ];
    all.into_iter().filter(|l| l.align() <= max_align).collect()
}

/// Allocates `sequence` from both arenas (created over buffers with the same alignment) until
/// both fail, comparing every statistic, every offset and every `has_capacity_for` answer.
fn same_packing<A: Allocator, B: Allocator>(
    ours: &LinearAllocator<A>,
    theirs: &upstream::LinearAllocator<B>,
    sequence: &[Layout],
    max_align: usize,
) -> usize {
    assert_eq!(ours.reserved_bytes(), theirs.reserved_bytes());
    let mut base: Option<(usize, usize)> = None;
    let mut failures = 0;
    for (step, &l) in sequence.iter().enumerate() {
        for probe in probes(max_align) {
            assert_eq!(
                ours.has_capacity_for(probe),
                theirs.has_capacity_for(probe),
                "step {step} probe {probe:?}"
            );
        }
        let (a, b) = (ours.allocate(l), theirs.allocate(l));
        assert_eq!(a.is_ok(), b.is_ok(), "step {step} {l:?}");
        if let (Ok(a), Ok(b)) = (a, b) {
            assert_eq!(a.len(), b.len());
            let (a, b) = (common::addr(a), common::addr(b));
            let (base_a, base_b) = *base.get_or_insert((a, b));
            assert_eq!(
                a - base_a,
                b - base_b,
                "step {step}: same offset from the first block"
            );
        } else {
            failures += 1;
        }
        assert_eq!(ours.used_bytes(), theirs.used_bytes(), "step {step}");
        assert_eq!(ours.reserved_bytes(), theirs.reserved_bytes());
        assert_eq!(
            ours.remaining_capacity(),
            theirs.remaining_capacity(),
            "step {step}"
        );
    }
    failures
}

#[test]
fn linear_allocator_packs_exactly_like_upstream_over_system() {
    let buffer = layout(20_000, 16);
    let ours = LinearAllocator::new_in(buffer, System).unwrap();
    let theirs = upstream::LinearAllocator::new_in(buffer, upstream::System).unwrap();
    let failures = same_packing(&ours, &theirs, &layouts(300, 16), 16);
    assert!(failures > 0, "the sequence reaches exhaustion");
}

#[test]
fn linear_allocator_packs_exactly_like_upstream_over_pages() {
    let buffer = layout(64 * 1024, 4096);
    let ours = LinearAllocator::new_in(buffer, VirtualAllocator {}).unwrap();
    let theirs = upstream::LinearAllocator::new_in(buffer, upstream::VirtualAllocator {}).unwrap();
    let failures = same_packing(&ours, &theirs, &layouts(1000, 4096), 4096);
    assert!(failures > 0, "the sequence reaches exhaustion");
}

#[test]
fn virtual_allocator_rounds_to_the_same_pages_as_upstream() {
    let page = libdd_alloc::os::page_size().unwrap();
    assert_eq!(upstream::os::page_size().unwrap(), page);
    let (ours, theirs) = (VirtualAllocator {}, upstream::VirtualAllocator {});
    for size in [
        1,
        7,
        page - 1,
        page,
        page + 1,
        3 * page,
        10 * page + 17,
        1 << 20,
    ] {
        for align in [1, 8, 64, page] {
            let l = layout(size, align);
            let (a, b) = (ours.allocate(l).unwrap(), theirs.allocate(l).unwrap());
            assert_eq!(a.len(), b.len(), "{l:?}");
            assert_eq!(a.len() % page, 0);
            // SAFETY: each block goes back to the allocator that made it, with its layout.
            unsafe {
                ours.deallocate(a.cast(), l);
                theirs.deallocate(b.cast(), l);
            }
        }
    }
}

#[test]
fn virtual_allocator_is_built_like_upstream_and_also_by_default() {
    let literal = VirtualAllocator {};
    let default = VirtualAllocator::default();
    assert_eq!(literal, default);
    let _theirs = upstream::VirtualAllocator {};
    assert_eq!(format!("{literal:?}"), format!("{_theirs:?}"));
    fn traits<T: Clone + Copy + Default + std::fmt::Debug + Send + Sync>() {}
    traits::<VirtualAllocator>();
    // `LinearAllocator::new_in(layout, VirtualAllocator {})` reads the same in both crates.
    let ours = LinearAllocator::new_in(layout(4096, 4096), VirtualAllocator {}).unwrap();
    let theirs =
        upstream::LinearAllocator::new_in(layout(4096, 4096), upstream::VirtualAllocator {})
            .unwrap();
    assert_eq!(ours.reserved_bytes(), theirs.reserved_bytes());
}

#[test]
fn difference_zero_size_layouts_succeed_here_and_fail_upstream() {
    let ours = LinearAllocator::new_in(layout(64, 8), System).unwrap();
    let theirs = upstream::LinearAllocator::new_in(layout(64, 8), upstream::System).unwrap();
    let zero = layout(0, 8);
    assert_eq!(ours.allocate(zero).unwrap().len(), 0);
    assert_eq!(theirs.allocate(zero), Err(AllocError));
    assert_eq!(VirtualAllocator {}.allocate(zero).unwrap().len(), 0);
    assert_eq!(
        upstream::VirtualAllocator {}.allocate(zero),
        Err(AllocError)
    );
    let chain = ChainAllocator::new_in(4096, System).unwrap();
    assert_eq!(chain.allocate(zero).unwrap().len(), 0);
    assert_eq!(
        upstream::ChainAllocator::new_in(4096, upstream::System).allocate(zero),
        Err(AllocError)
    );
    assert_eq!(ours.used_bytes(), theirs.used_bytes());
}

#[test]
fn difference_deallocating_the_last_block_gives_its_bytes_back_here_only() {
    let ours = LinearAllocator::new_in(layout(64, 8), System).unwrap();
    let theirs = upstream::LinearAllocator::new_in(layout(64, 8), upstream::System).unwrap();
    let l = layout(16, 8);
    let (a, b) = (ours.allocate(l).unwrap(), theirs.allocate(l).unwrap());
    // SAFETY: each block goes back to the arena that made it.
    unsafe {
        ours.deallocate(a.cast(), l);
        theirs.deallocate(b.cast(), l);
    }
    assert_eq!(ours.used_bytes(), 0);
    assert_eq!(theirs.used_bytes(), 16);
}

#[test]
fn difference_chain_new_in_returns_a_result_and_allocates_its_first_chunk() {
    let ours: Result<ChainAllocator<System>, AllocError> = ChainAllocator::new_in(4096, System);
    let theirs: upstream::ChainAllocator<System> =
        upstream::ChainAllocator::new_in(4096, upstream::System);
    let ours = ours.unwrap();
    assert_eq!(ours.reserved_bytes(), 4096);
    assert_eq!(
        theirs.reserved_bytes(),
        0,
        "upstream takes its first chunk lazily"
    );
    // `new_lazy_in` is the `const`, lazy constructor of upstream's `new_in`.
    std::thread_local! {
        static LAZY: ChainAllocator<System> = const { ChainAllocator::new_lazy_in(4096, System) };
    }
    LAZY.with(|lazy| {
        assert_eq!((lazy.used_bytes(), lazy.reserved_bytes()), (0, 0));
        assert_eq!(lazy.allocate(layout(8, 8)).unwrap().len(), 8);
        assert_eq!(lazy.reserved_bytes(), 4096);
    });
    let lazy = ChainAllocator::new_lazy_in(4096, System);
    assert_eq!(
        (
            lazy.used_bytes(),
            lazy.reserved_bytes(),
            lazy.remaining_capacity()
        ),
        (0, 0, 0)
    );
    assert_eq!((theirs.used_bytes(), theirs.remaining_capacity()), (0, 0));
    assert!(!lazy.has_capacity_for(layout(1, 1)));
    assert!(!theirs.has_capacity_for(layout(1, 1)));
}

#[test]
fn difference_chain_node_overhead_is_fixed_here_and_depends_on_the_allocator_upstream() {
    let ours = ChainAllocator::<System>::CHAIN_NODE_OVERHEAD;
    assert_eq!(
        ours,
        ChainAllocator::<VirtualAllocator>::CHAIN_NODE_OVERHEAD
    );
    assert_eq!(ours, 4 * size_of::<usize>()); // 32 bytes, 16 on 32-bit
                                              // Upstream's node holds a whole LinearAllocator<A>.
    assert_eq!(
        upstream::ChainAllocator::<System>::CHAIN_NODE_OVERHEAD,
        5 * size_of::<usize>()
    );
}

/// With chunks bounded to the hint, the chain takes fixed-size chunks as upstream does: the same
/// number of the same size, so `reserved_bytes` agrees; `used_bytes` differs by the smaller
/// header of the newest chunk.
#[test]
fn chain_with_max_chunk_size_equal_to_the_hint_reserves_like_upstream() {
    let ours = ChainAllocator::new_lazy_in(4096, System).with_max_chunk_size(4096);
    let theirs = upstream::ChainAllocator::new_in(4096, upstream::System);
    // The blocks are 8-aligned, so each header counts rounded up to 8 (upstream's is 20 bytes on
    // 32-bit).
    let header_difference = upstream::ChainAllocator::<System>::CHAIN_NODE_OVERHEAD
        .next_multiple_of(8)
        - ChainAllocator::<System>::CHAIN_NODE_OVERHEAD.next_multiple_of(8);
    for step in 0..200 {
        let l = layout(1000, 8);
        ours.allocate(l).unwrap();
        theirs.allocate(l).unwrap();
        assert_eq!(
            ours.reserved_bytes(),
            theirs.reserved_bytes(),
            "step {step}"
        );
        assert_eq!(
            ours.used_bytes() + header_difference,
            theirs.used_bytes(),
            "step {step}"
        );
        assert_eq!(
            ours.remaining_capacity(),
            theirs.remaining_capacity() + header_difference,
            "step {step}"
        );
    }
    assert_eq!(ours.reserved_bytes(), 50 * 4096);
}

#[test]
fn chain_new_capped_in_with_max_equal_to_initial_reserves_like_upstream_new_in() {
    // The next release's constructor, as its `new_in` calls it: fixed chunks, 1.0's sizing.
    let ours = const { ChainAllocator::new_capped_in(4096, 4096, System) };
    let theirs = upstream::ChainAllocator::new_in(4096, upstream::System);
    assert_eq!(ours.reserved_bytes(), 0, "lazy, as upstream");
    for step in 0..200 {
        ours.allocate(layout(1000, 8)).unwrap();
        theirs.allocate(layout(1000, 8)).unwrap();
        assert_eq!(
            ours.reserved_bytes(),
            theirs.reserved_bytes(),
            "step {step}"
        );
    }
    assert_eq!(ours.reserved_bytes(), 50 * 4096);
}

#[test]
fn difference_chain_chunks_grow_geometrically_by_default() {
    let ours = ChainAllocator::new_lazy_in(4096, System);
    let theirs = upstream::ChainAllocator::new_in(4096, upstream::System);
    for _ in 0..200 {
        ours.allocate(layout(1000, 8)).unwrap();
        theirs.allocate(layout(1000, 8)).unwrap();
    }
    // Upstream: 50 chunks of 4096. Here: 4096 + 8192 + ... + 131072 = 258_048 bytes, 6 chunks.
    assert_eq!(theirs.reserved_bytes(), 50 * 4096);
    assert_eq!(ours.reserved_bytes(), 4096 * 63);
}

#[test]
fn difference_virtual_allocator_honours_alignment_above_a_page() {
    let page = libdd_alloc::os::page_size().unwrap();
    let l = layout(page, 4 * page);
    assert_eq!(upstream::VirtualAllocator {}.allocate(l), Err(AllocError));
    let block = VirtualAllocator {}.allocate(l).unwrap();
    assert_eq!(common::addr(block) % (4 * page), 0);
    // SAFETY: the block came from a VirtualAllocator with `l`.
    unsafe { VirtualAllocator {}.deallocate(block.cast(), l) };
}

mod send {
    use super::*;

    trait AmbiguousIfSend<Marker> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}

    const fn assert_send<T: Send>() {}

    /// A backing allocator that must not leave its thread.
    #[derive(Clone)]
    struct ThreadBound(#[allow(dead_code)] std::rc::Rc<()>);
    // SAFETY: forwards to System.
    unsafe impl Allocator for ThreadBound {
        fn allocate(&self, l: Layout) -> Result<std::ptr::NonNull<[u8]>, AllocError> {
            System.allocate(l)
        }
        unsafe fn deallocate(&self, ptr: std::ptr::NonNull<u8>, l: Layout) {
            // SAFETY: forwarded caller contract.
            unsafe { System.deallocate(ptr, l) }
        }
    }

    /// Upstream is `Send` whatever the backing allocator (unsound for `ThreadBound`); here only
    /// when the backing allocator is.
    #[allow(dead_code)]
    fn difference_arenas_are_send_only_with_a_send_backing_allocator() {
        const _: () = {
            assert_send::<upstream::LinearAllocator<ThreadBound>>();
            assert_send::<upstream::ChainAllocator<ThreadBound>>();
            assert_send::<LinearAllocator<System>>();
            assert_send::<ChainAllocator<System>>();
        };
        let _ = <LinearAllocator<ThreadBound> as AmbiguousIfSend<_>>::some_item;
        let _ = <ChainAllocator<ThreadBound> as AmbiguousIfSend<_>>::some_item;
    }

    #[test]
    fn thread_bound_backing_allocator_works_in_both() {
        let ours = ChainAllocator::new_in(4096, ThreadBound(Default::default())).unwrap();
        let theirs = upstream::ChainAllocator::new_in(4096, ThreadBound(Default::default()));
        assert_eq!(ours.allocate(layout(8, 8)).unwrap().len(), 8);
        assert_eq!(theirs.allocate(layout(8, 8)).unwrap().len(), 8);
    }
}

/// Every public name of libdd-alloc 1.0.0 exists here with the same shape (as function
/// pointers, so a changed signature fails to compile), except `ChainAllocator::new_in`, which
/// returns a `Result` here.
#[test]
fn every_public_name_of_upstream_exists_here() {
    type L<A> = LinearAllocator<A>;
    type C<A> = ChainAllocator<A>;
    let _: fn(Layout, System) -> Result<L<System>, AllocError> = L::<System>::new_in;
    let _: fn(Layout, System) -> Result<upstream::LinearAllocator<System>, AllocError> =
        upstream::LinearAllocator::<System>::new_in;
    let _: [fn(&L<System>) -> usize; 3] = [L::used_bytes, L::reserved_bytes, L::remaining_capacity];
    let _: [fn(&upstream::LinearAllocator<System>) -> usize; 3] = [
        upstream::LinearAllocator::used_bytes,
        upstream::LinearAllocator::reserved_bytes,
        upstream::LinearAllocator::remaining_capacity,
    ];
    let _: fn(&L<System>, Layout) -> bool = L::has_capacity_for;
    let _: fn(&upstream::LinearAllocator<System>, Layout) -> bool =
        upstream::LinearAllocator::has_capacity_for;
    let _: [fn(&C<System>) -> usize; 3] = [C::used_bytes, C::reserved_bytes, C::remaining_capacity];
    let _: [fn(&upstream::ChainAllocator<System>) -> usize; 3] = [
        upstream::ChainAllocator::used_bytes,
        upstream::ChainAllocator::reserved_bytes,
        upstream::ChainAllocator::remaining_capacity,
    ];
    let _: fn(&C<System>, Layout) -> bool = C::has_capacity_for;
    let _: fn(&upstream::ChainAllocator<System>, Layout) -> bool =
        upstream::ChainAllocator::has_capacity_for;
    let _: fn(usize, System) -> Result<C<System>, AllocError> = C::new_in;
    let _: fn(usize, System) -> upstream::ChainAllocator<System> = upstream::ChainAllocator::new_in;
    let _: usize =
        C::<System>::CHAIN_NODE_OVERHEAD + upstream::ChainAllocator::<System>::CHAIN_NODE_OVERHEAD;
    let _: fn() -> Result<usize, AllocError> = libdd_alloc::os::page_size;
    let _: fn() -> Result<usize, AllocError> = upstream::os::page_size;
    // The re-exported allocator vocabulary is the very same types.
    let _: libdd_alloc::Global = upstream::Global;
    let _: libdd_alloc::System = upstream::System;
    let _: libdd_alloc::AllocError = upstream::AllocError;
    let _: libdd_alloc::Layout = upstream::Layout::new::<u8>();
    fn same_trait<A: libdd_alloc::Allocator + upstream::Allocator>() {}
    same_trait::<VirtualAllocator>();
    same_trait::<upstream::VirtualAllocator>();
}
