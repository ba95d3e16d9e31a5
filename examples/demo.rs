//! The three allocators doing real work, with their statistics.
//!
//! Run: `cargo run --release --example demo`

use allocator_api2::vec::Vec;
use libdd_alloc::{
    os, AllocError, Allocator, Arena, ChainAllocator, Layout, LinearAllocator, SyncChainAllocator,
    System, VirtualAllocator, VirtualArena,
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

    // 3. ChainAllocator: an arena of unknown final size, for instance a string table, through the
    //    safe typed API (`Arena::try_alloc_str`).
    let mut table = ChainAllocator::new_in(4096, System)?;
    let mut requested = 0usize;
    let mut names: Vec<&str, System> = Vec::new_in(System);
    for i in 0..10_000 {
        let name = format!("profiler::frame::function_{i}");
        requested += name.len();
        names.push(table.try_alloc_str(&name)?);
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

    // 4. SyncChainAllocator: one arena shared by threads without a lock (signal handlers may
    //    allocate from it too), growing by raw mmap.
    let shared = SyncChainAllocator::new_in(64 * 1024, VirtualAllocator {})?;
    let sums: Result<Vec<u64>, AllocError> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let shared = &shared;
                s.spawn(move || {
                    let mut sum = 0;
                    for i in 0..50_000u64 {
                        sum += *shared.try_alloc(t * 1_000_000 + i)?;
                    }
                    Ok(sum)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(Err(AllocError)))
            .collect()
    });
    println!("\nSyncChainAllocator (64 KiB hint, VirtualAllocator backing), 2 threads");
    println!(
        "  100000 u64 allocated concurrently, per-thread sums = {:?}",
        sums?
    );
    println!(
        "  used_bytes = {}, reserved_bytes = {}",
        shared.used_bytes(),
        shared.reserved_bytes()
    );

    // 5. VirtualArena: 64 GiB of address space reserved (1 GiB on 32-bit), committed only as the
    // cursor gets there.
    let reservation_gib = if cfg!(target_pointer_width = "64") {
        64
    } else {
        1
    };
    let mut big = VirtualArena::new(reservation_gib << 30)?;
    let mut samples: Vec<u64, _> = Vec::new_in(&big);
    samples.extend(0..1_000_000u64);
    let first = samples.as_ptr();
    samples.extend(1_000_000..4_000_000u64);
    println!("\nVirtualArena ({reservation_gib} GiB reserved)");
    println!(
        "  a Vec of {} u64 grew in place: {}",
        samples.len(),
        first == samples.as_ptr()
    );
    println!(
        "  used_bytes = {}, committed_bytes = {}, reservation_bytes = {}",
        big.used_bytes(),
        big.committed_bytes(),
        big.reservation_bytes()
    );
    drop(samples);
    big.reset_and_release();
    println!(
        "  after reset_and_release: used_bytes = {}, committed_bytes = {} (pages given back, range kept)",
        big.used_bytes(),
        big.committed_bytes()
    );
    Ok(())
}
