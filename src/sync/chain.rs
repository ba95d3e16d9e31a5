//! [`SyncChainAllocator`]: a lock-free bump arena that publishes a new chunk when one is full.

use super::atomic::{const_fn_unless_loom, AtomicPtr, AtomicUsize, Ordering};
use super::cursor::AtomicCursor;
use crate::bump::{chunk_layout, dangling};
use crate::chain::{chunk_size_bounds, next_chunk_size, DEFAULT_MAX_CHUNK_SIZE};
use crate::resize::LastBlock;
use crate::{AllocError, Allocator, Checkpoint, Rewind};
use core::alloc::Layout;
use core::mem::size_of;
use core::ptr::NonNull;

/// The bookkeeping at the start of every chunk. Only `cursor` changes once the chunk is
/// published; `prev` and `shape` are written before publication and then never again (until
/// `reset`/`rewind`/drop, which hold `&mut`), so a thread that loaded an old `top` reads a
/// consistent header. Aligned to 16 so that the first block of a chunk usually needs no padding.
#[repr(C, align(16))]
struct SyncChunk {
    /// Free range of this chunk; its limit is the end of the chunk.
    cursor: AtomicCursor,
    /// The chunk that was the newest when this one was published.
    prev: *mut SyncChunk,
    /// Depth in the chain and allocation alignment; the size is `cursor.limit() - address`.
    shape: ChunkShape,
}

impl SyncChunk {
    /// The layout to give back to the backing allocator.
    fn layout(&self) -> Layout {
        let size = self.cursor.limit() - (self as *const Self).addr();
        // SAFETY: size and alignment are those of a block the backing allocator returned.
        unsafe { Layout::from_size_align_unchecked(size, self.shape.align()) }
    }
}

/// A chunk's depth in the chain (1 for the oldest, `prev`'s + 1 for the others: a checkpoint
/// names its chunk by depth) and the log2 of the alignment it was allocated with, packed in one
/// word so that the header stays as small as `ChainAllocator`'s. An alignment's log2 is below
/// 64, so 6 bits hold it; the depth gets the rest (58 bits on 64-bit targets; 26 bits on 32-bit
/// ones, 2^26 chunks of at least 64 bytes being the whole address space).
#[derive(Clone, Copy)]
struct ChunkShape(usize);

impl ChunkShape {
    const ALIGN_BITS: u32 = 6;
    const ALIGN_MASK: usize = (1 << Self::ALIGN_BITS) - 1;
    const MAX_DEPTH: usize = usize::MAX >> Self::ALIGN_BITS;

    /// `None` if `depth` does not fit (the arena then refuses to grow: `Err`, never a wrap).
    fn new(depth: usize, align: usize) -> Option<Self> {
        debug_assert!(align.is_power_of_two());
        (depth <= Self::MAX_DEPTH)
            .then(|| Self((depth << Self::ALIGN_BITS) | align.trailing_zeros() as usize))
    }

    fn depth(self) -> usize {
        self.0 >> Self::ALIGN_BITS
    }

    fn align(self) -> usize {
        // The log2 of a real alignment, so below `usize::BITS`: the shift never wraps.
        1usize.wrapping_shl((self.0 & Self::ALIGN_MASK) as u32)
    }
}

/// A lock-free, reentrant bump arena that grows by publishing chunks taken from a backing
/// allocator `A`: the thread-safe twin of [`ChainAllocator`](crate::ChainAllocator), with the
/// same API, chunk sizes and statistics.
///
/// # How it works
/// Each chunk starts with a header holding its own atomic cursor and its (immutable) end. The
/// arena holds an atomic pointer to the newest chunk, `top`. Allocation loads `top` and bumps
/// that chunk's cursor with a compare-exchange: two atomic operations, no lock.
///
/// When the chunk is full, the thread takes a new chunk from `A`, carves its own block out of it
/// before anyone else can see it, links it to the `top` it saw, and publishes it with a
/// compare-exchange of `top`. If another thread published first, the loser tries the winner's
/// chunk; if its block fits there it returns its own chunk to `A`, otherwise it links its chunk
/// above the winner's and tries again. So nothing leaks and nothing is handed out twice.
///
/// There is no ABA hazard on `top`: it only ever moves to a chunk that has never been published,
/// and published chunks are freed only by [`reset`](Self::reset), `rewind` and drop, which take
/// `&mut self`.
/// For the same reason a thread that loaded `top` just before another thread replaced it still
/// bumps a live chunk: the old chunk's cursor stays valid, and blocks carved from it after the
/// swap are as disjoint as any others.
///
/// # Chunk sizes
/// As for `ChainAllocator`: the first chunk is `chunk_size_hint` bytes (header included), each
/// chunk taken sets the next to twice its size, up to `max(chunk_size_hint, 4 MiB)`
/// ([`new_capped_in`](Self::new_capped_in) and [`with_max_chunk_size`] set the cap); a block too
/// big for the next chunk gets a chunk of its own size.
///
/// # Freeing
/// Deallocation is a no-op except for the most recent block of the newest chunk, which is given
/// back (or grown, or shrunk) in place by one compare-exchange that fails, leaving the block as
/// it is, if another block followed it. Otherwise growing copies. Unlike `ChainAllocator`, a
/// chunk is never resized by `A` (another thread may be reading it). [`reset`](Self::reset)
/// keeps the largest chunk; [`Rewind`](crate::Rewind) rolls back to a
/// [`Checkpoint`](crate::Checkpoint) (or around a [`scope`](crate::Rewind::scope)), returning
/// the chunks published since; drop returns every chunk to `A`.
///
/// # Statistics
/// O(1) atomic counters. While other threads allocate they are approximate: `reserved_bytes` is
/// counted just after a chunk is published, and `used_bytes`, computed from it and the newest
/// chunk's cursor, may briefly lag. Once allocation stops they are exact.
///
/// # Soundness of `reset`
/// Why a safe `reset(&mut self)` (and `rewind`) next to `Allocator` for the owned arena is
/// sound: see the [crate docs](crate#why-a-safe-resetmut-self-next-to-allocator-is-sound).
///
/// # Signal safety
/// Reentrant: a signal handler may allocate from the same arena as the code it interrupted, on
/// the same thread. Every step is a load followed by a compare-exchange, with no lock and nothing
/// to wait for; a handler that interrupts between the two runs its own steps to completion, and
/// the interrupted compare-exchange then fails and retries from the new state. A growth
/// interrupted half-way leaves only a chunk that nobody else has seen yet (the interrupted code
/// publishes or returns it when it resumes); the handler takes a chunk of its own.
///
/// Whether allocation is async-signal-safe depends on `A`, which growth calls:
/// - [`VirtualAllocator`](crate::VirtualAllocator): yes on Linux. Growth is one raw `mmap`
///   syscall (a loser's chunk is returned with one `munmap`): no lock, `errno` untouched.
/// - `System`, `Global` and other heap allocators: no. A handler that interrupts `malloc` on the
///   same thread deadlocks on its lock. Allocation that does not grow never calls `A`, so a
///   chunk large enough for the handler's needs, prepared beforehand, avoids the call.
///
/// # Examples
/// ```
/// use libdd_alloc::{Allocator, Layout, SyncChainAllocator, VirtualAllocator};
///
/// let arena = SyncChainAllocator::new_in(4096, VirtualAllocator {})?;
/// std::thread::scope(|s| {
///     for _ in 0..2 {
///         s.spawn(|| {
///             for _ in 0..1000 {
///                 arena.allocate(Layout::new::<[u64; 4]>()).unwrap();
///             }
///         });
///     }
/// });
/// assert!(arena.used_bytes() >= 2 * 1000 * 32);
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
///
/// [`with_max_chunk_size`]: Self::with_max_chunk_size
pub struct SyncChainAllocator<A: Allocator> {
    /// The newest chunk, or null before the first; each header links to the one before.
    top: AtomicPtr<SyncChunk>,
    /// Sum of the lengths of all published chunks.
    reserved: AtomicUsize,
    /// Size of the next regular chunk.
    next_chunk_size: AtomicUsize,
    chunk_size_hint: usize,
    max_chunk_size: usize,
    allocator: A,
}

// SAFETY: the arena owns its chunks outright; moving it to another thread moves that ownership,
// which is sound when the backing allocator may itself move (and drop) there.
unsafe impl<A: Allocator + Send> Send for SyncChainAllocator<A> {}

// SAFETY: through `&self` the arena changes only atomics: `top`, the counters and the chunks'
// cursors, with the protocol described on the type (ranges handed out by successful
// compare-exchanges only; chunk headers immutable once published). Growth calls the backing
// allocator from any thread through `&self.allocator`, which needs `A: Sync`.
unsafe impl<A: Allocator + Sync> Sync for SyncChainAllocator<A> {}

impl<A: Allocator> SyncChainAllocator<A> {
    /// Bytes of bookkeeping at the start of each chunk. Size a hint with it in mind when a
    /// particular object must fit in one chunk.
    pub const CHAIN_NODE_OVERHEAD: usize = size_of::<SyncChunk>();

    /// The smallest chunk worth its header.
    const MIN_CHUNK_SIZE: usize = 4 * Self::CHAIN_NODE_OVERHEAD;

    /// Creates the arena and allocates its first chunk of `chunk_size_hint` bytes (at least
    /// `4 * CHAIN_NODE_OVERHEAD`), so that a backing allocator that cannot serve even one chunk
    /// is reported here.
    ///
    /// # Errors
    /// `Err(AllocError)` if the backing allocator fails.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(4096, System)?;
    /// assert_eq!(arena.reserved_bytes(), 4096);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn new_in(chunk_size_hint: usize, allocator: A) -> Result<Self, AllocError> {
        let arena = Self::new_lazy_in(chunk_size_hint, allocator);
        let byte = Layout::new::<u8>();
        let block = arena.allocate_in_new_chunk(byte, core::ptr::null_mut())?;
        // Give the byte back: the first chunk starts empty.
        // SAFETY: the block was just allocated from this arena with this layout.
        unsafe { arena.deallocate(block.cast(), byte) };
        Ok(arena)
    }

    const_fn_unless_loom! {
    /// Creates the arena without allocating: the first chunk is taken on the first allocation.
    /// `const`, so it can initialise a `static` that a signal handler uses.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Allocator, Layout, SyncChainAllocator, VirtualAllocator};
    /// static ARENA: SyncChainAllocator<VirtualAllocator> =
    ///     SyncChainAllocator::new_lazy_in(1 << 16, VirtualAllocator {});
    /// assert_eq!(ARENA.reserved_bytes(), 0);
    /// ARENA.allocate(Layout::new::<u64>())?;
    /// assert_eq!(ARENA.reserved_bytes(), 1 << 16);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub const fn new_lazy_in(chunk_size_hint: usize, allocator: A) -> Self {
        Self::new_capped_in(chunk_size_hint, DEFAULT_MAX_CHUNK_SIZE, allocator)
    }
    }

    const_fn_unless_loom! {
    /// Creates the arena without allocating, with chunks that start at `initial` bytes and
    /// double up to `max`: the sizing of
    /// [`ChainAllocator::new_capped_in`](crate::ChainAllocator::new_capped_in), which says
    /// what `max <= initial`, `0`, `usize::MAX` and oversized allocations give. `const`, so it
    /// can initialise a `static` that a signal handler uses.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Allocator, Layout, SyncChainAllocator, VirtualAllocator};
    /// static ARENA: SyncChainAllocator<VirtualAllocator> =
    ///     SyncChainAllocator::new_capped_in(64 << 10, 1 << 20, VirtualAllocator {});
    /// assert_eq!(ARENA.reserved_bytes(), 0);
    /// ARENA.allocate(Layout::new::<[u8; 60_000]>())?; // the first chunk: 64 KiB
    /// ARENA.allocate(Layout::new::<[u8; 60_000]>())?; // does not fit: a second, of 128 KiB
    /// assert_eq!(ARENA.reserved_bytes(), (64 + 128) << 10);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub const fn new_capped_in(initial: usize, max: usize, allocator: A) -> Self {
        let (first, cap) = chunk_size_bounds(initial, max, Self::MIN_CHUNK_SIZE);
        Self {
            top: AtomicPtr::new(core::ptr::null_mut()),
            reserved: AtomicUsize::new(0),
            next_chunk_size: AtomicUsize::new(first),
            chunk_size_hint: first,
            max_chunk_size: cap,
            allocator,
        }
    }
    }
}

impl<A: Allocator> SyncChainAllocator<A> {
    /// Bounds geometric chunk growth: regular chunks never exceed `max(max_chunk_size,
    /// chunk_size_hint)` bytes. Pass the hint itself for fixed-size chunks.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Allocator, Layout, SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(4096, System)?.with_max_chunk_size(4096);
    /// for _ in 0..3 {
    ///     arena.allocate(Layout::new::<[u8; 4000]>())?;
    /// }
    /// assert_eq!(arena.reserved_bytes(), 3 * 4096);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn with_max_chunk_size(mut self, max_chunk_size: usize) -> Self {
        self.max_chunk_size = max_chunk_size.max(self.chunk_size_hint);
        if self.next_chunk_size.load(Ordering::Relaxed) > self.max_chunk_size {
            self.next_chunk_size
                .store(self.max_chunk_size, Ordering::Relaxed);
        }
        self
    }

    /// The size of the first chunk, as given to the constructor (raised to the minimum).
    pub fn chunk_size_hint(&self) -> usize {
        self.chunk_size_hint
    }

    /// The bound on regular chunk sizes, for the slabs of a [`LocalHandle`](super::LocalHandle).
    pub(super) fn max_chunk_size(&self) -> usize {
        self.max_chunk_size
    }

    /// The newest chunk, if any.
    #[inline(always)]
    fn top_chunk(&self) -> Option<&SyncChunk> {
        let top = self.top.load(Ordering::Acquire);
        // SAFETY: a published chunk stays allocated until `reset`, `rewind` or drop, which take
        // `&mut self` and so cannot overlap this borrow of `self`; its header was fully written
        // before the release exchange that published it, which the acquire load synchronises
        // with.
        unsafe { top.as_ref() }
    }

    /// Bytes used: everything handed out from the newest chunk, plus the whole of every older
    /// chunk (their unused tails will not be handed out), chunk headers included. O(1);
    /// approximate while other threads allocate.
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(4096, System)?;
    /// let before = arena.used_bytes();
    /// arena.allocate(Layout::new::<u64>())?;
    /// assert_eq!(arena.used_bytes(), before + 8);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn used_bytes(&self) -> usize {
        let remaining = self.remaining_capacity();
        // Saturating: a chunk just published may not be counted in `reserved` yet.
        self.reserved
            .load(Ordering::Relaxed)
            .saturating_sub(remaining)
    }

    /// Bytes taken from the backing allocator, summed over all published chunks. O(1);
    /// approximate while another thread is publishing a chunk.
    ///
    /// ```
    /// # use libdd_alloc::{SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(1 << 16, System)?;
    /// assert_eq!(arena.reserved_bytes(), 1 << 16);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn reserved_bytes(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Bytes that can still be handed out without a new chunk. O(1); a snapshot.
    ///
    /// ```
    /// # use libdd_alloc::{SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(4096, System)?;
    /// assert_eq!(
    ///     arena.remaining_capacity(),
    ///     4096 - SyncChainAllocator::<System>::CHAIN_NODE_OVERHEAD
    /// );
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn remaining_capacity(&self) -> usize {
        self.top_chunk().map_or(0, |chunk| chunk.cursor.remaining())
    }

    /// Whether `layout` fits in the newest chunk, so that allocating it asks nothing of the
    /// backing allocator. O(1); a snapshot: another thread may take the room first.
    ///
    /// ```
    /// # use libdd_alloc::{Layout, SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(4096, System)?;
    /// assert!(arena.has_capacity_for(Layout::new::<[u8; 1024]>()));
    /// assert!(!arena.has_capacity_for(Layout::new::<[u8; 8192]>()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn has_capacity_for(&self, layout: Layout) -> bool {
        layout.size() == 0
            || self
                .top_chunk()
                .is_some_and(|chunk| chunk.cursor.has_room_for(layout))
    }

    /// Frees every allocation at once. Keeps the largest chunk (so a reused arena stops calling
    /// its backing allocator) and returns the others. O(number of chunks). Taking `&mut self`
    /// proves that no block handed out is still borrowed and no other thread is allocating.
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncChainAllocator, System};
    /// let mut arena = SyncChainAllocator::new_in(4096, System)?;
    /// for _ in 0..100 {
    ///     arena.allocate(Layout::new::<[u8; 1000]>())?;
    /// }
    /// let reserved = arena.reserved_bytes();
    /// arena.reset();
    /// assert!(arena.reserved_bytes() < reserved);
    /// assert_eq!(arena.used_bytes(), SyncChainAllocator::<System>::CHAIN_NODE_OVERHEAD);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn reset(&mut self) {
        // First the bookkeeping, then the backing allocator: from the moment the first chunk goes
        // back to `A`, the arena links only the kept chunk. A backing `deallocate` that panics
        // part-way then leaks the chunks not yet freed, and frees nothing twice.
        let old_top = NonNull::new(self.top.load(Ordering::Relaxed));
        let mut largest: Option<(NonNull<SyncChunk>, usize)> = None;
        let mut chunk = old_top;
        while let Some(header) = chunk {
            // SAFETY: every linked header is a live chunk owned by this arena, and `&mut self`
            // excludes every other user.
            let (prev, size) = unsafe { (header.as_ref().prev, header.as_ref().layout().size()) };
            if largest.is_none_or(|(_, best)| size > best) {
                largest = Some((header, size));
            }
            chunk = NonNull::new(prev);
        }
        let kept = largest.map(|(mut header, size)| {
            // SAFETY: the kept chunk is live and ours alone (`&mut self`).
            let kept = unsafe { header.as_mut() };
            let below = NonNull::new(kept.prev);
            kept.prev = core::ptr::null_mut();
            // Depth 1 always fits.
            if let Some(shape) = ChunkShape::new(1, kept.shape.align()) {
                kept.shape = shape;
            }
            kept.cursor.rewind(Self::data_start(header));
            self.reserved.store(size, Ordering::Relaxed);
            (header, below)
        });
        self.top.store(
            kept.map_or(core::ptr::null_mut(), |(header, _)| header.as_ptr()),
            Ordering::Relaxed,
        );
        if kept.is_none() {
            self.reserved.store(0, Ordering::Relaxed);
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
            chunk = NonNull::new(unsafe { header.as_ref().prev });
            // SAFETY: `&mut self`: nothing borrows the chunk, and it is unlinked above.
            unsafe { self.free_chunk(header) };
        }
    }

    /// The backing allocator.
    pub fn allocator(&self) -> &A {
        &self.allocator
    }

    /// The shape of a chunk of alignment `align` to be published above `below` (null: none):
    /// one deeper. `None` if the depth does not fit.
    fn shape_above(below: *mut SyncChunk, align: usize) -> Option<ChunkShape> {
        // SAFETY: `below` is null or a published chunk, which lives until `&mut self` (see
        // `top_chunk`); its shape was written before it was published.
        let depth = unsafe { below.as_ref() }.map_or(0, |chunk| chunk.shape.depth());
        ChunkShape::new(depth.checked_add(1)?, align)
    }

    /// The first byte after the header of the chunk `header`.
    fn data_start(header: NonNull<SyncChunk>) -> NonNull<u8> {
        // SAFETY: a chunk is longer than its header (`chunk_layout` adds the header to the
        // block's size), so the address is inside it (or one past its end).
        unsafe { header.cast::<u8>().add(Self::CHAIN_NODE_OVERHEAD) }
    }

    /// Returns a chunk to the backing allocator.
    ///
    /// # Safety
    /// `header` is a chunk of this arena that nothing uses any more (or ever saw).
    unsafe fn free_chunk(&self, header: NonNull<SyncChunk>) {
        // SAFETY: the header is live until the deallocation below.
        let layout = unsafe { header.as_ref().layout() };
        // SAFETY: the chunk came from `self.allocator` with `layout` (with the length it
        // returned, which the contract accepts).
        unsafe { self.allocator.deallocate(header.cast(), layout) };
    }

    /// The slow path: the newest chunk (`seen`, null if none) had no room for `layout`. Takes a
    /// new chunk from the backing allocator, carves the block out of it, and publishes it.
    #[cold]
    #[inline(never)]
    fn allocate_in_new_chunk(
        &self,
        layout: Layout,
        mut seen: *mut SyncChunk,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // Another thread may have published a chunk since `seen` was loaded: try it first,
        // rather than ask the backing allocator for one more.
        let now = self.top.load(Ordering::Acquire);
        if now != seen {
            // SAFETY: published chunks live until `&mut self` (see `top_chunk`).
            if let Some(block) = unsafe { now.as_ref() }.and_then(|c| c.cursor.bump(layout)) {
                return Ok(block);
            }
            seen = now;
        }

        let regular = self.next_chunk_size.load(Ordering::Relaxed);
        let chunk_layout =
            chunk_layout(Layout::new::<SyncChunk>(), regular, layout).ok_or(AllocError)?;
        let shape = Self::shape_above(seen, chunk_layout.align()).ok_or(AllocError)?;
        let memory = self.allocator.allocate(chunk_layout)?;
        let header = memory.cast::<SyncChunk>();
        let data = Self::data_start(header);
        // SAFETY: the memory is fresh, aligned for the header (chunk_layout) and longer than it.
        // Nobody else can see it until it is published below.
        unsafe {
            header.as_ptr().write(SyncChunk {
                cursor: AtomicCursor::new(data, memory.len() - Self::CHAIN_NODE_OVERHEAD),
                prev: seen,
                shape,
            })
        };
        // SAFETY: the header was just written, and stays ours until published.
        let chunk = unsafe { header.as_ref() };
        // The chunk was sized for the block, so this cannot fail; if it did, give the chunk back.
        let Some(block) = chunk.cursor.bump(layout) else {
            // SAFETY: the chunk was never published.
            unsafe { self.free_chunk(header) };
            return Err(AllocError);
        };

        loop {
            match self.top.compare_exchange(
                seen,
                header.as_ptr(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.reserved.fetch_add(memory.len(), Ordering::Relaxed);
                    let next = next_chunk_size(
                        chunk_layout.size(),
                        self.max_chunk_size,
                        chunk_layout.align(),
                    );
                    // Failure means a racing publisher already advanced it.
                    let _ = self.next_chunk_size.compare_exchange(
                        regular,
                        next,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    return Ok(block);
                }
                Err(winner) => {
                    // SAFETY: published chunks live until `&mut self` (see `top_chunk`).
                    let in_winner = unsafe { winner.as_ref() }.and_then(|c| c.cursor.bump(layout));
                    if let Some(theirs) = in_winner {
                        // SAFETY: our chunk was never published; the block carved from it is
                        // not returned, so nothing refers to it.
                        unsafe { self.free_chunk(header) };
                        return Ok(theirs);
                    }
                    // The winner's chunk is full too: stack ours above it, one deeper.
                    seen = winner;
                    let Some(shape) = Self::shape_above(seen, chunk_layout.align()) else {
                        // SAFETY: our chunk was never published; nothing refers to its block.
                        unsafe { self.free_chunk(header) };
                        return Err(AllocError);
                    };
                    // SAFETY: the chunk is still unpublished, so still ours alone.
                    unsafe {
                        (*header.as_ptr()).prev = seen;
                        (*header.as_ptr()).shape = shape;
                    }
                }
            }
        }
    }
}

/// Rolling back frees the chunks published since the checkpoint (one backing deallocation each;
/// they are not kept for reuse) and moves the cursor back in the chunk that was the newest, so
/// `used_bytes` and `reserved_bytes` are again what they were at the checkpoint. The growth of
/// the next chunk's size is not undone. `rewind` takes `&mut self`, so no other thread or
/// signal handler can be using the arena meanwhile. A checkpoint taken while other threads
/// allocate is a position in the order of their operations: rewinding to it frees what they
/// allocated after it too.
///
/// ```
/// use libdd_alloc::{Arena, Rewind, SyncChainAllocator, System};
///
/// let mut arena = SyncChainAllocator::new_in(4096, System)?;
/// let (used, reserved) = (arena.used_bytes(), arena.reserved_bytes());
/// let checkpoint = arena.checkpoint();
/// arena.try_alloc_slice_fill_with(10_000, |i| i as u8)?; // needs a second chunk
/// assert!(arena.reserved_bytes() > reserved);
/// arena.rewind(checkpoint);
/// assert_eq!((arena.used_bytes(), arena.reserved_bytes()), (used, reserved));
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
impl<A: Allocator> Rewind for SyncChainAllocator<A> {
    #[inline]
    fn checkpoint(&self) -> Checkpoint {
        match NonNull::new(self.top.load(Ordering::Acquire)) {
            Some(header) => {
                // SAFETY: a published chunk lives until `&mut self` (see `top_chunk`).
                let chunk = unsafe { header.as_ref() };
                Checkpoint {
                    chunks: chunk.shape.depth(),
                    used: chunk.cursor.used_since(Self::data_start(header)),
                }
            }
            None => Checkpoint { chunks: 0, used: 0 },
        }
    }

    fn rewind(&mut self, checkpoint: Checkpoint) {
        // `&mut self`: no other thread or handler can see the arena, so plain (relaxed) loads
        // and stores will do.
        while let Some(mut header) = NonNull::new(self.top.load(Ordering::Relaxed)) {
            // SAFETY: a linked header is a live chunk owned by this arena, ours alone.
            let chunk = unsafe { header.as_mut() };
            let depth = chunk.shape.depth();
            if depth <= checkpoint.chunks {
                if let Some(used) = checkpoint.used_in_chunk(depth) {
                    chunk.cursor.set_used(Self::data_start(header), used);
                }
                return;
            }
            let (prev, size) = (chunk.prev, chunk.layout().size());
            self.top.store(prev, Ordering::Relaxed);
            let reserved = self.reserved.load(Ordering::Relaxed);
            self.reserved.store(reserved - size, Ordering::Relaxed);
            // SAFETY: nothing borrows the chunk (`&mut self`), and it is unlinked above.
            unsafe { self.free_chunk(header) };
        }
    }
}

impl<A: Allocator> Drop for SyncChainAllocator<A> {
    fn drop(&mut self) {
        let mut chunk = NonNull::new(self.top.load(Ordering::Relaxed));
        while let Some(header) = chunk {
            // SAFETY: every linked header is a live chunk owned by this arena; read the link
            // before the chunk is freed.
            chunk = NonNull::new(unsafe { header.as_ref().prev });
            // Unlinked before it is freed, as everywhere: a panicking backing `deallocate`
            // leaves the arena linking only chunks not yet freed, which leak.
            self.top.store(
                chunk.map_or(core::ptr::null_mut(), NonNull::as_ptr),
                Ordering::Relaxed,
            );
            // SAFETY: the arena is going away, so nothing uses the chunk.
            unsafe { self.free_chunk(header) };
        }
    }
}

impl<A: Allocator> core::fmt::Debug for SyncChainAllocator<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SyncChainAllocator")
            .field("used_bytes", &self.used_bytes())
            .field("reserved_bytes", &self.reserved_bytes())
            .field("chunk_size_hint", &self.chunk_size_hint)
            .field("max_chunk_size", &self.max_chunk_size)
            .finish_non_exhaustive()
    }
}

/// The most recent block lives in the newest chunk, so in-place changes go through its cursor.
/// A block of an older chunk can never end at that cursor (chunks are disjoint and each starts
/// with a header), so it is correctly left alone.
impl<A: Allocator> LastBlock for SyncChainAllocator<A> {
    #[inline]
    fn release_if_last(&self, ptr: NonNull<u8>, size: usize) {
        if let Some(chunk) = self.top_chunk() {
            chunk.cursor.release_if_last(ptr, size);
        }
    }

    #[inline]
    fn resize_last_in_place(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        self.top_chunk()?
            .cursor
            .resize_last_in_place(ptr, old_size, new)
    }
}

// SAFETY: blocks are disjoint parts of chunks (each range is handed out by one successful
// compare-exchange of its chunk's cursor; an unpublished chunk is seen by one thread only) that
// live until `reset` (`&mut self`) or drop. Only the most recent block of the newest chunk is
// resized or given back in place.
unsafe impl<A: Allocator> Allocator for SyncChainAllocator<A> {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let top = self.top.load(Ordering::Acquire);
        // SAFETY: published chunks live until `&mut self` (see `top_chunk`).
        if let Some(chunk) = unsafe { top.as_ref() } {
            if let Some(block) = chunk.cursor.bump(layout) {
                return Ok(block);
            }
        }
        self.allocate_in_new_chunk(layout, top)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            self.release_if_last(ptr, layout.size());
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract.
        unsafe { crate::resize::grow(self, self, ptr, old, new) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract.
        let block = unsafe { crate::resize::grow(self, self, ptr, old, new) }?;
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
        unsafe { crate::resize::shrink(self, self, ptr, old, new) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{System, VirtualAllocator};
    use std::vec;
    use std::vec::Vec;

    type Arena = SyncChainAllocator<System>;
    const OVERHEAD: usize = Arena::CHAIN_NODE_OVERHEAD;

    #[test]
    fn is_send_and_sync_when_the_backing_allocator_is() {
        fn check<T: Send + Sync>() {}
        check::<SyncChainAllocator<System>>();
        check::<SyncChainAllocator<VirtualAllocator>>();
    }

    #[test]
    fn chunk_header_is_as_small_as_the_cell_twins() {
        assert_eq!(
            OVERHEAD,
            crate::ChainAllocator::<System>::CHAIN_NODE_OVERHEAD
        );
    }

    #[test]
    fn chunk_shape_packs_depth_and_alignment_and_refuses_a_depth_too_deep() {
        for align_log2 in [4, 12, 21, usize::BITS - 2] {
            let align = 1usize << align_log2;
            for depth in [1, 2, 1000, ChunkShape::MAX_DEPTH] {
                let shape = ChunkShape::new(depth, align).unwrap();
                assert_eq!((shape.depth(), shape.align()), (depth, align));
            }
            assert!(ChunkShape::new(ChunkShape::MAX_DEPTH + 1, align).is_none());
        }
    }

    #[test]
    fn chunk_depths_count_up_from_one_and_restart_after_reset() {
        let mut arena = Arena::new_in(256, System).unwrap().with_max_chunk_size(256);
        let depth = |arena: &Arena| arena.top_chunk().unwrap().shape.depth();
        // One 200-byte block per chunk.
        for expected in 1..6 {
            arena.allocate(Layout::new::<[u8; 200]>()).unwrap();
            assert_eq!(depth(&arena), expected);
        }
        arena.reset();
        assert_eq!(depth(&arena), 1);
        assert_eq!(arena.top_chunk().unwrap().shape.align(), 16);
    }

    #[test]
    fn lazy_arena_takes_its_first_chunk_on_first_allocation() {
        let arena = Arena::new_lazy_in(4096, System);
        assert_eq!(arena.reserved_bytes(), 0);
        assert_eq!(arena.used_bytes(), 0);
        assert!(!arena.has_capacity_for(Layout::new::<u8>()));
        arena.allocate(Layout::new::<u64>()).unwrap();
        assert_eq!(arena.reserved_bytes(), 4096);
        assert_eq!(arena.used_bytes(), OVERHEAD + 8);
    }

    #[test]
    fn chunks_double_up_to_the_bound_and_big_blocks_get_their_own() {
        let arena = Arena::new_in(1024, System)
            .unwrap()
            .with_max_chunk_size(4096);
        let fill = Layout::new::<[u8; 900]>();
        let mut reserved = vec![arena.reserved_bytes()];
        for _ in 0..12 {
            arena.allocate(fill).unwrap();
            if *reserved.last().unwrap() != arena.reserved_bytes() {
                reserved.push(arena.reserved_bytes());
            }
        }
        let sizes: Vec<usize> = reserved.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&sizes[..3], &[2048, 4096, 4096]);
        let before = arena.reserved_bytes();
        arena.allocate(Layout::new::<[u8; 10_000]>()).unwrap();
        assert_eq!(arena.reserved_bytes() - before, OVERHEAD + 10_000);
    }

    #[test]
    fn dealloc_of_last_allocation_is_reused() {
        let arena = Arena::new_in(4096, System).unwrap();
        let layout = Layout::new::<u64>();
        let a = arena.allocate(layout).unwrap();
        // SAFETY: `a` came from the arena with `layout`.
        unsafe { arena.deallocate(a.cast(), layout) };
        assert_eq!(arena.used_bytes(), OVERHEAD);
        assert_eq!(arena.allocate(layout).unwrap().cast::<u8>(), a.cast::<u8>());
    }

    #[test]
    fn dealloc_of_last_block_of_an_older_chunk_is_a_no_op() {
        let arena = Arena::new_in(256, System).unwrap().with_max_chunk_size(256);
        let layout = Layout::new::<[u8; 200]>();
        let old = arena.allocate(layout).unwrap();
        arena.allocate(layout).unwrap(); // second chunk
        let used = arena.used_bytes();
        // SAFETY: `old` came from the arena with `layout`.
        unsafe { arena.deallocate(old.cast(), layout) };
        assert_eq!(arena.used_bytes(), used);
    }

    #[test]
    fn grow_of_last_allocation_stays_in_place_until_the_chunk_is_full() {
        let arena = Arena::new_in(4096, System).unwrap();
        let small = Layout::from_size_align(8, 8).unwrap();
        let big = Layout::from_size_align(1024, 8).unwrap();
        let block = arena.allocate(small).unwrap();
        // SAFETY: the block came from the arena with `small`; `big` is larger.
        let grown = unsafe { arena.grow(block.cast(), small, big) }.unwrap();
        assert_eq!(grown.cast::<u8>(), block.cast::<u8>());
        // SAFETY: the block is now of `big`.
        unsafe { grown.cast::<u8>().write_bytes(7, 1024) };
        let huge = Layout::from_size_align(8192, 8).unwrap();
        // SAFETY: as above.
        let moved = unsafe { arena.grow(grown.cast(), big, huge) }.unwrap();
        assert_ne!(moved.cast::<u8>(), block.cast::<u8>());
        // SAFETY: the first 1024 bytes were copied.
        let copied = unsafe { core::slice::from_raw_parts(moved.cast::<u8>().as_ptr(), 1024) };
        assert!(copied.iter().all(|&b| b == 7));
    }

    #[test]
    fn reset_keeps_only_the_largest_chunk_and_rewinds_it() {
        let mut arena = Arena::new_in(1024, System).unwrap();
        for _ in 0..20 {
            arena.allocate(Layout::new::<[u8; 500]>()).unwrap();
        }
        let largest_before = arena.reserved_bytes();
        arena.reset();
        assert!(arena.reserved_bytes() < largest_before);
        assert_eq!(arena.used_bytes(), OVERHEAD);
        assert_eq!(
            arena.remaining_capacity(),
            arena.reserved_bytes() - OVERHEAD
        );
        arena.allocate(Layout::new::<u64>()).unwrap();
        assert_eq!(arena.used_bytes(), OVERHEAD + 8);
    }

    #[test]
    fn new_in_reports_a_failing_backing_allocator() {
        struct Refuses;
        // SAFETY: it never hands out memory.
        unsafe impl Allocator for Refuses {
            fn allocate(&self, _: Layout) -> Result<NonNull<[u8]>, AllocError> {
                Err(AllocError)
            }
            unsafe fn deallocate(&self, _: NonNull<u8>, _: Layout) {}
        }
        assert!(SyncChainAllocator::new_in(4096, Refuses).is_err());
        let lazy = SyncChainAllocator::new_lazy_in(4096, Refuses);
        assert!(lazy.allocate(Layout::new::<u8>()).is_err());
        assert_eq!(lazy.reserved_bytes(), 0);
    }

    #[test]
    fn allocations_too_large_for_any_chunk_fail_cleanly() {
        let arena = Arena::new_in(4096, System).unwrap();
        let absurd = Layout::from_size_align(isize::MAX as usize - 8, 1).unwrap();
        assert!(arena.allocate(absurd).is_err());
        let absurd_vm = SyncChainAllocator::new_in(4096, VirtualAllocator {}).unwrap();
        // Past the address space on 64-bit; on 32-bit, where 1 GiB may map, within a page of
        // `isize::MAX`.
        #[cfg(target_pointer_width = "64")]
        let absurd_size = 1 << 50;
        #[cfg(target_pointer_width = "32")]
        let absurd_size = isize::MAX as usize - 4094;
        assert!(absurd_vm
            .allocate(Layout::from_size_align(absurd_size, 8).unwrap())
            .is_err());
        assert_eq!(absurd_vm.reserved_bytes(), 4096);
    }
}
