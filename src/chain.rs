//! [`ChainAllocator`]: a bump arena that links a new chunk when the current one is full.

use crate::bump::{chunk_layout, dangling, Cursor};
use crate::{AllocError, Allocator, Checkpoint, Rewind};
use core::alloc::Layout;
use core::cell::Cell;
use core::mem::size_of;
use core::ptr::NonNull;

/// The bookkeeping at the start of every chunk: a link to the previous chunk and the layout the
/// chunk was allocated with. Aligned to 16 so that the first block of a chunk usually needs no
/// padding.
#[repr(C, align(16))]
struct ChunkHeader {
    prev: Option<NonNull<ChunkHeader>>,
    /// Position in the chain: 1 for the oldest chunk, `prev`'s depth + 1 for the others. A
    /// checkpoint names its chunk by depth, which survives the chunk being moved by `grow`.
    depth: usize,
    /// The layout to give back to the backing allocator; its size is the chunk's whole length.
    layout: Layout,
}

/// A bump arena that grows by linking chunks taken from a backing allocator `A`.
///
/// Allocation bumps a cursor through the newest chunk: O(1), no per-allocation header. When
/// that chunk is full, a new one is taken from `A` and becomes the newest (the rest of the old
/// one is left unused). Each chunk starts with [`CHAIN_NODE_OVERHEAD`](Self::CHAIN_NODE_OVERHEAD)
/// bytes of bookkeeping.
///
/// # Chunk sizes
/// The first chunk is `chunk_size_hint` bytes (header included). Each chunk taken sets the next
/// to twice its own size, up to a cap: `max(chunk_size_hint, 4 MiB)` by default,
/// `max(max, initial)` with [`new_capped_in`] (the constructor of libdd-alloc's next release), or
/// as set by [`with_max_chunk_size`] (set it to the hint for fixed-size chunks, as in libdd-alloc
/// 1.0). An allocation too big for the next chunk gets a chunk sized exactly for it, after which
/// the next is twice that size, capped. The backing allocator may round a chunk up (e.g.
/// [`VirtualAllocator`](crate::VirtualAllocator) to pages); the extra bytes are used, but do not
/// count in the doubling.
///
/// # Freeing
/// Deallocation is a no-op except for the most recent block, whose bytes are given back. The
/// most recent block grows and shrinks in place while its chunk has room; when it is also the only
/// block of its chunk, growing past the chunk asks `A` to grow the chunk itself (with
/// `VirtualAllocator` on Linux that is one `mremap`, no copy). [`reset`](Self::reset) frees
/// everything, keeping the largest chunk for reuse; dropping the arena returns every chunk to
/// `A`. Destructors of values placed in the arena are not run.
///
/// # Statistics
/// All O(1): [`reserved_bytes`](Self::reserved_bytes) counts every chunk; the unused tails of
/// older chunks count as used, since they will not be handed out.
///
/// # Soundness of `reset`
/// Why a safe `reset(&mut self)` (and `rewind`) next to `Allocator` for the owned arena is
/// sound: see the [crate docs](crate#why-a-safe-resetmut-self-next-to-allocator-is-sound).
///
/// # Signal safety
/// Not reentrant: the cursor is a `Cell`. A signal handler must not allocate from an arena the
/// interrupted code may be using; use `SyncChainAllocator` for that. Allocation never locks or
/// panics; it calls the global allocator only if `A` does.
///
/// # Examples
/// ```
/// use libdd_alloc::{Allocator, ChainAllocator, Layout, System};
///
/// let arena = ChainAllocator::new_in(4096, System)?;
/// for _ in 0..1000 {
///     arena.allocate(Layout::new::<[u64; 4]>())?; // 32 KB in all: several chunks
/// }
/// assert!(arena.reserved_bytes() >= 32_000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`with_max_chunk_size`]: Self::with_max_chunk_size
/// [`new_capped_in`]: Self::new_capped_in
pub struct ChainAllocator<A: Allocator> {
    /// Free range of the newest chunk.
    cursor: Cursor,
    /// The newest chunk; each header links to the one before.
    top: Cell<Option<NonNull<ChunkHeader>>>,
    /// Sum of the lengths of all chunks.
    reserved: Cell<usize>,
    /// Size of the next regular chunk.
    next_chunk_size: Cell<usize>,
    chunk_size_hint: usize,
    max_chunk_size: usize,
    allocator: A,
}

// SAFETY: the arena owns its chunks outright; moving it to another thread moves that ownership,
// which is sound when the backing allocator may itself move there. Not `Sync`: `Cell`s inside.
unsafe impl<A: Allocator + Send> Send for ChainAllocator<A> {}

/// The default bound on geometric chunk growth.
pub(crate) const DEFAULT_MAX_CHUNK_SIZE: usize = 4 << 20;

/// The first regular chunk size and the cap on regular chunks of a chain arena (`ChainAllocator`
/// and `SyncChainAllocator`) built with `initial` and `max`: the first is `initial` raised to
/// `min`, the smallest chunk worth its header; the cap is `max` raised to the first, so
/// `max <= initial` means fixed-size chunks. As in libdd-alloc's `new_capped_in`.
pub(crate) const fn chunk_size_bounds(initial: usize, max: usize, min: usize) -> (usize, usize) {
    let first = if initial < min { min } else { initial };
    (first, if max < first { first } else { max })
}

/// The next regular chunk size of a chain arena whose cap is `max`, once a chunk of `taken` bytes
/// (as requested, before the backing allocator rounds it) is linked: `2 * taken`, capped at
/// `max`; so `max` after a chunk at or above the cap (one sized for an oversized allocation).
/// Never a size that no layout of alignment `align` can have: where doubling would give one
/// (above `isize::MAX`), it stays `taken`. As in libdd-alloc's `new_capped_in`.
pub(crate) fn next_chunk_size(taken: usize, max: usize, align: usize) -> usize {
    if taken >= max {
        return max;
    }
    let next = taken.checked_mul(2).map_or(max, |doubled| doubled.min(max));
    if Layout::from_size_align(next, align).is_ok() {
        next
    } else {
        taken
    }
}

impl<A: Allocator> ChainAllocator<A> {
    /// Bytes of bookkeeping at the start of each chunk. Size a hint with it in mind when a
    /// particular object must fit in one chunk.
    pub const CHAIN_NODE_OVERHEAD: usize = size_of::<ChunkHeader>();

    /// The smallest chunk worth its header.
    const MIN_CHUNK_SIZE: usize = 4 * Self::CHAIN_NODE_OVERHEAD;

    /// Creates the arena and allocates its first chunk of `chunk_size_hint` bytes (at least
    /// `4 * CHAIN_NODE_OVERHEAD`), so that a backing allocator that cannot serve even one chunk
    /// is reported here.
    ///
    /// This is the one difference from libdd-alloc 1.0, whose `new_in` was a `const fn`
    /// returning `Self`: use [`new_lazy_in`](Self::new_lazy_in) for that.
    ///
    /// # Errors
    /// `Err(AllocError)` if the backing allocator fails.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// assert_eq!(arena.reserved_bytes(), 4096);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn new_in(chunk_size_hint: usize, allocator: A) -> Result<Self, AllocError> {
        let arena = Self::new_lazy_in(chunk_size_hint, allocator);
        arena.push_chunk(Layout::new::<u8>())?;
        Ok(arena)
    }

    /// Creates the arena without allocating: the first chunk is taken on the first allocation.
    /// `const`, so it can initialise a `static` or a `thread_local!`.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ChainAllocator, VirtualAllocator};
    /// const ARENA: ChainAllocator<VirtualAllocator> =
    ///     ChainAllocator::new_lazy_in(1 << 16, VirtualAllocator {});
    /// let arena = ARENA;
    /// assert_eq!(arena.reserved_bytes(), 0);
    /// ```
    pub const fn new_lazy_in(chunk_size_hint: usize, allocator: A) -> Self {
        Self::new_capped_in(chunk_size_hint, DEFAULT_MAX_CHUNK_SIZE, allocator)
    }

    /// Creates the arena without allocating (like [`new_lazy_in`](Self::new_lazy_in)), with
    /// chunks that start at `initial` bytes and double up to `max`: the constructor libdd-alloc's
    /// next release adds, with its signature and sizing.
    ///
    /// The first chunk is `initial` bytes, raised to `4 * CHAIN_NODE_OVERHEAD`. Each chunk taken
    /// sets the next to twice its size, capped at `max(max, initial)`: `max <= initial` (`0`
    /// included) gives fixed-size chunks of `initial` bytes, and `usize::MAX` no cap but the
    /// address space (a doubling that no layout can hold keeps the size it had). An allocation
    /// larger than the next chunk gets a chunk sized for it, even above the cap; the chunk after
    /// it is twice its size, capped. `const` and infallible: a size no backing allocator can
    /// serve shows up as `Err(AllocError)` from the allocation that needs the chunk.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Allocator, ChainAllocator, Layout, System};
    /// // 64 KiB chunks, doubling up to 1 MiB: a small worker keeps a small floor.
    /// let arena = ChainAllocator::new_capped_in(64 << 10, 1 << 20, System);
    /// assert_eq!(arena.reserved_bytes(), 0);
    /// let mut chunks = Vec::new();
    /// for _ in 0..6 {
    ///     let before = arena.reserved_bytes();
    ///     // Fill the newest chunk; the next byte takes a new one.
    ///     arena.allocate(Layout::array::<u8>(arena.remaining_capacity()).unwrap())?;
    ///     arena.allocate(Layout::new::<u8>())?;
    ///     chunks.push((arena.reserved_bytes() - before) >> 10);
    /// }
    /// assert_eq!(chunks, [64, 128, 256, 512, 1024, 1024]); // KiB
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub const fn new_capped_in(initial: usize, max: usize, allocator: A) -> Self {
        let (first, cap) = chunk_size_bounds(initial, max, Self::MIN_CHUNK_SIZE);
        Self {
            cursor: Cursor::empty(),
            top: Cell::new(None),
            reserved: Cell::new(0),
            next_chunk_size: Cell::new(first),
            chunk_size_hint: first,
            max_chunk_size: cap,
            allocator,
        }
    }

    /// Bounds geometric chunk growth: regular chunks never exceed `max(max_chunk_size,
    /// chunk_size_hint)` bytes. Pass the hint itself for fixed-size chunks.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Allocator, ChainAllocator, Layout, System};
    /// let arena = ChainAllocator::new_in(4096, System)?.with_max_chunk_size(4096);
    /// for _ in 0..3 {
    ///     arena.allocate(Layout::new::<[u8; 4000]>())?;
    /// }
    /// assert_eq!(arena.reserved_bytes(), 3 * 4096);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn with_max_chunk_size(mut self, max_chunk_size: usize) -> Self {
        self.max_chunk_size = max_chunk_size.max(self.chunk_size_hint);
        if self.next_chunk_size.get() > self.max_chunk_size {
            self.next_chunk_size.set(self.max_chunk_size);
        }
        self
    }

    /// The size of the first chunk, as given to the constructor (raised to the minimum).
    pub fn chunk_size_hint(&self) -> usize {
        self.chunk_size_hint
    }

    /// Allocates a block for `layout`: the [`Allocator::allocate`] of this arena, callable without
    /// importing the trait. O(1) while the newest chunk has room; otherwise takes a new chunk.
    ///
    /// # Errors
    /// `Err(AllocError)` when a new chunk is needed and the backing allocator fails, or the
    /// layout is too large for any chunk.
    ///
    /// ```
    /// # use libdd_alloc::{ChainAllocator, Layout, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let big = arena.allocate(Layout::new::<[u8; 100_000]>())?; // gets its own chunk
    /// assert_eq!(big.len(), 100_000);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline(always)]
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        match self.cursor.bump(layout) {
            Some(block) => Ok(block),
            None => self.allocate_in_new_chunk(layout),
        }
    }

    /// Bytes used: everything handed out from the newest chunk, plus the whole of every older
    /// chunk (their unused tails will not be handed out), chunk headers included. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, ChainAllocator, Layout, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let before = arena.used_bytes();
    /// arena.allocate(Layout::new::<u64>())?;
    /// assert_eq!(arena.used_bytes(), before + 8);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn used_bytes(&self) -> usize {
        self.reserved.get() - self.cursor.remaining()
    }

    /// Bytes taken from the backing allocator, summed over all chunks. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(1 << 16, System)?;
    /// assert_eq!(arena.reserved_bytes(), 1 << 16);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn reserved_bytes(&self) -> usize {
        self.reserved.get()
    }

    /// Bytes that can still be handed out without a new chunk. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// assert_eq!(arena.remaining_capacity(), 4096 - ChainAllocator::<System>::CHAIN_NODE_OVERHEAD);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn remaining_capacity(&self) -> usize {
        self.cursor.remaining()
    }

    /// Whether `layout` fits in the newest chunk, so that allocating it asks nothing of the
    /// backing allocator. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{ChainAllocator, Layout, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// assert!(arena.has_capacity_for(Layout::new::<[u8; 1024]>()));
    /// assert!(!arena.has_capacity_for(Layout::new::<[u8; 8192]>()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn has_capacity_for(&self, layout: Layout) -> bool {
        self.cursor.has_room_for(layout)
    }

    /// Frees every allocation at once. Keeps the largest chunk (so a reused arena stops calling
    /// its backing allocator) and returns the others. O(number of chunks). Taking `&mut self`
    /// proves that no reference into the arena is alive.
    ///
    /// `&mut self` proves that nothing borrows the arena; why that is enough, although raw
    /// blocks from [`Allocator::allocate`] are not borrows, is in the
    /// [crate docs](crate#why-a-safe-resetmut-self-next-to-allocator-is-sound).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, ChainAllocator, Layout, System};
    /// let mut arena = ChainAllocator::new_in(4096, System)?;
    /// for _ in 0..100 {
    ///     arena.allocate(Layout::new::<[u8; 1000]>())?;
    /// }
    /// let reserved = arena.reserved_bytes();
    /// arena.reset();
    /// assert!(arena.reserved_bytes() < reserved);
    /// assert_eq!(arena.used_bytes(), ChainAllocator::<System>::CHAIN_NODE_OVERHEAD);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn reset(&mut self) {
        // First the bookkeeping, then the backing allocator: from the moment the first chunk goes
        // back to `A`, the arena links only the kept chunk. A backing `deallocate` that panics
        // part-way then leaks the chunks not yet freed, and frees nothing twice.
        let old_top = self.top.get();
        let mut largest: Option<(NonNull<ChunkHeader>, usize)> = None;
        let mut chunk = old_top;
        while let Some(header) = chunk {
            // SAFETY: every linked header is a live chunk owned by this arena.
            let (prev, size) =
                unsafe { ((*header.as_ptr()).prev, (*header.as_ptr()).layout.size()) };
            if largest.is_none_or(|(_, best)| size > best) {
                largest = Some((header, size));
            }
            chunk = prev;
        }
        let kept = largest.map(|(header, size)| {
            // SAFETY: the kept chunk is live and ours; read its link before it is cut.
            let below = unsafe { (*header.as_ptr()).prev };
            // SAFETY: as above.
            unsafe {
                (*header.as_ptr()).prev = None;
                (*header.as_ptr()).depth = 1;
            };
            self.reserved.set(size);
            self.point_cursor_at(header, size);
            (header, below)
        });
        self.top.set(kept.map(|(header, _)| header));
        if kept.is_none() {
            self.reserved.set(0);
            self.cursor.set(NonNull::dangling(), 0);
        }
        // The old chain, minus the kept chunk: nothing links these any more.
        let mut chunk = old_top;
        while let Some(header) = chunk {
            if let Some((kept, below)) = kept {
                if header == kept {
                    chunk = below;
                    continue;
                }
            }
            // SAFETY: an unlinked chunk of the old chain, live until freed just below; read its
            // link first.
            chunk = unsafe { (*header.as_ptr()).prev };
            // SAFETY: `&mut self`: nothing borrows the chunk, and it is unlinked above.
            unsafe { self.free_chunk(header) };
        }
    }

    /// The backing allocator.
    pub fn allocator(&self) -> &A {
        &self.allocator
    }

    /// Points the cursor at the free part (after the header) of the chunk `header` of `size`.
    fn point_cursor_at(&self, header: NonNull<ChunkHeader>, size: usize) {
        self.point_cursor_into(header, size, 0);
    }

    /// Points the cursor into the chunk `header` of `size`, with the first `used` bytes after
    /// the header already handed out (clamped to the chunk).
    fn point_cursor_into(&self, header: NonNull<ChunkHeader>, size: usize, used: usize) {
        self.cursor.set_used(
            Self::chunk_data(header),
            size - Self::CHAIN_NODE_OVERHEAD,
            used,
        );
    }

    /// Makes `header` (or no chunk) the newest one with nothing left to hand out: the state of
    /// an older chunk, whose unused tail is abandoned. What the arena falls back to while the
    /// chunk above it is being given back or grown by the backing allocator.
    fn point_cursor_at_end_of(&self, header: Option<NonNull<ChunkHeader>>) {
        match header {
            Some(header) => {
                // SAFETY: a linked header is a live chunk owned by this arena.
                let size = unsafe { (*header.as_ptr()).layout.size() };
                self.point_cursor_into(header, size, usize::MAX);
            }
            None => self.cursor.set(NonNull::dangling(), 0),
        }
    }

    /// The first byte after the header of a chunk.
    fn chunk_data(header: NonNull<ChunkHeader>) -> NonNull<u8> {
        // SAFETY: a chunk is at least MIN_CHUNK_SIZE > CHAIN_NODE_OVERHEAD bytes long.
        unsafe { header.cast::<u8>().add(Self::CHAIN_NODE_OVERHEAD) }
    }

    /// Number of chunks: the depth of the newest one, 0 when there is none. O(1).
    fn depth(&self) -> usize {
        // SAFETY: a linked header is a live chunk owned by this arena.
        self.top
            .get()
            .map_or(0, |header| unsafe { (*header.as_ptr()).depth })
    }

    /// Returns a chunk to the backing allocator.
    ///
    /// # Safety
    /// `header` is a chunk of this arena that nothing uses any more.
    unsafe fn free_chunk(&self, header: NonNull<ChunkHeader>) {
        // SAFETY: the header is live until the deallocation below.
        let layout = unsafe { (*header.as_ptr()).layout };
        crate::bump::unpoison_chunk(header.cast(), layout.size());
        // SAFETY: the chunk came from `self.allocator` with `layout` (with the length it
        // returned, which the contract accepts).
        unsafe { self.allocator.deallocate(header.cast(), layout) };
    }

    /// Takes a new chunk with room for `layout` and makes it the newest.
    #[cold]
    #[inline(never)]
    fn push_chunk(&self, layout: Layout) -> Result<(), AllocError> {
        let regular = self.next_chunk_size.get();
        let chunk_layout =
            chunk_layout(Layout::new::<ChunkHeader>(), regular, layout).ok_or(AllocError)?;
        let (size, align) = (chunk_layout.size(), chunk_layout.align());
        let chunk = self.allocator.allocate(chunk_layout)?;
        let header = chunk.cast::<ChunkHeader>();
        let depth = self.depth() + 1;
        // SAFETY: the chunk is fresh, aligned for the header and longer than it.
        unsafe {
            header.as_ptr().write(ChunkHeader {
                prev: self.top.get(),
                depth,
                layout: Layout::from_size_align_unchecked(chunk.len(), align),
            })
        };
        self.top.set(Some(header));
        self.reserved.set(self.reserved.get() + chunk.len());
        self.point_cursor_at(header, chunk.len());
        self.next_chunk_size
            .set(next_chunk_size(size, self.max_chunk_size, align));
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn allocate_in_new_chunk(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.push_chunk(layout)?;
        self.cursor.bump(layout).ok_or(AllocError)
    }

    /// Grows the only block of the newest chunk by growing the chunk itself in the backing
    /// allocator (which may move it: nothing else lives there). `None` if `ptr` is not that
    /// block, or the backing allocator cannot.
    ///
    /// # Safety
    /// `ptr` is a live block of `old` from this arena, and `new.size() >= old.size()`.
    unsafe fn grow_sole_block_chunk(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        let header = self.top.get()?;
        let chunk = header.cast::<u8>();
        let block = ptr.as_ptr().addr();
        let first = chunk.as_ptr().addr() + Self::CHAIN_NODE_OVERHEAD;
        // The block starts where the chunk's free space starts (nothing can precede it) and ends at
        // the cursor (nothing follows it).
        if block != first || block + old.size() != self.cursor.cur_addr() {
            return None;
        }
        // SAFETY: the header of the newest chunk is live.
        let chunk_layout = unsafe { (*header.as_ptr()).layout };
        // The block stays at `CHAIN_NODE_OVERHEAD` from the start of the (possibly moved) chunk,
        // so it keeps its bytes only if that offset suits `new`: the chunk's alignment and the
        // offset must both be multiples of `new.align()`. Otherwise the caller moves the block.
        if new.align() > chunk_layout.align() || Self::CHAIN_NODE_OVERHEAD % new.align() != 0 {
            return None;
        }
        let size = Self::CHAIN_NODE_OVERHEAD.checked_add(new.size())?;
        // Only a real grow: when the block failed to grow in place for want of alignment rather
        // than room, `size` can be smaller than the chunk, which `Allocator::grow` forbids.
        if size <= chunk_layout.size() {
            return None;
        }
        let new_layout = Layout::from_size_align(size, chunk_layout.align()).ok()?;
        // Unlink the chunk before `A` sees it: `A::grow` may move or free it, and it may call
        // back into this arena (to log, say) or panic. While it runs the arena is as if the
        // chunk had never been taken: the one below is the newest, full, so a re-entrant
        // allocation takes a chunk of its own, and a checkpoint, a statistic or a resize sees
        // only live chunks. If `A` panics, the chunk leaks; nothing dangles.
        // SAFETY: the header of the newest chunk is live.
        let below = unsafe { (*header.as_ptr()).prev };
        self.top.set(below);
        self.reserved.set(self.reserved.get() - chunk_layout.size());
        self.point_cursor_at_end_of(below);
        crate::bump::unpoison_chunk(chunk, chunk_layout.size());
        // SAFETY: the chunk came from `self.allocator` with `chunk_layout`; `size` is larger. The
        // only block in it is the caller's, which the `grow` contract lets us move; the arena no
        // longer refers to the chunk.
        let grown = unsafe { self.allocator.grow(chunk, chunk_layout, new_layout) };
        let (header, len, used) = match grown {
            Ok(grown) => (grown.cast::<ChunkHeader>(), grown.len(), 0),
            // `A` left the chunk as it was: link it back, with the caller's block still in it.
            Err(AllocError) => (header, chunk_layout.size(), old.size()),
        };
        // Link the chunk (grown or not) above whatever is the newest now: the one below it, or
        // chunks a re-entrant call took meanwhile (their free tails are abandoned).
        let depth = self.depth() + 1;
        // SAFETY: the header is live (it moved with the chunk, or did not move) and ours; no
        // one else refers to it.
        unsafe {
            header.as_ptr().write(ChunkHeader {
                prev: self.top.get(),
                depth,
                layout: Layout::from_size_align_unchecked(len, chunk_layout.align()),
            })
        };
        self.top.set(Some(header));
        self.reserved.set(self.reserved.get() + len);
        self.point_cursor_into(header, len, used);
        if grown.is_err() {
            return None;
        }
        // Cannot miss: the cursor is at chunk + CHAIN_NODE_OVERHEAD, aligned for `new` (checked
        // above), with `grown.len() - CHAIN_NODE_OVERHEAD >= new.size()` bytes after it. So the
        // block lands exactly where its bytes moved to.
        self.cursor.bump(new)
    }
}

/// Rolling back frees the chunks taken since the checkpoint (one backing deallocation each; they
/// are not kept for reuse) and moves the cursor back in the chunk that was the newest, so
/// `used_bytes` and `reserved_bytes` are again what they were at the checkpoint. The exception is
/// a chunk grown in place by the backing allocator since then: it keeps its new size, counted in
/// `reserved_bytes`. The growth of the next chunk's size is not undone.
///
/// One case is not exact: a chunk grown by the backing allocator (the growth of the only block
/// of the newest chunk past that chunk's end) while the backing allocator's `grow` allocated
/// from this arena. The chunk is unlinked during that call, so those allocations take chunks of
/// their own, and the chunk (grown or not) is linked back above them, one level higher per
/// chunk taken. A rollback to a checkpoint taken while it was the newest chunk then gives it back
/// to the backing allocator, with the block in it (whose first bytes were allocated before the
/// checkpoint), and keeps the first chunk taken during `grow` as the newest, with the
/// checkpoint's offset (clamped to its end) counted as used in it: `reserved_bytes` is then that
/// chunk's size instead of the grown one's. Checkpoints taken while an older chunk was the
/// newest, or during the `grow`, roll back exactly. Safe code never sees the freed block:
/// `rewind` takes `&mut self`, so no reference into the arena is alive.
///
/// ```
/// use libdd_alloc::{Arena, ChainAllocator, Rewind, System};
///
/// let mut arena = ChainAllocator::new_in(4096, System)?;
/// let (used, reserved) = (arena.used_bytes(), arena.reserved_bytes());
/// let checkpoint = arena.checkpoint();
/// arena.try_alloc_slice_fill_with(10_000, |i| i as u8)?; // needs a second chunk
/// assert!(arena.reserved_bytes() > reserved);
/// arena.rewind(checkpoint);
/// assert_eq!((arena.used_bytes(), arena.reserved_bytes()), (used, reserved));
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
impl<A: Allocator> Rewind for ChainAllocator<A> {
    #[inline]
    fn checkpoint(&self) -> Checkpoint {
        match self.top.get() {
            Some(header) => Checkpoint {
                // SAFETY: the newest header is a live chunk owned by this arena.
                chunks: unsafe { (*header.as_ptr()).depth },
                used: self.cursor.used_since(Self::chunk_data(header)),
            },
            None => Checkpoint { chunks: 0, used: 0 },
        }
    }

    fn rewind(&mut self, checkpoint: Checkpoint) {
        while let Some(header) = self.top.get() {
            // SAFETY: a linked header is a live chunk owned by this arena.
            let (depth, prev, size) = unsafe {
                let header = &*header.as_ptr();
                (header.depth, header.prev, header.layout.size())
            };
            if depth <= checkpoint.chunks {
                if let Some(used) = checkpoint.used_in_chunk(depth) {
                    self.point_cursor_into(header, size, used);
                }
                return;
            }
            // Unlink first, cursor included: if the backing `deallocate` panics, the arena
            // points only at live chunks (the one being freed leaks at worst).
            self.top.set(prev);
            self.reserved.set(self.reserved.get() - size);
            self.point_cursor_at_end_of(prev);
            // SAFETY: `&mut self`: nothing borrows the chunk, and it is unlinked above.
            unsafe { self.free_chunk(header) };
        }
        self.cursor.set(NonNull::dangling(), 0);
    }
}

impl<A: Allocator> Drop for ChainAllocator<A> {
    fn drop(&mut self) {
        let mut chunk = self.top.get();
        while let Some(header) = chunk {
            // SAFETY: every linked header is a live chunk owned by this arena; read the link
            // before the chunk is freed.
            chunk = unsafe { (*header.as_ptr()).prev };
            // Unlinked before it is freed, as everywhere: a panicking backing `deallocate`
            // leaves the arena linking only chunks not yet freed, which leak.
            self.top.set(chunk);
            // SAFETY: the arena is going away, so nothing uses the chunk.
            unsafe { self.free_chunk(header) };
        }
    }
}

impl<A: Allocator> core::fmt::Debug for ChainAllocator<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChainAllocator")
            .field("used_bytes", &self.used_bytes())
            .field("reserved_bytes", &self.reserved_bytes())
            .field("chunk_size_hint", &self.chunk_size_hint)
            .field("max_chunk_size", &self.max_chunk_size)
            .finish_non_exhaustive()
    }
}

// SAFETY: blocks are disjoint parts of chunks that live until `reset` (`&mut self`) or drop. Only
// the most recent block is resized or given back in place; a chunk is moved by the backing
// allocator only when the block being grown is the only one in it.
unsafe impl<A: Allocator> Allocator for ChainAllocator<A> {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        ChainAllocator::allocate(self, layout)
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
        if old.size() != 0 {
            if let Some(block) = self.cursor.resize_last_in_place(ptr, old.size(), new) {
                return Ok(block);
            }
            // SAFETY: forwarded caller contract.
            if let Some(block) = unsafe { self.grow_sole_block_chunk(ptr, old, new) } {
                return Ok(block);
            }
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
        // SAFETY: forwarded caller contract.
        unsafe { crate::resize::shrink(self, &self.cursor, ptr, old, new) }
    }
}

#[cfg(test)]
mod tests {
    use super::{chunk_size_bounds, next_chunk_size};
    use core::alloc::Layout;

    #[test]
    fn chunk_size_bounds_raise_initial_to_the_minimum_and_max_to_initial() {
        assert_eq!(
            chunk_size_bounds(64 << 10, 1 << 20, 128),
            (64 << 10, 1 << 20)
        );
        assert_eq!(chunk_size_bounds(0, 0, 128), (128, 128));
        assert_eq!(chunk_size_bounds(8192, 4096, 128), (8192, 8192));
        assert_eq!(chunk_size_bounds(4096, usize::MAX, 128), (4096, usize::MAX));
        assert_eq!(
            chunk_size_bounds(usize::MAX, 0, 128),
            (usize::MAX, usize::MAX)
        );
    }

    #[test]
    fn next_chunk_size_doubles_the_chunk_taken_up_to_the_cap() {
        let mut sizes = [0; 6];
        let mut taken = 64 << 10;
        for size in &mut sizes {
            taken = next_chunk_size(taken, 1 << 20, 16);
            *size = taken >> 10;
        }
        assert_eq!(sizes, [128, 256, 512, 1024, 1024, 1024]);
        // Not a power of two: doubled, then the cap itself.
        assert_eq!(next_chunk_size(5000, 12_000, 16), 10_000);
        assert_eq!(next_chunk_size(10_000, 12_000, 16), 12_000);
    }

    #[test]
    fn next_chunk_size_after_an_oversized_chunk_is_twice_it_capped() {
        // A chunk sized for one large allocation: the next regular one follows it.
        assert_eq!(next_chunk_size(300 << 10, 1 << 20, 16), 600 << 10);
        assert_eq!(next_chunk_size(3 << 20, 1 << 20, 16), 1 << 20);
        // Fixed-size chunks (cap == hint) stay fixed after one.
        assert_eq!(next_chunk_size(100_000, 4096, 16), 4096);
    }

    #[test]
    fn next_chunk_size_is_always_a_valid_layout_size_at_the_largest_caps() {
        let half = (isize::MAX as usize).div_ceil(2);
        // Doubling would pass isize::MAX: the size stays where it was.
        assert_eq!(next_chunk_size(half, usize::MAX, 16), half);
        // Doubling would overflow usize: the cap, which is no valid size either, is refused too.
        assert_eq!(
            next_chunk_size(usize::MAX / 2 + 1, usize::MAX, 16),
            usize::MAX / 2 + 1
        );
        for taken in [1 << 20, half / 2, half - 16, half] {
            let next = next_chunk_size(taken, usize::MAX, 16);
            assert!(next >= taken, "{taken} -> {next}");
            assert!(
                Layout::from_size_align(next, 16).is_ok(),
                "{taken} -> {next}"
            );
        }
        // Below the address-space limit, usize::MAX is no cap at all.
        assert_eq!(next_chunk_size(8 << 20, usize::MAX, 16), 16 << 20);
    }
}
