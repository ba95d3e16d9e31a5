//! [`Linear`]: bump allocation out of one fixed buffer, written once for both cursors:
//! [`LinearAllocator`] (a `Cell` cursor) and [`SyncLinearAllocator`] (an atomic one), over a
//! buffer from a backing allocator or over one the caller owns ([`Borrowed`]).

use crate::bump::dangling;
#[cfg(target_has_atomic = "ptr")]
use crate::cursor::AtomicCursor;
use crate::cursor::{CellCursor, Cursor};
use crate::drops::{push_to, DropList};
use crate::{AllocError, Allocator, Checkpoint, DropArena, Rewind};
use core::alloc::Layout;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
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
/// # Platforms
/// Needs a compare-and-swap on pointer-sized words: it exists only where
/// `cfg(target_has_atomic = "ptr")` holds, so not on `thumbv6m-none-eabi` (Cortex-M0/M0+) and
/// other targets without one. Use [`LinearAllocator`] there, one arena per execution context.
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
#[cfg(target_has_atomic = "ptr")]
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
    /// Values whose destructors run when their bytes are reclaimed (`src/drops.rs`).
    drops: DropList<C::DropHead>,
}

// SAFETY: the arena owns its buffer outright; moving it to another thread moves that ownership,
// which is sound when the backing allocator may itself be used from (and drop on) that thread.
// The cursor holds only addresses into that buffer; the drop records, values that are `Send`
// (`DropArena`'s bound), whose destructors may then run on that thread.
unsafe impl<C: Cursor, A: Allocator + Send> Send for Linear<C, A> {}

// SAFETY: through `&self` the atomic arena changes only its atomic cursor and the atomic head of
// its drop list, and every byte range is handed out by a successful compare-exchange, so to one
// caller only (a drop record is published by a compare-exchange of the head too). The backing allocator
// is used through `&self` only in `new_in` and drop, but it is reachable by `allocator()`: hence
// `A: Sync`. The `Cell` arena is never `Sync`.
#[cfg(target_has_atomic = "ptr")]
unsafe impl<A: Allocator + Sync> Sync for Linear<AtomicCursor, A> {}

/// The backing allocator of a linear arena over a buffer the caller owns: a stack array, a
/// `static`, shared memory, a region from anywhere. Made by [`Linear::from_buffer`] (and
/// [`static_arena!`](crate::static_arena)); it cannot be made otherwise.
///
/// The arena is `Linear<C, Borrowed<'a>>`: the same type, code and guarantees as over any other
/// backing allocator, and `'a` ties it to the `&'a mut` borrow of the buffer, so the borrow
/// checker forbids touching the buffer while the arena lives, and the arena (and every reference
/// from its [`Arena`](crate::Arena) methods) outliving the buffer. A backing type rather than a
/// separate arena keeps one implementation of the linear arena for both cursors; dropping the
/// arena gives the buffer back by ending the borrow.
///
/// As an [`Allocator`] it hands out nothing (`allocate` is always `Err`) and its `deallocate`
/// does nothing: the buffer is the caller's.
///
/// ```
/// use core::mem::MaybeUninit;
/// use libdd_alloc::{Arena, Borrowed, LinearAllocator};
///
/// let mut buffer = [MaybeUninit::<u8>::uninit(); 64];
/// let arena: LinearAllocator<Borrowed<'_>> = LinearAllocator::from_buffer(&mut buffer);
/// assert_eq!(arena.try_alloc_str("on the stack")?, "on the stack");
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
#[derive(Debug)]
pub struct Borrowed<'a> {
    buffer: PhantomData<&'a mut [MaybeUninit<u8>]>,
}

// SAFETY: `Borrowed` never hands out memory, so it makes no promise about blocks; `deallocate`
// of the arena's buffer (the only call it gets) is a no-op because the buffer belongs to the
// caller, who gets it back when the `'a` borrow ends.
unsafe impl Allocator for Borrowed<'_> {
    /// Always `Err`: a borrowed buffer is handed out whole to its arena, never by allocation.
    #[inline]
    fn allocate(&self, _layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        Err(AllocError)
    }

    /// Does nothing: the buffer is the caller's.
    #[inline]
    unsafe fn deallocate(&self, _ptr: NonNull<u8>, _layout: Layout) {}
}

/// A borrowed buffer as the arena keeps it: its bytes (with the borrow's provenance) and the
/// layout its `Borrowed` "deallocates" on drop. `const`, for [`Linear::from_buffer_const`].
const fn borrowed_parts(buffer: &mut [MaybeUninit<u8>]) -> (NonNull<[u8]>, Layout) {
    let len = buffer.len();
    let start = buffer.as_mut_ptr().cast::<u8>();
    // SAFETY: a slice's pointer is never null (dangling but non-null when empty).
    let start = unsafe { NonNull::new_unchecked(start) };
    // SAFETY: a slice of bytes is at most `isize::MAX` long, and 1 is a power of two.
    let layout = unsafe { Layout::from_size_align_unchecked(len, 1) };
    (NonNull::slice_from_raw_parts(start, len), layout)
}

impl<'a, C: Cursor> Linear<C, Borrowed<'a>> {
    /// An arena over `buffer`, memory the caller owns: all of it is usable, nothing is
    /// allocated, no system call is made. `'a` keeps the buffer borrowed while the arena lives
    /// (see [`Borrowed`]); dropping the arena ends the borrow. Blocks are aligned within the
    /// buffer, so a buffer whose start is not aligned for a layout loses padding to it.
    ///
    /// With the `asan-poison` feature the `Cell` arena poisons the buffer's free bytes, and
    /// unpoisons the whole buffer on drop.
    ///
    /// ```
    /// use core::mem::MaybeUninit;
    /// use libdd_alloc::{Allocator, Layout, LinearAllocator};
    ///
    /// let mut buffer = [MaybeUninit::<u8>::uninit(); 256];
    /// let arena = LinearAllocator::from_buffer(&mut buffer);
    /// assert_eq!(arena.reserved_bytes(), 256);
    /// arena.allocate(Layout::new::<[u8; 100]>())?;
    /// assert_eq!(arena.remaining_capacity(), 156);
    /// assert!(arena.allocate(Layout::new::<[u8; 157]>()).is_err());
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    ///
    /// ```
    /// use core::mem::MaybeUninit;
    /// use libdd_alloc::{format_in, SyncLinearAllocator};
    ///
    /// let mut buffer = [MaybeUninit::<u8>::uninit(); 256];
    /// let arena = SyncLinearAllocator::from_buffer(&mut buffer);
    /// std::thread::scope(|s| {
    ///     for i in 0..2 {
    ///         let arena = &arena;
    ///         s.spawn(move || assert_eq!(format_in!(arena, "thread {i}").unwrap(), format!("thread {i}")));
    ///     }
    /// });
    /// assert!(arena.used_bytes() >= 16);
    /// ```
    pub fn from_buffer(buffer: &'a mut [MaybeUninit<u8>]) -> Self {
        let (buffer, buffer_layout) = borrowed_parts(buffer);
        Self::over(
            buffer,
            buffer_layout,
            Borrowed {
                buffer: PhantomData,
            },
        )
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<'a> Linear<AtomicCursor, Borrowed<'a>> {
    crate::sync::atomic::const_fn_unless_loom! {
        /// [`from_buffer`](Linear::from_buffer) in a `const` context: the initialiser of a
        /// `static` arena, which needs no set-up at run time (the [`static_arena!`](crate::static_arena)
        /// macro writes it). For the lock-free arena only: a `static` must be `Sync`, and the
        /// `Cell` cursor's end is an address, which a `const` initialiser cannot compute.
        ///
        /// ```
        /// use core::mem::MaybeUninit;
        /// use libdd_alloc::{Borrowed, SyncLinearAllocator};
        ///
        /// const fn arena(buffer: &mut [MaybeUninit<u8>]) -> SyncLinearAllocator<Borrowed<'_>> {
        ///     SyncLinearAllocator::from_buffer_const(buffer)
        /// }
        /// let mut buffer = [MaybeUninit::<u8>::uninit(); 32];
        /// assert_eq!(arena(&mut buffer).remaining_capacity(), 32);
        /// ```
        pub const fn from_buffer_const(buffer: &'a mut [MaybeUninit<u8>]) -> Self {
            let (buffer, buffer_layout) = borrowed_parts(buffer);
            Self {
                cursor: AtomicCursor::over_const(buffer.cast(), buffer.len()),
                buffer,
                buffer_layout,
                allocator: Borrowed {
                    buffer: PhantomData,
                },
                drops: DropList::new_atomic(),
            }
        }
    }
}

/// Declares `static` lock-free arenas over buffers of their own, for signal and crash handlers
/// on any platform: no set-up at run time, no system call, no initialisation on first use. Each
/// is a [`SyncLinearAllocator<Borrowed<'static>>`](SyncLinearAllocator) over a byte buffer
/// (alignment 1) of the given length in the program's `.bss`, which only that arena can reach;
/// usable from any thread and any handler at once (see [`SyncLinearAllocator`]'s signal-safety
/// argument). A `static` is never dropped or borrowed mutably, so it is never `reset` either:
/// its bytes are allocated once for the program's life, except that the most recent block can
/// be given back or resized in place.
///
/// The expansion holds an `unsafe` block (it takes the one `&'static mut` to the hidden buffer),
/// so a crate with `#![forbid(unsafe_code)]` cannot use it; it can call
/// [`SyncLinearAllocator::from_buffer_const`] on a buffer it owns instead.
///
/// ```
/// use libdd_alloc::{format_in, static_arena};
///
/// static_arena! {
///     /// The crash handler's memory.
///     pub static HANDLER_ARENA: [u8; 4096];
/// }
///
/// let report = format_in!(&HANDLER_ARENA, "signal {} at {:#x}", 11, 0xdead_usize)?;
/// assert_eq!(report, "signal 11 at 0xdead");
/// assert_eq!(HANDLER_ARENA.reserved_bytes(), 4096);
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
#[cfg(target_has_atomic = "ptr")]
#[macro_export]
macro_rules! static_arena {
    ($($(#[$attr:meta])* $vis:vis static $name:ident: [u8; $len:expr];)+) => {$(
        $(#[$attr])*
        $vis static $name: $crate::SyncLinearAllocator<$crate::Borrowed<'static>> = {
            static mut __LIBDD_ALLOC_STATIC_ARENA_BUFFER: [::core::mem::MaybeUninit<u8>; $len] =
                [::core::mem::MaybeUninit::uninit(); $len];
            $crate::SyncLinearAllocator::from_buffer_const(
                // SAFETY: the buffer is a `static mut` visible only inside this initialiser,
                // which runs once, at compile time: this is the only reference ever made to it,
                // and it lives as long as the program.
                unsafe { &mut *&raw mut __LIBDD_ALLOC_STATIC_ARENA_BUFFER },
            )
        };
    )+};
}

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
        Ok(Self::over(buffer, buffer_layout, allocator))
    }

    /// An empty arena over `buffer`, which `allocator` takes back with `buffer_layout` on drop.
    fn over(buffer: NonNull<[u8]>, buffer_layout: Layout, allocator: A) -> Self {
        let mut cursor = C::over(buffer.cast(), buffer.len());
        cursor.set_used(buffer.cast(), buffer.len(), 0);
        Self {
            cursor,
            buffer,
            buffer_layout,
            allocator,
            drops: DropList::new(),
        }
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

    /// Frees every allocation at once and makes the whole buffer available again: O(1) plus the
    /// destructors of the values from [`DropArena::try_alloc_owned`], which run first, newest
    /// first (see [`DropArena`] for one that panics). The buffer is kept. Taking `&mut self` proves that no block handed out is still borrowed
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
        self.drops.run_above(0);
        self.cursor
            .set_used(self.buffer.cast(), self.buffer.len(), 0);
    }

    /// The backing allocator.
    pub fn allocator(&self) -> &A {
        &self.allocator
    }

    /// The cursor, for the in-place operations of a [`LocalHandle`](crate::LocalHandle).
    #[cfg(target_has_atomic = "ptr")]
    pub(crate) fn last_block(&self) -> &C {
        &self.cursor
    }

    /// The buffer's address range `(start, end)`: every block of the arena lies in it, for the
    /// arena's whole life (`reset` keeps the buffer).
    #[cfg(all(any(unix, windows), target_has_atomic = "ptr"))]
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
            let used = used.min(self.buffer.len());
            self.drops
                .run_above(self.buffer.cast::<u8>().as_ptr().addr() + used);
            self.cursor
                .set_used(self.buffer.cast(), self.buffer.len(), used);
        }
    }
}

impl<C: Cursor, A: Allocator> Drop for Linear<C, A> {
    fn drop(&mut self) {
        let (buffer, buffer_layout, allocator) = (self.buffer, self.buffer_layout, &self.allocator);
        self.drops.run_all_then(|| {
            crate::bump::unpoison_chunk(buffer.cast(), buffer.len());
            // SAFETY: the buffer came from `allocator` with `buffer_layout` (its length is one
            // the allocator returned, which the `Allocator` contract accepts back); the
            // destructors of the values in it have run.
            unsafe { allocator.deallocate(buffer.cast(), buffer_layout) };
        });
    }
}

// SAFETY: the list is run up to the position a `reset` or `rewind` moves the cursor back to,
// before it moves, and whole before the buffer is freed; a record is pushed only for a block of
// this buffer (whose end is its address), and nothing else hands those bytes out again.
unsafe impl<C: Cursor, A: Allocator> DropArena for Linear<C, A> {
    type Position = usize;

    #[inline]
    unsafe fn push_drop(&self, record: NonNull<u8>, end: usize) {
        // SAFETY: forwarded caller contract.
        unsafe { push_to(&self.drops, record, end) };
    }
}

// SAFETY: a `'static` backing allocator keeps the buffer valid until the arena deallocates it,
// which only its drop does, after the destructors (see `PinArena`).
unsafe impl<C: Cursor, A: Allocator + 'static> crate::PinArena for Linear<C, A> {}

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

    crate::resize::forward_resize!(|arena| &arena.cursor);
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

    // ---- Over a buffer the caller owns (`Borrowed`), for both cursors ----

    fn uninit<const N: usize>() -> [MaybeUninit<u8>; N] {
        [MaybeUninit::uninit(); N]
    }

    /// The whole life of an arena over a borrowed buffer: statistics, exhaustion, the last
    /// block given back, rewind, reset; and after drop the buffer holds what was written.
    fn borrowed_arena_lifecycle<C: Cursor>() {
        let mut buffer = uninit::<64>();
        let start = buffer.as_ptr().addr();
        {
            let mut arena = Linear::<C, Borrowed<'_>>::from_buffer(&mut buffer);
            assert_eq!(arena.reserved_bytes(), 64);
            assert_eq!(arena.used_bytes(), 0);
            let a = arena.allocate(Layout::new::<[u8; 10]>()).unwrap();
            assert_eq!(a.cast::<u8>().as_ptr().addr(), start);
            // SAFETY: `a` is 10 fresh bytes of ours.
            unsafe { a.cast::<[u8; 10]>().write(*b"caller-own") };
            let checkpoint = arena.checkpoint();
            let b = arena.allocate(Layout::new::<[u8; 54]>()).unwrap();
            assert_eq!(arena.remaining_capacity(), 0);
            assert!(arena.allocate(Layout::new::<u8>()).is_err());
            assert!(!arena.has_capacity_for(Layout::new::<u8>()));
            // SAFETY: `b` came from the arena with this layout and is the last block.
            unsafe { arena.deallocate(b.cast(), Layout::new::<[u8; 54]>()) };
            assert_eq!(arena.used_bytes(), 10);
            arena.allocate(Layout::new::<[u8; 20]>()).unwrap();
            arena.rewind(checkpoint);
            assert_eq!(arena.used_bytes(), 10);
            arena.reset();
            assert_eq!(arena.remaining_capacity(), 64);
            arena.allocate(Layout::new::<[u8; 10]>()).unwrap();
        }
        // SAFETY: the arena wrote these 10 bytes; dropping it left the buffer alone.
        let kept = unsafe { core::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), 10) };
        assert_eq!(kept, b"caller-own");
    }

    #[test]
    fn borrowed_buffer_serves_both_cursors_and_is_left_intact_on_drop() {
        borrowed_arena_lifecycle::<CellCursor>();
        borrowed_arena_lifecycle::<AtomicCursor>();
    }

    fn borrowed_edge_cases<C: Cursor>() {
        // An empty buffer: only zero-size blocks.
        let mut empty = uninit::<0>();
        let arena = Linear::<C, Borrowed<'_>>::from_buffer(&mut empty);
        assert_eq!(arena.reserved_bytes(), 0);
        assert!(arena.allocate(Layout::new::<()>()).is_ok());
        assert!(arena.allocate(Layout::new::<u8>()).is_err());
        drop(arena);

        // A buffer that starts at an odd address: blocks are aligned inside it, padding counted.
        let mut bytes = uninit::<80>();
        let odd = 1 - bytes.as_ptr().addr() % 2;
        let arena = Linear::<C, Borrowed<'_>>::from_buffer(&mut bytes[odd..odd + 65]);
        let word = arena.allocate(Layout::new::<u64>()).unwrap();
        assert_eq!(word.cast::<u8>().as_ptr().addr() % 8, 0);
        assert!(arena.used_bytes() >= 8 && arena.used_bytes() <= 15);
        // Huge alignments and sizes near `isize::MAX` are `Err`, not UB.
        assert!(arena
            .allocate(Layout::from_size_align(1, 1 << 20).unwrap())
            .is_err());
        let huge = Layout::from_size_align(isize::MAX as usize - 7, 8).unwrap();
        assert!(arena.allocate(huge).is_err());
        assert!(!arena.has_capacity_for(huge));
        // `Borrowed` itself hands out nothing.
        assert!(arena.allocator().allocate(Layout::new::<u8>()).is_err());
    }

    #[test]
    fn borrowed_buffer_edge_cases_are_errs() {
        borrowed_edge_cases::<CellCursor>();
        borrowed_edge_cases::<AtomicCursor>();
    }

    #[test]
    fn from_buffer_const_builds_the_same_arena_as_from_buffer() {
        const fn build(buffer: &mut [MaybeUninit<u8>]) -> SyncLinearAllocator<Borrowed<'_>> {
            SyncLinearAllocator::from_buffer_const(buffer)
        }
        let mut one = uninit::<48>();
        let mut two = uninit::<48>();
        let (a, b) = (build(&mut one), SyncLinearAllocator::from_buffer(&mut two));
        for layout in [
            Layout::new::<u8>(),
            Layout::new::<u64>(),
            Layout::new::<[u8; 24]>(),
        ] {
            let (x, y) = (a.allocate(layout).unwrap(), b.allocate(layout).unwrap());
            assert_eq!(x.len(), y.len());
            assert_eq!(a.used_bytes(), b.used_bytes());
        }
        assert_eq!(a.remaining_capacity(), b.remaining_capacity());
    }

    crate::static_arena! {
        static THREADED: [u8; 1 << 16];
    }

    #[test]
    fn static_arena_needs_no_set_up_and_hands_threads_disjoint_blocks() {
        assert_eq!(THREADED.used_bytes(), 0);
        assert_eq!(THREADED.reserved_bytes(), 1 << 16);
        let blocks: std::vec::Vec<(usize, usize)> = std::thread::scope(|s| {
            let workers: std::vec::Vec<_> = (0..4u8)
                .map(|id| {
                    s.spawn(move || {
                        let mut mine = std::vec::Vec::new();
                        for i in 0..200usize {
                            let len = 1 + (i * 7 + usize::from(id)) % 61;
                            let block = THREADED
                                .allocate(Layout::from_size_align(len, 1 << (i % 4)).unwrap())
                                .unwrap();
                            // SAFETY: `len` fresh bytes of ours.
                            unsafe { block.cast::<u8>().as_ptr().write_bytes(id, len) };
                            mine.push((block.cast::<u8>().as_ptr().addr(), len));
                        }
                        for &(addr, len) in &mine {
                            // SAFETY: our block, still live.
                            let bytes =
                                unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
                            assert!(bytes.iter().all(|&b| b == id), "another thread wrote here");
                        }
                        mine
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let mut sorted = blocks.clone();
        sorted.sort_unstable();
        for pair in sorted.windows(2) {
            assert!(
                pair[0].0 + pair[0].1 <= pair[1].0,
                "blocks overlap: {pair:?}"
            );
        }
        let payload: usize = blocks.iter().map(|b| b.1).sum();
        assert!(THREADED.used_bytes() >= payload);
    }
}
