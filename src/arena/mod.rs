//! The arenas, each written once and generic over how its cursor moves.
//!
//! [`Linear`] is one implementation of the one-buffer arena; the public names are its two
//! instances: [`LinearAllocator`](crate::LinearAllocator) = `Linear<CellCursor, A>` (one
//! thread) and [`SyncLinearAllocator`](crate::SyncLinearAllocator) =
//! `Linear<AtomicCursor, A>` (lock-free, reentrant). [`Chain`] is the arena of linked chunks:
//! [`ChainAllocator`](crate::ChainAllocator) = `Chain<CellCursor, A>` and
//! [`SyncChainAllocator`](crate::SyncChainAllocator) = `Chain<AtomicCursor, A>`, with what
//! differs between them behind [`ChainCursor`]. [`Virtual`] is the reserved-then-committed
//! arena: [`VirtualArena`](crate::VirtualArena) = `Virtual<CellCursor>` and
//! [`SyncVirtualArena`](crate::SyncVirtualArena) = `Virtual<AtomicCursor>`. Use the arenas by
//! those names; this module is where their shared methods are documented. The [`Cursor`] trait
//! is sealed: its two implementations, [`CellCursor`] and [`AtomicCursor`], are the crate's own.

pub(crate) mod chain;
pub(crate) mod linear;
#[cfg(all(any(unix, windows), target_has_atomic = "ptr"))]
pub(crate) mod virtual_arena;

#[cfg(target_has_atomic = "ptr")]
pub use crate::cursor::AtomicCursor;
pub use crate::cursor::{CellCursor, Counter, Cursor, PtrCell};
pub use chain::{Chain, ChainCursor};
pub use linear::{Borrowed, Linear};
#[cfg(all(any(unix, windows), target_has_atomic = "ptr"))]
pub use virtual_arena::Virtual;
