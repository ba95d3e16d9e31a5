//! The lock-free, reentrant twins of the `Cell` arenas: [`SyncLinearAllocator`],
//! [`SyncChainAllocator`] and [`SyncVirtualArena`].
//!
//! Same API as [`LinearAllocator`](crate::LinearAllocator) and
//! [`ChainAllocator`](crate::ChainAllocator), but the cursor is an atomic moved by
//! compare-exchange, so the arenas are `Sync` and may be used from a signal handler that
//! interrupted an allocation from the same arena. The bump arithmetic is the shared one of
//! `bump.rs`; only the way the cursor is updated differs.

mod atomic;
mod chain;
mod cursor;
mod linear;
mod local;
#[cfg(all(test, loom))]
mod loom_tests;
mod mark;
mod virtual_arena;

pub use chain::SyncChainAllocator;
pub use linear::SyncLinearAllocator;
pub use local::{LocalHandle, LocalSource};
pub use virtual_arena::SyncVirtualArena;
