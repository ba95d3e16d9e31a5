//! Memory budgets: [`Budget`], a lock-free cap on bytes, and [`Budgeted`], a backing-allocator
//! adapter that charges every block it hands out to a budget. Several arenas built on
//! `Budgeted` allocators that share one `static` budget are capped together.

use crate::{AllocError, Allocator, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

/// A lock-free cap on bytes: a `used` counter that is only ever raised by a compare-exchange
/// against `limit`, so it never exceeds the limit that was in force when a charge was taken.
///
/// Usually shared by the [`Budgeted`] backing allocators of several arenas, as a `static`.
///
/// The counters are plain atomics used with `Relaxed` ordering: they guard no memory, only a
/// number. A charge that loses a race to another thread (or to a signal handler that interrupts
/// it) retries with the new value; none waits for another.
///
/// # Signal safety
/// Every method is async-signal-safe: a few atomic loads, one compare-exchange loop, no lock,
/// no allocation, no panic. A handler may charge a budget that the interrupted code was charging.
///
/// # Examples
/// ```
/// use libdd_alloc::Budget;
///
/// static BUDGET: Budget = Budget::new(1 << 20);
/// BUDGET.try_charge(4096)?;
/// assert_eq!((BUDGET.used(), BUDGET.remaining()), (4096, (1 << 20) - 4096));
/// assert!(BUDGET.try_charge(1 << 20).is_err());
/// BUDGET.credit(4096);
/// assert_eq!((BUDGET.used(), BUDGET.peak()), (0, 4096));
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
///
/// # Platforms
/// Needs a compare-and-swap on pointer-sized words: it exists only where
/// `cfg(target_has_atomic = "ptr")` holds, so not on `thumbv6m-none-eabi` (Cortex-M0/M0+) and
/// other targets without one.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: AtomicUsize,
    peak: AtomicUsize,
}

impl Budget {
    /// A budget of `limit` bytes, none used. `const`, so it can be a `static`.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::Budget;
    /// static CRASH_MEMORY: Budget = Budget::new(64 << 10);
    /// assert_eq!((CRASH_MEMORY.used(), CRASH_MEMORY.limit()), (0, 64 << 10));
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub const fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            peak: AtomicUsize::new(0),
        }
    }

    /// The bytes charged and not yet credited. O(1).
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::Budget;
    /// let budget = Budget::new(100);
    /// budget.try_charge(30)?;
    /// assert_eq!(budget.used(), 30);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit. O(1).
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::Budget;
    /// assert_eq!(Budget::new(100).limit(), 100);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// `limit - used`, or 0 when a lowered limit is below what is used. O(1).
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::Budget;
    /// let budget = Budget::new(100);
    /// budget.try_charge(30)?;
    /// assert_eq!(budget.remaining(), 70);
    /// budget.set_limit(10);
    /// assert_eq!(budget.remaining(), 0);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn remaining(&self) -> usize {
        self.limit().saturating_sub(self.used())
    }

    /// The highest `used` has been since the budget was made: the high-water mark, for sizing a
    /// limit from a real run. O(1).
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::Budget;
    /// let budget = Budget::new(100);
    /// budget.try_charge(80)?;
    /// budget.credit(50);
    /// assert_eq!((budget.used(), budget.peak()), (30, 80));
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Changes the limit. Lowering it below [`used`](Self::used) takes nothing back: charges
    /// fail until enough is credited.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::Budget;
    /// let budget = Budget::new(100);
    /// budget.try_charge(80)?;
    /// budget.set_limit(50);
    /// assert_eq!((budget.used(), budget.remaining()), (80, 0));
    /// assert!(budget.try_charge(1).is_err());
    /// budget.credit(40);
    /// budget.try_charge(10)?;
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Charges `bytes`, if that keeps `used <= limit`. Charging 0 always succeeds.
    ///
    /// # Errors
    /// `Err(AllocError)` when `used + bytes` would exceed the limit (or overflow); nothing is
    /// charged then.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::Budget;
    /// let budget = Budget::new(10);
    /// budget.try_charge(10)?;
    /// assert!(budget.try_charge(1).is_err());
    /// assert_eq!(budget.used(), 10);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn try_charge(&self, bytes: usize) -> Result<(), AllocError> {
        if bytes == 0 {
            return Ok(());
        }
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let new = used.checked_add(bytes).ok_or(AllocError)?;
            if new > self.limit.load(Ordering::Relaxed) {
                return Err(AllocError);
            }
            match self
                .used
                .compare_exchange_weak(used, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(new, Ordering::Relaxed);
                    return Ok(());
                }
                Err(current) => used = current,
            }
        }
    }

    /// Gives back `bytes` charged earlier. Crediting more than is used is a bug in the caller;
    /// the counter then stops at 0 rather than wrapping.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::Budget;
    /// let budget = Budget::new(100);
    /// budget.try_charge(30)?;
    /// budget.credit(30);
    /// assert_eq!(budget.used(), 0);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn credit(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        // `fetch_update` with a closure that always returns `Some` cannot fail.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// Credits a charge when dropped: taken before a call into the backing allocator, forgotten
/// once the call has succeeded, so that a failure *or a panic* gives the charge back.
struct Refund<'b> {
    budget: &'b Budget,
    bytes: usize,
}

impl Refund<'_> {
    #[inline]
    fn keep(self) {
        core::mem::forget(self);
    }
}

impl Drop for Refund<'_> {
    #[inline]
    fn drop(&mut self) {
        self.budget.credit(self.bytes);
    }
}

/// A backing allocator that charges a [`Budget`] for every byte it takes from `A`, and credits
/// it for every byte it gives back.
///
/// - `allocate` charges `layout.size()` first; a refused charge is `Err` with no call to `A`.
/// - `grow` charges only the difference; a grow that would cross the limit is refused and
///   charges nothing (the old block stays valid, as for any failed grow).
/// - `shrink` credits the difference once `A` has shrunk the block; `deallocate` credits the
///   whole block after `A` has taken it back.
/// - A failing call to `A` gives its charge back; so does one that panics (the budget then
///   counts the block as never allocated).
///
/// What is counted is the sizes asked of `A`: a backing allocator that rounds up (whole pages)
/// or keeps headers uses more than that. Blocks are handed out with exactly the requested
/// length, so callers never use (or give back) bytes that were not charged.
///
/// # Signal safety
/// As async-signal-safe as `A`: the budget's part is an atomic compare-exchange loop. With
/// [`VirtualAllocator`](crate::VirtualAllocator) behind it, a
/// [`SyncChainAllocator`](crate::SyncChainAllocator) stays usable from a handler.
///
/// # Examples
/// Two arenas capped together by one `static` budget:
/// ```
/// use libdd_alloc::{Budget, Budgeted, ChainAllocator, Layout, VirtualAllocator};
///
/// static PROFILER_MEMORY: Budget = Budget::new(256 << 10);
///
/// let strings = ChainAllocator::new_in(64 << 10, Budgeted::new(&PROFILER_MEMORY, VirtualAllocator {}))?;
/// let samples = ChainAllocator::new_in(128 << 10, Budgeted::new(&PROFILER_MEMORY, VirtualAllocator {}))?;
/// assert!(PROFILER_MEMORY.used() >= (192 << 10));
/// // A third chunk of 128 KiB would cross the limit: that allocation is an `Err`.
/// assert!(samples.allocate(Layout::array::<u8>(200 << 10)?).is_err());
/// drop((strings, samples));
/// assert_eq!(PROFILER_MEMORY.used(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Platforms
/// Needs a compare-and-swap on pointer-sized words: it exists only where
/// `cfg(target_has_atomic = "ptr")` holds, so not on `thumbv6m-none-eabi` (Cortex-M0/M0+) and
/// other targets without one.
#[derive(Clone, Copy, Debug)]
pub struct Budgeted<'b, A> {
    budget: &'b Budget,
    inner: A,
}

impl<'b, A> Budgeted<'b, A> {
    /// `inner`, charging `budget`. `const`.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Budget, Budgeted, System};
    /// static BUDGET: Budget = Budget::new(1 << 20);
    /// static BACKING: Budgeted<System> = Budgeted::new(&BUDGET, System);
    /// assert_eq!(BACKING.budget().limit(), 1 << 20);
    /// ```
    #[inline]
    pub const fn new(budget: &'b Budget, inner: A) -> Self {
        Self { budget, inner }
    }

    /// The budget this allocator charges.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Budget, Budgeted, System};
    /// let budget = Budget::new(10);
    /// assert!(core::ptr::eq(Budgeted::new(&budget, System).budget(), &budget));
    /// ```
    #[inline]
    pub const fn budget(&self) -> &'b Budget {
        self.budget
    }

    /// The allocator the bytes come from.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Budget, Budgeted, System};
    /// let budget = Budget::new(10);
    /// let _system: &System = Budgeted::new(&budget, System).inner();
    /// ```
    #[inline]
    pub const fn inner(&self) -> &A {
        &self.inner
    }

    /// Charges `bytes`, then asks `inner` for a block through `call`: the block cut to `size`
    /// (the length it was charged for), or `Err` with the charge given back when `call` fails
    /// or panics.
    #[inline]
    fn charged(
        &self,
        bytes: usize,
        size: usize,
        call: impl FnOnce(&A) -> Result<NonNull<[u8]>, AllocError>,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.budget.try_charge(bytes)?;
        let refund = Refund {
            budget: self.budget,
            bytes,
        };
        let block = call(&self.inner)?;
        refund.keep();
        Ok(exactly(block, size))
    }
}

/// The block `A` returned, cut to the length that was charged.
#[inline]
fn exactly(block: NonNull<[u8]>, size: usize) -> NonNull<[u8]> {
    NonNull::slice_from_raw_parts(block.cast(), size)
}

// SAFETY: every block comes from `inner` and is handed out with the length that was asked for
// (at most what `inner` returned), so it is valid for that many bytes; every call that gives a
// block back or resizes it passes the caller's pointer and layouts through unchanged, and those
// layouts fit `inner`'s block because they fit ours, which has the very size `inner` was asked
// for. Only the budget's counters are added.
unsafe impl<A: Allocator> Allocator for Budgeted<'_, A> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.charged(layout.size(), layout.size(), |inner| inner.allocate(layout))
    }

    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.charged(layout.size(), layout.size(), |inner| {
            inner.allocate_zeroed(layout)
        })
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // Credited even if `inner` panics: the caller cannot give the block back twice.
        let _refund = Refund {
            budget: self.budget,
            bytes: layout.size(),
        };
        // SAFETY: forwarded caller contract (see the impl's comment).
        unsafe { self.inner.deallocate(ptr, layout) };
    }

    #[inline]
    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let bytes = new_layout.size().saturating_sub(old_layout.size());
        self.charged(bytes, new_layout.size(), |inner| {
            // SAFETY: forwarded caller contract.
            unsafe { inner.grow(ptr, old_layout, new_layout) }
        })
    }

    #[inline]
    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let bytes = new_layout.size().saturating_sub(old_layout.size());
        self.charged(bytes, new_layout.size(), |inner| {
            // SAFETY: forwarded caller contract.
            unsafe { inner.grow_zeroed(ptr, old_layout, new_layout) }
        })
    }

    #[inline]
    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract.
        let block = unsafe { self.inner.shrink(ptr, old_layout, new_layout) }?;
        self.budget
            .credit(old_layout.size().saturating_sub(new_layout.size()));
        Ok(exactly(block, new_layout.size()))
    }
}

/// A budget that lives as long as the test process, as `new_with_budget` needs. Kept in a static
/// list, so that LeakSanitizer sees it reachable rather than leaked. Shared by the virtual arenas'
/// unit tests.
#[cfg(test)]
#[cfg_attr(loom, allow(dead_code))] // the loom models make their own budgets
pub(crate) fn leaked_budget(limit: usize) -> &'static Budget {
    static KEPT: std::sync::Mutex<std::vec::Vec<&'static Budget>> =
        std::sync::Mutex::new(std::vec::Vec::new());
    let budget = std::boxed::Box::leak(std::boxed::Box::new(Budget::new(limit)));
    KEPT.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(budget);
    budget
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChainAllocator, LinearAllocator, System};

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn charge_up_to_the_limit_succeeds_and_one_byte_more_is_refused() {
        let budget = Budget::new(100);
        budget.try_charge(60).unwrap();
        budget.try_charge(40).unwrap();
        assert_eq!(budget.try_charge(1), Err(AllocError));
        assert_eq!(
            (budget.used(), budget.remaining(), budget.peak()),
            (100, 0, 100)
        );
        budget.try_charge(0).unwrap();
        assert_eq!(budget.try_charge(usize::MAX), Err(AllocError));
        budget.credit(100);
        assert_eq!((budget.used(), budget.peak()), (0, 100));
    }

    #[test]
    fn over_credit_stops_at_zero() {
        let budget = Budget::new(10);
        budget.try_charge(5).unwrap();
        budget.credit(7);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn allocate_charges_the_requested_size_and_deallocate_credits_it() {
        let budget = Budget::new(1000);
        let alloc = Budgeted::new(&budget, System);
        let block = alloc.allocate(layout(300)).unwrap();
        assert_eq!((block.len(), budget.used()), (300, 300));
        assert_eq!(alloc.allocate(layout(701)), Err(AllocError));
        assert_eq!(budget.used(), 300);
        // SAFETY: from `alloc` with this layout.
        unsafe { alloc.deallocate(block.cast(), layout(300)) };
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn grow_charges_the_difference_and_a_grow_that_would_cross_charges_nothing() {
        let budget = Budget::new(1000);
        let alloc = Budgeted::new(&budget, System);
        let block = alloc.allocate(layout(100)).unwrap();
        // SAFETY: the block is ours, fresh.
        unsafe { block.cast::<u8>().write_bytes(7, 100) };
        // SAFETY: from `alloc` with `layout(100)`.
        let grown = unsafe { alloc.grow(block.cast(), layout(100), layout(900)) }.unwrap();
        assert_eq!(budget.used(), 900);
        // SAFETY: from `alloc` with `layout(900)`.
        let refused = unsafe { alloc.grow(grown.cast(), layout(900), layout(1001)) };
        assert_eq!((refused, budget.used()), (Err(AllocError), 900));
        // SAFETY: still the block of `layout(900)`; its first 100 bytes were written.
        assert_eq!(unsafe { *grown.cast::<u8>().as_ptr().add(99) }, 7);
        // SAFETY: from `alloc` with `layout(900)`.
        let shrunk = unsafe { alloc.shrink(grown.cast(), layout(900), layout(50)) }.unwrap();
        assert_eq!(budget.used(), 50);
        // SAFETY: from `alloc` with `layout(50)`.
        unsafe { alloc.deallocate(shrunk.cast(), layout(50)) };
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_failing_backing_call_gives_the_charge_back() {
        let budget = Budget::new(1 << 20);
        let backing = LinearAllocator::new_in(layout(256), System).unwrap();
        let alloc = Budgeted::new(&budget, &backing);
        assert_eq!(alloc.allocate(layout(512)), Err(AllocError));
        assert_eq!(budget.used(), 0);
        let block = alloc.allocate(layout(200)).unwrap();
        // SAFETY: from `alloc` with `layout(200)`.
        let refused = unsafe { alloc.grow(block.cast(), layout(200), layout(300)) };
        assert_eq!((refused, budget.used()), (Err(AllocError), 200));
    }

    #[test]
    fn an_arena_on_a_budget_is_refused_its_next_chunk_and_gives_everything_back_on_drop() {
        let budget = Budget::new(10_000);
        let arena = ChainAllocator::new_in(4000, Budgeted::new(&budget, System)).unwrap();
        let first = budget.used();
        assert!((4000..=10_000).contains(&first));
        while arena.allocate(layout(500)).is_ok() {}
        assert!(budget.used() <= 10_000);
        assert!(budget.peak() <= 10_000);
        drop(arena);
        assert_eq!(budget.used(), 0);
    }
}
