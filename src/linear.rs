//! [`LinearAllocator`]: bump allocation out of one fixed buffer.

use crate::bump::{dangling, Cursor};
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
pub struct LinearAllocator<A: Allocator> {
    cursor: Cursor,
    /// The buffer from `A`, with the length `A` actually returned (it may round up).
    buffer: NonNull<[u8]>,
    /// The layout the buffer was allocated with, as `A` must see it again on deallocation.
    buffer_layout: Layout,
    allocator: A,
}

// SAFETY: the arena owns its buffer outright; moving it to another thread moves that ownership,
// which is sound when the backing allocator may itself be used from (and drop on) that thread.
// It is deliberately not `Sync`: the cursor is a `Cell`.
unsafe impl<A: Allocator + Send> Send for LinearAllocator<A> {}

impl<A: Allocator> LinearAllocator<A> {
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
    pub fn new_in(layout: Layout, allocator: A) -> Result<Self, AllocError> {
        let buffer = allocator.allocate(layout)?;
        // SAFETY: allocators return at least `layout.size()` bytes at `layout.align()`, and a
        // block that exists has a size that fits in `isize`.
        let buffer_layout =
            unsafe { Layout::from_size_align_unchecked(buffer.len(), layout.align()) };
        let cursor = Cursor::empty();
        cursor.set(buffer.cast(), buffer.len());
        Ok(Self {
            cursor,
            buffer,
            buffer_layout,
            allocator,
        })
    }

    /// Allocates a block for `layout`: the [`Allocator::allocate`] of this arena, callable without
    /// importing the trait. O(1): one fit check on the cursor.
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
        self.cursor.bump(layout).ok_or(AllocError)
    }

    /// Bytes handed out so far, alignment padding included. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::from_size_align(64, 8)?, System)?;
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
    #[inline]
    pub fn reserved_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes still free: `reserved_bytes() - used_bytes()`. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u8>(10)?, System)?;
    /// arena.allocate(Layout::array::<u8>(4)?)?;
    /// assert_eq!(arena.remaining_capacity(), 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn remaining_capacity(&self) -> usize {
        self.cursor.remaining()
    }

    /// Whether `layout` would fit now, alignment padding included. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u8>(8)?, System)?;
    /// assert!(arena.has_capacity_for(Layout::new::<u64>()));
    /// assert!(!arena.has_capacity_for(Layout::new::<[u64; 2]>()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn has_capacity_for(&self, layout: Layout) -> bool {
        self.cursor.has_room_for(layout)
    }

    /// Frees every allocation at once and makes the whole buffer available again. O(1); the
    /// buffer is kept. Taking `&mut self` proves that no reference into the arena is alive.
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
    pub fn reset(&mut self) {
        self.cursor.set(self.buffer.cast(), self.buffer.len());
    }

    /// The backing allocator.
    pub fn allocator(&self) -> &A {
        &self.allocator
    }
}

/// Rolling back moves the cursor back: O(1), and `used_bytes` is again what it was at the
/// checkpoint.
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
impl<A: Allocator> Rewind for LinearAllocator<A> {
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
                .set_used(self.buffer.cast(), self.buffer.len(), used);
        }
    }
}

impl<A: Allocator> Drop for LinearAllocator<A> {
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

impl<A: Allocator> core::fmt::Debug for LinearAllocator<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LinearAllocator")
            .field("used_bytes", &self.used_bytes())
            .field("reserved_bytes", &self.reserved_bytes())
            .finish_non_exhaustive()
    }
}

// SAFETY: blocks are disjoint parts of the buffer, which lives until the arena is dropped;
// `reset` needs `&mut self`, so no block outlives it in safe code. Only the most recent block is
// ever resized or given back in place, through the shared bump arithmetic.
unsafe impl<A: Allocator> Allocator for LinearAllocator<A> {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        LinearAllocator::allocate(self, layout)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            self.cursor.release_if_last(ptr, layout.size());
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
        let block = unsafe { crate::resize::grow(self, &self.cursor, ptr, old, new) }?;
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
        // SAFETY: forwarded caller contract.
        unsafe { crate::resize::shrink(self, &self.cursor, ptr, old, new) }
    }
}
