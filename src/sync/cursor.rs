//! [`AtomicCursor`]: the bump cursor of the lock-free arenas.
//!
//! The whole state of a chunk is one word, the cursor; the chunk's end (`limit`) never changes
//! while the cursor is shared. Every operation is therefore one compare-exchange of that word,
//! computed with the shared arithmetic of [`crate::bump`]. ABA is harmless: if the cursor is back
//! to a value `c` seen earlier, then `[c, limit)` is free right now, whatever happened in
//! between, which is all the compare-exchange needs to be true.
//!
//! Orderings: a successful exchange is `AcqRel`, so a thread that is handed bytes another thread
//! just gave back (deallocation of the last block) sees that thread's writes to them as done.
//! Loads that only feed a compare-exchange are `Relaxed`: the exchange re-checks them.

use super::atomic::{AtomicPtr, Ordering};
use crate::bump::{fit, resize_last};
use crate::resize::LastBlock;
use core::alloc::Layout;
use core::ptr::NonNull;

/// A lock-free bump cursor over the chunk `[.., limit)`.
///
/// Invariant: `cur` carries the provenance of the whole free range `[cur, limit)` (and of the
/// blocks before it in the same chunk), and `cur.addr() <= limit` at all times.
pub(crate) struct AtomicCursor {
    cur: AtomicPtr<u8>,
    limit: usize,
}

impl AtomicCursor {
    /// A cursor over the free range `[start, start + len)`.
    ///
    /// `start` must carry the provenance of that range, which must be valid for writes as long
    /// as the cursor points into it.
    #[inline]
    pub(crate) fn new(start: NonNull<u8>, len: usize) -> Self {
        Self {
            cur: AtomicPtr::new(start.as_ptr()),
            limit: start.as_ptr().addr() + len,
        }
    }

    /// Moves the cursor back to `start`, the beginning of the range given to [`new`](Self::new).
    /// `&mut self`: nothing else can be using the cursor.
    #[inline]
    pub(crate) fn rewind(&mut self, start: NonNull<u8>) {
        self.set_used(start, 0);
    }

    /// Points the cursor `used` bytes past `start`, the beginning of the range given to
    /// [`new`](Self::new), clamped to the end of the range: how a checkpoint is restored.
    /// `&mut self`: nothing else can be using the cursor, so a plain store will do.
    #[inline]
    pub(crate) fn set_used(&mut self, start: NonNull<u8>, used: usize) {
        let len = self.limit - start.as_ptr().addr();
        // `wrapping_add` keeps `start`'s provenance; `used <= len` keeps it inside the range.
        let cur = start.as_ptr().wrapping_add(used.min(len));
        self.cur.store(cur, Ordering::Relaxed);
    }

    /// Bytes handed out since `start`, the beginning of the range given to [`new`](Self::new)
    /// (a snapshot while other threads allocate).
    #[inline]
    pub(crate) fn used_since(&self, start: NonNull<u8>) -> usize {
        self.cur_addr() - start.as_ptr().addr()
    }

    /// Address of the first free byte (a snapshot while other threads allocate).
    #[inline(always)]
    pub(crate) fn cur_addr(&self) -> usize {
        self.cur.load(Ordering::Relaxed).addr()
    }

    /// Address one past the chunk.
    #[inline(always)]
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes left between the cursor and the end of the chunk (a snapshot).
    #[inline(always)]
    pub(crate) fn remaining(&self) -> usize {
        self.limit - self.cur_addr()
    }

    /// Would a block of `layout` fit now, without a new chunk? (A snapshot.)
    #[inline]
    pub(crate) fn has_room_for(&self, layout: Layout) -> bool {
        layout.size() == 0 || fit(self.cur_addr(), self.limit, layout).is_some()
    }

    /// Bumps out a block of the non-zero-size `layout`, or `None` when the chunk is full.
    ///
    /// Lock-free: the loop retries only because another allocation (on another thread, or in a
    /// signal handler that interrupted this one) succeeded in between.
    #[inline(always)]
    pub(crate) fn bump(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        self.claim::<false>(layout, self.limit)
    }

    /// Bumps out a block of the non-zero-size `layout` that ends at or below `bound`
    /// (`bound <= limit`), or `None` when it does not fit there. For an arena whose usable part
    /// grows while the cursor is shared (the commit frontier of `SyncVirtualArena`): `bound` may
    /// be a stale snapshot, and a cursor already past it is a miss, not an error.
    #[inline(always)]
    pub(crate) fn bump_below(&self, layout: Layout, bound: usize) -> Option<NonNull<[u8]>> {
        self.claim::<true>(layout, bound)
    }

    /// The compare-exchange loop of [`bump`](Self::bump) and [`bump_below`](Self::bump_below).
    /// `CUR_MAY_PASS_BOUND` is false when `bound` is the chunk's `limit`, which the cursor never
    /// passes (so the check compiles away).
    #[inline(always)]
    fn claim<const CUR_MAY_PASS_BOUND: bool>(
        &self,
        layout: Layout,
        bound: usize,
    ) -> Option<NonNull<[u8]>> {
        let mut cur = self.cur.load(Ordering::Relaxed);
        loop {
            if CUR_MAY_PASS_BOUND && cur.addr() > bound {
                return None;
            }
            let fit = fit(cur.addr(), bound, layout)?;
            match self.cur.compare_exchange_weak(
                cur,
                cur.with_addr(fit.new_cur),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // SAFETY: `fit.start` lies in `[cur, limit)` of a live chunk (fit guarantees
                    // it), so it is not null; `with_addr` keeps the chunk's provenance. The
                    // exchange made `[fit.start, fit.new_cur)` ours alone.
                    let start = unsafe { NonNull::new_unchecked(cur.with_addr(fit.start)) };
                    return Some(NonNull::slice_from_raw_parts(start, layout.size()));
                }
                Err(now) => cur = now,
            }
        }
    }
}

impl LastBlock for AtomicCursor {
    /// One compare-exchange: the block is the last one exactly when the cursor is at its end.
    #[inline]
    fn release_if_last(&self, ptr: NonNull<u8>, size: usize) {
        let end = ptr.as_ptr().addr().wrapping_add(size);
        let cur = self.cur.load(Ordering::Relaxed);
        if cur.addr() == end {
            // Failure means another block was bumped after this one: it stays allocated.
            let _ = self.cur.compare_exchange(
                cur,
                cur.with_addr(ptr.as_ptr().addr()),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    #[inline]
    fn resize_last_in_place(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        let block = ptr.as_ptr().addr();
        if block & (new.align() - 1) != 0 {
            return None;
        }
        let mut cur = self.cur.load(Ordering::Relaxed);
        loop {
            let new_cur = resize_last(cur.addr(), self.limit, block, old_size, new.size())?;
            match self.cur.compare_exchange_weak(
                cur,
                cur.with_addr(new_cur),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(NonNull::slice_from_raw_parts(ptr, new.size())),
                // Spurious failure, or another allocation moved the cursor (then `resize_last`
                // refuses on the next turn, as the block is no longer the last one).
                Err(now) => cur = now,
            }
        }
    }
}
