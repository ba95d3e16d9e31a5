//! How an arena's cursor moves: [`CellCursor`] (one thread, plain loads and stores) and
//! [`AtomicCursor`] (lock-free, reentrant, compare-exchange), behind the one [`Cursor`] trait.
//!
//! A cursor is the address `cur` of the first free byte of a chunk `[start, limit)`. Each
//! protocol on it (claim a block, give the last block back, resize the last block in place) is
//! written once, below, in the form that is correct for a cursor other threads and signal
//! handlers move at the same time: load the cursor, compute with the shared arithmetic of
//! [`crate::bump`], and commit the result by a compare-exchange that fails if the cursor moved
//! meanwhile. [`CellCursor`]'s compare-exchange is a plain store that always succeeds (nothing
//! else can move a `Cell` between its load and its store), so for it each loop runs once and
//! compiles to what a hand-written `Cell` arena does.

#[cfg(target_has_atomic = "ptr")]
mod atomic;
mod cell;

#[cfg(target_has_atomic = "ptr")]
pub use atomic::AtomicCursor;
pub use cell::CellCursor;

use crate::asan;
use crate::bump::{fit, resize_last};
use core::alloc::Layout;
use core::ptr::NonNull;

/// The cursor `used` bytes into the range `[start, start + len)`, `used` clamped to `len`, and
/// how many bytes are left free after it: where [`Cursor::set_used`] and
/// [`CellCursor::set_used`] point a cursor.
#[inline(always)]
fn used_position(start: NonNull<u8>, len: usize, used: usize) -> (*mut u8, usize) {
    let used = used.min(len);
    // `wrapping_add` keeps `start`'s provenance; `used <= len` keeps it inside the range.
    (start.as_ptr().wrapping_add(used), len - used)
}

mod sealed {
    /// Only this crate's two cursors implement [`Cursor`](super::Cursor).
    pub trait Sealed {}
}

/// How the cursor of an arena moves: [`CellCursor`] for the single-thread arenas
/// ([`LinearAllocator`](crate::LinearAllocator), [`ChainAllocator`](crate::ChainAllocator),
/// [`VirtualArena`](crate::VirtualArena)), [`AtomicCursor`] for the lock-free, reentrant ones
/// ([`SyncLinearAllocator`](crate::SyncLinearAllocator),
/// [`SyncChainAllocator`](crate::SyncChainAllocator),
/// [`SyncVirtualArena`](crate::SyncVirtualArena)). Sealed: implemented by these two only.
///
/// Its methods are the crate's own; the arenas' public methods are what to call.
pub trait Cursor: sealed::Sealed {
    /// The kind of word a virtual arena keeps beside this cursor (its commit frontier and
    /// high-water mark): moved the same way as the cursor.
    #[doc(hidden)]
    type Counter: Counter;

    /// The kind of cell that holds the head of the arena's list of drop records
    /// (`src/drops.rs`): pushed the same way as the cursor moves.
    #[doc(hidden)]
    type DropHead: PtrCell;

    /// Whether other threads or signal handlers may move the cursor between two of this
    /// thread's operations (the atomic cursor). A `Cell` cursor is never stale: its loads need
    /// no re-check, and only it poisons its free bytes for ASan (feature `asan-poison`;
    /// poisoning while another thread hands the same granule out would race).
    #[doc(hidden)]
    const SHARED: bool;

    /// A cursor at the start of the free range `[start, start + len)`. `start` must carry the
    /// provenance of that range, which must be valid for writes as long as the cursor points
    /// into it. Poisons nothing.
    #[doc(hidden)]
    fn over(start: NonNull<u8>, len: usize) -> Self;

    /// The cursor now (a snapshot for the atomic cursor; `Relaxed`: every use of it is
    /// re-checked by a compare-exchange, or is a statistic).
    #[doc(hidden)]
    fn load(&self) -> *mut u8;

    /// Address one past the chunk; fixed while the cursor is shared.
    #[doc(hidden)]
    fn limit(&self) -> usize;

    /// Moves the cursor from `current` to `new` if it is still at `current`; else returns where
    /// it is. May fail spuriously (call it in a loop). `AcqRel` on success, so that a thread
    /// handed bytes another thread just gave back sees that thread's writes to them as done.
    #[doc(hidden)]
    fn exchange_weak(&self, current: *mut u8, new: *mut u8) -> Result<(), *mut u8>;

    /// As [`exchange_weak`](Self::exchange_weak), without spurious failure.
    #[doc(hidden)]
    fn exchange(&self, current: *mut u8, new: *mut u8) -> Result<(), *mut u8>;

    /// Stores `cur` (inside the chunk). `&mut self`: nothing else can be using the cursor.
    #[doc(hidden)]
    fn store(&mut self, cur: *mut u8);

    /// Address of the first free byte (a snapshot while others allocate).
    #[doc(hidden)]
    #[inline(always)]
    fn cur_addr(&self) -> usize {
        self.load().addr()
    }

    /// Bytes between the cursor and the end of the chunk (a snapshot).
    #[doc(hidden)]
    #[inline(always)]
    fn remaining(&self) -> usize {
        self.limit() - self.cur_addr()
    }

    /// Would a block of `layout` fit before `bound` now? (A snapshot.)
    #[doc(hidden)]
    #[inline]
    fn has_room_below(&self, layout: Layout, bound: usize) -> bool {
        let cur = self.cur_addr();
        layout.size() == 0 || (cur <= bound && fit(cur, bound, layout).is_some())
    }

    /// Points the cursor `used` bytes past `start` (where the cursor was made), clamped to
    /// `usable`, the length of the part of the chunk it may hand out; `[cur, start + usable)` is
    /// poisoned. How `reset` and a checkpoint are restored. `&mut self`: a plain store will do.
    /// The arguments are in the order of [`CellCursor::set_used`]'s: the range, then how much
    /// of it is used.
    #[doc(hidden)]
    #[inline]
    fn set_used(&mut self, start: NonNull<u8>, usable: usize, used: usize) {
        let (cur, free) = used_position(start, usable, used);
        self.store(cur);
        self.poison_free(cur, free);
    }

    /// Poisons `[from, from + len)`, free bytes of the chunk, for ASan (`Cell` cursor only).
    #[doc(hidden)]
    #[inline(always)]
    fn poison_free(&self, from: *mut u8, len: usize) {
        if !Self::SHARED {
            if let Some(from) = NonNull::new(from) {
                asan::poison(from, len);
            }
        }
    }

    /// Claims a block of the non-zero-size `layout` in the chunk, or `None` when it does not
    /// fit. Lock-free: the loop retries only because another allocation (another thread, or a
    /// signal handler that interrupted this one) succeeded in between.
    #[doc(hidden)]
    #[inline(always)]
    fn claim(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        claim::<Self, false>(self, layout, self.limit())
    }

    /// Claims a block of the non-zero-size `layout` that ends at or below `bound`
    /// (`bound <= limit`), or `None` when it does not fit there. For an arena whose usable part
    /// grows while the cursor is shared (the commit frontier of a virtual arena): `bound` may be
    /// a stale snapshot, and a cursor already past it is a miss, not an error.
    #[doc(hidden)]
    #[inline(always)]
    fn claim_below(&self, layout: Layout, bound: usize) -> Option<NonNull<[u8]>> {
        claim::<Self, true>(self, layout, bound)
    }

    /// Gives back the block `[ptr, ptr + size)` if it is the most recent one: one
    /// compare-exchange from its end to its start, which fails (and the bytes stay allocated)
    /// if another block was claimed after it.
    #[doc(hidden)]
    #[inline]
    fn release_last(&self, ptr: NonNull<u8>, size: usize) {
        let cur = self.load();
        if cur.addr() == ptr.as_ptr().addr().wrapping_add(size) {
            // `ptr` came from this chunk, so `cur.with_addr(ptr)` stays inside it.
            let released = self.exchange(cur, cur.with_addr(ptr.as_ptr().addr()));
            if released.is_ok() && !Self::SHARED {
                asan::poison(ptr, size);
            }
        }
    }

    /// Resizes the most recent block `[ptr, ptr + old_size)` to `new.size()` in place, if it
    /// is the most recent block, suits `new.align()` and the chunk has room. A loop of
    /// compare-exchanges: it retries after a spurious failure, and gives up when another
    /// allocation made the block not the last one.
    #[doc(hidden)]
    #[inline]
    fn resize_last(&self, ptr: NonNull<u8>, old_size: usize, new: Layout) -> Option<NonNull<[u8]>> {
        let block = ptr.as_ptr().addr();
        if block & (new.align() - 1) != 0 {
            return None;
        }
        let mut cur = self.load();
        loop {
            let new_cur = resize_last(cur.addr(), self.limit(), block, old_size, new.size())?;
            match self.exchange_weak(cur, cur.with_addr(new_cur)) {
                Ok(()) => {
                    if !Self::SHARED {
                        asan::resized(ptr, old_size, new.size());
                    }
                    return Some(NonNull::slice_from_raw_parts(ptr, new.size()));
                }
                Err(now) => cur = now,
            }
        }
    }
}

/// The compare-exchange loop of [`Cursor::claim`] and [`Cursor::claim_below`].
/// `CUR_MAY_PASS_BOUND` is false when `bound` is the chunk's `limit`, which the cursor never
/// passes (so the check compiles away), and for a `Cell` cursor, whose bound is never stale.
#[inline(always)]
fn claim<C: Cursor + ?Sized, const CUR_MAY_PASS_BOUND: bool>(
    cursor: &C,
    layout: Layout,
    bound: usize,
) -> Option<NonNull<[u8]>> {
    let mut cur = cursor.load();
    loop {
        if CUR_MAY_PASS_BOUND && C::SHARED && cur.addr() > bound {
            return None;
        }
        let fit = fit(cur.addr(), bound, layout)?;
        match cursor.exchange_weak(cur, cur.with_addr(fit.new_cur)) {
            Ok(()) => {
                // SAFETY: `fit.start` lies in `[cur, bound)` of a live chunk (fit guarantees
                // it), so it is not null; `with_addr` keeps the chunk's provenance. The
                // exchange made `[fit.start, fit.new_cur)` ours alone.
                let start = unsafe { NonNull::new_unchecked(cur.with_addr(fit.start)) };
                if !C::SHARED {
                    asan::unpoison(start, layout.size());
                }
                return Some(NonNull::slice_from_raw_parts(start, layout.size()));
            }
            Err(now) => cur = now,
        }
    }
}

/// A word beside the cursor, moved the same way as the cursor: a virtual arena's commit frontier
/// and high-water mark (which only grow while the arena is shared), a chain arena's byte count
/// and next chunk size. `Cell<usize>` for the `Cell` cursor, an atomic for the atomic one
/// ([`Cursor::Counter`]). Sealed.
pub trait Counter: sealed::Sealed {
    /// A counter at `value`.
    #[doc(hidden)]
    fn new(value: usize) -> Self;

    /// The value now (`Acquire`: what was published with it is visible).
    #[doc(hidden)]
    fn value(&self) -> usize;

    /// Raises the value to at least `value` and returns the one before (`fetch_max`, `AcqRel`).
    #[doc(hidden)]
    fn raise_to(&self, value: usize) -> usize;

    /// Sets the value. `&mut self`: nothing else can be using the counter.
    #[doc(hidden)]
    fn reset_to(&mut self, value: usize);

    /// Adds `n` (`fetch_add`, `Relaxed`: a statistic, published by nothing).
    #[doc(hidden)]
    fn add(&self, n: usize);

    /// Sets the value to `new` if it is still `current` (`compare_exchange`, `Relaxed`); else
    /// leaves it, since whoever changed it meanwhile had the newer word. A real comparison for
    /// the `Cell` too: a backing allocator that re-enters the arena may change it in between.
    #[doc(hidden)]
    fn replace(&self, current: usize, new: usize);
}

impl sealed::Sealed for core::cell::Cell<usize> {}

impl Counter for core::cell::Cell<usize> {
    #[inline(always)]
    fn new(value: usize) -> Self {
        core::cell::Cell::new(value)
    }

    #[inline(always)]
    fn value(&self) -> usize {
        self.get()
    }

    #[inline(always)]
    fn raise_to(&self, value: usize) -> usize {
        let prev = self.get();
        if value > prev {
            self.set(value);
        }
        prev
    }

    #[inline(always)]
    fn reset_to(&mut self, value: usize) {
        self.set(value);
    }

    #[inline(always)]
    fn add(&self, n: usize) {
        self.set(self.get() + n);
    }

    #[inline(always)]
    fn replace(&self, current: usize, new: usize) {
        if self.get() == current {
            self.set(new);
        }
    }
}

#[cfg(target_has_atomic = "ptr")]
impl sealed::Sealed for crate::sync::atomic::AtomicUsize {}

#[cfg(target_has_atomic = "ptr")]
impl Counter for crate::sync::atomic::AtomicUsize {
    #[inline(always)]
    fn new(value: usize) -> Self {
        crate::sync::atomic::AtomicUsize::new(value)
    }

    #[inline(always)]
    fn value(&self) -> usize {
        self.load(crate::sync::atomic::Ordering::Acquire)
    }

    #[inline(always)]
    fn raise_to(&self, value: usize) -> usize {
        self.fetch_max(value, crate::sync::atomic::Ordering::AcqRel)
    }

    #[inline(always)]
    fn reset_to(&mut self, value: usize) {
        self.store(value, crate::sync::atomic::Ordering::Relaxed);
    }

    #[inline(always)]
    fn add(&self, n: usize) {
        self.fetch_add(n, crate::sync::atomic::Ordering::Relaxed);
    }

    #[inline(always)]
    fn replace(&self, current: usize, new: usize) {
        use crate::sync::atomic::Ordering::Relaxed;
        // Failure means another publisher already moved it.
        let _ = self.compare_exchange(current, new, Relaxed, Relaxed);
    }
}

/// A pointer cell beside the cursor that is pushed onto while the arena is shared: the head of the
/// list of drop records (`src/drops.rs`). `Cell<*mut u8>` for the `Cell` cursor, an atomic
/// pointer for the atomic one ([`Cursor::DropHead`]). Sealed.
pub trait PtrCell: sealed::Sealed {
    /// A null cell.
    #[doc(hidden)]
    fn null() -> Self;

    /// The pointer now (`Acquire`: what was published with it is visible).
    #[doc(hidden)]
    fn load(&self) -> *mut u8;

    /// Sets the cell from `current` to `new` if it still holds `current`, else returns what it
    /// holds. May fail spuriously. `Release` on success: `new`'s target, written before, is
    /// published with it.
    #[doc(hidden)]
    fn exchange_weak(&self, current: *mut u8, new: *mut u8) -> Result<(), *mut u8>;

    /// The pointer, through `&mut self`: nothing else can be using the cell.
    #[doc(hidden)]
    fn get(&mut self) -> *mut u8;

    /// Sets the pointer. `&mut self`: nothing else can be using the cell.
    #[doc(hidden)]
    fn set(&mut self, value: *mut u8);
}

impl sealed::Sealed for core::cell::Cell<*mut u8> {}

impl PtrCell for core::cell::Cell<*mut u8> {
    #[inline(always)]
    fn null() -> Self {
        core::cell::Cell::new(core::ptr::null_mut())
    }

    #[inline(always)]
    fn load(&self) -> *mut u8 {
        self.get()
    }

    /// Always succeeds: nothing else moves a `Cell` between this thread's load and store.
    #[inline(always)]
    fn exchange_weak(&self, _current: *mut u8, new: *mut u8) -> Result<(), *mut u8> {
        self.set(new);
        Ok(())
    }

    #[inline(always)]
    fn get(&mut self) -> *mut u8 {
        *self.get_mut()
    }

    #[inline(always)]
    fn set(&mut self, value: *mut u8) {
        *self.get_mut() = value;
    }
}

#[cfg(target_has_atomic = "ptr")]
impl sealed::Sealed for crate::sync::atomic::AtomicPtr<u8> {}

#[cfg(target_has_atomic = "ptr")]
impl PtrCell for crate::sync::atomic::AtomicPtr<u8> {
    #[inline(always)]
    fn null() -> Self {
        crate::sync::atomic::AtomicPtr::new(core::ptr::null_mut())
    }

    #[inline(always)]
    fn load(&self) -> *mut u8 {
        self.load(crate::sync::atomic::Ordering::Acquire)
    }

    #[inline(always)]
    fn exchange_weak(&self, current: *mut u8, new: *mut u8) -> Result<(), *mut u8> {
        use crate::sync::atomic::Ordering;
        self.compare_exchange_weak(current, new, Ordering::Release, Ordering::Acquire)
            .map(|_| ())
    }

    #[inline(always)]
    fn get(&mut self) -> *mut u8 {
        // Under loom `get_mut` is not available; a relaxed load is as good through `&mut`.
        crate::sync::atomic::AtomicPtr::load(self, crate::sync::atomic::Ordering::Relaxed)
    }

    #[inline(always)]
    fn set(&mut self, value: *mut u8) {
        self.store(value, crate::sync::atomic::Ordering::Relaxed);
    }
}

/// Every cursor is the "most recent block" that `resize.rs` grows and shrinks.
impl<C: Cursor> crate::resize::LastBlock for C {
    #[inline]
    fn release_if_last(&self, ptr: NonNull<u8>, size: usize) {
        self.release_last(ptr, size);
    }

    #[inline]
    fn resize_last_in_place(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        self.resize_last(ptr, old_size, new)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::used_position;
    use core::ptr::NonNull;

    #[test]
    fn used_position_takes_the_range_then_the_used_bytes_and_clamps_to_the_range() {
        let mut buffer = [0u8; 64];
        let start = NonNull::new(buffer.as_mut_ptr()).unwrap();
        let (cur, free) = used_position(start, 64, 24);
        assert_eq!((cur.addr() - start.as_ptr().addr(), free), (24, 40));
        let (cur, free) = used_position(start, 24, 64);
        assert_eq!((cur.addr() - start.as_ptr().addr(), free), (24, 0));
    }
}
