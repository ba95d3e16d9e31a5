//! [`CellCursor`]: the cursor of the single-thread arenas.

use super::{sealed, Cursor};
use core::alloc::Layout;
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

/// The operations the chain arena (`chain.rs`) calls by these names, through `&self`: a `Cell`
/// cursor also moves to a new chunk without `&mut`.
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

    /// Bytes handed out from the chunk that starts at `start` (the one the cursor points into).
    #[inline]
    pub(crate) fn used_since(&self, start: NonNull<u8>) -> usize {
        self.cur_addr() - start.as_ptr().addr()
    }

    /// Address of the first free byte.
    #[inline(always)]
    pub(crate) fn cur_addr(&self) -> usize {
        Cursor::cur_addr(self)
    }

    /// Address one past the chunk.
    #[inline(always)]
    pub(crate) fn limit(&self) -> usize {
        self.limit.get()
    }

    /// Bytes left between the cursor and the end of the chunk.
    #[inline(always)]
    pub(crate) fn remaining(&self) -> usize {
        Cursor::remaining(self)
    }

    /// Would a block of `layout` fit without a new chunk?
    #[inline]
    pub(crate) fn has_room_for(&self, layout: Layout) -> bool {
        self.has_room_below(layout, self.limit())
    }

    /// Bumps out a block of the non-zero-size `layout`, or `None` when the chunk is full.
    #[inline(always)]
    pub(crate) fn bump(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        self.claim(layout)
    }

    /// Gives back the block `[ptr, ptr + size)` if it is the most recent one.
    #[inline]
    pub(crate) fn release_if_last(&self, ptr: NonNull<u8>, size: usize) {
        self.release_last(ptr, size);
    }

    /// Resizes the most recent block in place, as [`Cursor::resize_last`].
    #[inline]
    pub(crate) fn resize_last_in_place(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        self.resize_last(ptr, old_size, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_used_restores_a_position_and_clamps_to_the_chunk() {
        let mut buffer = [0u8; 64];
        let start = NonNull::new(buffer.as_mut_ptr()).unwrap();
        let cursor = CellCursor::empty();
        cursor.set_used(start, 64, 24);
        assert_eq!(cursor.used_since(start), 24);
        assert_eq!(cursor.remaining(), 40);
        cursor.set_used(start, 64, 1000);
        assert_eq!(cursor.used_since(start), 64);
        assert_eq!(cursor.remaining(), 0);
        assert!(cursor.bump(Layout::new::<u8>()).is_none());
    }
}
