//! Every code block of the spec (`seed-README.md`), compiled and run unchanged.
//!
//! Each block is the body of one function, copied byte for byte; only the function signature,
//! the final `Ok(())` and lint attributes (the blocks bind values they never read) are added.
//! The blocks import `std::alloc::Layout` and `std::alloc::System` and call `allocate` without
//! importing the `Allocator` trait: these tests pin that all of that works with this crate.

#[test]
#[allow(unused_variables)]
fn spec_linear_allocator_example_runs_unchanged() -> Result<(), Box<dyn std::error::Error>> {
    use libdd_alloc::{LinearAllocator, VirtualAllocator};
    use std::alloc::Layout;

    let layout = Layout::from_size_align(4096, 4096)?;
    let allocator = LinearAllocator::new_in(layout, VirtualAllocator::default())?;

    // Allocate from the arena
    let memory = allocator.allocate(Layout::new::<u64>())?;
    Ok(())
}

#[test]
#[allow(unused_variables)]
fn spec_chain_allocator_example_runs_unchanged() -> Result<(), Box<dyn std::error::Error>> {
    use libdd_alloc::ChainAllocator;
    use std::alloc::System;

    let allocator = ChainAllocator::new_in(4096, System)?;
    // Automatically grows as needed
    Ok(())
}

#[test]
#[allow(unused_variables)]
fn spec_virtual_allocator_example_runs_unchanged() -> Result<(), Box<dyn std::error::Error>> {
    use libdd_alloc::VirtualAllocator;

    let allocator = VirtualAllocator::default();
    // Allocates in page-sized chunks
    Ok(())
}

/// The spec's blocks only construct; this checks that what they build really works: the
/// `u64` is aligned and inside the one page of the arena, and the chain hands out memory.
#[test]
fn spec_examples_build_working_allocators() -> Result<(), Box<dyn std::error::Error>> {
    use libdd_alloc::{ChainAllocator, LinearAllocator, VirtualAllocator};
    use std::alloc::{Layout, System};

    let layout = Layout::from_size_align(4096, 4096)?;
    let allocator = LinearAllocator::new_in(layout, VirtualAllocator::default())?;
    let memory = allocator.allocate(Layout::new::<u64>())?;
    assert_eq!(memory.len(), 8);
    assert_eq!(
        memory.cast::<u8>().as_ptr() as usize % 4096,
        0,
        "first block starts the page"
    );
    // SAFETY: the block is 8 bytes, aligned for u64, and ours.
    unsafe { memory.cast::<u64>().write(0x0123_4567_89AB_CDEF) };
    assert_eq!(allocator.used_bytes(), 8);
    assert_eq!(allocator.reserved_bytes(), 4096);

    let chain = ChainAllocator::new_in(4096, System)?;
    let block = chain.allocate(Layout::new::<[u8; 100]>())?;
    assert_eq!(block.len(), 100);
    assert_eq!(chain.reserved_bytes(), 4096);
    Ok(())
}
