//! [`VirtualArena`]: one contiguous bump arena over a large address reservation, committed in
//! steps.

use crate::bump::{self, dangling, Cursor};
use crate::{os, AllocError, Allocator, Budget, Checkpoint, Rewind};
use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;

/// The first commit step; later steps double, up to the arena's maximum step.
const MIN_COMMIT_STEP: usize = 64 << 10;

/// The default maximum commit step: one huge page on x86-64, so that a commit is rare (one
/// `mprotect` per 2 MiB) but never charges much more than is used.
pub(crate) const DEFAULT_MAX_COMMIT_STEP: usize = 2 << 20;

/// The maximum commit step for a requested `bytes`: at least the first step, in whole pages.
/// Shared with `SyncVirtualArena`.
pub(crate) fn max_commit_step(bytes: usize, page: usize) -> usize {
    // Past the top of the address space, the largest page multiple: never below the first step
    // (the reservation may be smaller than that, which would invert the bounds below).
    bump::align_up(bytes.max(MIN_COMMIT_STEP), page).unwrap_or(!(page - 1))
}

/// Where to move the commit frontier from `committed` bytes when an allocation needs `needed`
/// (page aligned, within the reservation): one step further, the step doubling with the
/// committed size from 64 KiB up to `max_step`; at least `needed`, at most the reservation.
/// Shared with `SyncVirtualArena`.
pub(crate) fn commit_target(
    committed: usize,
    needed: usize,
    max_step: usize,
    page: usize,
    reservation: usize,
) -> usize {
    // Page aligned even where a page is larger than the first step. `max`/`min` rather than
    // `clamp`, which panics if the bounds were ever inverted.
    let step = committed.max(MIN_COMMIT_STEP).min(max_step);
    bump::align_up(committed.saturating_add(step), page)
        .unwrap_or(reservation)
        .max(needed)
        .min(reservation)
}

/// Commits the offsets `[from, to)` of a reservation with `commit`, charging `to - from` to
/// `budget` first; a refused charge is an `Err` with no call to the OS, and a refused commit
/// credits the charge back. Returns `to`. Shared with `SyncVirtualArena`.
pub(crate) fn charge_and_commit(
    budget: Option<&Budget>,
    from: usize,
    to: usize,
    commit: impl FnOnce(usize, usize) -> Result<usize, AllocError>,
) -> Result<usize, AllocError> {
    let bytes = to.saturating_sub(from);
    if let Some(budget) = budget {
        budget.try_charge(bytes)?;
    }
    commit(from, to).inspect_err(|_| {
        if let Some(budget) = budget {
            budget.credit(bytes);
        }
    })
}

/// A bump arena over one large, contiguous address range, reserved once and committed in steps
/// as the cursor reaches it. It never chains and never moves: every block it hands out lies in
/// one range, in allocation order, and the most recent block can always grow in place up to
/// the end of the reservation (a `Vec` in it never copies).
///
/// # Reserve, then commit
/// [`new`](Self::new) reserves the address range (`mmap(PROT_NONE, MAP_NORESERVE)`;
/// `VirtualAlloc(MEM_RESERVE)` on Windows). That costs no memory and no commit charge, so
/// reserving 64 GiB works on a machine with less RAM. When an allocation reaches past the
/// committed part, a cold path commits the next step read-write (`mprotect`; `MEM_COMMIT`):
/// 64 KiB first, doubling up to [`with_max_commit_step`](Self::with_max_commit_step) (2 MiB
/// by default), and at least what the allocation needs. The OS backs committed pages with memory
/// as they are first touched, so the resident set tracks what is used.
///
/// Committing is where the OS may say no, and it says so with an error, not a crash: under
/// strict overcommit (`vm.overcommit_memory = 2`), past `RLIMIT_DATA`, or on Windows when the
/// commit limit is reached, the allocation that needed the commit returns `Err` and the arena is
/// unchanged. (Under the default heuristic mode 0 Linux does not account this memory; if RAM and
/// swap truly run out, the OOM killer acts on first touch, as for any lazily backed memory.)
///
/// # Memory budget
/// [`new_with_budget`](Self::new_with_budget) makes the arena charge a [`Budget`] for every
/// byte it commits, before the `mprotect`: a commit step the budget refuses falls back to the
/// bare need, and if that is refused too the allocation that needed it is `Err` (nothing
/// claimed, the arena usable below the limit). The budget is credited for a refused commit, for
/// everything committed on drop, and on [`reset_and_release`](Self::reset_and_release), after
/// which the arena commits (and charges) again as it refills. So `budget.used()` counts
/// `committed_bytes()` exactly, and arenas of every kind can share one cap.
///
/// # Statistics
/// All O(1). [`used_bytes`](Self::used_bytes): handed out (padding included);
/// [`committed_bytes`](Self::committed_bytes): read-write so far, at most what the arena can
/// make resident; [`reservation_bytes`](Self::reservation_bytes): the address range, the hard
/// cap; [`reserved_bytes`](Self::reserved_bytes) is `committed_bytes`, with the meaning it has
/// on the other arenas (memory taken from the OS, usable without another request).
/// [`remaining_capacity`](Self::remaining_capacity) and
/// [`has_capacity_for`](Self::has_capacity_for) count up to the reservation, since the arena
/// commits as it goes: `used_bytes() + remaining_capacity() == reservation_bytes()`.
///
/// # Giving memory back
/// [`reset`](Self::reset) frees every block and keeps the pages resident, for reuse.
/// [`reset_and_release`](Self::reset_and_release) also returns the pages to the OS with
/// `MADV_DONTNEED`: the resident set drops, the reservation and the commit stay (so refilling up
/// to `committed_bytes` cannot fail), and the pages read back as zero.
/// [`Rewind`](crate::Rewind) rolls back to a [`Checkpoint`](crate::Checkpoint) (or around a
/// [`scope`](crate::Rewind::scope)) in O(1), keeping the pages committed like `reset`.
///
/// # Errors
/// Allocation fails with `Err(AllocError)` when the reservation is exhausted or the OS refuses a
/// commit (out of memory under strict accounting, `RLIMIT_DATA`, `vm.max_map_count`), or the
/// arena's [budget](Self::new_with_budget) refuses it. The first is final for this arena; the
/// others may pass when memory (or budget) is freed elsewhere.
///
/// # Soundness of `reset`
/// Why a safe `reset(&mut self)` (and `rewind`) next to `Allocator` for the owned arena is
/// sound: see the [crate docs](crate#why-a-safe-resetmut-self-next-to-allocator-is-sound).
///
/// # Signal safety
/// Not reentrant: the cursor is a `Cell`, so a signal handler must not allocate from an arena the
/// interrupted code may be using. The allocation path never locks or calls the global allocator;
/// the commit step is one raw `mprotect` syscall on Linux that leaves `errno` alone.
///
/// # Examples
/// ```
/// use libdd_alloc::{Allocator, Layout, VirtualArena};
///
/// let arena = VirtualArena::new(1 << 30)?; // 1 GiB of address space, no memory yet
/// assert_eq!(arena.committed_bytes(), 0);
/// let a = arena.allocate(Layout::new::<[u64; 4]>())?;
/// let b = arena.allocate(Layout::new::<u64>())?;
/// assert_eq!(b.cast::<u8>().as_ptr() as usize - a.cast::<u8>().as_ptr() as usize, 32);
/// assert_eq!(arena.used_bytes(), 40);
/// assert_eq!(arena.committed_bytes(), 64 << 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct VirtualArena {
    /// Free range `[cur, base + committed)`.
    cursor: Cursor,
    /// Start of the reservation; carries its provenance.
    base: NonNull<u8>,
    /// Length of the reservation, a multiple of the page size.
    reservation: usize,
    /// Length of the committed (read-write) prefix, a multiple of the page size.
    committed: Cell<usize>,
    /// Offset below which bytes may be non-zero: the highest the cursor has been since the
    /// arena was made or last released. Bytes past it are untouched zero pages.
    dirty: Cell<usize>,
    max_commit_step: usize,
    page: usize,
    /// Charged for every committed byte: `budget.used()` includes `committed`.
    budget: Option<&'static Budget>,
}

// SAFETY: the arena owns its reservation outright; moving it moves that ownership (the budget
// is a shared `&'static` to atomics). Not `Sync`: the cursor is a `Cell`.
unsafe impl Send for VirtualArena {}

impl VirtualArena {
    /// Reserves `reservation_bytes` of address space (rounded up to whole pages, at least one)
    /// and commits nothing yet.
    ///
    /// # Errors
    /// `Err(AllocError)` when the OS refuses the reservation: not enough address space, or
    /// `RLIMIT_AS`; a size past `isize::MAX`; the page size cannot be read
    /// ([`os::page_size`](crate::os::page_size)).
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::VirtualArena;
    /// let arena = VirtualArena::new(1 << 30)?; // 1 GiB: address space, not memory
    /// assert_eq!(arena.reservation_bytes(), 1 << 30);
    /// assert_eq!(arena.reserved_bytes(), 0);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn new(reservation_bytes: usize) -> Result<Self, AllocError> {
        let page = os::page_size()?;
        let reservation = os::round_to_pages(reservation_bytes.max(1), page).ok_or(AllocError)?;
        let base = os::reserve(reservation)?;
        let cursor = Cursor::empty();
        cursor.set(base, 0);
        Ok(Self {
            cursor,
            base,
            reservation,
            committed: Cell::new(0),
            dirty: Cell::new(0),
            max_commit_step: DEFAULT_MAX_COMMIT_STEP.max(page),
            page,
            budget: None,
        })
    }

    /// As [`new`](Self::new), and every byte the arena commits is charged to `budget` (see
    /// [Memory budget](Self#memory-budget)). The reservation itself is not charged: it costs no
    /// memory. `'static` because the budget must outlive the arena; a `static` budget, or one
    /// made at run time with `Box::leak`, is what arenas sharing a cap use.
    ///
    /// # Errors
    /// As for [`new`](Self::new). Allocations are then refused with `Err` when their commit
    /// would take the budget past its limit.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Allocator, Budget, Layout, VirtualArena};
    ///
    /// static STRINGS: Budget = Budget::new(1 << 20);
    /// let arena = VirtualArena::new_with_budget(1 << 30, &STRINGS)?;
    /// arena.allocate(Layout::new::<u64>())?;
    /// assert_eq!(STRINGS.used(), arena.committed_bytes()); // the first 64 KiB step
    /// // Crossing 1 MiB of commit is refused at the allocation that would cross it.
    /// assert!(arena.allocate(Layout::array::<u8>(1 << 20)?).is_err());
    /// arena.allocate(Layout::array::<u8>(512 << 10)?)?; // below the limit: still fine
    /// drop(arena);
    /// assert_eq!(STRINGS.used(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_with_budget(
        reservation_bytes: usize,
        budget: &'static Budget,
    ) -> Result<Self, AllocError> {
        let mut arena = Self::new(reservation_bytes)?;
        arena.budget = Some(budget);
        Ok(arena)
    }

    /// The budget this arena's commits are charged to, if it was made with
    /// [`new_with_budget`](Self::new_with_budget). O(1).
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Budget, VirtualArena};
    /// static BUDGET: Budget = Budget::new(1 << 20);
    /// let arena = VirtualArena::new_with_budget(1 << 30, &BUDGET)?;
    /// assert!(arena.budget().is_some_and(|b| core::ptr::eq(b, &BUDGET)));
    /// assert!(VirtualArena::new(1 << 30)?.budget().is_none());
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn budget(&self) -> Option<&'static Budget> {
        self.budget
    }

    /// Bounds the commit step: the arena commits at most `bytes` (rounded up to pages, at least
    /// 64 KiB) more than an allocation needs at a time. Smaller steps charge the commit limit
    /// more closely to use; larger ones make fewer `mprotect` calls.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 30)?.with_max_commit_step(64 << 10);
    /// for _ in 0..4 {
    ///     arena.allocate(Layout::new::<[u8; 60_000]>())?;
    /// }
    /// assert_eq!(arena.committed_bytes(), 256 << 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_max_commit_step(mut self, bytes: usize) -> Self {
        self.max_commit_step = max_commit_step(bytes, self.page);
        self
    }

    /// Bytes handed out so far, alignment padding included. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 20)?;
    /// arena.allocate(Layout::new::<u8>())?;
    /// arena.allocate(Layout::from_size_align(8, 8)?)?;
    /// assert_eq!(arena.used_bytes(), 16); // 1 byte, 7 of padding, 8 bytes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn used_bytes(&self) -> usize {
        self.cursor.cur_addr() - self.base.as_ptr().addr()
    }

    /// Bytes committed read-write so far: charged against the commit limit where the OS keeps
    /// one, and the most this arena can have resident. A multiple of the page size. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 30)?;
    /// arena.allocate(Layout::new::<u64>())?;
    /// assert_eq!(arena.committed_bytes(), 64 << 10); // the first step
    /// arena.allocate(Layout::new::<[u8; 100_000]>())?;
    /// assert_eq!(arena.committed_bytes(), 128 << 10); // the next step doubles
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn committed_bytes(&self) -> usize {
        self.committed.get()
    }

    /// Bytes of address space reserved: the most this arena can ever hand out. O(1).
    ///
    /// ```
    /// # use libdd_alloc::VirtualArena;
    /// let arena = VirtualArena::new(10_000)?;
    /// assert_eq!(arena.reservation_bytes() % libdd_alloc::os::page_size()?, 0);
    /// assert!(arena.reservation_bytes() >= 10_000);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn reservation_bytes(&self) -> usize {
        self.reservation
    }

    /// The same as [`committed_bytes`](Self::committed_bytes): memory taken from the OS, as
    /// `reserved_bytes` means for `LinearAllocator` and `ChainAllocator`. Not the address
    /// reservation, which is [`reservation_bytes`](Self::reservation_bytes). O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 30)?;
    /// arena.allocate(Layout::new::<u8>())?;
    /// assert_eq!(arena.reserved_bytes(), arena.committed_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn reserved_bytes(&self) -> usize {
        self.committed_bytes()
    }

    /// Bytes that can still be handed out before the reservation is exhausted:
    /// `reservation_bytes() - used_bytes()`. Allocating them may still fail if the OS refuses
    /// to commit. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 20)?;
    /// arena.allocate(Layout::array::<u8>(1000)?)?;
    /// assert_eq!(arena.remaining_capacity(), (1 << 20) - 1000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn remaining_capacity(&self) -> usize {
        self.reservation_end() - self.cursor.cur_addr()
    }

    /// Whether `layout` fits in the rest of the reservation, alignment padding included (the OS
    /// may still refuse to commit it). O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 20)?;
    /// assert!(arena.has_capacity_for(Layout::array::<u8>(1 << 20)?));
    /// assert!(!arena.has_capacity_for(Layout::array::<u8>((1 << 20) + 1)?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn has_capacity_for(&self, layout: Layout) -> bool {
        layout.size() == 0
            || bump::fit(self.cursor.cur_addr(), self.reservation_end(), layout).is_some()
    }

    /// Frees every allocation at once. O(1). The committed pages stay resident, holding their
    /// old contents, ready for reuse; use [`reset_and_release`](Self::reset_and_release) to give
    /// them back. Taking `&mut self` proves that no reference into the arena is alive.
    ///
    /// # Blocks held by a container that owns the arena
    /// `&mut self` proves that nothing *borrows* the arena, not that every block was given back:
    /// blocks from [`Allocator::allocate`] are raw pointers. A container that owns the arena by
    /// value as its allocator (`Vec<T, VirtualArena>`) and handed out `&mut` to it would let `reset` free
    /// blocks the container still uses. Not doing so is that container's (unsafe) part of the
    /// `Allocator` contract, under which a block stays valid while it is allocated; the
    /// collections of allocator-api2, hashbrown and std only ever expose `&A`, and bump-scope
    /// and blink-alloc share this design. References from the [`Arena`](crate::Arena) methods
    /// borrow the arena, so safe code cannot run into this.
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let mut arena = VirtualArena::new(1 << 20)?;
    /// let first = arena.allocate(Layout::new::<u64>())?;
    /// arena.reset();
    /// assert_eq!(arena.used_bytes(), 0);
    /// assert_eq!(arena.allocate(Layout::new::<u64>())?, first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&mut self) {
        self.note_high_water();
        self.cursor.set(self.base, self.committed.get());
    }

    /// Frees every allocation and gives the pages back to the OS (`MADV_DONTNEED`; decommit
    /// and recommit on Windows), keeping the reservation and the commit: the resident set drops
    /// by what the arena had touched, and the pages read back as zero when next used. What
    /// [`reset`](Self::reset) says about containers that own the arena applies here too.
    ///
    /// `MADV_FREE` would be cheaper, but after it the contents are undefined until the kernel
    /// reclaims the pages (a later read may see old data), which would break
    /// [`allocate_zeroed`](Allocator::allocate_zeroed) without a memset. Cost: about 0.2 µs per
    /// touched page, plus a page fault per page when it is used again.
    ///
    /// If the OS refuses (Linux cannot for this mapping; Windows can, when the commit limit is
    /// reached between its decommit and recommit), the arena is still reset, but counts nothing
    /// as committed any more: the next allocation commits again, and may fail with `Err`.
    ///
    /// On an arena with a [budget](Self::new_with_budget), the released pages are credited to
    /// the budget and the arena counts nothing as committed (`committed_bytes()` is 0): refilling
    /// commits and charges again, step by step, and may then be refused by the budget.
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let mut arena = VirtualArena::new(1 << 20)?;
    /// let block = arena.allocate(Layout::new::<u64>())?.cast::<u64>();
    /// // SAFETY: the block is ours and sized for a u64.
    /// unsafe { block.as_ptr().write(u64::MAX) };
    /// arena.reset_and_release();
    /// let again = arena.allocate_zeroed(Layout::new::<u64>())?.cast::<u64>();
    /// assert_eq!(again, block);
    /// // SAFETY: as above.
    /// assert_eq!(unsafe { again.as_ptr().read() }, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset_and_release(&mut self) {
        self.note_high_water();
        let dirty = bump::align_up(self.dirty.get(), self.page).unwrap_or(self.committed.get());
        let touched = dirty.min(self.committed.get());
        let released = if touched == 0 {
            Ok(())
        } else {
            // SAFETY: `[base, base + touched)` is committed read-write memory of our
            // reservation, and `&mut self` proves no block in it is still borrowed.
            unsafe { os::release_pages(self.base, touched) }
        };
        self.finish_release(released);
    }

    /// The end of [`reset_and_release`](Self::reset_and_release), once the OS has answered.
    fn finish_release(&mut self, released: Result<(), AllocError>) {
        match released {
            Ok(()) => self.dirty.set(0),
            // The pages may now be inaccessible (Windows decommits, then commits again, and the
            // second step can be refused; a failed `MAP_FIXED` may unmap): count nothing as
            // committed, so the next allocation commits again (or fails) before any reuse.
            // Committing pages that are still committed is harmless.
            Err(AllocError) => self.forget_commit(),
        }
        // The budget gets the pages back; refilling charges them again as it recommits.
        if self.budget.is_some() {
            self.forget_commit();
        }
        self.cursor.set(self.base, self.committed.get());
    }

    /// Counts nothing as committed any more, crediting the budget for what was. The cursor
    /// poisoned the free part of those pages (feature `asan-poison`); drop unpoisons only what
    /// is then committed, so the poison is lifted here.
    fn forget_commit(&self) {
        bump::unpoison_chunk(self.base, self.committed.get());
        if let Some(budget) = self.budget {
            budget.credit(self.committed.get());
        }
        self.committed.set(0);
    }

    #[inline(always)]
    fn reservation_end(&self) -> usize {
        self.base.as_ptr().addr() + self.reservation
    }

    /// Records the cursor in the high-water mark before it moves back.
    #[inline]
    fn note_high_water(&self) {
        let used = self.used_bytes();
        if used > self.dirty.get() {
            self.dirty.set(used);
        }
    }

    /// Commits enough of the reservation that the address `end` lies inside the committed part,
    /// and points the cursor's limit at the new end. The step is what makes commit failure an
    /// `Err` here rather than a fault on first touch.
    #[cold]
    #[inline(never)]
    fn commit_through(&self, end: usize) -> Result<(), AllocError> {
        let base = self.base.as_ptr().addr();
        let committed = self.committed.get();
        let needed = end.checked_sub(base).ok_or(AllocError)?;
        if needed <= committed {
            return Ok(());
        }
        if needed > self.reservation {
            return Err(AllocError);
        }
        let needed = bump::align_up(needed, self.page).ok_or(AllocError)?;
        let wanted = commit_target(
            committed,
            needed,
            self.max_commit_step,
            self.page,
            self.reservation,
        );
        // Charged before the `mprotect`, credited back if it fails.
        let commit = |from, to| {
            // SAFETY: `committed <= needed <= wanted <= reservation`, page aligned: the only
            // ranges passed below.
            unsafe { self.commit_range(from, to) }
        };
        let grew = charge_and_commit(self.budget, committed, wanted, commit).or_else(|_| {
            // The generous step was refused (by the OS or the budget); the bare need may pass.
            charge_and_commit(self.budget, committed, needed, commit)
        })?;
        self.committed.set(grew);
        let cur = self.cursor.cur_addr();
        // SAFETY: `cur` lies inside the reservation, so the offset stays in bounds of `base`,
        // whose provenance covers the whole reservation.
        let cur_ptr = unsafe { self.base.add(cur - base) };
        self.cursor.set(cur_ptr, base + grew - cur);
        Ok(())
    }

    /// Commits the offsets `[from, to)` and returns `to`.
    ///
    /// # Safety
    /// `from <= to <= reservation`, both multiples of the page size.
    unsafe fn commit_range(&self, from: usize, to: usize) -> Result<usize, AllocError> {
        // SAFETY: per the caller, the range is a page-aligned part of our reservation.
        unsafe { os::commit(self.base.add(from), to - from)? };
        Ok(to)
    }

    #[cold]
    #[inline(never)]
    fn allocate_after_commit(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let fit =
            bump::fit(self.cursor.cur_addr(), self.reservation_end(), layout).ok_or(AllocError)?;
        self.commit_through(fit.new_cur)?;
        self.cursor.bump(layout).ok_or(AllocError)
    }
}

/// Rolling back moves the cursor back: O(1), and `used_bytes` is again what it was at the
/// checkpoint. The committed pages stay committed and resident (`committed_bytes` does not drop),
/// ready for reuse, as after [`reset`](VirtualArena::reset); the bytes given back keep their
/// contents, and [`allocate_zeroed`](Allocator::allocate_zeroed) still zeroes them when it hands
/// them out again.
///
/// ```
/// use libdd_alloc::{Arena, Rewind, VirtualArena};
///
/// let mut arena = VirtualArena::new(1 << 30)?;
/// arena.try_alloc_str("kept")?;
/// let checkpoint = arena.checkpoint();
/// arena.try_alloc_slice_fill_with(1 << 20, |i| i as u8)?; // commits more
/// let committed = arena.committed_bytes();
/// arena.rewind(checkpoint);
/// assert_eq!(arena.used_bytes(), 4);
/// assert_eq!(arena.committed_bytes(), committed);
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
impl Rewind for VirtualArena {
    #[inline]
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            chunks: 1,
            used: self.used_bytes(),
        }
    }

    #[inline]
    fn rewind(&mut self, checkpoint: Checkpoint) {
        // One range, at depth 1.
        if let Some(used) = checkpoint.used_in_chunk(1) {
            // The bytes between the checkpoint and the cursor may be written: record them
            // before the cursor moves back, so that `allocate_zeroed` zeroes them.
            self.note_high_water();
            // Clamped to the committed part, the cursor's range; past it is never handed out
            // before it is committed.
            self.cursor.set_used(self.base, self.committed.get(), used);
        }
    }
}

impl Drop for VirtualArena {
    fn drop(&mut self) {
        // The cursor poisoned the free part of the committed pages (feature `asan-poison`);
        // ASan does not see the raw munmap, so the next mapping at these addresses would
        // inherit the poison.
        bump::unpoison_chunk(self.base, self.committed.get());
        // SAFETY: the reservation is ours, made by `os::reserve`, and the arena is going away,
        // so no block is borrowed.
        unsafe { os::unmap(self.base, self.reservation) };
        // Only once the pages are gone, so that the budget never counts less than is mapped.
        if let Some(budget) = self.budget {
            budget.credit(self.committed.get());
        }
    }
}

impl core::fmt::Debug for VirtualArena {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VirtualArena")
            .field("used_bytes", &self.used_bytes())
            .field("committed_bytes", &self.committed_bytes())
            .field("reservation_bytes", &self.reservation_bytes())
            .finish_non_exhaustive()
    }
}

// SAFETY: blocks are disjoint parts of the reservation, committed before they are handed out
// and valid until `reset` (`&mut self`) or drop. Only the most recent block is resized or given
// back in place, through the shared bump arithmetic; the reservation never moves.
unsafe impl Allocator for VirtualArena {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        match self.cursor.bump(layout) {
            Some(block) => Ok(block),
            None => self.allocate_after_commit(layout),
        }
    }

    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let block = self.allocate(layout)?;
        if layout.size() == 0 {
            // Dangling, not in the reservation: nothing to zero (and no offset to compute).
            return Ok(block);
        }
        // Bytes past the high-water mark were never handed out since the pages were fresh.
        let start = block.cast::<u8>().as_ptr().addr() - self.base.as_ptr().addr();
        let dirty_end = self.dirty.get().min(start + block.len());
        if dirty_end > start {
            // SAFETY: `[start, dirty_end)` is the head of the block just handed out.
            unsafe { block.cast::<u8>().write_bytes(0, dirty_end - start) };
        }
        Ok(block)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            self.note_high_water();
            self.cursor.release_if_last(ptr, layout.size());
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let block = ptr.as_ptr().addr();
        if old.size() != 0
            && block.wrapping_add(old.size()) == self.cursor.cur_addr()
            && block & (new.align() - 1) == 0
        {
            // The most recent block grows in place, committing more when it must: the arena
            // never moves it.
            let end = block.checked_add(new.size()).ok_or(AllocError)?;
            if end > self.cursor.limit() {
                self.commit_through(end)?;
            }
            return self
                .cursor
                .resize_last_in_place(ptr, old.size(), new)
                .ok_or(AllocError);
        }
        // SAFETY: forwarded caller contract.
        unsafe { crate::resize::move_block(self, ptr, old, new) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract.
        let block = unsafe { self.grow(ptr, old, new) }?;
        // SAFETY: the block is ours and at least `new.size() >= old.size()` long.
        unsafe { crate::resize::zero_tail(block, old.size()) };
        Ok(block)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.note_high_water();
        // SAFETY: forwarded caller contract.
        unsafe { crate::resize::shrink(self, &self.cursor, ptr, old, new) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_commit_step_is_rounded_to_pages_and_at_least_the_first_step() {
        let page = os::page_size().unwrap();
        let arena = VirtualArena::new(1 << 28).unwrap();
        assert_eq!(arena.max_commit_step, DEFAULT_MAX_COMMIT_STEP);
        let tiny = VirtualArena::new(1 << 28).unwrap().with_max_commit_step(1);
        assert_eq!(tiny.max_commit_step, MIN_COMMIT_STEP);
        let odd = VirtualArena::new(1 << 28)
            .unwrap()
            .with_max_commit_step(MIN_COMMIT_STEP + 1);
        assert_eq!(odd.max_commit_step, MIN_COMMIT_STEP + page);
    }

    #[test]
    fn reservation_is_rounded_up_to_at_least_one_page() {
        let page = os::page_size().unwrap();
        assert_eq!(VirtualArena::new(0).unwrap().reservation_bytes(), page);
        assert_eq!(
            VirtualArena::new(page + 1).unwrap().reservation_bytes(),
            2 * page
        );
        assert!(VirtualArena::new(usize::MAX).is_err());
    }

    #[test]
    fn high_water_mark_tracks_the_furthest_cursor_until_release() {
        let mut arena = VirtualArena::new(1 << 20).unwrap();
        let layout = Layout::from_size_align(1000, 8).unwrap();
        let block = arena.allocate(layout).unwrap();
        assert_eq!(arena.dirty.get(), 0, "moving forward records nothing");
        // SAFETY: the most recent block, given back.
        unsafe { arena.deallocate(block.cast(), layout) };
        assert_eq!(arena.dirty.get(), 1000);
        arena.reset();
        assert_eq!(arena.dirty.get(), 1000);
        arena.reset_and_release();
        assert_eq!(arena.dirty.get(), 0);
    }

    #[test]
    fn commit_through_an_address_already_committed_makes_no_change() {
        let arena = VirtualArena::new(1 << 20).unwrap();
        arena.allocate(Layout::new::<u8>()).unwrap();
        let committed = arena.committed_bytes();
        let base = arena.base.as_ptr().addr();
        arena.commit_through(base + committed).unwrap();
        assert_eq!(arena.committed_bytes(), committed);
        assert!(arena.commit_through(base + (1 << 20) + 1).is_err());
        assert_eq!(arena.committed_bytes(), committed);
    }

    #[test]
    fn a_refused_release_that_left_pages_inaccessible_is_committed_again_before_reuse() {
        // Windows releases by decommitting and committing again; the second step can be
        // refused, leaving the pages inaccessible. Emulate that with PROT_NONE.
        let mut arena = VirtualArena::new(1 << 20).unwrap();
        let layout = Layout::from_size_align(1000, 8).unwrap();
        let block = arena.allocate(layout).unwrap();
        // SAFETY: the block is ours.
        unsafe { block.cast::<u8>().write_bytes(0xAB, 1000) };
        arena.note_high_water();
        let committed = arena.committed_bytes();
        // SAFETY: committed pages of our reservation, no block borrowed.
        unsafe { os::protect_none(arena.base, committed) }.unwrap();
        arena.finish_release(Err(AllocError));
        let again = arena.allocate_zeroed(layout).unwrap();
        assert_eq!(again, block);
        // SAFETY: the block is ours; before the fix this write faulted.
        unsafe { again.cast::<u8>().write_bytes(0x5A, 1000) };
        // SAFETY: as above.
        let bytes = unsafe { core::slice::from_raw_parts(again.cast::<u8>().as_ptr(), 1000) };
        assert!(bytes.iter().all(|&b| b == 0x5A));
        assert_eq!(arena.committed_bytes(), committed);
    }

    #[test]
    fn a_budget_is_charged_exactly_the_committed_bytes_and_credited_on_drop() {
        let budget = crate::budget::leaked_budget(1 << 30);
        let arena = VirtualArena::new_with_budget(1 << 30, budget).unwrap();
        assert_eq!(budget.used(), 0, "the reservation is not charged");
        for size in [8, 100_000, 1 << 20, 3 << 20] {
            arena.allocate(Layout::array::<u8>(size).unwrap()).unwrap();
            assert_eq!(budget.used(), arena.committed_bytes());
        }
        drop(arena);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_step_the_budget_refuses_falls_back_to_the_bare_need() {
        let page = os::page_size().unwrap();
        // Room for the first 64 KiB step and one more page, not for the next 64 KiB step.
        let budget = crate::budget::leaked_budget(MIN_COMMIT_STEP + page);
        let arena = VirtualArena::new_with_budget(1 << 30, budget).unwrap();
        arena
            .allocate(Layout::array::<u8>(MIN_COMMIT_STEP).unwrap())
            .unwrap();
        assert_eq!(budget.used(), MIN_COMMIT_STEP);
        arena.allocate(Layout::array::<u8>(page).unwrap()).unwrap();
        assert_eq!(
            (arena.committed_bytes(), budget.used()),
            (MIN_COMMIT_STEP + page, MIN_COMMIT_STEP + page)
        );
        assert_eq!(arena.allocate(Layout::new::<u8>()), Err(AllocError));
        assert_eq!(budget.used(), MIN_COMMIT_STEP + page);
        assert_eq!(budget.peak(), MIN_COMMIT_STEP + page);
    }

    #[test]
    fn a_refused_commit_leaves_the_cursor_and_the_budget_unchanged() {
        let budget = crate::budget::leaked_budget(256 << 10);
        let arena = VirtualArena::new_with_budget(1 << 30, budget).unwrap();
        arena.allocate(Layout::array::<u8>(100).unwrap()).unwrap();
        let (used, committed) = (arena.used_bytes(), arena.committed_bytes());
        assert_eq!(
            arena.allocate(Layout::array::<u8>(300 << 10).unwrap()),
            Err(AllocError)
        );
        assert_eq!(
            (arena.used_bytes(), arena.committed_bytes()),
            (used, committed)
        );
        assert_eq!(budget.used(), committed);
        // Below the limit the arena still commits and hands out.
        arena
            .allocate(Layout::array::<u8>(150 << 10).unwrap())
            .unwrap();
        assert!(budget.used() <= 256 << 10);
        assert_eq!(budget.used(), arena.committed_bytes());
    }

    #[test]
    fn a_grow_that_would_cross_the_budget_is_refused_and_keeps_the_block() {
        let budget = crate::budget::leaked_budget(128 << 10);
        let arena = VirtualArena::new_with_budget(1 << 30, budget).unwrap();
        let old = Layout::array::<u8>(1000).unwrap();
        let block = arena.allocate(old).unwrap();
        // SAFETY: the block is ours.
        unsafe { block.cast::<u8>().write_bytes(0x5A, 1000) };
        let new = Layout::array::<u8>(200 << 10).unwrap();
        // SAFETY: from this arena with `old`.
        let refused = unsafe { arena.grow(block.cast(), old, new) };
        assert_eq!(refused, Err(AllocError));
        assert_eq!(budget.used(), arena.committed_bytes());
        // SAFETY: the block is still ours, with its 1000 bytes.
        let bytes = unsafe { core::slice::from_raw_parts(block.cast::<u8>().as_ptr(), 1000) };
        assert!(bytes.iter().all(|&b| b == 0x5A));
        // SAFETY: as above; a grow within the limit commits in place.
        let grown =
            unsafe { arena.grow(block.cast(), old, Layout::array::<u8>(100 << 10).unwrap()) };
        assert_eq!(grown.unwrap().cast::<u8>(), block.cast::<u8>());
        assert_eq!(budget.used(), arena.committed_bytes());
    }

    #[test]
    fn reset_and_release_credits_the_budget_and_refilling_charges_again() {
        let budget = crate::budget::leaked_budget(1 << 20);
        let mut arena = VirtualArena::new_with_budget(1 << 30, budget).unwrap();
        arena
            .allocate(Layout::array::<u8>(700 << 10).unwrap())
            .unwrap();
        assert_eq!(budget.used(), arena.committed_bytes());
        assert!(budget.used() >= 700 << 10);
        arena.reset_and_release();
        assert_eq!((budget.used(), arena.committed_bytes()), (0, 0));
        // Another user takes most of the budget meanwhile: the refill is refused by it.
        budget.try_charge(600 << 10).unwrap();
        assert_eq!(
            arena.allocate(Layout::array::<u8>(700 << 10).unwrap()),
            Err(AllocError)
        );
        budget.credit(600 << 10);
        let block = arena
            .allocate_zeroed(Layout::array::<u8>(700 << 10).unwrap())
            .unwrap();
        assert_eq!(budget.used(), arena.committed_bytes());
        // SAFETY: the block is ours.
        unsafe { block.cast::<u8>().write_bytes(1, 700 << 10) };
        // `reset` and rewinding keep the commit, and its charge.
        arena.reset();
        assert_eq!(budget.used(), arena.committed_bytes());
        assert!(budget.used() > 0);
    }

    #[test]
    fn a_refused_release_credits_the_budget_for_the_commit_it_forgets() {
        let budget = crate::budget::leaked_budget(1 << 20);
        let mut arena = VirtualArena::new_with_budget(1 << 30, budget).unwrap();
        arena.allocate(Layout::array::<u8>(1000).unwrap()).unwrap();
        assert_eq!(budget.used(), MIN_COMMIT_STEP);
        arena.finish_release(Err(AllocError));
        assert_eq!((arena.committed_bytes(), budget.used()), (0, 0));
        drop(arena);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn an_arena_without_a_budget_keeps_its_commit_on_release() {
        let mut arena = VirtualArena::new(1 << 30).unwrap();
        arena.allocate(Layout::array::<u8>(1000).unwrap()).unwrap();
        arena.reset_and_release();
        assert_eq!(arena.committed_bytes(), MIN_COMMIT_STEP);
    }

    #[test]
    fn zero_size_layouts_use_no_arena_bytes() {
        let arena = VirtualArena::new(1 << 20).unwrap();
        let block = arena
            .allocate(Layout::from_size_align(0, 64).unwrap())
            .unwrap();
        assert_eq!(block.len(), 0);
        assert_eq!(block.cast::<u8>().as_ptr().addr() % 64, 0);
        assert_eq!(arena.used_bytes(), 0);
        assert_eq!(arena.committed_bytes(), 0);
    }
}
