//! The lock-free, reentrant arenas' own parts: the [`LocalHandle`] and its mark, and the atomics
//! that loom swaps out. [`SyncLinearAllocator`](crate::SyncLinearAllocator),
//! [`SyncChainAllocator`](crate::SyncChainAllocator) and [`SyncVirtualArena`] are the generic
//! arenas of [`crate::arena`] over an [`AtomicCursor`](crate::arena::AtomicCursor).

pub(crate) mod atomic;
mod local;
#[cfg(all(test, loom))]
mod loom_tests;
mod mark;

/// The virtual arena's most recent block, by the path the handle knows it by.
#[cfg(any(unix, windows))]
mod virtual_arena {
    pub(crate) use crate::arena::virtual_arena::LastOf;
}

pub use local::{LocalHandle, LocalSource};
