//! The three allocators doing real work, with their statistics.
//!
//! Run: `cargo run --release --example demo`

use allocator_api2::vec::Vec;
use libdd_alloc::{
    os, Allocator, ChainAllocator, Layout, LinearAllocator, System, VirtualAllocator,
};
use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let page = os::page_size()?;
    println!("page size: {page} bytes\n");

    // 1. VirtualAllocator: whole pages from the OS, zeroed, no heap involved.
    let pages = VirtualAllocator::default();
    let layout = Layout::from_size_align(3 * page + 1, 8)?;
    let block = pages.allocate(layout)?;
    println!("VirtualAllocator");
    println!(
        "  asked for {} bytes, got {} ({} pages), first byte = {}",
        layout.size(),
        block.len(),
        block.len() / page,
        // SAFETY: the block is at least one byte long, freshly mapped (zeroed).
        unsafe { *block.cast::<u8>().as_ptr() }
    );
    // SAFETY: the block came from `pages` with `layout`.
    unsafe { pages.deallocate(block.cast(), layout) };

    // 2. LinearAllocator: one page-backed buffer, exact packing, in-place growth of the last block.
    let arena = LinearAllocator::new_in(Layout::from_size_align(64 * 1024, page)?, pages)?;
    let mut samples: Vec<u64, _> = Vec::new_in(&arena);
    samples.push(0);
    let mut previous = samples.as_ptr();
    let mut moves = 0;
    for i in 1..4096u64 {
        samples.push(i * i);
        if samples.as_ptr() != previous {
            moves += 1;
            previous = samples.as_ptr();
        }
    }
    let sum: u64 = samples.iter().sum();
    println!("\nLinearAllocator (64 KiB from VirtualAllocator)");
    println!(
        "  pushed 4096 u64 into an arena Vec: sum = {sum}, grown in place: moved {moves} times"
    );
    println!(
        "  used_bytes = {}, reserved_bytes = {}, remaining_capacity = {}",
        arena.used_bytes(),
        arena.reserved_bytes(),
        arena.remaining_capacity()
    );
    drop(samples);

    // 3. ChainAllocator: an arena of unknown final size, for instance a string table.
    let mut table = ChainAllocator::new_in(4096, System)?;
    let mut requested = 0usize;
    let mut names: Vec<&str, System> = Vec::new_in(System);
    for i in 0..10_000 {
        let name = format!("profiler::frame::function_{i}");
        requested += name.len();
        let block = table.allocate(Layout::for_value(name.as_bytes()))?;
        // SAFETY: the block holds `name.len()` bytes and lives as long as `table`'s borrow.
        let text = unsafe {
            let bytes = block.cast::<u8>().as_ptr();
            bytes.copy_from_nonoverlapping(name.as_ptr(), name.len());
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(bytes, name.len()))
        };
        names.push(text);
    }
    println!("\nChainAllocator (4 KiB hint, System backing)");
    println!(
        "  interned {} names, last = {:?}",
        names.len(),
        names.last().copied().unwrap_or_default()
    );
    println!(
        "  bytes requested = {requested}, used_bytes = {}, reserved_bytes = {} ({:.3}x)",
        table.used_bytes(),
        table.reserved_bytes(),
        table.reserved_bytes() as f64 / requested as f64
    );
    drop(names);
    table.reset();
    println!(
        "  after reset: used_bytes = {}, reserved_bytes = {} (largest chunk kept)",
        table.used_bytes(),
        table.reserved_bytes()
    );
    Ok(())
}
