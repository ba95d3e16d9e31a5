//! [`Virtual`]: one contiguous bump arena over a large address reservation, committed in
//! steps, written once for both cursors: [`VirtualArena`] (a `Cell` cursor) and
//! [`SyncVirtualArena`] (an atomic one).

use crate::bump::{self, dangling};
use crate::cursor::{AtomicCursor, CellCursor, Counter, Cursor};
use crate::drops::{push_to, DropList};
use crate::resize::LastBlock;
use crate::{os, AllocError, Allocator, Budget, Checkpoint, DropArena, Rewind};
use core::alloc::Layout;
use core::ptr::NonNull;

/// The first commit step; later steps double, up to the arena's maximum step.
const MIN_COMMIT_STEP: usize = 64 << 10;

/// The default maximum commit step: one huge page on x86-64, so that a commit is rare (one
/// `mprotect` per 2 MiB) but never charges much more than is used.
const DEFAULT_MAX_COMMIT_STEP: usize = 2 << 20;

/// The maximum commit step for a requested `bytes`: at least the first step, in whole pages.
fn max_commit_step(bytes: usize, page: usize) -> usize {
    // Past the top of the address space, the largest page multiple: never below the first step
    // (the reservation may be smaller than that, which would invert the bounds below).
    bump::align_up(bytes.max(MIN_COMMIT_STEP), page).unwrap_or(!(page - 1))
}

/// Where to move the commit frontier from `committed` bytes when an allocation needs `needed`
/// (page aligned, within the reservation): one step further, the step doubling with the
/// committed size from 64 KiB up to `max_step`; at least `needed`, at most the reservation.
fn commit_target(
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
/// credits the charge back. Returns `to`.
fn charge_and_commit(
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
/// as the cursor reaches it (a [`Virtual`] over a [`CellCursor`]; [`SyncVirtualArena`] is the
/// lock-free one). It never chains and never moves: every block it hands out lies in
/// one range, in allocation order, and the most recent block can always grow in place up to
/// the end of the reservation (a `Vec` in it never copies).
///
/// # Reserve, then commit
/// [`new`](Virtual::new) reserves the address range (`mmap(PROT_NONE, MAP_NORESERVE)`;
/// `VirtualAlloc(MEM_RESERVE)` on Windows). That costs no memory and no commit charge, so
/// reserving 64 GiB works on a machine with less RAM. When an allocation reaches past the
/// committed part, a cold path commits the next step read-write (`mprotect`; `MEM_COMMIT`):
/// 64 KiB first, doubling up to [`with_max_commit_step`](Virtual::with_max_commit_step) (2 MiB
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
/// [`new_with_budget`](Virtual::new_with_budget) makes the arena charge a [`Budget`] for every
/// byte it commits, before the `mprotect`: a commit step the budget refuses falls back to the
/// bare need, and if that is refused too the allocation that needed it is `Err` (nothing
/// claimed, the arena usable below the limit). The budget is credited for a refused commit, for
/// everything committed on drop, and on [`reset_and_release`](Virtual::reset_and_release), after
/// which the arena commits (and charges) again as it refills. So `budget.used()` counts
/// `committed_bytes()` exactly, and arenas of every kind can share one cap.
///
/// # Statistics
/// All O(1). [`used_bytes`](Virtual::used_bytes): handed out (padding included);
/// [`committed_bytes`](Virtual::committed_bytes): read-write so far, at most what the arena can
/// make resident; [`reservation_bytes`](Virtual::reservation_bytes): the address range, the hard
/// cap; [`reserved_bytes`](Virtual::reserved_bytes) is `committed_bytes`, with the meaning it has
/// on the other arenas (memory taken from the OS, usable without another request).
/// [`remaining_capacity`](Virtual::remaining_capacity) and
/// [`has_capacity_for`](Virtual::has_capacity_for) count up to the reservation, since the arena
/// commits as it goes: `used_bytes() + remaining_capacity() == reservation_bytes()`.
///
/// # Giving memory back
/// [`reset`](Virtual::reset) frees every block and keeps the pages resident, for reuse.
/// [`reset_and_release`](Virtual::reset_and_release) also returns the pages to the OS with
/// `MADV_DONTNEED`: the resident set drops, the reservation and the commit stay (so refilling up
/// to `committed_bytes` cannot fail), and the pages read back as zero.
/// [`Rewind`](crate::Rewind) rolls back to a [`Checkpoint`](crate::Checkpoint) (or around a
/// [`scope`](crate::Rewind::scope)) in O(1), keeping the pages committed like `reset`.
///
/// # Errors
/// Allocation fails with `Err(AllocError)` when the reservation is exhausted or the OS refuses a
/// commit (out of memory under strict accounting, `RLIMIT_DATA`, `vm.max_map_count`), or the
/// arena's [budget](Virtual::new_with_budget) refuses it. The first is final for this arena; the
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
///
/// # Platforms
/// Available on Unix and Windows only (`cfg(any(unix, windows))`), with a compare-and-swap on
/// pointer-sized words (`cfg(target_has_atomic = "ptr")`): it needs an OS with virtual memory.
/// Bare-metal targets have the arenas over a buffer the caller owns instead
/// ([`Linear::from_buffer`](crate::arena::Linear::from_buffer), [`static_arena!`](crate::static_arena)).
pub type VirtualArena = Virtual<CellCursor>;

/// A lock-free, reentrant bump arena over one large, contiguous address range, reserved once and
/// committed in steps: the thread-safe twin of [`VirtualArena`], with the same API, commit steps
/// and statistics (both are [`Virtual`], over an [`AtomicCursor`] here).
///
/// Like `VirtualArena` it never chains and never moves: blocks lie in one range, and the most
/// recent block can grow in place up to the end of the reservation. Unlike it, it is `Sync`, and
/// a signal handler may allocate from it while the code it interrupted is allocating from it on
/// the same thread. That makes it the arena for a crash handler that needs one large contiguous
/// region (a report buffer, a copy of a stack) prepared before the crash.
///
/// # How it works
/// Two words are shared: the cursor (an atomic bump pointer whose limit is the end of the
/// *reservation*) and the commit frontier `base + committed`, the end of the read-write prefix
/// of the reservation, which only grows while the arena is shared (`fetch_max`). Invariants:
/// 1. `[base, base + committed)` is read-write: a value of `committed` is published only after
///    the `mprotect` (`MEM_COMMIT`) that made its prefix read-write has returned.
/// 2. The cursor never passes `base + committed`, and every byte below the cursor has been
///    handed out (or is alignment padding, or was given back with the cursor moved below it).
///
/// Allocation (the hot path) loads `committed` and bumps the cursor by one compare-exchange,
/// bounded by that snapshot: the block `[start, new_cur)` must end at or below the committed
/// frontier *before* it is claimed. When it does not fit, a cold path commits first and claims
/// after: it computes the block from the current cursor, commits the range
/// `[committed, target)` it saw as missing (`target` at least the block's end, rounded up by the
/// commit step), publishes `target` with `fetch_max`, and then retries the bounded bump. So the
/// order is always *commit, publish, claim*, never *claim, then commit*.
///
/// Why a block is never handed out uncommitted: a block is handed out only by a successful
/// compare-exchange whose new cursor is at most a value of `committed` the thread loaded before
/// it; by invariant 1 that prefix was read-write already, and `committed` never shrinks while
/// the arena is shared.
///
/// Why a block is never handed out twice: only a successful compare-exchange of the cursor from
/// `cur` to `new_cur` hands out bytes, and it hands out `[cur, new_cur)`, which lies above every
/// block handed out before (invariant 2). The cursor moves back only by giving back the most
/// recent block (one compare-exchange from that block's end to its start, which fails if
/// anything followed it) or by `reset` (`&mut self`). Committing hands out nothing: it only
/// widens what the next compare-exchange may claim.
///
/// Why committing needs no lock: `mprotect` to read-write is idempotent. Two threads that both
/// see the frontier at `c` both commit from `c`, to their own targets; the overlap is harmless
/// (pages already read-write keep their contents), and each publishes only what it committed
/// itself, on top of a prefix that was already read-write, so `fetch_max` keeps invariant 1.
/// Nobody ever waits for another thread's commit to finish.
///
/// When the OS refuses a commit, the cold path tries the bare need (without the step's extra);
/// if that fails too and no other thread has committed the range meanwhile, allocation returns
/// `Err` *without having claimed anything*: the cursor is untouched, no bytes are lost, and
/// smaller allocations that fit the committed part still succeed.
///
/// # Memory budget
/// [`new_with_budget`](Virtual::new_with_budget) charges a [`Budget`] for every committed byte,
/// as on [`VirtualArena`](crate::VirtualArena#memory-budget): before the `mprotect`, with the
/// bare-need fallback charged separately, credited on a refused commit, on drop and on
/// [`reset_and_release`](Virtual::reset_and_release). Two threads (or a handler and the code it
/// interrupted) that commit overlapping ranges at once each charge their own range first; each
/// then credits the part that `fetch_max` shows was already published, so what stays charged
/// is exactly what each one added to the frontier. Consequences, while commits race:
/// - the budget never counts less than `committed_bytes()`: every range is charged before it is
///   committed, and only the part someone else already published is credited;
/// - it may count more, by at most the overlapping ranges of the commits in flight (each one
///   commit step, or the size of the allocation that needed it if that is larger), until those
///   commits return; so a charge may be refused up to one commit early while another thread
///   is committing the same pages. Once commits stop, `budget.used()` counts
///   `committed_bytes()` exactly, and it never passes the limit.
///
/// # Statistics
/// As for `VirtualArena`, all O(1): [`used_bytes`](Virtual::used_bytes),
/// [`committed_bytes`](Virtual::committed_bytes) (= [`reserved_bytes`](Virtual::reserved_bytes)),
/// [`reservation_bytes`](Virtual::reservation_bytes), [`remaining_capacity`](Virtual::remaining_capacity),
/// [`has_capacity_for`](Virtual::has_capacity_for). While other threads allocate they are
/// snapshots that may already be stale; once allocation stops they are exact, and
/// `used_bytes() + remaining_capacity() == reservation_bytes()`.
///
/// # Giving memory back
/// [`reset`](Virtual::reset) and [`reset_and_release`](Virtual::reset_and_release) as on
/// `VirtualArena` (both take `&mut self`): the second returns the touched pages to the OS with
/// `MADV_DONTNEED`, keeping the reservation and the commit. [`Rewind`](crate::Rewind) rolls
/// back to a [`Checkpoint`](crate::Checkpoint) (or around a [`scope`](crate::Rewind::scope)) in
/// O(1), keeping the pages committed like `reset`.
///
/// # Errors
/// Allocation fails with `Err(AllocError)` when the reservation is exhausted or the OS refuses a
/// commit (out of memory under strict accounting, `RLIMIT_DATA`, `vm.max_map_count`), or the
/// arena's [budget](Virtual::new_with_budget) refuses it, and then changes nothing.
///
/// # Soundness of `reset`
/// Why a safe `reset(&mut self)` (and `rewind`) next to `Allocator` for the owned arena is
/// sound: see the [crate docs](crate#why-a-safe-resetmut-self-next-to-allocator-is-sound).
///
/// # Signal safety
/// Async-signal-safe and reentrant on Linux. The hot path is a load and a compare-exchange loop;
/// the cold path adds one raw `mprotect` syscall (no user-space lock, `errno` untouched) and a
/// `fetch_max`. A handler that interrupts an allocation at any point runs its own allocation to
/// completion without waiting for the interrupted one:
/// - between the interrupted code's loads and its compare-exchange: the handler claims its own
///   block; the interrupted compare-exchange then fails and retries from the moved cursor;
/// - in the cold path, before or after the interrupted code's `mprotect`: the frontier the
///   handler sees is still short, so it commits the range it needs itself (from the frontier it
///   sees, possibly overlapping the interrupted commit, which is harmless) and publishes it. When
///   the interrupted code resumes, its `mprotect` re-protects pages that are already read-write,
///   its `fetch_max` cannot lower the frontier, and its claim retries against the new cursor.
///
/// Nothing is claimed before it is committed, so there is no half-done state for a handler to
/// trip over. Allocation never calls the global allocator.
///
/// # Examples
/// ```
/// use libdd_alloc::{Allocator, Layout, SyncVirtualArena};
///
/// let arena = SyncVirtualArena::new(1 << 30)?; // 1 GiB of address space, no memory yet
/// std::thread::scope(|s| {
///     for _ in 0..2 {
///         s.spawn(|| arena.allocate(Layout::new::<[u64; 4]>()).map(|_| ()));
///     }
/// });
/// assert_eq!(arena.used_bytes(), 64);
/// assert_eq!(arena.committed_bytes(), 64 << 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Platforms
/// Available on Unix and Windows only (`cfg(any(unix, windows))`), with a compare-and-swap on
/// pointer-sized words (`cfg(target_has_atomic = "ptr")`): it needs an OS with virtual memory.
/// Bare-metal targets have the arenas over a buffer the caller owns instead
/// ([`Linear::from_buffer`](crate::arena::Linear::from_buffer), [`static_arena!`](crate::static_arena)).
pub type SyncVirtualArena = Virtual<AtomicCursor>;

/// The one implementation of [`VirtualArena`] (cursor [`CellCursor`]) and
/// [`SyncVirtualArena`] (cursor [`AtomicCursor`]): a bump arena over one large, contiguous
/// address range, reserved once and committed in steps. Use it by those names; each one's page
/// says what it guarantees, and the methods below serve both.
///
/// Two words move: the cursor (its limit is the end of the *reservation*) and the commit
/// frontier, the end of the read-write prefix, which only grows while the arena is shared
/// (`fetch_max`; a plain store for the `Cell` arena). Every allocation commits, then publishes
/// the frontier, then claims below it: the protocol is on [`SyncVirtualArena`]'s page.
///
/// # Platforms
/// Available on Unix and Windows only (`cfg(any(unix, windows))`), with a compare-and-swap on
/// pointer-sized words (`cfg(target_has_atomic = "ptr")`): it needs an OS with virtual memory.
/// Bare-metal targets have the arenas over a buffer the caller owns instead
/// ([`Linear::from_buffer`](crate::arena::Linear::from_buffer), [`static_arena!`](crate::static_arena)).
pub struct Virtual<C: Cursor> {
    /// Free range `[cur, base + reservation)`, of which `[cur, frontier)` is usable now.
    cursor: C,
    /// Start of the reservation; carries its provenance.
    base: NonNull<u8>,
    /// Length of the reservation, a multiple of the page size.
    reservation: usize,
    /// End of the committed (read-write) prefix, an address: `base` plus a multiple of the page
    /// size. Grows only (`fetch_max`) while the arena is shared.
    frontier: C::Counter,
    /// Offset below which bytes may be non-zero: at least the highest the cursor has been
    /// before it moved back, since the arena was made or last released. Raised *before* the
    /// cursor moves back, so that whoever is then handed those bytes sees it.
    dirty: C::Counter,
    max_commit_step: usize,
    page: usize,
    /// Charged for every committed byte: once commits stop, `budget.used()` includes exactly
    /// the committed bytes (see the "Memory budget" sections).
    budget: Option<&'static Budget>,
    /// Under loom only: commits that would reach past this many bytes are refused, to model the
    /// OS saying no.
    #[cfg(all(test, loom))]
    commit_limit: usize,
    /// Values whose destructors run when their bytes are reclaimed (`src/drops.rs`).
    drops: DropList<C::DropHead>,
}

// SAFETY: the arena owns its reservation outright; moving it moves that ownership (the budget
// is a shared `&'static` to atomics; the drop records' values are `Send`, `DropArena`'s bound).
unsafe impl<C: Cursor> Send for Virtual<C> {}

// SAFETY: through `&self` the atomic arena changes only its atomics (cursor, frontier, `dirty`,
// the head of its drop list, pushed by compare-exchange)
// and the protection of pages it has not handed out yet (making them read-write, which never
// invalidates an access), with the protocol described on `SyncVirtualArena`: ranges are handed
// out by successful compare-exchanges only, and only after they are committed. The `Cell` arena
// is never `Sync`.
unsafe impl Sync for Virtual<AtomicCursor> {}

impl<C: Cursor> Virtual<C> {
    /// Reserves `reservation_bytes` of address space (rounded up to whole pages, at least one)
    /// and commits nothing yet.
    ///
    /// # Errors
    /// `Err(AllocError)` when the OS refuses the reservation: not enough address space, or
    /// `RLIMIT_AS`; a size past `isize::MAX`; the page size cannot be read
    /// ([`os::page_size`](crate::os::page_size)).
    ///
    /// # Examples
    ///
    /// ```
    /// use libdd_alloc::VirtualArena;
    /// let arena = VirtualArena::new(1 << 30)?; // 1 GiB: address space, not memory
    /// assert_eq!(arena.reservation_bytes(), 1 << 30);
    /// assert_eq!(arena.reserved_bytes(), 0);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    ///
    /// ```
    /// use libdd_alloc::SyncVirtualArena;
    /// let arena = SyncVirtualArena::new(1 << 30)?; // 1 GiB: address space, not memory
    /// assert_eq!(arena.reservation_bytes(), 1 << 30);
    /// assert_eq!(arena.reserved_bytes(), 0);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn new(reservation_bytes: usize) -> Result<Self, AllocError> {
        let page = os::page_size()?;
        let reservation = os::round_to_pages(reservation_bytes.max(1), page).ok_or(AllocError)?;
        let base = os::reserve(reservation)?;
        Ok(Self {
            cursor: C::over(base, reservation),
            base,
            reservation,
            frontier: C::Counter::new(base.as_ptr().addr()),
            dirty: C::Counter::new(0),
            max_commit_step: DEFAULT_MAX_COMMIT_STEP.max(page),
            page,
            budget: None,
            #[cfg(all(test, loom))]
            commit_limit: usize::MAX,
            drops: DropList::new(),
        })
    }

    /// As [`new`](Self::new), and every byte the arena commits is charged to `budget` (see
    /// the Memory budget section of [`VirtualArena`] and [`SyncVirtualArena`]). The reservation
    /// itself is not charged: it costs no memory. `'static` because the budget must outlive the
    /// arena; a `static` budget, or one made at run time with `Box::leak`, is what arenas
    /// sharing a cap use.
    ///
    /// # Errors
    /// As for [`new`](Self::new). Allocations are then refused with `Err` when their commit
    /// would take the budget past its limit.
    ///
    /// # Signal safety
    /// Charging and crediting are atomic compare-exchange loops: a `SyncVirtualArena`'s
    /// allocation stays async-signal-safe and lock-free.
    ///
    /// # Examples
    ///
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
    ///
    /// ```
    /// use libdd_alloc::{Allocator, Budget, Layout, SyncVirtualArena};
    ///
    /// static CRASH: Budget = Budget::new(256 << 10);
    /// let arena = SyncVirtualArena::new_with_budget(1 << 30, &CRASH)?;
    /// std::thread::scope(|s| {
    ///     for _ in 0..2 {
    ///         s.spawn(|| arena.allocate(Layout::array::<u8>(100 << 10).unwrap()).map(|_| ()));
    ///     }
    /// });
    /// assert_eq!(CRASH.used(), arena.committed_bytes());
    /// assert!(arena.allocate(Layout::array::<u8>(100 << 10)?).is_err()); // past 256 KiB
    /// drop(arena);
    /// assert_eq!((CRASH.used(), CRASH.peak() <= 256 << 10), (0, true));
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
    ///
    /// ```
    /// use libdd_alloc::{Budget, VirtualArena};
    /// static BUDGET: Budget = Budget::new(1 << 20);
    /// let arena = VirtualArena::new_with_budget(1 << 30, &BUDGET)?;
    /// assert!(arena.budget().is_some_and(|b| core::ptr::eq(b, &BUDGET)));
    /// assert!(VirtualArena::new(1 << 30)?.budget().is_none());
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    ///
    /// ```
    /// use libdd_alloc::{Budget, SyncVirtualArena};
    /// static BUDGET: Budget = Budget::new(1 << 20);
    /// let arena = SyncVirtualArena::new_with_budget(1 << 30, &BUDGET)?;
    /// assert!(arena.budget().is_some_and(|b| core::ptr::eq(b, &BUDGET)));
    /// assert!(SyncVirtualArena::new(1 << 30)?.budget().is_none());
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
    ///
    /// ```
    /// use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 30)?.with_max_commit_step(64 << 10);
    /// for _ in 0..4 {
    ///     arena.allocate(Layout::new::<[u8; 60_000]>())?;
    /// }
    /// assert_eq!(arena.committed_bytes(), 256 << 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// use libdd_alloc::{Allocator, Layout, SyncVirtualArena};
    /// let arena = SyncVirtualArena::new(1 << 30)?.with_max_commit_step(64 << 10);
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

    /// Under loom: refuse commits past `bytes`, as an OS out of memory would.
    #[cfg(all(test, loom))]
    pub(crate) fn with_commit_limit_for_loom(mut self, bytes: usize) -> Self {
        self.commit_limit = bytes;
        self
    }

    /// Bytes handed out so far, alignment padding included. O(1); a snapshot while other
    /// threads allocate.
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 20)?;
    /// arena.allocate(Layout::new::<u8>())?;
    /// arena.allocate(Layout::from_size_align(8, 8)?)?;
    /// assert_eq!(arena.used_bytes(), 16); // 1 byte, 7 of padding, 8 bytes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncVirtualArena};
    /// let arena = SyncVirtualArena::new(1 << 20)?;
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
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncVirtualArena};
    /// let arena = SyncVirtualArena::new(1 << 30)?;
    /// arena.allocate(Layout::new::<u64>())?;
    /// assert_eq!(arena.committed_bytes(), 64 << 10); // the first step
    /// arena.allocate(Layout::new::<[u8; 100_000]>())?;
    /// assert_eq!(arena.committed_bytes(), 128 << 10); // the next step doubles
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn committed_bytes(&self) -> usize {
        self.frontier.value() - self.base.as_ptr().addr()
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
    ///
    /// ```
    /// # use libdd_alloc::SyncVirtualArena;
    /// let arena = SyncVirtualArena::new(10_000)?;
    /// assert_eq!(arena.reservation_bytes() % libdd_alloc::os::page_size()?, 0);
    /// assert!(arena.reservation_bytes() >= 10_000);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn reservation_bytes(&self) -> usize {
        self.reservation
    }

    /// The reservation's address range `(start, end)`: every block of the arena lies in it, for
    /// the arena's whole life (`reset` and `reset_and_release` keep the range).
    pub(crate) fn address_range(&self) -> (usize, usize) {
        let start = self.base.as_ptr().addr();
        (start, start + self.reservation)
    }

    /// The same as [`committed_bytes`](Self::committed_bytes): memory taken from the OS, as
    /// `reserved_bytes` means on the other arenas. Not the address reservation, which is
    /// [`reservation_bytes`](Self::reservation_bytes). O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 30)?;
    /// arena.allocate(Layout::new::<u8>())?;
    /// assert_eq!(arena.reserved_bytes(), arena.committed_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncVirtualArena};
    /// let arena = SyncVirtualArena::new(1 << 30)?;
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
    /// to commit. O(1); a snapshot while other threads allocate.
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 20)?;
    /// arena.allocate(Layout::array::<u8>(1000)?)?;
    /// assert_eq!(arena.remaining_capacity(), (1 << 20) - 1000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncVirtualArena};
    /// let arena = SyncVirtualArena::new(1 << 20)?;
    /// arena.allocate(Layout::array::<u8>(1000)?)?;
    /// assert_eq!(arena.remaining_capacity(), (1 << 20) - 1000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn remaining_capacity(&self) -> usize {
        self.cursor.remaining()
    }

    /// Whether `layout` fits in the rest of the reservation, alignment padding included (the OS
    /// may still refuse to commit it, and on a `SyncVirtualArena` another thread may take the
    /// room first). O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Layout, VirtualArena};
    /// let arena = VirtualArena::new(1 << 20)?;
    /// assert!(arena.has_capacity_for(Layout::array::<u8>(1 << 20)?));
    /// assert!(!arena.has_capacity_for(Layout::array::<u8>((1 << 20) + 1)?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// # use libdd_alloc::{Layout, SyncVirtualArena};
    /// let arena = SyncVirtualArena::new(1 << 20)?;
    /// assert!(arena.has_capacity_for(Layout::array::<u8>(1 << 20)?));
    /// assert!(!arena.has_capacity_for(Layout::array::<u8>((1 << 20) + 1)?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn has_capacity_for(&self, layout: Layout) -> bool {
        self.cursor.has_room_below(layout, self.cursor.limit())
    }

    /// Frees every allocation at once: O(1) plus the destructors of the values from
    /// [`DropArena::try_alloc_owned`], which run first, newest first (see [`DropArena`] for one
    /// that panics). The committed pages stay resident, holding their
    /// old contents, ready for reuse; use [`reset_and_release`](Self::reset_and_release) to give
    /// them back. Taking `&mut self` proves that no reference into the arena is alive and that no other
    /// thread (or handler) is using it.
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
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncVirtualArena};
    /// let mut arena = SyncVirtualArena::new(1 << 20)?;
    /// let first = arena.allocate(Layout::new::<u64>())?;
    /// arena.reset();
    /// assert_eq!(arena.used_bytes(), 0);
    /// assert_eq!(arena.allocate(Layout::new::<u64>())?, first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&mut self) {
        self.drops.run_above(0);
        self.note_high_water();
        self.cursor.set_used(self.base, self.committed_bytes(), 0);
    }

    /// Frees every allocation (after running the destructors of the values from
    /// [`DropArena::try_alloc_owned`], as [`reset`](Self::reset)) and gives the touched pages back
    /// to the OS (`MADV_DONTNEED`;
    /// decommit and recommit on Windows), keeping the reservation and the commit: the resident
    /// set drops by what the arena had touched, and the pages read back as zero when next used.
    /// What [`reset`](Self::reset) says about containers that own the arena applies here too.
    ///
    /// `MADV_FREE` would be cheaper, but after it the contents are undefined until the kernel
    /// reclaims the pages (a later read may see old data), which would break
    /// [`allocate_zeroed`](Allocator::allocate_zeroed) without a memset. Cost: about 0.2 µs per
    /// touched page, plus a page fault per page when it is used again.
    ///
    /// If the OS refuses (Linux cannot for this mapping; Windows can, when the commit limit is
    /// reached between its decommit and recommit), the arena is still reset, but counts nothing
    /// as committed any more: the next allocation commits again (harmless for pages that are
    /// still read-write), and may fail with `Err`.
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
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncVirtualArena};
    /// let mut arena = SyncVirtualArena::new(1 << 20)?;
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
        self.drops.run_above(0);
        self.note_high_water();
        let committed = self.committed_bytes();
        let touched = bump::align_up(self.dirty.value(), self.page)
            .unwrap_or(committed)
            .min(committed);
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
            Ok(()) => self.dirty.reset_to(0),
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
        self.cursor.set_used(self.base, self.committed_bytes(), 0);
    }

    /// Counts nothing as committed any more, crediting the budget for what was. `&mut self`:
    /// no commit is in flight. The `Cell` cursor poisoned the free part of those pages (feature
    /// `asan-poison`); drop unpoisons only what is then committed, so the poison is lifted here.
    fn forget_commit(&mut self) {
        let committed = self.committed_bytes();
        bump::unpoison_chunk(self.base, committed);
        self.frontier.reset_to(self.base.as_ptr().addr());
        if let Some(budget) = self.budget {
            budget.credit(committed);
        }
    }

    /// Records the cursor in the high-water mark before it moves back.
    #[inline]
    fn note_high_water(&self) {
        self.note_dirty(self.used_bytes());
    }

    /// Raises the high-water mark to `offset`. Called before the cursor moves back over
    /// `[.., offset)`; the compare-exchange that moves it back is a release, and whoever is then
    /// handed those bytes acquires it, so it sees this mark too.
    #[inline]
    fn note_dirty(&self, offset: usize) {
        self.dirty.raise_to(offset);
    }

    /// Makes sure `[base, end)` is committed. `Ok` at once when the frontier is already past it.
    #[inline]
    fn ensure_committed(&self, end: usize) -> Result<(), AllocError> {
        if end <= self.frontier.value() {
            return Ok(());
        }
        self.commit_through(end)
    }

    /// Commits from the frontier this thread sees up to the address `end` plus a step, and
    /// publishes the new frontier. Lock-free: it never waits for another committer. A concurrent
    /// (or interrupted) committer of an overlapping range makes the same pages read-write, which
    /// is idempotent, and `fetch_max` keeps the larger frontier.
    #[cold]
    #[inline(never)]
    fn commit_through(&self, end: usize) -> Result<(), AllocError> {
        let needed = end
            .checked_sub(self.base.as_ptr().addr())
            .ok_or(AllocError)?;
        self.commit_from(self.committed_bytes(), needed)
    }

    /// [`commit_through`](Self::commit_through) the offset `needed`, from a snapshot
    /// `committed` of the frontier that this thread loaded (it may be stale by now; a `Cell`
    /// arena's never is).
    #[inline]
    fn commit_from(&self, committed: usize, needed: usize) -> Result<(), AllocError> {
        if needed > self.reservation {
            return Err(AllocError);
        }
        if needed <= committed {
            return Ok(());
        }
        // Cannot pass the reservation, which is whole pages.
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
            // SAFETY: `committed <= needed <= wanted <= reservation`, all multiples of the page
            // size: the only ranges passed below.
            unsafe { self.commit_range(from, to) }
        };
        let grew = charge_and_commit(self.budget, committed, wanted, commit).or_else(|_| {
            // The generous step was refused (by the OS or the budget); the bare need may pass.
            charge_and_commit(self.budget, committed, needed, commit)
        });
        let base = self.base.as_ptr().addr();
        match grew {
            Ok(frontier) => {
                // `[0, committed)` was read-write (whoever published it had committed it) and
                // this thread just made `[committed, frontier)` read-write.
                let prev = self.frontier.raise_to(base + frontier) - base;
                // `[committed, prev)` was published, and charged, by another committer: this
                // thread's charge for the overlap goes back, so that what stays charged is what
                // it added to the frontier, `frontier - max(prev, committed)` (maybe 0).
                if let Some(budget) = self.budget {
                    budget.credit(prev.min(frontier).saturating_sub(committed));
                }
                // Free bytes of the `Cell` arena, poisoned as its cursor keeps them (the atomic
                // one does not poison).
                self.cursor.poison_free(
                    self.base.as_ptr().wrapping_add(committed),
                    frontier - committed,
                );
                Ok(())
            }
            // Another thread, or a handler that interrupted this one, committed it meanwhile
            // (the charge for the refused range went back already).
            Err(_) if needed <= self.committed_bytes() => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Commits the offsets `[from, to)` and returns `to`.
    ///
    /// # Safety
    /// `from <= to <= reservation`, both multiples of the page size.
    unsafe fn commit_range(&self, from: usize, to: usize) -> Result<usize, AllocError> {
        #[cfg(all(test, loom))]
        if to > self.commit_limit {
            return Err(AllocError);
        }
        // SAFETY: per the caller, the range is a page-aligned part of our reservation. Making
        // pages read-write that already are (committed by another thread) keeps their contents.
        unsafe { os::commit(self.base.add(from), to - from)? };
        Ok(to)
    }

    /// The slow path of allocation: commit what the block needs, then claim it. Each turn of
    /// the loop ends in a claim that fails only if another allocation moved the cursor first
    /// (never, for the `Cell` cursor).
    #[cold]
    #[inline(never)]
    fn allocate_after_commit(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        loop {
            let fit =
                bump::fit(self.cursor.cur_addr(), self.cursor.limit(), layout).ok_or(AllocError)?;
            self.commit_through(fit.new_cur)?;
            if let Some(block) = self.cursor.claim_below(layout, self.frontier.value()) {
                return Ok(block);
            }
        }
    }
}

/// Rolling back moves the cursor back: O(1), and `used_bytes` is again what it was at the
/// checkpoint. The committed pages stay committed and resident (`committed_bytes` does not drop),
/// ready for reuse, as after `reset`; the bytes given back keep their contents, and
/// [`allocate_zeroed`](Allocator::allocate_zeroed) still zeroes them when it hands them out
/// again. `rewind` takes `&mut self`, so no other thread or signal handler can be using the
/// arena meanwhile. On a [`SyncVirtualArena`], a checkpoint taken while other threads allocate
/// is a position in the order of their compare-exchanges: rewinding to it frees what they
/// allocated after it too.
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
///
/// ```
/// use libdd_alloc::{Arena, Rewind, SyncVirtualArena};
///
/// let mut arena = SyncVirtualArena::new(1 << 30)?;
/// arena.try_alloc_str("kept")?;
/// let checkpoint = arena.checkpoint();
/// arena.try_alloc_slice_fill_with(1 << 20, |i| i as u8)?; // commits more
/// let committed = arena.committed_bytes();
/// arena.rewind(checkpoint);
/// assert_eq!(arena.used_bytes(), 4);
/// assert_eq!(arena.committed_bytes(), committed);
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
impl<C: Cursor> Rewind for Virtual<C> {
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
            // Clamped to the committed part: the cursor never passes the frontier.
            let used = used.min(self.committed_bytes());
            self.drops.run_above(self.base.as_ptr().addr() + used);
            // The bytes between the checkpoint and the cursor may be written: record them
            // before the cursor moves back, so that `allocate_zeroed` zeroes them.
            self.note_high_water();
            self.cursor
                .set_used(self.base, self.committed_bytes(), used);
        }
    }
}

/// The arena's most recent block, as `resize.rs` sees it: the cursor, plus this arena's two
/// duties around it. Before the cursor moves back, the high-water mark is raised (for
/// `allocate_zeroed`); before it moves forward, the bytes are committed.
///
/// Only a block that is the most recent one *when this is called* may move the cursor: an
/// older block can become the most recent while we look (the blocks after it given back by
/// other threads), and then the mark would be raised too late. So each operation first checks,
/// raises the mark, and only then lets the cursor's compare-exchange re-check.
pub(crate) struct LastOf<'a, C: Cursor>(pub(crate) &'a Virtual<C>);

impl<C: Cursor> LastBlock for LastOf<'_, C> {
    #[inline]
    fn release_if_last(&self, ptr: NonNull<u8>, size: usize) {
        let arena = self.0;
        let end = ptr.as_ptr().addr().wrapping_add(size);
        if arena.cursor.cur_addr() == end {
            arena.note_dirty(end - arena.base.as_ptr().addr());
            arena.cursor.release_last(ptr, size);
        }
    }

    #[inline]
    fn resize_last_in_place(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        let arena = self.0;
        let block = ptr.as_ptr().addr();
        let end = block.wrapping_add(old_size);
        if arena.cursor.cur_addr() != end || block & (new.align() - 1) != 0 {
            return None;
        }
        if new.size() < old_size {
            arena.note_dirty(end - arena.base.as_ptr().addr());
        } else {
            // Committing ahead is harmless if the claim below then fails: the pages serve the
            // next allocation.
            arena
                .ensure_committed(block.checked_add(new.size())?)
                .ok()?;
        }
        arena.cursor.resize_last(ptr, old_size, new)
    }
}

impl<C: Cursor> Drop for Virtual<C> {
    fn drop(&mut self) {
        let committed = self.committed_bytes();
        let (base, reservation, budget) = (self.base, self.reservation, self.budget);
        self.drops.run_all_then(|| {
            // The `Cell` cursor poisoned the free part of the committed pages (feature
            // `asan-poison`); ASan does not see the raw munmap, so the next mapping at these
            // addresses would inherit the poison.
            bump::unpoison_chunk(base, committed);
            // SAFETY: the reservation is ours, made by `os::reserve`, and the arena is going
            // away, so no block is borrowed; the destructors of the values in it have run.
            unsafe { os::unmap(base, reservation) };
            // Only once the pages are gone, so that the budget never counts less than is mapped.
            if let Some(budget) = budget {
                budget.credit(committed);
            }
        });
    }
}

// SAFETY: the list is run up to the position a `reset`, `reset_and_release` or `rewind` moves
// the cursor back to, before it moves (and before pages are released), and whole before the
// reservation is unmapped; a record is pushed only for a block of this reservation (whose end
// is its address), and nothing else hands those bytes out again.
unsafe impl<C: Cursor> DropArena for Virtual<C> {
    type Position = usize;

    #[inline]
    unsafe fn push_drop(&self, record: NonNull<u8>, end: usize) {
        // SAFETY: forwarded caller contract.
        unsafe { push_to(&self.drops, record, end) };
    }
}

// SAFETY: the reservation is the arena's own, unmapped only by its drop, after the destructors
// (see `PinArena`).
unsafe impl<C: Cursor> crate::PinArena for Virtual<C> {}

impl<C: Cursor> core::fmt::Debug for Virtual<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct(if C::SHARED {
            "SyncVirtualArena"
        } else {
            "VirtualArena"
        })
        .field("used_bytes", &self.used_bytes())
        .field("committed_bytes", &self.committed_bytes())
        .field("reservation_bytes", &self.reservation_bytes())
        .finish_non_exhaustive()
    }
}

// SAFETY: blocks are disjoint parts of the reservation, each handed out by one cursor exchange
// (a store for the `Cell` cursor, a successful compare-exchange for the atomic one) and only
// after it was committed, valid until `reset` (`&mut self`) or drop. Only the most recent block
// is resized or given back in place, by an exchange that fails if another block followed it;
// the reservation never moves.
unsafe impl<C: Cursor> Allocator for Virtual<C> {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        match self.cursor.claim_below(layout, self.frontier.value()) {
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
        // Bytes past the high-water mark have not been handed out since the pages were fresh:
        // whoever moved the cursor back over them raised the mark first.
        let start = block.cast::<u8>().as_ptr().addr() - self.base.as_ptr().addr();
        let dirty_end = self.dirty.value().min(start + block.len());
        if dirty_end > start {
            // SAFETY: `[start, dirty_end)` is the head of the block just handed out.
            unsafe { block.cast::<u8>().write_bytes(0, dirty_end - start) };
        }
        Ok(block)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            LastOf(self).release_if_last(ptr, layout.size());
        }
    }

    crate::resize::forward_resize!(|arena| &LastOf(arena));
}

/// Test bodies that hold for both cursors, run by `tests` and `sync_tests` for theirs.
#[cfg(all(test, not(loom)))]
mod both_cursors {
    use super::*;

    pub(super) fn a_budget_is_charged_exactly_the_committed_bytes_and_credited_on_drop<
        C: Cursor,
    >() {
        let budget = crate::budget::leaked_budget(1 << 30);
        let arena = Virtual::<C>::new_with_budget(1 << 30, budget).unwrap();
        assert_eq!(budget.used(), 0, "the reservation is not charged");
        for size in [8, 100_000, 1 << 20, 3 << 20] {
            arena.allocate(Layout::array::<u8>(size).unwrap()).unwrap();
            assert_eq!(budget.used(), arena.committed_bytes());
        }
        drop(arena);
        assert_eq!(budget.used(), 0);
    }

    pub(super) fn reset_and_release_credits_the_budget_and_refilling_charges_again<C: Cursor>() {
        let budget = crate::budget::leaked_budget(1 << 20);
        let mut arena = Virtual::<C>::new_with_budget(1 << 30, budget).unwrap();
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
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    // The `Cell` arena (`VirtualArena`); `sync_tests` below pins the atomic one.

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
        both_cursors::a_budget_is_charged_exactly_the_committed_bytes_and_credited_on_drop::<
            CellCursor,
        >();
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
        both_cursors::reset_and_release_credits_the_budget_and_refilling_charges_again::<CellCursor>(
        );
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

#[cfg(all(test, not(loom)))]
mod sync_tests {
    use super::*;
    use crate::sync::atomic::Ordering;

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SyncVirtualArena>();
    }

    #[test]
    fn zero_size_layouts_use_no_arena_bytes_and_commit_nothing() {
        let arena = SyncVirtualArena::new(1 << 20).unwrap();
        let layout = Layout::from_size_align(0, 64).unwrap();
        for block in [arena.allocate(layout), arena.allocate_zeroed(layout)] {
            let block = block.unwrap();
            assert_eq!(block.len(), 0);
            assert_eq!(block.cast::<u8>().as_ptr().addr() % 64, 0);
        }
        assert_eq!(arena.used_bytes(), 0);
        assert_eq!(arena.committed_bytes(), 0);
    }

    #[test]
    fn commit_through_an_address_already_committed_or_past_the_reservation_changes_nothing() {
        let arena = SyncVirtualArena::new(1 << 20).unwrap();
        arena.allocate(Layout::new::<u8>()).unwrap();
        let committed = arena.committed_bytes();
        let base = arena.base.as_ptr().addr();
        arena.commit_through(base + committed).unwrap();
        assert_eq!(arena.committed_bytes(), committed);
        assert!(arena.commit_through(base + (1 << 20) + 1).is_err());
        assert!(arena.commit_through(base - 1).is_err());
        assert_eq!(arena.committed_bytes(), committed);
    }

    #[test]
    fn high_water_mark_is_raised_before_the_cursor_moves_back_and_cleared_by_release() {
        let mut arena = SyncVirtualArena::new(1 << 20).unwrap();
        let layout = Layout::from_size_align(1000, 8).unwrap();
        let older = arena.allocate(layout).unwrap();
        let block = arena.allocate(layout).unwrap();
        // SAFETY: `older` came from the arena with `layout`; not the last block: a no-op.
        unsafe { arena.deallocate(older.cast(), layout) };
        assert_eq!(arena.dirty.load(Ordering::Relaxed), 0, "nothing moved back");
        // SAFETY: the most recent block, shrunk in place, then given back.
        unsafe {
            let small = Layout::from_size_align(10, 8).unwrap();
            arena.shrink(block.cast(), layout, small).unwrap();
            assert_eq!(arena.dirty.load(Ordering::Relaxed), 2000);
            arena.deallocate(block.cast(), small);
        }
        assert_eq!(arena.used_bytes(), 1000);
        arena.reset();
        assert_eq!(arena.dirty.load(Ordering::Relaxed), 2000);
        arena.reset_and_release();
        assert_eq!(arena.dirty.load(Ordering::Relaxed), 0);
    }

    const STEP: usize = 64 << 10;

    #[test]
    fn a_budget_is_charged_exactly_the_committed_bytes_and_credited_on_drop() {
        both_cursors::a_budget_is_charged_exactly_the_committed_bytes_and_credited_on_drop::<
            AtomicCursor,
        >();
    }

    #[test]
    fn a_committer_with_a_stale_frontier_keeps_only_what_it_added() {
        let budget = crate::budget::leaked_budget(1 << 20);
        let arena = SyncVirtualArena::new_with_budget(1 << 30, budget).unwrap();
        // Another committer published 128 KiB while this one still saw 0.
        arena.commit_from(0, 2 * STEP).unwrap();
        assert_eq!(
            (arena.committed_bytes(), budget.used()),
            (2 * STEP, 2 * STEP)
        );
        // Stale and covered: it charges [0, 64 KiB), finds it published, credits it all.
        arena.commit_from(0, STEP).unwrap();
        assert_eq!(
            (arena.committed_bytes(), budget.used()),
            (2 * STEP, 2 * STEP)
        );
        // Stale and further: it charges [0, 192 KiB) (its own step from 0: 64 KiB, so it asks
        // for exactly the need), keeps the 64 KiB it added and credits the 128 KiB overlap.
        arena.commit_from(0, 3 * STEP).unwrap();
        assert_eq!(
            (arena.committed_bytes(), budget.used()),
            (3 * STEP, 3 * STEP)
        );
        assert_eq!(
            budget.peak(),
            5 * STEP,
            "the overlap was charged until fetch_max"
        );
    }

    #[test]
    fn a_stale_committer_near_the_limit_may_be_refused_one_step_early() {
        let budget = crate::budget::leaked_budget(3 * STEP);
        let arena = SyncVirtualArena::new_with_budget(1 << 30, budget)
            .unwrap()
            .with_max_commit_step(STEP);
        arena.commit_from(0, 2 * STEP).unwrap();
        // From its stale snapshot it would charge 192 KiB on top of the 128 KiB published: the
        // budget refuses, though only 64 KiB were really missing. Nothing stays charged.
        assert_eq!(arena.commit_from(0, 3 * STEP), Err(AllocError));
        assert_eq!(
            (arena.committed_bytes(), budget.used()),
            (2 * STEP, 2 * STEP)
        );
        // With the current frontier the same commit passes.
        arena
            .commit_through(arena.base.as_ptr().addr() + 3 * STEP)
            .unwrap();
        assert_eq!(
            (arena.committed_bytes(), budget.used()),
            (3 * STEP, 3 * STEP)
        );
    }

    #[test]
    fn a_refused_commit_claims_nothing_and_the_arena_stays_usable_below_the_limit() {
        let budget = crate::budget::leaked_budget(256 << 10);
        let arena = SyncVirtualArena::new_with_budget(1 << 30, budget).unwrap();
        arena.allocate(Layout::array::<u8>(100).unwrap()).unwrap();
        let (used, committed) = (arena.used_bytes(), arena.committed_bytes());
        let big = Layout::array::<u8>(300 << 10).unwrap();
        assert_eq!(arena.allocate(big), Err(AllocError));
        assert_eq!(
            (arena.used_bytes(), arena.committed_bytes()),
            (used, committed)
        );
        assert_eq!(budget.used(), committed);
        arena
            .allocate(Layout::array::<u8>(150 << 10).unwrap())
            .unwrap();
        assert_eq!(budget.used(), arena.committed_bytes());
        assert!(budget.peak() <= 256 << 10);
    }

    #[test]
    fn reset_and_release_credits_the_budget_and_refilling_charges_again() {
        both_cursors::reset_and_release_credits_the_budget_and_refilling_charges_again::<
            AtomicCursor,
        >();
    }

    #[test]
    fn max_commit_step_is_shared_with_virtual_arena() {
        let page = os::page_size().unwrap();
        let arena = SyncVirtualArena::new(1 << 28).unwrap();
        assert_eq!(arena.max_commit_step, DEFAULT_MAX_COMMIT_STEP.max(page));
        let tiny = SyncVirtualArena::new(1 << 28)
            .unwrap()
            .with_max_commit_step(1);
        assert_eq!(tiny.max_commit_step, (64 << 10).max(page));
    }
}
