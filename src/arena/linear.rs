//! [`Linear`]: bump allocation out of one fixed buffer, written once for both cursors:
//! [`LinearAllocator`] (a `Cell` cursor) and [`SyncLinearAllocator`] (an atomic one).

use crate::bump::dangling;
use crate::cursor::{AtomicCursor, CellCursor, Cursor};
use crate::{AllocError, Allocator, Checkpoint, Rewind};
use core::alloc::Layout;
use core::ptr::NonNull;

/// A bump arena over one fixed buffer taken from a backing allocator `A`.
///
/// Allocation moves a cursor forward: no per-allocation header, exact packing (only alignment
/// padding between blocks), O(1). When the buffer is full, allocation fails with `Err`; use
/// [`ChainAllocator`](crate::ChainAllocator) to link more buffers instead.
///
/// Deallocation is a no-op, except for the most recent block, whose bytes are given back. The
/// most recent block also grows and shrinks in place while the buffer has room, so a `Vec` that
/// is pushed inside the arena does not copy on each doubling. [`reset`](Self::reset) frees
/// everything at once; dropping the arena returns the buffer to `A`. Destructors of values placed
/// in the arena are not run by the arena.
///
/// # Soundness of `reset`
/// Why a safe `reset(&mut self)` (and `rewind`) next to `Allocator` for the owned arena is
/// sound: see the [crate docs](crate#why-a-safe-resetmut-self-next-to-allocator-is-sound).
///
/// # Signal safety
/// Not reentrant: the cursor is a `Cell`, so a signal handler that allocates from the same arena
/// as the code it interrupted can hand out the same bytes twice. Give a handler its own arena, or
/// use `SyncLinearAllocator`. The allocation path itself never calls the global allocator, never
/// locks and never panics.
///
/// # Examples
/// ```
/// use libdd_alloc::{Allocator, LinearAllocator, Layout, VirtualAllocator};
///
/// let arena = LinearAllocator::new_in(Layout::from_size_align(4096, 4096)?, VirtualAllocator {})?;
/// let a = arena.allocate(Layout::new::<u64>())?;
/// let b = arena.allocate(Layout::new::<u32>())?;
/// assert_eq!(arena.used_bytes(), 12);
/// assert_eq!(b.cast::<u8>().as_ptr() as usize - a.cast::<u8>().as_ptr() as usize, 8);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type LinearAllocator<A> = Linear<CellCursor, A>;

/// A lock-free, reentrant bump arena over one fixed buffer taken from a backing allocator `A`:
/// the thread-safe twin of [`LinearAllocator`], with the same API (both are [`Linear`], over
/// an [`AtomicCursor`] here).
///
/// Allocation is one compare-exchange on the cursor: no lock, no per-allocation header, exact
/// packing. When the buffer is full, allocation fails with `Err`. Deallocation is a no-op except
/// for the most recent block, which is given back, grown or shrunk in place by one
/// compare-exchange (if another block was allocated after it in the meantime, the exchange fails
/// and the bytes simply stay allocated). `reset` frees everything at once;
/// [`Rewind`](crate::Rewind) rolls back to a [`Checkpoint`](crate::Checkpoint) (or around a
/// [`scope`](crate::Rewind::scope)) in O(1).
///
/// `Send` when `A: Send`, `Sync` when `A: Sync`: share it between threads by reference.
///
/// # Statistics
/// `used_bytes` and `remaining_capacity` read the cursor once (O(1)). While other threads
/// allocate they are a snapshot that may already be stale; once allocation stops they are
/// exact.
///
/// # Soundness of `reset`
/// Why a safe `reset(&mut self)` (and `rewind`) next to `Allocator` for the owned arena is
/// sound: see the [crate docs](crate#why-a-safe-resetmut-self-next-to-allocator-is-sound).
///
/// # Signal safety
/// Async-signal-safe and reentrant: a signal handler may allocate from the same arena as the
/// code it interrupted, on the same thread or any other. The argument: every operation is a loop
/// of a load and a compare-exchange of the cursor, with no lock and nothing to wait for. A handler
/// that interrupts the code between its load and its compare-exchange runs its own loop to
/// completion (the interrupted code cannot run, so it cannot get in the way); when the
/// interrupted code resumes, its compare-exchange sees the moved cursor, fails, and it retries
/// from the new value. No byte is handed out twice because a range becomes someone's only by a
/// successful exchange. Allocation never calls the backing allocator, so it never calls `malloc`
/// and never touches `errno`.
///
/// # Examples
/// ```
/// use libdd_alloc::{Allocator, Layout, SyncLinearAllocator, VirtualAllocator};
///
/// let arena = SyncLinearAllocator::new_in(Layout::from_size_align(1 << 20, 4096)?, VirtualAllocator {})?;
/// std::thread::scope(|s| {
///     for _ in 0..2 {
///         s.spawn(|| arena.allocate(Layout::new::<u64>()).map(|_| ()));
///     }
/// });
/// assert_eq!(arena.used_bytes(), 16);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type SyncLinearAllocator<A> = Linear<AtomicCursor, A>;

/// The one implementation of [`LinearAllocator`] (cursor [`CellCursor`]) and
/// [`SyncLinearAllocator`] (cursor [`AtomicCursor`]): a bump arena over one fixed buffer from
/// `A`. Use it by those names; each one's page says what it guarantees, and the methods below
/// serve both.
///
/// With the atomic cursor, statistics are snapshots while other threads allocate, and every
/// operation through `&self` is a compare-exchange loop on the cursor (see
/// [`SyncLinearAllocator`]'s signal-safety argument).
pub struct Linear<C: Cursor, A: Allocator> {
    cursor: C,
    /// The buffer from `A`, with the length `A` actually returned (it may round up).
    buffer: NonNull<[u8]>,
    /// The layout the buffer was allocated with, as `A` must see it again on deallocation.
    buffer_layout: Layout,
    allocator: A,
}

// SAFETY: the arena owns its buffer outright; moving it to another thread moves that ownership,
// which is sound when the backing allocator may itself be used from (and drop on) that thread.
// The cursor holds only addresses into that buffer.
unsafe impl<C: Cursor, A: Allocator + Send> Send for Linear<C, A> {}

// SAFETY: through `&self` the atomic arena changes only its atomic cursor, and every byte range
// is handed out by a successful compare-exchange, so to one caller only. The backing allocator
// is used through `&self` only in `new_in` and drop, but it is reachable by `allocator()`: hence
// `A: Sync`. The `Cell` arena is never `Sync`.
unsafe impl<A: Allocator + Sync> Sync for Linear<AtomicCursor, A> {}

impl<C: Cursor, A: Allocator> Linear<C, A> {
    /// Allocates the buffer for `layout` from `allocator`; its whole length is usable.
    ///
    /// # Errors
    /// `Err(AllocError)` if `allocator` fails.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u64>(100)?, System)?;
    /// assert_eq!(arena.reserved_bytes(), 800);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// use libdd_alloc::{Layout, SyncLinearAllocator, System};
    /// let arena = SyncLinearAllocator::new_in(Layout::array::<u64>(100)?, System)?;
    /// assert_eq!(arena.reserved_bytes(), 800);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(layout: Layout, allocator: A) -> Result<Self, AllocError> {
        let buffer = allocator.allocate(layout)?;
        // SAFETY: allocators return at least `layout.size()` bytes at `layout.align()`, and a
        // block that exists has a size that fits in `isize`.
        let buffer_layout =
            unsafe { Layout::from_size_align_unchecked(buffer.len(), layout.align()) };
        let mut cursor = C::over(buffer.cast(), buffer.len());
        cursor.set_used(buffer.cast(), 0, buffer.len());
        Ok(Self {
            cursor,
            buffer,
            buffer_layout,
            allocator,
        })
    }

    /// Allocates a block for `layout`: the [`Allocator::allocate`] of this arena, callable without
    /// importing the trait. O(1): one fit check on the cursor (and, for the atomic cursor, a
    /// compare-exchange).
    ///
    /// # Errors
    /// `Err(AllocError)` when the buffer has no room left for `layout`.
    ///
    /// ```
    /// # use libdd_alloc::{LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u64>(2)?, System)?;
    /// let block = arena.allocate(Layout::new::<u64>())?;
    /// assert_eq!(block.len(), 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        self.cursor.claim(layout).ok_or(AllocError)
    }

    /// Bytes handed out so far, alignment padding included. O(1); a snapshot while other
    /// threads allocate.
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::from_size_align(64, 8)?, System)?;
    /// arena.allocate(Layout::new::<u8>())?;
    /// arena.allocate(Layout::from_size_align(8, 8)?)?;
    /// assert_eq!(arena.used_bytes(), 16); // 1 byte, 7 of padding, 8 bytes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncLinearAllocator, System};
    /// let arena = SyncLinearAllocator::new_in(Layout::from_size_align(64, 8)?, System)?;
    /// arena.allocate(Layout::new::<u8>())?;
    /// arena.allocate(Layout::from_size_align(8, 8)?)?;
    /// assert_eq!(arena.used_bytes(), 16); // 1 byte, 7 of padding, 8 bytes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn used_bytes(&self) -> usize {
        self.cursor.cur_addr() - self.buffer.cast::<u8>().as_ptr().addr()
    }

    /// Size of the buffer taken from the backing allocator. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{LinearAllocator, Layout, VirtualAllocator};
    /// let arena = LinearAllocator::new_in(Layout::new::<u8>(), VirtualAllocator {})?;
    /// assert_eq!(arena.reserved_bytes(), libdd_alloc::os::page_size()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// # use libdd_alloc::{Layout, SyncLinearAllocator, VirtualAllocator};
    /// let arena = SyncLinearAllocator::new_in(Layout::new::<u8>(), VirtualAllocator {})?;
    /// assert_eq!(arena.reserved_bytes(), libdd_alloc::os::page_size()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn reserved_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes still free: `reserved_bytes() - used_bytes()`. O(1); a snapshot while other
    /// threads allocate.
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u8>(10)?, System)?;
    /// arena.allocate(Layout::array::<u8>(4)?)?;
    /// assert_eq!(arena.remaining_capacity(), 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncLinearAllocator, System};
    /// let arena = SyncLinearAllocator::new_in(Layout::array::<u8>(10)?, System)?;
    /// arena.allocate(Layout::array::<u8>(4)?)?;
    /// assert_eq!(arena.remaining_capacity(), 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn remaining_capacity(&self) -> usize {
        self.cursor.remaining()
    }

    /// Whether `layout` would fit now, alignment padding included. O(1); with the atomic
    /// cursor a snapshot: another thread may take the room before this thread allocates.
    ///
    /// ```
    /// # use libdd_alloc::{LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u8>(8)?, System)?;
    /// assert!(arena.has_capacity_for(Layout::new::<u64>()));
    /// assert!(!arena.has_capacity_for(Layout::new::<[u64; 2]>()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// # use libdd_alloc::{Layout, SyncLinearAllocator, System};
    /// let arena = SyncLinearAllocator::new_in(Layout::array::<u8>(8)?, System)?;
    /// assert!(arena.has_capacity_for(Layout::new::<u64>()));
    /// assert!(!arena.has_capacity_for(Layout::new::<[u64; 2]>()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn has_capacity_for(&self, layout: Layout) -> bool {
        self.cursor.has_room_below(layout, self.cursor.limit())
    }

    /// Frees every allocation at once and makes the whole buffer available again. O(1); the
    /// buffer is kept. Taking `&mut self` proves that no block handed out is still borrowed
    /// and that no other thread (or handler) is allocating.
    ///
    /// `&mut self` proves that nothing borrows the arena; why that is enough, although raw
    /// blocks from [`Allocator::allocate`] are not borrows, is in the
    /// [crate docs](crate#why-a-safe-resetmut-self-next-to-allocator-is-sound).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, LinearAllocator, Layout, System};
    /// let mut arena = LinearAllocator::new_in(Layout::array::<u8>(8)?, System)?;
    /// arena.allocate(Layout::array::<u8>(8)?)?;
    /// assert_eq!(arena.remaining_capacity(), 0);
    /// arena.reset();
    /// assert_eq!(arena.remaining_capacity(), 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncLinearAllocator, System};
    /// let mut arena = SyncLinearAllocator::new_in(Layout::array::<u8>(8)?, System)?;
    /// arena.allocate(Layout::array::<u8>(8)?)?;
    /// assert_eq!(arena.remaining_capacity(), 0);
    /// arena.reset();
    /// assert_eq!(arena.remaining_capacity(), 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&mut self) {
        self.cursor
            .set_used(self.buffer.cast(), 0, self.buffer.len());
    }

    /// The backing allocator.
    pub fn allocator(&self) -> &A {
        &self.allocator
    }

    /// The cursor, for the in-place operations of a [`LocalHandle`](crate::LocalHandle).
    pub(crate) fn last_block(&self) -> &C {
        &self.cursor
    }

    /// The buffer's address range `(start, end)`: every block of the arena lies in it, for the
    /// arena's whole life (`reset` keeps the buffer).
    pub(crate) fn address_range(&self) -> (usize, usize) {
        let start = self.buffer.cast::<u8>().as_ptr().addr();
        (start, start + self.buffer.len())
    }
}

/// Rolling back moves the cursor back: O(1), and `used_bytes` is again what it was at the
/// checkpoint. `rewind` takes `&mut self`, so no other thread or signal handler can be using
/// the arena meanwhile. On a [`SyncLinearAllocator`], a checkpoint taken while other threads
/// allocate is a position in the order of their compare-exchanges: rewinding to it frees what
/// they allocated after it too.
///
/// ```
/// use libdd_alloc::{Arena, LinearAllocator, Layout, Rewind, System};
///
/// let mut arena = LinearAllocator::new_in(Layout::array::<u8>(64)?, System)?;
/// arena.try_alloc_str("kept")?;
/// let checkpoint = arena.checkpoint();
/// arena.try_alloc_str("scratch")?;
/// arena.rewind(checkpoint);
/// assert_eq!(arena.used_bytes(), 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```
/// use libdd_alloc::{Arena, Layout, Rewind, SyncLinearAllocator, System};
///
/// let mut arena = SyncLinearAllocator::new_in(Layout::array::<u8>(64)?, System)?;
/// arena.try_alloc_str("kept")?;
/// let checkpoint = arena.checkpoint();
/// arena.try_alloc_str("scratch")?;
/// arena.rewind(checkpoint);
/// assert_eq!(arena.used_bytes(), 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<C: Cursor, A: Allocator> Rewind for Linear<C, A> {
    #[inline]
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            chunks: 1,
            used: self.used_bytes(),
        }
    }

    #[inline]
    fn rewind(&mut self, checkpoint: Checkpoint) {
        // One buffer, at depth 1.
        if let Some(used) = checkpoint.used_in_chunk(1) {
            self.cursor
                .set_used(self.buffer.cast(), used, self.buffer.len());
        }
    }
}

impl<C: Cursor, A: Allocator> Drop for Linear<C, A> {
    fn drop(&mut self) {
        crate::bump::unpoison_chunk(self.buffer.cast(), self.buffer.len());
        // SAFETY: the buffer came from `self.allocator` with `buffer_layout` (its length is one
        // the allocator returned, which the `Allocator` contract accepts back).
        unsafe {
            self.allocator
                .deallocate(self.buffer.cast(), self.buffer_layout)
        };
    }
}

impl<C: Cursor, A: Allocator> core::fmt::Debug for Linear<C, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct(if C::SHARED {
            "SyncLinearAllocator"
        } else {
            "LinearAllocator"
        })
        .field("used_bytes", &self.used_bytes())
        .field("reserved_bytes", &self.reserved_bytes())
        .finish_non_exhaustive()
    }
}

// SAFETY: blocks are disjoint parts of the buffer (each range is handed out by one cursor
// exchange: a store for the `Cell` cursor, a successful compare-exchange for the atomic one),
// which lives until the arena is dropped; `reset` needs `&mut self`, so no block outlives it in
// safe code. Only the most recent block is resized or given back in place, by an exchange that
// fails if another block followed it.
unsafe impl<C: Cursor, A: Allocator> Allocator for Linear<C, A> {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        Linear::allocate(self, layout)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            self.cursor.release_last(ptr, layout.size());
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract.
        unsafe { crate::resize::grow(self, &self.cursor, ptr, old, new) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract.
        unsafe { crate::resize::grow_zeroed(self, &self.cursor, ptr, old, new) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract.
        unsafe { crate::resize::shrink(self, &self.cursor, ptr, old, new) }
    }
}
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{System, VirtualAllocator};

    // The `Cell` arena's behaviour is pinned by tests/edge_cases.rs, tests/upstream_compat.rs and
    // the migration suite; these pin the atomic one's.

    fn arena(size: usize) -> SyncLinearAllocator<System> {
        SyncLinearAllocator::new_in(Layout::from_size_align(size, 64).unwrap(), System).unwrap()
    }

    #[test]
    fn is_send_and_sync_when_the_backing_allocator_is() {
        fn check<T: Send + Sync>() {}
        check::<SyncLinearAllocator<System>>();
        check::<SyncLinearAllocator<VirtualAllocator>>();
    }

    #[test]
    fn blocks_are_aligned_packed_and_counted_exactly() {
        let arena = arena(256);
        let a = arena.allocate(Layout::new::<u8>()).unwrap();
        let b = arena
            .allocate(Layout::from_size_align(8, 8).unwrap())
            .unwrap();
        let base = a.cast::<u8>().as_ptr().addr();
        assert_eq!(b.cast::<u8>().as_ptr().addr(), base + 8);
        assert_eq!(arena.used_bytes(), 16);
        assert_eq!(arena.remaining_capacity(), 240);
    }

    #[test]
    fn zero_size_allocation_is_dangling_and_uses_nothing() {
        let arena = arena(64);
        let block = arena
            .allocate(Layout::from_size_align(0, 32).unwrap())
            .unwrap();
        assert_eq!(block.len(), 0);
        assert_eq!(block.cast::<u8>().as_ptr().addr() % 32, 0);
        assert_eq!(arena.used_bytes(), 0);
    }

    #[test]
    fn full_arena_returns_err() {
        let arena = arena(16);
        arena.allocate(Layout::new::<[u8; 16]>()).unwrap();
        assert!(arena.allocate(Layout::new::<u8>()).is_err());
        assert!(!arena.has_capacity_for(Layout::new::<u8>()));
    }

    #[test]
    fn dealloc_of_last_allocation_is_reused_and_of_older_is_a_no_op() {
        let arena = arena(64);
        let layout = Layout::new::<u64>();
        let a = arena.allocate(layout).unwrap();
        let b = arena.allocate(layout).unwrap();
        // SAFETY: `a` came from the arena with `layout`.
        unsafe { arena.deallocate(a.cast(), layout) };
        assert_eq!(arena.used_bytes(), 16);
        // SAFETY: as above for `b`.
        unsafe { arena.deallocate(b.cast(), layout) };
        assert_eq!(arena.used_bytes(), 8);
        let c = arena.allocate(layout).unwrap();
        assert_eq!(c.cast::<u8>(), b.cast::<u8>());
    }

    #[test]
    fn grow_of_last_allocation_stays_in_place_and_shrink_gives_bytes_back() {
        let arena = arena(256);
        let small = Layout::from_size_align(8, 8).unwrap();
        let big = Layout::from_size_align(64, 8).unwrap();
        let block = arena.allocate(small).unwrap();
        // SAFETY: the block came from the arena with `small`; `big` is larger.
        let grown = unsafe { arena.grow(block.cast(), small, big) }.unwrap();
        assert_eq!(grown.cast::<u8>(), block.cast::<u8>());
        assert_eq!(arena.used_bytes(), 64);
        // SAFETY: the block is now of `big`; `small` is smaller.
        let shrunk = unsafe { arena.shrink(grown.cast(), big, small) }.unwrap();
        assert_eq!(shrunk.cast::<u8>(), block.cast::<u8>());
        assert_eq!(arena.used_bytes(), 8);
    }

    #[test]
    fn grow_of_an_older_block_copies_its_contents() {
        let arena = arena(256);
        let small = Layout::new::<[u8; 4]>();
        let a = arena.allocate(small).unwrap();
        // SAFETY: `a` is 4 fresh bytes of ours.
        unsafe { a.cast::<[u8; 4]>().write([1, 2, 3, 4]) };
        arena.allocate(small).unwrap();
        // SAFETY: `a` came from the arena with `small`.
        let grown = unsafe { arena.grow(a.cast(), small, Layout::new::<[u8; 8]>()) }.unwrap();
        assert_ne!(grown.cast::<u8>(), a.cast::<u8>());
        // SAFETY: the first 4 bytes of the new block were copied from `a`.
        assert_eq!(unsafe { grown.cast::<[u8; 4]>().read() }, [1, 2, 3, 4]);
    }

    #[test]
    fn reset_makes_the_whole_buffer_available_again() {
        let mut arena = arena(64);
        let first = arena.allocate(Layout::new::<[u8; 64]>()).unwrap();
        arena.reset();
        assert_eq!(arena.used_bytes(), 0);
        let again = arena.allocate(Layout::new::<[u8; 64]>()).unwrap();
        assert_eq!(again.cast::<u8>(), first.cast::<u8>());
    }
}
