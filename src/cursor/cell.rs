//! [`CellCursor`]: the cursor of the single-thread arenas.

use super::{sealed, Cursor};
use core::cell::Cell;
use core::ptr::NonNull;

/// The cursor of the single-thread arenas ([`LinearAllocator`](crate::LinearAllocator),
/// [`VirtualArena`](crate::VirtualArena), [`ChainAllocator`](crate::ChainAllocator)): a `Cell`
/// moved by plain loads and stores. Not `Sync`, and not reentrant: a signal handler that
/// allocates from the arena it interrupted could be handed the same bytes twice.
///
/// With the `asan-poison` feature the bytes in `[cur, limit)` are poisoned for
/// AddressSanitizer (see `asan.rs`); every operation keeps that true as the cursor moves.
///
/// Invariant: `cur` carries the provenance of the chunk `[cur - used, limit)`, and
/// `cur.addr() <= limit`. An empty cursor (no chunk yet) has `cur.addr() == limit`, so nothing
/// of non-zero size fits and the arena falls through to its slow path without a separate check.
pub struct CellCursor {
    cur: Cell<*mut u8>,
    limit: Cell<usize>,
}

impl sealed::Sealed for CellCursor {}

impl Cursor for CellCursor {
    const SHARED: bool = false;
    type Counter = Cell<usize>;
    type DropHead = Cell<*mut u8>;

    #[inline]
    fn over(start: NonNull<u8>, len: usize) -> Self {
        Self {
            cur: Cell::new(start.as_ptr()),
            limit: Cell::new(start.as_ptr().addr() + len),
        }
    }

    #[inline(always)]
    fn load(&self) -> *mut u8 {
        self.cur.get()
    }

    #[inline(always)]
    fn limit(&self) -> usize {
        self.limit.get()
    }

    /// Always succeeds: nothing else moves a `Cell` between this thread's load and store.
    #[inline(always)]
    fn exchange_weak(&self, _current: *mut u8, new: *mut u8) -> Result<(), *mut u8> {
        self.cur.set(new);
        Ok(())
    }

    #[inline(always)]
    fn exchange(&self, current: *mut u8, new: *mut u8) -> Result<(), *mut u8> {
        self.exchange_weak(current, new)
    }

    #[inline(always)]
    fn store(&mut self, cur: *mut u8) {
        self.cur.set(cur);
    }
}

/// What the chain arena (`arena/chain.rs`) keeps inline for its newest chunk moves through
/// `&self`: a `Cell` cursor also moves to a new chunk without `&mut`.
impl CellCursor {
    /// A cursor with no chunk: every non-zero-size allocation misses.
    pub(crate) const fn empty() -> Self {
        Self {
            cur: Cell::new(core::ptr::null_mut()),
            limit: Cell::new(0),
        }
    }

    /// Points the cursor at the free range `[start, start + len)`, as [`Cursor::over`].
    #[inline]
    pub(crate) fn set(&self, start: NonNull<u8>, len: usize) {
        self.set_used(start, len, 0);
    }

    /// Points the cursor at the range `[start, start + len)` of which the first `used` bytes are
    /// already handed out (`used` is clamped to `len`): how a checkpoint is restored. The order
    /// of [`Cursor::set_used`], which moves within the chunk the cursor already has.
    #[inline]
    pub(crate) fn set_used(&self, start: NonNull<u8>, len: usize, used: usize) {
        self.limit.set(start.as_ptr().addr() + len);
        let (cur, free) = super::used_position(start, len, used);
        self.cur.set(cur);
        // Only the free part: the first `used` bytes may hold live blocks.
        self.poison_free(cur, free);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::alloc::Layout;

    #[test]
    fn set_used_restores_a_position_and_clamps_to_the_chunk() {
        let mut buffer = [0u8; 64];
        let start = NonNull::new(buffer.as_mut_ptr()).unwrap();
        let cursor = CellCursor::empty();
        cursor.set_used(start, 64, 24);
        assert_eq!(cursor.cur_addr() - start.as_ptr().addr(), 24);
        assert_eq!(cursor.remaining(), 40);
        cursor.set_used(start, 64, 1000);
        assert_eq!(cursor.cur_addr() - start.as_ptr().addr(), 64);
        assert_eq!(cursor.remaining(), 0);
        assert!(cursor.claim(Layout::new::<u8>()).is_none());
    }
}
