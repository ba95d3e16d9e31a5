//! Helpers shared by the integration tests, one file per concept. Each test binary declares
//! `#[allow(dead_code)] mod common;` (it uses a subset):
//! - [`counting`]: backing allocators that count calls and live bytes and fail on demand, and a
//!   counting global allocator;
//! - [`fill`]: byte patterns that prove blocks do not overlap; [`blocks`]: tagged blocks for the
//!   lock-free arenas, checked without touching the heap;
//! - [`slots`]: what signal handlers record (their blocks, runs, failures), heap-free;
//! - [`scripted`]: a backing allocator that fails, panics or re-enters its arena at a chosen
//!   call, and catches double frees;
//! - [`placement`]: a backing allocator that starts every block on a page, so a workload makes
//!   the same backing calls whatever else the heap holds;
//! - [`process`]: forked children, resource limits, `/proc/self/statm`, valgrind detection;
//! - [`vm`]: pages, residency and unmapped ranges;
//! - [`rustc`]: the compiler release that compile-fail snapshots are pinned to;
//! - [`single_step`]: a signal handler at every instruction boundary, by the trap flag;
//! - [`mapping_order`]: raw maps and unmaps made visible to ThreadSanitizer.

use libdd_alloc::{
    Allocator, ChainAllocator, Layout, LinearAllocator, SyncChainAllocator, SyncLinearAllocator,
    SyncVirtualArena, VirtualArena,
};
use std::ptr::NonNull;

pub mod blocks;
pub mod counting;
pub mod fill;
#[cfg(any(unix, windows))]
pub mod mapping_order;
pub mod placement;
pub mod process;
pub mod rustc;
pub mod scripted;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod single_step;
pub mod slots;
#[cfg(any(unix, windows))]
pub mod vm;

pub fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

pub fn addr(block: NonNull<[u8]>) -> usize {
    block.cast::<u8>().as_ptr() as usize
}

/// The statistics every arena has, for tests generic over arenas.
pub trait Stats {
    fn used(&self) -> usize;
    fn reserved(&self) -> usize;
}

macro_rules! stats {
    ($([$($generics:tt)*] $ty:ty),* $(,)?) => {$(
        impl<$($generics)*> Stats for $ty {
            fn used(&self) -> usize {
                self.used_bytes()
            }
            fn reserved(&self) -> usize {
                self.reserved_bytes()
            }
        }
    )*};
}
stats!(
    [A: Allocator] LinearAllocator<A>,
    [A: Allocator] ChainAllocator<A>,
    [] VirtualArena,
    [A: Allocator] SyncLinearAllocator<A>,
    [A: Allocator] SyncChainAllocator<A>,
    [] SyncVirtualArena,
);

/// How many cases a property test runs: `PROPTEST_CASES` when set (the emulated and instrumented
/// CI runs, scripts/test-aarch64.sh, test-windows.sh, careful.sh and asan.sh, set it lower),
/// else `default`, what the main x86_64 run uses. Proptest reads the variable only for a
/// `Config` that leaves `cases` at its default.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}
