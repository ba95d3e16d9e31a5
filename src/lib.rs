//! `no_std` bump arenas and page allocators for the places where `malloc` is slow or unsafe:
//! profilers, signal handlers, crash handlers and short-lived per-request data.
//!
//! # What is here, and which to pick
//! | type | memory comes from | when full | use it for |
//! |---|---|---|---|
//! | [`LinearAllocator<A>`] | one buffer from `A` | `Err` | a hard memory budget, prepared ahead of time |
//! | [`ChainAllocator<A>`] | chunks from `A`, linked | takes a new chunk | arenas of unknown final size |
//! | [`VirtualAllocator`] | whole pages from the OS | OS limit | backing the arenas; large blocks |
//! | [`PageAllocator`] | pages mapped as [`PageOptions`] say | OS limit | prefaulted, locked, guarded or huge pages |
//! | [`VirtualArena`] | one reserved address range, committed in steps | `Err` at the reservation | one contiguous, growable arena |
//! | [`SyncLinearAllocator<A>`] | as `LinearAllocator`, lock-free | `Err` | threads, signal handlers |
//! | [`SyncChainAllocator<A>`] | as `ChainAllocator`, lock-free | publishes a new chunk | threads, signal handlers |
//! | [`SyncVirtualArena`] | as `VirtualArena`, lock-free | `Err` at the reservation | a large contiguous region for threads or a crash handler |
//! | [`LocalHandle`] | slabs of a `Sync*` arena, from its `local()` | claims another slab | one thread's allocations at `Cell` speed, still signal-reentrant |
//! | [`LinearAllocator<Borrowed<'a>>`](arena::Linear::from_buffer), `SyncLinearAllocator<Borrowed<'a>>` | a buffer the caller owns (`&'a mut [MaybeUninit<u8>]`) | `Err` | a stack array, shared memory; no OS needed |
//! | [`static_arena!`] | a `static` buffer in `.bss` (a `SyncLinearAllocator<Borrowed<'static>>`) | `Err` | a signal or crash handler with no set-up and no system call; bare metal |
//! | [`Divert<G, T>`](Divert) | a `#[global_allocator]`: `G` (`System`), or the arena `T` while diverted | as `G`; null from a full arena | std's `Vec`, `String`, `format!` in a signal handler or a `fork` child |
//!
//! All implement the [`allocator_api2`] [`Allocator`] trait, so `&arena` works with
//! `allocator_api2::vec::Vec`, `allocator_api2::boxed::Box` and `hashbrown` collections.
//! This crate re-exports `allocator_api2::alloc::*`, as libdd-alloc 1.0 did:
//! - always: [`Allocator`], [`AllocError`], [`Layout`], [`LayoutError`] and [`GlobalAlloc`];
//! - with the `std` feature (the default), which turns on allocator-api2's `std`: also
//!   [`Global`], [`System`] and the free functions `alloc`, `alloc_zeroed`, `dealloc`,
//!   `realloc` and `handle_alloc_error`. Without `std` the crate links no `alloc`, so `Global`
//!   and the free functions are missing (unless another crate in the build turns on
//!   allocator-api2's `alloc` feature, which adds them), and `System` is missing.
//!
//! # Typed allocation, checkpoints and scopes
//! The [`Arena`] trait (implemented by every arena) adds safe, fallible typed allocation on top of
//! [`Allocator`]: [`try_alloc`](Arena::try_alloc), [`try_alloc_str`](Arena::try_alloc_str),
//! [`try_alloc_slice_copy`](Arena::try_alloc_slice_copy) and friends return references that
//! borrow the arena, so `reset` cannot run while they live. [`Rewind`] rolls an arena back to a
//! [`Checkpoint`] in O(1), and [`Rewind::scope`] does it around a closure whose allocations
//! cannot escape it. Destructors of arena values do not run.
//!
//! # Strings, formatting and memory budgets
//! [`ArenaString`] is a fallible, growable UTF-8 string on any allocator that grows in place on
//! these arenas and freezes into a `&str` borrowing the arena; [`format_in!`] formats into an
//! arena with no heap and no panic (widths and precisions are literals), for crash reports and
//! signal handlers. A [`Budget`] caps the
//! bytes that one or several arenas take from their backing allocator: build each arena on a
//! [`Budgeted`] backing allocator that shares it, and the virtual arenas, which commit pages
//! themselves, with [`VirtualArena::new_with_budget`] / [`SyncVirtualArena::new_with_budget`].
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
//! - A backing allocator `A` is user code: it may fail, panic, or call back into the arena it
//!   backs (to log an allocation, say). A re-entrant call gets memory that stays valid, or
//!   `Err`; a panic out of `A` leaves the arena consistent and usable, leaking at worst the
//!   chunk `A` was handling, never freeing twice or leaving a dangling block. The arena updates
//!   its bookkeeping before each call into `A`; tests/fault_injection.rs fails, panics and
//!   re-enters at every backing call of a workload, for every arena that takes an `A`.
//! - Zero-size layouts succeed with a dangling, well-aligned pointer and use no arena bytes.
//! - Statistics (`used_bytes`, `reserved_bytes`, `remaining_capacity`, `has_capacity_for`) are O(1).
//!
//! # Why a safe `reset(&mut self)` next to `Allocator` is sound
//! Every arena here implements [`Allocator`] for itself, owned, and also frees all its blocks
//! at once from safe code: `reset`, [`Rewind::rewind`], `reset_and_release`, and drop. `&mut
//! self` proves that nothing *borrows* the arena, not that every block was given back: blocks
//! from [`Allocator::allocate`] are raw pointers. So could a container that owns an arena as its
//! allocator (`allocator_api2::vec::Vec<T, ChainAllocator<A>>`) have its buffer freed by a
//! `reset` from safe code?
//!
//! Only if the container hands out `&mut` to its allocator while it holds blocks, and such a
//! container is unsound with *any* allocator that owns its memory: with `&mut A`, safe code can
//! `core::mem::replace` the allocator by another one and drop the original, which frees every
//! block (an arena returns its chunks, a pool its pages). `reset` does nothing that `replace`
//! and drop do not already do. Keeping blocks valid while they are allocated is the container's
//! side of the unsafe [`Allocator`] contract, so a sound container never exposes `&mut A`: the
//! collections of allocator-api2 and hashbrown, and std's, give out only `&A`
//! (`Vec::allocator(&self) -> &A`). bump-scope's `Bump` and blink-alloc's `BlinkAlloc` make the
//! same choice: `Allocator` for the owned arena, and a safe `reset(&mut self)`.
//!
//! Safe code never runs into this: the references the [`Arena`] methods return borrow the
//! arena, so the borrow checker forbids `reset` or `rewind` while one lives, and a block from
//! [`Allocator::allocate`] can only be used through `unsafe` code, whose author takes on the
//! contract.
//!
//! # Signal safety
//! [`LinearAllocator`] and [`ChainAllocator`] keep their cursor in a `Cell`: they are not
//! reentrant. A signal handler may allocate from an arena only if the code it interrupts never
//! uses that same arena. [`VirtualAllocator`] is async-signal-safe on Linux (raw syscalls, `errno`
//! untouched, no libc call: the page size is cached, and even its first read is raw syscalls,
//! except on 32-bit x86, see [`os::page_size`]); `System` and `Global` are not (they may take
//! malloc's lock).
//! [`PageAllocator`] is as safe as `VirtualAllocator`; [`VirtualArena`] is a `Cell` arena like
//! `LinearAllocator`, whose commit step is one raw `mprotect`.
//!
//! # Virtual memory
//! [`PageAllocator`] maps pages prefaulted, locked, fenced by guard pages or backed by huge
//! pages, for memory a crash handler must be able to rely on. [`VirtualArena`] reserves a large
//! address range once and commits it in steps, so a refused commit is an `Err` at a known point
//! rather than a fault on first touch, and can give its pages back while keeping the range.
//!
//! [`SyncLinearAllocator`] and [`SyncChainAllocator`] are reentrant: their cursors move by
//! compare-exchange, with no lock, so a handler may allocate from the very arena the code it
//! interrupted was allocating from. Backed by [`VirtualAllocator`], `SyncChainAllocator` grows
//! with raw syscalls and stays async-signal-safe: one `mmap`, plus up to two `munmap`s that trim
//! it when the chunk must be aligned past a page, plus one `munmap` of a chunk that lost the race
//! to publish; see each type's `# Signal safety` section.
//! [`SyncVirtualArena`] is the reentrant `VirtualArena`: it commits before it hands out, with
//! one raw `mprotect` and no lock, so a crash handler can bump through one large contiguous
//! region even while the code it interrupted was allocating from it.
//!
//! [`Divert`] brings std's own collections to those places: a global allocator that forwards
//! to `System` (or any [`GlobalAlloc`]) until a handler diverts its thread
//! ([`Divert::divert_thread`], a guard) or a `fork` child the whole process
//! ([`Divert::divert_process`]) to a lock-free arena prepared before; while diverted, no path
//! calls `System`, so `format!` cannot deadlock on the malloc lock. When nothing is diverted it
//! adds one relaxed load and a predictable branch to each call.
//!
//! A thread that allocates a lot from a shared arena takes a [`LocalHandle`] with `local()`:
//! it bumps inside a slab of the arena with plain loads and stores (no locked instruction), and
//! a signal handler that interrupts it and allocates from the same handle is still handed a
//! disjoint block (its `# Signal safety` section has the argument).
//!
//! Values that own resources go in through [`DropArena::try_alloc_owned`]: the arena runs their
//! destructors when it reclaims their bytes (`reset`, `rewind`, a scope's end, drop), newest
//! first, and plain allocations pay nothing for it (`src/drops.rs` has the protocol).
//!
//! # Design: one arena per kind, generic over its cursor
//! `bump.rs` is the one piece of bump arithmetic (align, fit, resize the last block). A
//! *cursor* (`src/cursor/`) is how an arena's first free address moves: [`arena::CellCursor`]
//! with plain loads and stores for one thread, [`arena::AtomicCursor`] by compare-exchange for
//! threads and signal handlers. Each protocol on a cursor (claim a block, give the last block
//! back, resize it in place) is written once, in the compare-exchange form that is correct when
//! others move the cursor too; the `Cell` cursor's exchange is a store that always succeeds, so
//! its loops run once and compile to the plain `Cell` code. Each arena kind is then written once
//! over the [`arena::Cursor`] trait (`src/arena/`, one file per kind): [`arena::Linear`] is both
//! [`LinearAllocator`] and [`SyncLinearAllocator`], [`arena::Chain`] both [`ChainAllocator`]
//! and [`SyncChainAllocator`], [`arena::Virtual`] both [`VirtualArena`] and
//! [`SyncVirtualArena`]; the public names are type aliases with their own docs pages. The chain
//! publishes a new chunk by compare-exchange of its newest-chunk pointer, the loser trying the
//! winner's chunk and then giving its own back or stacking it above; the virtual arena commits,
//! publishes the frontier with `fetch_max`, then claims below it. For the `Cell` arenas these
//! are plain loads and stores (a real comparison where a re-entrant backing allocator could
//! have moved the word). Where the two really differ, the difference lives beside the cursor,
//! not in a copy of the arena: only the `Cell` cursor poisons free bytes for ASan and only the
//! atomic one can be stale ([`arena::Cursor`]); the chain's [`arena::ChainCursor`] says where
//! the cursor that allocation bumps lives (inline in the arena for `Cell`, one load fewer; in the
//! newest chunk's header for atomic, since a thread that loaded an older chunk still bumps it),
//! and lets only the `Cell` chain grow a chunk through its backing allocator. `resize.rs`
//! writes `grow`, `grow_zeroed` and `shrink` once: its `forward_resize!` is the whole of those
//! three methods in every arena's `Allocator` impl (linear, chain, virtual, handle), the `Cell`
//! chain's growth of a chunk through its backing allocator behind the `LastBlock` hook
//! `grow_elsewhere_in_place`; `os/` is the only code that
//! talks to the OS, `divert.rs` is the global allocator that puts a lock-free arena (told by
//! its fixed address range) under std's collections, and `sync/` holds what is lock-free only: the [`LocalHandle`] and the
//! atomics that loom swaps out.
//! `page_blocks.rs` is the one `Allocator` implementation of [`VirtualAllocator`] and
//! [`PageAllocator`]: each says only how it maps, measures and unmaps a block.
//!
//! # Memory the caller owns
//! [`Linear::from_buffer`](arena::Linear::from_buffer) builds a [`LinearAllocator`] or
//! [`SyncLinearAllocator`] over a `&'a mut [MaybeUninit<u8>]`: the backing allocator is
//! [`Borrowed<'a>`](Borrowed), which hands out nothing and frees nothing, and whose lifetime keeps
//! the buffer borrowed while the arena lives. [`static_arena!`] declares a `static` lock-free arena
//! over a buffer of its own, built by a `const` initialiser: nothing runs at start-up or on first
//! use, and no system call is ever made, so a signal or crash handler can use it from the first
//! instruction of the program, on any platform.
//!
//! # Platforms
//! The crate is `no_std` and builds for any target `core` supports; what exists depends on two
//! properties of the target:
//!
//! | needs | types | where it is missing |
//! |---|---|---|
//! | nothing | [`LinearAllocator`], [`ChainAllocator`], [`Borrowed`], [`ArenaString`], [`format_in!`], [`Arena`], [`Rewind`], [`arena::CellCursor`] | — |
//! | compare-and-swap on pointer-sized words (`cfg(target_has_atomic = "ptr")`) | [`SyncLinearAllocator`], [`SyncChainAllocator`], [`LocalHandle`], [`static_arena!`], [`Budget`], [`Budgeted`], [`arena::AtomicCursor`] | `thumbv6m-none-eabi` (Cortex-M0/M0+) and other targets without it |
//! | an OS with virtual memory (`cfg(any(unix, windows))`), and the above | [`VirtualAllocator`], [`PageAllocator`], [`PageOptions`], [`HugePages`], [`VirtualArena`], [`SyncVirtualArena`], [`os`] | bare metal (`thumbv7em-none-eabihf`, ...), WASI, ... |
//!
//! Without compare-and-swap there is no lock-free arena: a handler that must allocate uses a
//! [`LinearAllocator`] of its own, one per execution context (a `Cell` arena is never shared
//! with the code a handler interrupts). CI type-checks `thumbv7em-none-eabihf` and
//! `thumbv6m-none-eabi`, and runs a test program on a Cortex-M3 under `qemu-system-arm`
//! (`bare-metal/`, `scripts/bare-metal.sh`).
//!
//! # Features
//! - `std` (default): [`AllocError`] implements `std::error::Error`, and [`System`] is available
//!   as a backing allocator. Without it the crate uses neither `std` nor `alloc`.
//! - `allocator-api2-03`, `allocator-api2-04`: every allocator here also implements allocator-api2
//!   0.3's or 0.4's `Allocator` (used by bump-scope and blink-alloc), so their `Vec`, `Box` and
//!   collections work on our arenas.
//! - `nightly` (nightly compiler only): every allocator also implements
//!   `core::alloc::Allocator`, for std's `Vec::new_in` and friends. Do not combine it with
//!   allocator-api2's own `nightly` feature, which makes its 0.2 trait *be* core's.
//!
//! All of these forward to the one allocator-api2 0.2 implementation of each type.
//! - `asan-poison`: under AddressSanitizer, the bytes an arena has not handed out are poisoned,
//!   so an overrun from a block into the rest of its chunk is reported. Only for builds with
//!   `-Zsanitizer=address` (nightly): without the ASan runtime the crate does not link.
#![no_std]
#![cfg_attr(feature = "nightly", feature(allocator_api))]
// docs.rs (`--cfg docsrs`, nightly): badges naming the feature that enables an item.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), deny(clippy::panic))]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(not(test), deny(clippy::expect_used))]
#![cfg_attr(not(test), deny(clippy::todo))]
#![cfg_attr(not(test), deny(clippy::unimplemented))]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(test)]
extern crate std;

// Two conditions gate items, each written out where it applies (`cfg` has no aliases without a
// build script): `any(unix, windows)`, an OS with virtual memory (the OS-backed types and `os/`),
// and `target_has_atomic = "ptr"`, a compare-and-swap on pointer-sized words (the lock-free
// arenas, `Budget`). Everything else builds on any target `core` supports.
pub mod arena;
mod asan;
#[cfg(target_has_atomic = "ptr")]
mod budget;
mod bump;
mod cursor;
#[cfg(all(any(unix, windows), target_has_atomic = "ptr"))]
mod divert;
mod drops;
#[cfg(any(
    feature = "allocator-api2-03",
    feature = "allocator-api2-04",
    feature = "nightly"
))]
mod interop;
#[cfg(any(unix, windows))]
pub mod os;
#[cfg(any(unix, windows))]
mod page_alloc;
#[cfg(any(unix, windows))]
mod page_blocks;
mod resize;
mod string;
#[cfg(target_has_atomic = "ptr")]
mod sync;
mod typed;
#[cfg(any(unix, windows))]
mod virtual_alloc;

pub use arena::chain::ChainAllocator;
/// # Platforms
/// Needs a compare-and-swap on pointer-sized words: exists only where
/// `cfg(target_has_atomic = "ptr")` holds, so not on `thumbv6m-none-eabi` (Cortex-M0/M0+).
#[cfg(target_has_atomic = "ptr")]
pub use arena::chain::SyncChainAllocator;
#[cfg(target_has_atomic = "ptr")]
pub use arena::linear::SyncLinearAllocator;
pub use arena::linear::{Borrowed, LinearAllocator};
#[cfg(all(any(unix, windows), target_has_atomic = "ptr"))]
pub use arena::virtual_arena::{SyncVirtualArena, VirtualArena};
#[cfg(target_has_atomic = "ptr")]
pub use budget::{Budget, Budgeted};
#[cfg(all(any(unix, windows), target_has_atomic = "ptr"))]
pub use divert::{Divert, DivertArena, ProcessDiversion, ThreadDiversion};
pub use drops::{DropArena, PinArena};
#[cfg(any(unix, windows))]
pub use page_alloc::{HugePages, PageAllocator, PageOptions};
#[doc(hidden)]
pub use string::format_capacity_hint as __format_capacity_hint;
#[doc(hidden)]
pub use string::format_counts_are_literal as __format_counts_are_literal;
#[doc(hidden)]
pub use string::format_exponent_precisions_fit as __format_exponent_precisions_fit;
pub use string::ArenaString;
/// # Platforms
/// Exists only where `cfg(target_has_atomic = "ptr")` holds, as the lock-free arenas it serves.
#[cfg(target_has_atomic = "ptr")]
pub use sync::{LocalHandle, LocalSource};
pub use typed::{AllocOrInitError, Arena, Checkpoint, Rewind, Scope};
#[cfg(any(unix, windows))]
pub use virtual_alloc::VirtualAllocator;

// The allocator vocabulary, so users need no direct dependency on allocator_api2.
pub use allocator_api2::alloc::*;

/// Every Rust code block of README.md runs as a doctest, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
