//! `no_std` bump arenas and page allocators for the places where `malloc` is slow or unsafe:
//! profilers, signal handlers, crash handlers and short-lived per-request data.
//!
//! # What is here, and which to pick
//! | type | memory comes from | when full | use it for |
//! |---|---|---|---|
//! | [`LinearAllocator<A>`] | one buffer from `A` | `Err` | a hard memory budget, prepared ahead of time |
//! | [`ChainAllocator<A>`] | chunks from `A`, linked | takes a new chunk | arenas of unknown final size |
//! | [`VirtualAllocator`] | whole pages from the OS | OS limit | backing the arenas; large blocks |
//!
//! All implement the [`allocator_api2`] [`Allocator`] trait (re-exported here with [`Layout`],
//! [`AllocError`], [`Global`] and, with the `std` feature, [`System`]), so `&arena` works with
//! `allocator_api2::vec::Vec`, `allocator_api2::boxed::Box` and `hashbrown` collections.
//!
//! # Bump allocation, and its trade-offs
//! An arena hands out memory by moving a cursor forward through a chunk: an allocation is a few
//! additions, one comparison and one branch, with no per-allocation header. The price is that
//! individual blocks are not freed: everything goes at once, on [`reset`](LinearAllocator::reset)
//! or drop. The exception is the most recent block, which can be given back, grown or shrunk in
//! place. Destructors of values placed in an arena do not run. Do not use an arena for long-lived
//! data with many independent lifetimes; that is what a general-purpose allocator is for.
//!
//! # Contract
//! - Every failure is `Err(AllocError)`: exhaustion, a backing allocator that fails, sizes near
//!   `isize::MAX`, alignments up to 2^31 that cannot be met. No allocation path panics, aborts,
//!   takes a lock or calls the global allocator (unless the backing allocator `A` does).
//! - Zero-size layouts succeed with a dangling, well-aligned pointer and use no arena bytes.
//! - Statistics (`used_bytes`, `reserved_bytes`, `remaining_capacity`, `has_capacity_for`) are O(1).
//!
//! # Signal safety
//! [`LinearAllocator`] and [`ChainAllocator`] keep their cursor in a `Cell`: they are not
//! reentrant. A signal handler may allocate from an arena only if the code it interrupts never
//! uses that same arena. [`VirtualAllocator`] is async-signal-safe on Linux (raw syscalls, `errno`
//! untouched, cached page size); `System` and `Global` are not (they may take malloc's lock).
//!
//! # Features
//! - `std` (default): [`AllocError`] implements `std::error::Error`, and [`System`] is available
//!   as a backing allocator. Without it the crate uses neither `std` nor `alloc`.
//! - `asan-poison`: under AddressSanitizer, the bytes an arena has not handed out are poisoned,
//!   so an overrun from a block into the rest of its chunk is reported. Only for builds with
//!   `-Zsanitizer=address` (nightly): without the ASan runtime the crate does not link.
#![no_std]
#![cfg_attr(not(test), deny(clippy::panic))]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(not(test), deny(clippy::expect_used))]
#![cfg_attr(not(test), deny(clippy::todo))]
#![cfg_attr(not(test), deny(clippy::unimplemented))]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(test)]
extern crate std;

mod asan;
mod bump;
mod chain;
mod linear;
pub mod os;
mod resize;
mod virtual_alloc;

pub use chain::ChainAllocator;
pub use linear::LinearAllocator;
pub use virtual_alloc::VirtualAllocator;

// The allocator vocabulary, so users need no direct dependency on allocator_api2.
pub use allocator_api2::alloc::*;
