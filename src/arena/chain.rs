//! [`Chain`]: a bump arena that links a new chunk when the current one is full, written once
//! for both cursors: [`ChainAllocator`] (a `Cell` cursor) and [`SyncChainAllocator`] (an
//! atomic one). What differs between the two is behind [`ChainCursor`]: where the cursor that
//! allocation bumps lives, and how the newest chunk is read and published.

use crate::bump::{chunk_layout, dangling};
#[cfg(target_has_atomic = "ptr")]
use crate::cursor::AtomicCursor;
use crate::cursor::{CellCursor, Counter, Cursor};
use crate::drops::{push_to, ChunkPosition, DropList};
use crate::resize::LastBlock;
#[cfg(target_has_atomic = "ptr")]
use crate::sync::atomic::{const_fn_unless_loom, AtomicPtr, AtomicUsize, Ordering};
use crate::{AllocError, Allocator, Checkpoint, DropArena, Rewind};
use core::alloc::Layout;
use core::cell::Cell;
use core::mem::size_of;
use core::ptr::{null_mut, NonNull};

/// The bookkeeping at the start of every chunk, the same for both cursors. `prev` and `shape`
/// are written before the chunk is published and then never again while the arena is shared
/// (only `reset`, `rewind` and drop, which hold `&mut`, change them), so a thread that loaded an
/// older newest chunk still reads a consistent header. Aligned to 16 so that the first block of
/// a chunk usually needs no padding.
#[repr(C, align(16))]
pub struct ChunkHeader<C> {
    /// The chunk's own cursor; its limit is the end of the chunk. The atomic arena bumps it. The
    /// `Cell` arena bumps a copy inline in the arena instead (see [`CellNewest`]), so for it
    /// this one only carves the first block before the chunk is published, and tells the end.
    cursor: C,
    /// The chunk that was the newest when this one was published (null: none).
    prev: *mut ChunkHeader<C>,
    /// Depth in the chain and allocation alignment; the size is `cursor.limit() - address`.
    shape: ChunkShape,
}

impl<C: Cursor> ChunkHeader<C> {
    /// Bytes of the header at the start of a chunk.
    const SIZE: usize = size_of::<Self>();

    /// The first byte after the header of the chunk `header`.
    fn data(header: NonNull<Self>) -> NonNull<u8> {
        // SAFETY: a chunk is longer than its header (`chunk_layout` adds the header to the
        // block's size, and a grown chunk holds the header and the block), so the address is
        // inside it.
        unsafe { header.cast::<u8>().add(Self::SIZE) }
    }

    /// Bytes of the chunk after the header.
    fn usable(&self) -> usize {
        self.cursor.limit() - (self as *const Self).addr() - Self::SIZE
    }

    /// The layout to give back to the backing allocator.
    fn layout(&self) -> Layout {
        let size = self.cursor.limit() - (self as *const Self).addr();
        // SAFETY: size and alignment are those of a block the backing allocator returned.
        unsafe { Layout::from_size_align_unchecked(size, self.shape.align()) }
    }

    /// Writes the header of a chunk at the start of `memory`, its cursor at the first byte after
    /// it, and returns it.
    ///
    /// # Safety
    /// `memory` is a chunk from the backing allocator, aligned for the header, longer than it,
    /// and seen by no one else.
    unsafe fn init(memory: NonNull<[u8]>, prev: *mut Self, shape: ChunkShape) -> NonNull<Self> {
        let header = memory.cast::<Self>();
        let cursor = C::over(Self::data(header), memory.len() - Self::SIZE);
        // SAFETY: per the caller, the memory is ours, aligned and long enough for the header.
        unsafe {
            header.as_ptr().write(Self {
                cursor,
                prev,
                shape,
            })
        };
        header
    }

    /// The shape of a chunk of alignment `align` to be published above `below` (null: none):
    /// one deeper. `None` if the depth does not fit.
    fn shape_above(below: *mut Self, align: usize) -> Option<ChunkShape> {
        // SAFETY: `below` is null or a published chunk, which lives until `&mut self` (see
        // `ChainCursor::live`); its shape was written before it was published.
        let depth = unsafe { below.as_ref() }.map_or(0, |chunk| chunk.shape.depth());
        ChunkShape::new(depth.checked_add(1)?, align)
    }
}

/// A chunk's depth in the chain (1 for the oldest, `prev`'s + 1 for the others: a checkpoint
/// names its chunk by depth, which survives the chunk being moved by `grow`) and the log2 of the
/// alignment it was allocated with, packed in one word so that the header is four words. An
/// alignment's log2 is below 64, so 6 bits hold it; the depth gets the rest (58 bits on 64-bit
/// targets; 26 bits on 32-bit ones, 2^26 chunks of at least 64 bytes being the whole address
/// space).
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

/// How a [`Chain`] keeps its newest chunk and the cursor that allocation bumps: the part of the
/// chain arena that differs between its two cursors. Implemented by [`CellCursor`] and
/// [`AtomicCursor`] only (its supertrait [`Cursor`] is sealed).
///
/// - [`CellCursor`]: the newest chunk is a `Cell`, and the cursor allocation bumps is a copy of
///   the newest chunk's, inline in the arena, so the hot path follows no pointer. Publishing a
///   chunk compares and sets: nothing else moves a `Cell`, but a backing allocator that
///   re-enters the arena can link a chunk while the arena waits for it.
/// - [`AtomicCursor`]: the newest chunk is an atomic pointer, published by compare-exchange,
///   and allocation bumps the newest chunk's own cursor: a thread that loaded an older newest
///   chunk still bumps that chunk, whose cursor stays valid.
///
/// Its methods are the crate's own; the arenas' public methods are what to call.
pub trait ChainCursor: Cursor + Sized {
    /// Where the newest chunk (and the `Cell` arena's inline cursor) is kept.
    #[doc(hidden)]
    type Newest;

    /// The newest chunk, null if none (`Acquire`: its header is visible).
    #[doc(hidden)]
    fn newest(newest: &Self::Newest) -> *mut ChunkHeader<Self>;

    /// The cursor that allocation bumps, `None` if there is no chunk (the `Cell` arena's empty
    /// cursor fits nothing instead). A published chunk lives until `reset`, `rewind` or drop,
    /// which take `&mut` of the arena, so it outlives this borrow of `newest`.
    #[doc(hidden)]
    fn live(newest: &Self::Newest) -> Option<&Self>;

    /// The cursor that allocation bumps in `chunk`, a published chunk (for the `Cell` arena,
    /// the newest one).
    #[doc(hidden)]
    fn cursor_of<'a>(newest: &'a Self::Newest, chunk: &'a ChunkHeader<Self>) -> &'a Self;

    /// Makes `chunk` (written, carved, seen by no one else) the newest if the newest is still
    /// `seen`; else returns the newest.
    #[doc(hidden)]
    fn publish(
        newest: &Self::Newest,
        seen: *mut ChunkHeader<Self>,
        chunk: NonNull<ChunkHeader<Self>>,
    ) -> Result<(), *mut ChunkHeader<Self>>;

    /// Makes `chunk` (null: none) the newest, with its first `used` bytes after the header
    /// handed out (clamped to the chunk). `&mut`: no one else uses the arena.
    #[doc(hidden)]
    fn set_newest(newest: &mut Self::Newest, chunk: *mut ChunkHeader<Self>, used: usize);

    /// Grows `ptr` by growing its chunk in the backing allocator, if it can (the `Cell` arena
    /// only: another thread may be reading a shared chunk).
    ///
    /// # Safety
    /// `ptr` is a live block of `old` from `arena`, and `new.size() >= old.size()`.
    #[doc(hidden)]
    #[inline(always)]
    unsafe fn grow_chunk<A: Allocator>(
        arena: &Chain<Self, A>,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        let _ = (arena, ptr, old, new);
        None
    }
}

/// Where a `Cell` chain keeps its newest chunk, and the copy of that chunk's cursor that
/// allocation bumps (the chunk's own then only tells its end).
pub struct CellNewest {
    cursor: CellCursor,
    chunk: Cell<*mut ChunkHeader<CellCursor>>,
}

impl CellNewest {
    /// No chunk: the cursor fits nothing.
    const fn empty() -> Self {
        Self {
            cursor: CellCursor::empty(),
            chunk: Cell::new(null_mut()),
        }
    }

    /// Makes `chunk` (null: none) the newest, with its first `used` bytes after the header
    /// handed out (clamped to the chunk; `usize::MAX`: full, the state of an older chunk).
    fn point_at(&self, chunk: *mut ChunkHeader<CellCursor>, used: usize) {
        self.chunk.set(chunk);
        match NonNull::new(chunk) {
            Some(header) => {
                // SAFETY: a chunk made the newest is live and its header written.
                let usable = unsafe { header.as_ref() }.usable();
                self.cursor
                    .set_used(ChunkHeader::data(header), usable, used);
            }
            None => self.cursor.set(NonNull::dangling(), 0),
        }
    }
}

impl ChainCursor for CellCursor {
    type Newest = CellNewest;

    #[inline(always)]
    fn newest(newest: &CellNewest) -> *mut ChunkHeader<Self> {
        newest.chunk.get()
    }

    #[inline(always)]
    fn live(newest: &CellNewest) -> Option<&Self> {
        Some(&newest.cursor)
    }

    #[inline(always)]
    fn cursor_of<'a>(newest: &'a CellNewest, _: &'a ChunkHeader<Self>) -> &'a Self {
        &newest.cursor
    }

    fn publish(
        newest: &CellNewest,
        seen: *mut ChunkHeader<Self>,
        chunk: NonNull<ChunkHeader<Self>>,
    ) -> Result<(), *mut ChunkHeader<Self>> {
        let now = newest.chunk.get();
        if now != seen {
            return Err(now);
        }
        // SAFETY: the caller wrote the header; the chunk is ours alone until published.
        let header = unsafe { &mut *chunk.as_ptr() };
        // The same address is not always the same chunk: a backing allocator that re-entered
        // may have grown (so moved and freed) the chunk seen, then taken another that landed
        // there. The depth computed from the one seen is then stale: take it from the newest,
        // live now. (Should even that not fit, 2^58 chunks deep, the stale one stays: a rewind
        // is then inexact, never unsound.)
        if let Some(shape) = ChunkHeader::shape_above(now, header.shape.align()) {
            header.shape = shape;
        }
        let carved = header.cursor.cur_addr();
        newest.point_at(
            chunk.as_ptr(),
            carved - ChunkHeader::data(chunk).as_ptr().addr(),
        );
        Ok(())
    }

    fn set_newest(newest: &mut CellNewest, chunk: *mut ChunkHeader<Self>, used: usize) {
        newest.point_at(chunk, used);
    }

    #[inline]
    unsafe fn grow_chunk<A: Allocator>(
        arena: &Chain<Self, A>,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        // SAFETY: forwarded caller contract.
        unsafe { arena.grow_sole_block_chunk(ptr, old, new) }
    }
}

#[cfg(target_has_atomic = "ptr")]
impl ChainCursor for AtomicCursor {
    type Newest = AtomicPtr<ChunkHeader<AtomicCursor>>;

    #[inline(always)]
    fn newest(newest: &Self::Newest) -> *mut ChunkHeader<Self> {
        newest.load(Ordering::Acquire)
    }

    #[inline(always)]
    fn live(newest: &Self::Newest) -> Option<&Self> {
        // SAFETY: a published chunk stays allocated until `reset`, `rewind` or drop, which take
        // `&mut` of the arena and so cannot overlap this borrow of it; its header was fully
        // written before the release exchange that published it, which the acquire load
        // synchronises with.
        unsafe { Self::newest(newest).as_ref() }.map(|chunk| &chunk.cursor)
    }

    #[inline(always)]
    fn cursor_of<'a>(_: &'a Self::Newest, chunk: &'a ChunkHeader<Self>) -> &'a Self {
        &chunk.cursor
    }

    #[inline]
    fn publish(
        newest: &Self::Newest,
        seen: *mut ChunkHeader<Self>,
        chunk: NonNull<ChunkHeader<Self>>,
    ) -> Result<(), *mut ChunkHeader<Self>> {
        newest
            .compare_exchange(seen, chunk.as_ptr(), Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }

    fn set_newest(newest: &mut Self::Newest, chunk: *mut ChunkHeader<Self>, used: usize) {
        newest.store(chunk, Ordering::Relaxed);
        if let Some(mut header) = NonNull::new(chunk) {
            let data = ChunkHeader::data(header);
            // SAFETY: a linked chunk is live, and `&mut` of the arena makes it ours alone.
            let header = unsafe { header.as_mut() };
            let usable = header.usable();
            header.cursor.set_used(data, usable, used);
        }
    }
}

/// A bump arena that grows by linking chunks taken from a backing allocator `A` (a [`Chain`]
/// over a [`CellCursor`]; [`SyncChainAllocator`] is the lock-free one).
///
/// Allocation bumps a cursor through the newest chunk: O(1), no per-allocation header. When
/// that chunk is full, a new one is taken from `A` and becomes the newest (the rest of the old
/// one is left unused). Each chunk starts with [`CHAIN_NODE_OVERHEAD`](Chain::CHAIN_NODE_OVERHEAD)
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
/// `VirtualAllocator` on Linux that is one `mremap`, no copy). [`reset`](Chain::reset) frees
/// everything, keeping the largest chunk for reuse; dropping the arena returns every chunk to
/// `A`. Destructors of values placed in the arena are not run, except for the values of
/// [`DropArena::try_alloc_owned`](crate::DropArena::try_alloc_owned), which run newest first at
/// `reset`, `rewind`, a scope's end and drop (before any chunk is freed).
///
/// # Statistics
/// All O(1): [`reserved_bytes`](Chain::reserved_bytes) counts every chunk; the unused tails of
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
/// [`with_max_chunk_size`]: Chain::with_max_chunk_size
/// [`new_capped_in`]: Chain::new_capped_in
pub type ChainAllocator<A> = Chain<CellCursor, A>;

/// A lock-free, reentrant bump arena that grows by publishing chunks taken from a backing
/// allocator `A`: the thread-safe twin of [`ChainAllocator`], with the same API, chunk sizes and
/// statistics (both are [`Chain`], over an [`AtomicCursor`] here).
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
/// and published chunks are freed only by [`reset`](Chain::reset), `rewind` and drop, which take
/// `&mut self`.
/// For the same reason a thread that loaded `top` just before another thread replaced it still
/// bumps a live chunk: the old chunk's cursor stays valid, and blocks carved from it after the
/// swap are as disjoint as any others.
///
/// # Chunk sizes
/// As for `ChainAllocator`: the first chunk is `chunk_size_hint` bytes (header included), each
/// chunk taken sets the next to twice its size, up to `max(chunk_size_hint, 4 MiB)`
/// ([`new_capped_in`](Chain::new_capped_in) and [`with_max_chunk_size`] set the cap); a block too
/// big for the next chunk gets a chunk of its own size.
///
/// # Freeing
/// Deallocation is a no-op except for the most recent block of the newest chunk, which is given
/// back (or grown, or shrunk) in place by one compare-exchange that fails, leaving the block as
/// it is, if another block followed it. Otherwise growing copies. Unlike `ChainAllocator`, a
/// chunk is never resized by `A` (another thread may be reading it). [`reset`](Chain::reset)
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
/// [`with_max_chunk_size`]: Chain::with_max_chunk_size
#[cfg(target_has_atomic = "ptr")]
pub type SyncChainAllocator<A> = Chain<AtomicCursor, A>;

/// The one implementation of [`ChainAllocator`] (cursor [`CellCursor`]) and
/// [`SyncChainAllocator`] (cursor [`AtomicCursor`]): a bump arena over chunks from `A`, linked
/// newest first. Use it by those names; each one's page says what it guarantees, and the
/// methods below serve both (the constructors come once per name: a `const fn` cannot call the
/// cursor's trait methods).
///
/// Each protocol is written once, in the form correct for the atomic cursor: a new chunk is
/// carved, then published by a compare-exchange of the newest-chunk pointer, and the loser of a
/// race tries the winner's chunk, then gives its own back or links it above. What differs lives
/// in [`ChainCursor`].
pub struct Chain<C: ChainCursor, A: Allocator> {
    /// The newest chunk (each header links to the one before), and for the `Cell` arena the
    /// cursor allocation bumps.
    newest: C::Newest,
    /// Sum of the lengths of all published chunks.
    reserved: C::Counter,
    /// Size of the next regular chunk.
    next_chunk_size: C::Counter,
    chunk_size_hint: usize,
    max_chunk_size: usize,
    allocator: A,
    /// Values whose destructors run when their bytes are reclaimed (`src/drops.rs`), ordered by
    /// chunk depth, then address.
    drops: DropList<C::DropHead, ChunkPosition>,
}

// SAFETY: the arena owns its chunks outright; moving it to another thread moves that ownership,
// which is sound when the backing allocator may itself move (and drop) there. The drop records'
// values are `Send` (`DropArena`'s bound), so their destructors may run on that thread.
unsafe impl<C: ChainCursor, A: Allocator + Send> Send for Chain<C, A> {}

// SAFETY: through `&self` the atomic arena changes only atomics: the newest-chunk pointer, the
// counters and the chunks' cursors, with the protocol described on `SyncChainAllocator` (ranges
// handed out by successful compare-exchanges only; chunk headers immutable once published).
// Growth calls the backing allocator from any thread through `&self.allocator`, which needs
// `A: Sync`. A drop record is published by a compare-exchange of the list's head. The `Cell`
// arena is never `Sync`.
#[cfg(target_has_atomic = "ptr")]
unsafe impl<A: Allocator + Sync> Sync for Chain<AtomicCursor, A> {}

/// The default bound on geometric chunk growth.
const DEFAULT_MAX_CHUNK_SIZE: usize = 4 << 20;

/// The first regular chunk size and the cap on regular chunks of a chain arena built with
/// `initial` and `max`: the first is `initial` raised to `min`, the smallest chunk worth its
/// header; the cap is `max` raised to the first, so `max <= initial` means fixed-size chunks. As
/// in libdd-alloc's `new_capped_in`.
const fn chunk_size_bounds(initial: usize, max: usize, min: usize) -> (usize, usize) {
    let first = if initial < min { min } else { initial };
    (first, if max < first { first } else { max })
}

/// The next regular chunk size of a chain arena whose cap is `max`, once a chunk of `taken` bytes
/// (as requested, before the backing allocator rounds it) is linked: `2 * taken`, capped at
/// `max`; so `max` after a chunk at or above the cap (one sized for an oversized allocation).
/// Never a size that no layout of alignment `align` can have: where doubling would give one
/// (above `isize::MAX`), it stays `taken`. As in libdd-alloc's `new_capped_in`.
fn next_chunk_size(taken: usize, max: usize, align: usize) -> usize {
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

impl<A: Allocator> Chain<CellCursor, A> {
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
        Self::new_lazy_in(chunk_size_hint, allocator).with_first_chunk()
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
        let (reserved, next) = (Cell::new(0), Cell::new(first));
        let (newest, drops) = (CellNewest::empty(), DropList::new_cell());
        Self::from_parts(newest, reserved, next, (first, cap), allocator, drops)
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
        let header = NonNull::new(self.newest.chunk.get())?;
        let block = ptr.as_ptr().addr();
        // The block starts where the chunk's free space starts (nothing can precede it) and ends
        // at the cursor (nothing follows it).
        let first = ChunkHeader::data(header).as_ptr().addr();
        if block != first || block + old.size() != self.newest.cursor.cur_addr() {
            return None;
        }
        // SAFETY: the header of the newest chunk is live.
        let (chunk_layout, below) = unsafe { (header.as_ref().layout(), header.as_ref().prev) };
        let align = chunk_layout.align();
        // The block stays at `CHAIN_NODE_OVERHEAD` from the start of the (possibly moved) chunk,
        // so it keeps its bytes only if that offset suits `new`: the chunk's alignment and the
        // offset must both be multiples of `new.align()`. Otherwise the caller moves the block.
        if new.align() > align || Self::CHAIN_NODE_OVERHEAD % new.align() != 0 {
            return None;
        }
        let size = Self::CHAIN_NODE_OVERHEAD.checked_add(new.size())?;
        // Only a real grow: when the block failed to grow in place for want of alignment rather
        // than room, `size` can be smaller than the chunk, which `Allocator::grow` forbids.
        if size <= chunk_layout.size() {
            return None;
        }
        let new_layout = Layout::from_size_align(size, align).ok()?;
        // Unlink the chunk before `A` sees it: `A::grow` may move or free it, and it may call
        // back into this arena (to log, say) or panic. While it runs the arena is as if the
        // chunk had never been taken: the one below is the newest, full, so a re-entrant
        // allocation takes a chunk of its own, and a checkpoint, a statistic or a resize sees
        // only live chunks. If `A` panics, the chunk leaks; nothing dangles.
        self.newest.point_at(below, usize::MAX);
        self.reserved.set(self.reserved.get() - chunk_layout.size());
        crate::bump::unpoison_chunk(header.cast(), chunk_layout.size());
        // SAFETY: the chunk came from `self.allocator` with `chunk_layout`; `size` is larger. The
        // only block in it is the caller's, which the `grow` contract lets us move; the arena no
        // longer refers to the chunk.
        let grown = unsafe { self.allocator.grow(header.cast(), chunk_layout, new_layout) };
        let (memory, used) = match grown {
            Ok(grown) => (grown, 0),
            // `A` left the chunk as it was: link it back, with the caller's block still in it.
            Err(AllocError) => {
                let chunk = NonNull::slice_from_raw_parts(header.cast(), chunk_layout.size());
                (chunk, old.size())
            }
        };
        // Link the chunk (grown or not) above whatever is the newest now: the one below it, or
        // chunks a re-entrant call took meanwhile (their free tails are abandoned).
        let top = self.newest.chunk.get();
        let Some(shape) = ChunkHeader::shape_above(top, align) else {
            // No depth left (2^58 chunks; 2^26 on 32-bit): the chunk stays unlinked and is
            // leaked, so the block in it stays valid.
            return grown.ok().map(|grown| {
                let block = ChunkHeader::<CellCursor>::data(grown.cast());
                NonNull::slice_from_raw_parts(block, new.size())
            });
        };
        // SAFETY: the chunk (moved with its header, or not moved) is ours: the arena does not
        // refer to it, and the only block in it is the caller's, which `used` keeps.
        let header = unsafe { ChunkHeader::init(memory, top, shape) };
        self.newest.point_at(header.as_ptr(), used);
        self.reserved.set(self.reserved.get() + memory.len());
        grown.ok()?;
        // Cannot miss: the cursor is at chunk + CHAIN_NODE_OVERHEAD, aligned for `new` (checked
        // above), with `grown.len() - CHAIN_NODE_OVERHEAD >= new.size()` bytes after it. So the
        // block lands exactly where its bytes moved to.
        self.newest.cursor.claim(new)
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<A: Allocator> Chain<AtomicCursor, A> {
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
        Self::new_lazy_in(chunk_size_hint, allocator).with_first_chunk()
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
        let (reserved, next) = (AtomicUsize::new(0), AtomicUsize::new(first));
        let (newest, drops) = (AtomicPtr::new(null_mut()), DropList::new_atomic());
        Self::from_parts(newest, reserved, next, (first, cap), allocator, drops)
    }
    }
}

impl<C: ChainCursor, A: Allocator> Chain<C, A> {
    /// Bytes of bookkeeping at the start of each chunk. Size a hint with it in mind when a
    /// particular object must fit in one chunk.
    pub const CHAIN_NODE_OVERHEAD: usize = ChunkHeader::<C>::SIZE;

    /// The smallest chunk worth its header.
    const MIN_CHUNK_SIZE: usize = 4 * Self::CHAIN_NODE_OVERHEAD;

    /// The arena with no chunk, from its newest-chunk word, its counters (bytes reserved, next
    /// chunk size), its first and largest regular chunk sizes and its empty drop list: what each
    /// `const` constructor builds for its cursor.
    const fn from_parts(
        newest: C::Newest,
        reserved: C::Counter,
        next_chunk_size: C::Counter,
        (first, cap): (usize, usize),
        allocator: A,
        drops: DropList<C::DropHead, ChunkPosition>,
    ) -> Self {
        Self {
            newest,
            reserved,
            next_chunk_size,
            chunk_size_hint: first,
            max_chunk_size: cap,
            allocator,
            drops,
        }
    }

    /// The position of a block that starts at `start` and ends at `end`: the depth of the
    /// published chunk that holds it, then `end`. Walks down from the newest chunk (the block is
    /// almost always in it, or in one just below if other threads took chunks since). A block
    /// in no chunk (there is none: drop records are only pushed for this arena's blocks) gets a
    /// position above every rollback's, so any `rewind` drops it: early, never late.
    fn position_of(&self, start: usize, end: usize) -> ChunkPosition {
        let mut chunk = C::newest(&self.newest);
        // SAFETY: published chunks live until `&mut self` (see `ChainCursor::live`), and their
        // `prev` and `shape` are written before they are published.
        while let Some(header) = unsafe { chunk.as_ref() } {
            let data = ChunkHeader::data(NonNull::from(header)).as_ptr().addr();
            if (data..header.cursor.limit()).contains(&start) {
                return ChunkPosition {
                    depth: header.shape.depth(),
                    addr: end,
                };
            }
            chunk = header.prev;
        }
        ChunkPosition {
            depth: usize::MAX,
            addr: end,
        }
    }

    /// The position a rollback to `checkpoint` moves back to: the depth of the chunk that is
    /// then the newest and the address its cursor goes back to (past its end if the cursor
    /// stays: every record in it stays). The lowest position if every chunk goes.
    fn rollback_position(&self, checkpoint: Checkpoint) -> ChunkPosition {
        let mut chunk = C::newest(&self.newest);
        // SAFETY: as in `position_of`.
        while let Some(header) = unsafe { chunk.as_ref() } {
            let depth = header.shape.depth();
            if depth <= checkpoint.chunks {
                let data = ChunkHeader::data(NonNull::from(header)).as_ptr().addr();
                let addr = checkpoint
                    .used_in_chunk(depth)
                    .map_or(usize::MAX, |used| data.saturating_add(used));
                return ChunkPosition { depth, addr };
            }
            chunk = header.prev;
        }
        ChunkPosition::default()
    }

    /// Takes the first chunk (the one step of `new_in` after the lazy constructor).
    fn with_first_chunk(self) -> Result<Self, AllocError> {
        let byte = Layout::new::<u8>();
        let block = self.allocate_in_new_chunk(byte)?;
        // Give the byte back: the first chunk starts empty.
        self.release_if_last(block.cast(), byte.size());
        Ok(self)
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
    ///
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
        if self.next_chunk_size.value() > self.max_chunk_size {
            self.next_chunk_size.reset_to(self.max_chunk_size);
        }
        self
    }

    /// The size of the first chunk, as given to the constructor (raised to the minimum).
    pub fn chunk_size_hint(&self) -> usize {
        self.chunk_size_hint
    }

    /// The bound on regular chunk sizes, for the slabs of a [`LocalHandle`](crate::LocalHandle).
    #[cfg(target_has_atomic = "ptr")]
    pub(crate) fn max_chunk_size(&self) -> usize {
        self.max_chunk_size
    }

    /// Allocates a block for `layout`: the [`Allocator::allocate`] of this arena, callable without
    /// importing the trait. O(1) while the newest chunk has room (one bump of its cursor: a
    /// store for the `Cell` cursor, a compare-exchange for the atomic one); otherwise takes a
    /// new chunk.
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
    ///
    /// ```
    /// # use libdd_alloc::{Layout, SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(4096, System)?;
    /// let big = arena.allocate(Layout::new::<[u8; 100_000]>())?; // gets its own chunk
    /// assert_eq!(big.len(), 100_000);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline(always)]
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        if let Some(block) = C::live(&self.newest).and_then(|cursor| cursor.claim(layout)) {
            return Ok(block);
        }
        self.allocate_in_new_chunk(layout)
    }

    /// Bytes used: everything handed out from the newest chunk, plus the whole of every older
    /// chunk (their unused tails will not be handed out), chunk headers included. O(1); a
    /// snapshot while other threads allocate.
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, ChainAllocator, Layout, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let before = arena.used_bytes();
    /// arena.allocate(Layout::new::<u64>())?;
    /// assert_eq!(arena.used_bytes(), before + 8);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
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
        // Saturating: a chunk another thread just published may not be counted in `reserved`
        // yet.
        self.reserved.value().saturating_sub(remaining)
    }

    /// Bytes taken from the backing allocator, summed over all chunks. O(1); a snapshot while
    /// another thread is publishing a chunk.
    ///
    /// ```
    /// # use libdd_alloc::{ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(1 << 16, System)?;
    /// assert_eq!(arena.reserved_bytes(), 1 << 16);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    ///
    /// ```
    /// # use libdd_alloc::{SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(1 << 16, System)?;
    /// assert_eq!(arena.reserved_bytes(), 1 << 16);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn reserved_bytes(&self) -> usize {
        self.reserved.value()
    }

    /// Bytes that can still be handed out without a new chunk. O(1); a snapshot while other
    /// threads allocate.
    ///
    /// ```
    /// # use libdd_alloc::{ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// assert_eq!(arena.remaining_capacity(), 4096 - ChainAllocator::<System>::CHAIN_NODE_OVERHEAD);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
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
        C::live(&self.newest).map_or(0, Cursor::remaining)
    }

    /// Whether `layout` fits in the newest chunk, so that allocating it asks nothing of the
    /// backing allocator. O(1); with the atomic cursor a snapshot: another thread may take the
    /// room first.
    ///
    /// ```
    /// # use libdd_alloc::{ChainAllocator, Layout, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// assert!(arena.has_capacity_for(Layout::new::<[u8; 1024]>()));
    /// assert!(!arena.has_capacity_for(Layout::new::<[u8; 8192]>()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
            || C::live(&self.newest).is_some_and(|c| c.has_room_below(layout, c.limit()))
    }

    /// Frees every allocation at once. Keeps the largest chunk (so a reused arena stops calling
    /// its backing allocator) and returns the others. O(number of chunks). Taking `&mut self`
    /// proves that no block handed out is still borrowed and that no other thread (or handler)
    /// is allocating.
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
        // The destructors first, while every chunk is still there.
        self.drops.run_above(ChunkPosition::default());
        // Then the bookkeeping, then the backing allocator: from the moment the first chunk goes
        // back to `A`, the arena links only the kept chunk. A backing `deallocate` that panics
        // part-way then leaks the chunks not yet freed, and frees nothing twice.
        let old_top = NonNull::new(C::newest(&self.newest));
        let mut largest: Option<(NonNull<ChunkHeader<C>>, usize)> = None;
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
            kept.prev = null_mut();
            // Depth 1 always fits.
            if let Some(shape) = ChunkShape::new(1, kept.shape.align()) {
                kept.shape = shape;
            }
            self.reserved.reset_to(size);
            (header, below)
        });
        let top = kept.map_or(null_mut(), |(header, _)| header.as_ptr());
        C::set_newest(&mut self.newest, top, 0);
        if kept.is_none() {
            self.reserved.reset_to(0);
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

    /// Returns a chunk to the backing allocator.
    ///
    /// # Safety
    /// `header` is a chunk of this arena that nothing uses any more (or ever saw).
    unsafe fn free_chunk(&self, header: NonNull<ChunkHeader<C>>) {
        // SAFETY: the header is live until the deallocation below.
        let layout = unsafe { header.as_ref().layout() };
        crate::bump::unpoison_chunk(header.cast(), layout.size());
        // SAFETY: the chunk came from `self.allocator` with `layout` (with the length it
        // returned, which the contract accepts).
        unsafe { self.allocator.deallocate(header.cast(), layout) };
    }

    /// The slow path: the newest chunk had no room for `layout`. Takes a new chunk from the
    /// backing allocator, carves the block out of it, and publishes it.
    #[cold]
    #[inline(never)]
    fn allocate_in_new_chunk(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // Another thread (or a handler, or a re-entrant backing allocator) may have published a
        // chunk since this one looked: try the newest first, rather than take one more.
        let mut seen = C::newest(&self.newest);
        if let Some(block) = C::live(&self.newest).and_then(|cursor| cursor.claim(layout)) {
            return Ok(block);
        }
        let regular = self.next_chunk_size.value();
        let chunk_layout =
            chunk_layout(Layout::new::<ChunkHeader<C>>(), regular, layout).ok_or(AllocError)?;
        let align = chunk_layout.align();
        let shape = ChunkHeader::shape_above(seen, align).ok_or(AllocError)?;
        let memory = self.allocator.allocate(chunk_layout)?;
        // SAFETY: the memory is fresh, aligned for the header (chunk_layout) and longer than it.
        // Nobody else can see it until it is published below.
        let header = unsafe { ChunkHeader::<C>::init(memory, seen, shape) };
        // SAFETY: the header was just written, and stays ours until published.
        let carved = unsafe { header.as_ref() }.cursor.claim(layout);
        // The chunk was sized for the block, so this cannot fail; if it did, give the chunk back.
        let Some(block) = carved else {
            // SAFETY: the chunk was never published.
            unsafe { self.free_chunk(header) };
            return Err(AllocError);
        };
        loop {
            let Err(winner) = C::publish(&self.newest, seen, header) else {
                self.reserved.add(memory.len());
                let next = next_chunk_size(chunk_layout.size(), self.max_chunk_size, align);
                // Left as it is if a racing publisher already advanced it.
                self.next_chunk_size.replace(regular, next);
                return Ok(block);
            };
            // SAFETY: `winner` is a published chunk (published chunks live until `&mut self`)
            // and, with the `Cell` cursor, the newest.
            let theirs = unsafe { winner.as_ref() }
                .and_then(|chunk| C::cursor_of(&self.newest, chunk).claim(layout));
            if let Some(theirs) = theirs {
                // SAFETY: our chunk was never published; the block carved from it is not
                // returned, so nothing refers to it.
                unsafe { self.free_chunk(header) };
                return Ok(theirs);
            }
            // The winner's chunk is full too: stack ours above it, one deeper.
            seen = winner;
            let Some(shape) = ChunkHeader::shape_above(seen, align) else {
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

/// Rolling back frees the chunks taken since the checkpoint (one backing deallocation each; they
/// are not kept for reuse) and moves the cursor back in the chunk that was the newest, so
/// `used_bytes` and `reserved_bytes` are again what they were at the checkpoint. The growth of
/// the next chunk's size is not undone. `rewind` takes `&mut self`, so no other thread or
/// signal handler can be using the arena meanwhile. On a [`SyncChainAllocator`], a checkpoint
/// taken while other threads allocate is a position in the order of their operations: rewinding
/// to it frees what they allocated after it too.
///
/// On a [`ChainAllocator`], the exception is a chunk grown in place by the backing allocator
/// since then: it keeps its new size, counted in `reserved_bytes`. And one case is not exact: a
/// chunk grown by the backing allocator (the growth of the only block of the newest chunk past
/// that chunk's end) while the backing allocator's `grow` allocated from this arena. The chunk
/// is unlinked during that call, so those allocations take chunks of their own, and the chunk
/// (grown or not) is linked back above them, one level higher per chunk taken. A rollback to a
/// checkpoint taken while it was the newest chunk then gives it back to the backing allocator,
/// with the block in it (whose first bytes were allocated before the checkpoint), and keeps the
/// first chunk taken during `grow` as the newest, with the checkpoint's offset (clamped to its
/// end) counted as used in it: `reserved_bytes` is then that chunk's size instead of the grown
/// one's. Checkpoints taken while an older chunk was the newest, or during the `grow`, roll back
/// exactly. Safe code never sees the freed block: `rewind` takes `&mut self`, so no reference
/// into the arena is alive.
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
impl<C: ChainCursor, A: Allocator> Rewind for Chain<C, A> {
    #[inline]
    fn checkpoint(&self) -> Checkpoint {
        let Some(header) = NonNull::new(C::newest(&self.newest)) else {
            return Checkpoint { chunks: 0, used: 0 };
        };
        // SAFETY: a published chunk lives until `&mut self` (see `ChainCursor::live`).
        let chunk = unsafe { header.as_ref() };
        let cur = C::cursor_of(&self.newest, chunk).cur_addr();
        Checkpoint {
            chunks: chunk.shape.depth(),
            used: cur - ChunkHeader::data(header).as_ptr().addr(),
        }
    }

    fn rewind(&mut self, checkpoint: Checkpoint) {
        let position = self.rollback_position(checkpoint);
        self.drops.run_above(position);
        self.free_above(checkpoint);
    }
}

impl<C: ChainCursor, A: Allocator> Chain<C, A> {
    /// The chunk part of [`rewind`](Rewind::rewind): frees the chunks taken since `checkpoint`
    /// and moves the cursor back, once the destructors of the values there ran.
    fn free_above(&mut self, checkpoint: Checkpoint) {
        while let Some(header) = NonNull::new(C::newest(&self.newest)) {
            // SAFETY: a linked header is a live chunk owned by this arena, ours alone.
            let (depth, prev, size) = unsafe {
                let chunk = header.as_ref();
                (chunk.shape.depth(), chunk.prev, chunk.layout().size())
            };
            if depth <= checkpoint.chunks {
                if let Some(used) = checkpoint.used_in_chunk(depth) {
                    C::set_newest(&mut self.newest, header.as_ptr(), used);
                }
                return;
            }
            // Unlink first, cursor included (the one below counts as full, as an older chunk
            // does): if the backing `deallocate` panics, the arena points only at live chunks
            // (the one being freed leaks at worst).
            C::set_newest(&mut self.newest, prev, usize::MAX);
            self.reserved.reset_to(self.reserved.value() - size);
            // SAFETY: `&mut self`: nothing borrows the chunk, and it is unlinked above.
            unsafe { self.free_chunk(header) };
        }
    }
}

impl<C: ChainCursor, A: Allocator> Drop for Chain<C, A> {
    fn drop(&mut self) {
        // Every destructor runs, then every chunk goes back to `A` (even if a destructor
        // panicked), each unlinked before it is freed: a panicking backing `deallocate` leaves
        // the arena linking only chunks not yet freed, which leak.
        let mut drops = core::mem::replace(&mut self.drops, DropList::new());
        drops.run_all_then(|| self.free_above(Checkpoint { chunks: 0, used: 0 }));
    }
}

impl<C: ChainCursor, A: Allocator> core::fmt::Debug for Chain<C, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct(if C::SHARED {
            "SyncChainAllocator"
        } else {
            "ChainAllocator"
        })
        .field("used_bytes", &self.used_bytes())
        .field("reserved_bytes", &self.reserved_bytes())
        .field("chunk_size_hint", &self.chunk_size_hint)
        .field("max_chunk_size", &self.max_chunk_size)
        .finish_non_exhaustive()
    }
}

/// The most recent block lives in the newest chunk, so in-place changes go through the cursor
/// allocation bumps. A block of an older chunk can never end at that cursor (chunks are disjoint
/// and each starts with a header), so it is correctly left alone.
impl<C: ChainCursor, A: Allocator> LastBlock for Chain<C, A> {
    #[inline]
    fn release_if_last(&self, ptr: NonNull<u8>, size: usize) {
        if let Some(cursor) = C::live(&self.newest) {
            cursor.release_last(ptr, size);
        }
    }

    #[inline]
    fn resize_last_in_place(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        C::live(&self.newest)?.resize_last(ptr, old_size, new)
    }

    /// The `Cell` arena grows the only block of its newest chunk by growing the chunk in the
    /// backing allocator ([`ChainCursor::grow_chunk`]); the atomic one never does.
    #[inline(always)]
    unsafe fn grow_elsewhere_in_place(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        // SAFETY: forwarded caller contract.
        unsafe { C::grow_chunk(self, ptr, old, new) }
    }
}

// SAFETY: blocks are disjoint parts of chunks (each range is handed out by one exchange of its
// chunk's cursor: a store for the `Cell` cursor, a successful compare-exchange for the atomic
// one; an unpublished chunk is seen by one thread only) that live until `reset` or `rewind`
// (`&mut self`) or drop. Only the most recent block of the newest chunk is resized or given back
// in place; a chunk is moved by the backing allocator (the `Cell` arena only) when the block
// being grown is the only one in it.
unsafe impl<C: ChainCursor, A: Allocator> Allocator for Chain<C, A> {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        Chain::allocate(self, layout)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            self.release_if_last(ptr, layout.size());
        }
    }

    crate::resize::forward_resize!(|arena| arena);
}

// SAFETY: `reset` and `rewind` run every record whose position is past the one they roll back
// to before they free a chunk or move a cursor back, and drop runs them all before it frees the
// chunks. A position orders across chunks (depth, then address in the chunk), so "past" covers
// every value in a chunk that is freed and every value past the cursor in the chunk that stays.
// A record's chunk is never moved while its value lives: the `Cell` arena moves a chunk (through
// `A::grow`) only to grow the block that starts at the chunk's first byte and ends at its
// cursor, its only block, and a drop record's block is never grown (the crate hands out only
// the value behind the record, which is not the start of a block, so no `grow` call may name
// it).
unsafe impl<C: ChainCursor, A: Allocator> DropArena for Chain<C, A> {
    type Position = ChunkPosition;

    #[inline]
    unsafe fn push_drop(&self, record: NonNull<u8>, end: usize) {
        let position = self.position_of(record.as_ptr().addr(), end);
        // SAFETY: forwarded caller contract; `position` is the record's block's.
        unsafe { push_to(&self.drops, record, position) };
    }
}

// SAFETY: chunks come back to the arena only through `reset`, `rewind` and drop, each after the
// destructors of the values in them (`DropArena` above); a forgotten arena never frees or reuses
// them, and `A: 'static` keeps a forgotten arena's chunks valid (see `PinArena`). No chunk holding
// a value is moved (see `DropArena` above).
unsafe impl<C: ChainCursor, A: Allocator + 'static> crate::PinArena for Chain<C, A> {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{System, VirtualAllocator};
    use std::boxed::Box;
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
    fn chunk_header_is_four_words_for_both_cursors() {
        assert_eq!(OVERHEAD, 4 * size_of::<usize>());
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
        let newest = |arena: &Arena| {
            // SAFETY: the arena has a chunk, live while `arena` is borrowed.
            unsafe { &*AtomicCursor::newest(&arena.newest) }.shape
        };
        let depth = |arena: &Arena| newest(arena).depth();
        // One 200-byte block per chunk.
        for expected in 1..6 {
            arena.allocate(Layout::new::<[u8; 200]>()).unwrap();
            assert_eq!(depth(&arena), expected);
        }
        arena.reset();
        assert_eq!(depth(&arena), 1);
        assert_eq!(newest(&arena).align(), 16);
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

    /// A backing allocator that, when armed, allocates 16 bytes from the arena it backs inside
    /// its next `allocate` (as a logging allocator might), and counts the chunks it holds.
    /// The call a [`Reentrant`] makes into its arena, and that arena.
    type Reenter = Option<(unsafe fn(*const ()), *const ())>;

    #[derive(Default)]
    struct Reentrant {
        live: core::cell::Cell<usize>,
        reenter: core::cell::Cell<Reenter>,
        inner: core::cell::Cell<usize>,
    }

    // SAFETY: forwards to `System`.
    unsafe impl Allocator for Reentrant {
        fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
            if let Some((reenter, arena)) = self.reenter.take() {
                // SAFETY: armed with the arena this allocator backs, alive during its calls.
                unsafe { reenter(arena) };
            }
            self.live.set(self.live.get() + 1);
            System.allocate(layout)
        }
        unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
            self.live.set(self.live.get() - 1);
            // SAFETY: forwarded caller contract.
            unsafe { System.deallocate(ptr, layout) };
        }
    }

    /// # Safety
    /// `arena` points to a live `Chain<C, &'static Reentrant>`.
    unsafe fn reenter<C: ChainCursor>(arena: *const ()) {
        // SAFETY: per the caller.
        let arena = unsafe { &*arena.cast::<Chain<C, &'static Reentrant>>() };
        let block = arena.allocate(Layout::new::<[u8; 16]>()).unwrap();
        arena
            .allocator()
            .inner
            .set(block.cast::<u8>().as_ptr().addr());
    }

    fn a_chunk_linked_by_a_reentrant_call_is_tried_before_stacking<C: ChainCursor>(
        new: fn(usize, &'static Reentrant) -> Chain<C, &'static Reentrant>,
    ) {
        let backing: &'static Reentrant = Box::leak(Box::default());
        let arena = new(256, backing).with_max_chunk_size(256);
        let rest = Layout::array::<u8>(arena.remaining_capacity()).unwrap();
        arena.allocate(rest).unwrap(); // the first chunk is full
        let this = (&arena as *const Chain<C, &'static Reentrant>).cast::<()>();
        backing.reenter.set(Some((reenter::<C>, this)));
        let outer = arena.allocate(Layout::new::<[u8; 16]>()).unwrap();
        // The re-entrant call linked a chunk while the outer one waited for its own; the outer
        // block fits there, right after the re-entrant one, and the outer chunk goes back.
        assert_eq!(outer.cast::<u8>().as_ptr().addr(), backing.inner.get() + 16);
        assert_eq!(backing.live.get(), 2);
        assert_eq!(arena.reserved_bytes(), 512);
        assert_eq!(arena.used_bytes(), 256 + OVERHEAD + 32);
        drop(arena);
        assert_eq!(backing.live.get(), 0);
        // SAFETY: leaked above for a `'static` backing allocator; its arena is dropped.
        drop(unsafe { Box::from_raw((backing as *const Reentrant).cast_mut()) });
    }

    #[test]
    fn a_chunk_linked_by_a_reentrant_backing_call_is_used_and_the_losers_given_back() {
        a_chunk_linked_by_a_reentrant_call_is_tried_before_stacking::<CellCursor>(|hint, a| {
            crate::ChainAllocator::new_in(hint, a).unwrap()
        });
        a_chunk_linked_by_a_reentrant_call_is_tried_before_stacking::<AtomicCursor>(|hint, a| {
            SyncChainAllocator::new_in(hint, a).unwrap()
        });
    }

    #[test]
    fn cell_chunk_depths_count_up_from_one_and_restart_after_reset() {
        let mut arena = crate::ChainAllocator::new_in(256, System)
            .unwrap()
            .with_max_chunk_size(256);
        let depth = |arena: &crate::ChainAllocator<System>| {
            // SAFETY: the arena has a chunk, live while `arena` is borrowed.
            unsafe { &*CellCursor::newest(&arena.newest) }.shape.depth()
        };
        for expected in 1..6 {
            arena.allocate(Layout::new::<[u8; 200]>()).unwrap();
            assert_eq!(depth(&arena), expected);
        }
        arena.reset();
        assert_eq!(depth(&arena), 1);
    }

    /// Logs its id when dropped.
    struct Logged(u32, std::sync::Arc<std::sync::Mutex<Vec<u32>>>);

    impl Drop for Logged {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    fn taken(log: &std::sync::Arc<std::sync::Mutex<Vec<u32>>>) -> Vec<u32> {
        core::mem::take(&mut *log.lock().unwrap())
    }

    /// Hands out chunks from the top of a buffer downwards, so that each newer chunk lies at a
    /// lower address than the older ones: a drop position that compared addresses alone
    /// across chunks would get the order wrong.
    struct Descending {
        buffer: NonNull<u8>,
        top: core::sync::atomic::AtomicUsize,
    }

    const DESCENDING: usize = 1 << 16;

    impl Descending {
        fn new() -> &'static Self {
            let layout = Layout::from_size_align(DESCENDING, 64).unwrap();
            let buffer = System.allocate(layout).unwrap().cast();
            Box::leak(Box::new(Self {
                buffer,
                top: core::sync::atomic::AtomicUsize::new(DESCENDING),
            }))
        }

        /// Frees what [`new`](Self::new) leaked.
        ///
        /// # Safety
        /// Nothing uses `this` or a block from it any more.
        unsafe fn free(this: &'static Self) {
            let layout = Layout::from_size_align(DESCENDING, 64).unwrap();
            // SAFETY: the buffer came from `System` with `layout`; unused, by the contract.
            unsafe { System.deallocate(this.buffer, layout) };
            // SAFETY: `this` was leaked from a `Box` by `new`; unused, by the contract.
            drop(unsafe { Box::from_raw((this as *const Self).cast_mut()) });
        }
    }

    // SAFETY: only the atomic `top` changes; the buffer is freed only by `free`, once unused.
    unsafe impl Sync for Descending {}

    // SAFETY: each block is a distinct range of the leaked buffer, below every earlier one.
    unsafe impl Allocator for Descending {
        fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
            use core::sync::atomic::Ordering::Relaxed;
            let top = self.top.load(Relaxed);
            let start = top.checked_sub(layout.size()).ok_or(AllocError)? & !(layout.align() - 1);
            self.top.store(start, Relaxed);
            // SAFETY: `start + size <= top <= DESCENDING`: inside the buffer.
            let block = unsafe { self.buffer.add(start) };
            Ok(NonNull::slice_from_raw_parts(block, layout.size()))
        }
        unsafe fn deallocate(&self, _: NonNull<u8>, _: Layout) {}
    }

    fn a_rewind_into_a_newer_chunk_at_a_lower_address_drops_only_what_follows<C: ChainCursor>(
        new: fn(&'static Descending) -> Chain<C, &'static Descending>,
    ) {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let descending = Descending::new();
        let mut arena = new(descending);
        let first = arena.checkpoint();
        // Values until one takes a second chunk, below the first.
        let mut id = 0;
        while arena.checkpoint().chunks < 2 {
            arena.try_alloc_owned(Logged(id, log.clone())).unwrap();
            id += 1;
        }
        assert!(id > 2, "several values in the first chunk");
        let second = arena.checkpoint();
        arena.try_alloc_owned(Logged(100, log.clone())).unwrap();
        arena.rewind(second);
        assert_eq!(taken(&log), [100], "only the value after the checkpoint");
        arena.rewind(first);
        assert_eq!(taken(&log), (0..id).rev().collect::<Vec<_>>());
        for id in 10..20 {
            arena.try_alloc_owned(Logged(id, log.clone())).unwrap();
        }
        drop(arena);
        assert_eq!(taken(&log), (10..20).rev().collect::<Vec<_>>());
        // SAFETY: the arena, the only user of `descending`, is dropped.
        unsafe { Descending::free(descending) };
    }

    #[test]
    fn drop_positions_order_across_chunks_whatever_their_addresses() {
        a_rewind_into_a_newer_chunk_at_a_lower_address_drops_only_what_follows::<CellCursor>(|a| {
            crate::ChainAllocator::new_in(256, a)
                .unwrap()
                .with_max_chunk_size(256)
        });
        a_rewind_into_a_newer_chunk_at_a_lower_address_drops_only_what_follows::<AtomicCursor>(
            |a| {
                SyncChainAllocator::new_in(256, a)
                    .unwrap()
                    .with_max_chunk_size(256)
            },
        );
    }

    #[test]
    fn a_chunk_grown_by_the_backing_allocator_leaves_the_values_of_the_others_alone() {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut arena = crate::ChainAllocator::new_in(256, System)
            .unwrap()
            .with_max_chunk_size(256);
        for id in 0..3 {
            arena.try_alloc_owned(Logged(id, log.clone())).unwrap();
        }
        let before = arena.checkpoint();
        // A block alone in a chunk of its own, grown past that chunk: `A::grow` moves the chunk.
        let small = Layout::new::<[u8; 200]>();
        let block = arena.allocate(small).unwrap();
        let depth = arena.checkpoint().chunks;
        assert!(depth > before.chunks, "the block has a chunk of its own");
        let big = Layout::new::<[u8; 100_000]>();
        // SAFETY: the block came from the arena with `small`; `big` is larger.
        let grown = unsafe { Allocator::grow(&arena, block.cast(), small, big) }.unwrap();
        assert_eq!(
            arena.checkpoint().chunks,
            depth,
            "grown in its chunk, not copied"
        );
        // SAFETY: the grown block is ours, of `big`.
        unsafe { grown.cast::<u8>().write_bytes(1, big.size()) };
        // A value after the grown block, in the grown chunk.
        arena.try_alloc_owned(Logged(3, log.clone())).unwrap();
        arena.rewind(before);
        assert_eq!(taken(&log), [3], "the grown chunk's value, once");
        arena.try_alloc_owned(Logged(4, log.clone())).unwrap();
        arena.reset();
        assert_eq!(taken(&log), [4, 2, 1, 0]);
        drop(arena);
        assert!(taken(&log).is_empty());
    }

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
