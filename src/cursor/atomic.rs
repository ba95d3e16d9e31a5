//! [`AtomicCursor`]: the cursor of the lock-free arenas.

use super::{sealed, Cursor};
use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use core::ptr::NonNull;

/// The cursor of the lock-free, reentrant arenas
/// ([`SyncLinearAllocator`](crate::SyncLinearAllocator),
/// [`SyncVirtualArena`](crate::SyncVirtualArena),
/// [`SyncChainAllocator`](crate::SyncChainAllocator)): an atomic pointer moved by
/// compare-exchange.
///
/// The whole state of a chunk is one word, the cursor; the chunk's end (`limit`) never changes
/// while the cursor is shared. Every operation is therefore one compare-exchange of that word,
/// computed with the shared arithmetic of `bump.rs`. ABA is harmless: if the cursor is back to a
/// value `c` seen earlier, then `[c, limit)` is free right now, whatever happened in between,
/// which is all the compare-exchange needs to be true.
///
/// Orderings: a successful exchange is `AcqRel`, so a thread that is handed bytes another thread
/// just gave back (deallocation of the last block) sees that thread's writes to them as done.
/// Loads that only feed a compare-exchange are `Relaxed`: the exchange re-checks them.
///
/// Invariant: `cur` carries the provenance of the whole free range `[cur, limit)` (and of the
/// blocks before it in the same chunk), and `cur.addr() <= limit` at all times.
///
/// # Platforms
/// Needs a compare-and-swap on pointer-sized words: it exists only where
/// `cfg(target_has_atomic = "ptr")` holds, so not on `thumbv6m-none-eabi` (Cortex-M0/M0+) and
/// other targets without one.
pub struct AtomicCursor {
    cur: AtomicPtr<u8>,
    /// One past the chunk. A pointer rather than its address so that `over_const` can compute
    /// it in a `const` initialiser, where a pointer has no address yet; only its address is
    /// ever read.
    limit: *const u8,
}

// SAFETY: `limit` is only ever read for its address (never dereferenced), so sharing or sending
// it is sharing or sending an integer; `cur` is an atomic.
unsafe impl Send for AtomicCursor {}
// SAFETY: as above.
unsafe impl Sync for AtomicCursor {}

impl sealed::Sealed for AtomicCursor {}

impl Cursor for AtomicCursor {
    const SHARED: bool = true;
    type Counter = AtomicUsize;
    type DropHead = crate::sync::atomic::AtomicPtr<u8>;

    #[inline]
    fn over(start: NonNull<u8>, len: usize) -> Self {
        Self::over_const(start, len)
    }

    #[inline(always)]
    fn load(&self) -> *mut u8 {
        self.cur.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn limit(&self) -> usize {
        self.limit.addr()
    }

    #[inline(always)]
    fn exchange_weak(&self, current: *mut u8, new: *mut u8) -> Result<(), *mut u8> {
        self.cur
            .compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Relaxed)
            .map(|_| ())
    }

    #[inline(always)]
    fn exchange(&self, current: *mut u8, new: *mut u8) -> Result<(), *mut u8> {
        self.cur
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Relaxed)
            .map(|_| ())
    }

    #[inline(always)]
    fn store(&mut self, cur: *mut u8) {
        self.cur.store(cur, Ordering::Relaxed);
    }
}

impl AtomicCursor {
    crate::sync::atomic::const_fn_unless_loom! {
        /// [`Cursor::over`] in a `const` context (a `static` arena's initialiser): a cursor at
        /// the start of the free range `[start, start + len)`, whose provenance `start` carries.
        #[inline]
        pub(crate) const fn over_const(start: NonNull<u8>, len: usize) -> Self {
            Self {
                cur: AtomicPtr::new(start.as_ptr()),
                limit: start.as_ptr().wrapping_add(len),
            }
        }
    }
}
