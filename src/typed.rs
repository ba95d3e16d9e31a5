//! The typed, safe arena API: [`Arena`] (values, strings and slices as references that borrow the
//! arena), and [`Rewind`] with [`Scope`] (roll back to a checkpoint).
//!
//! Everything here is built on [`Allocator::allocate`]; the arenas only promise (by implementing
//! the `unsafe` trait [`Arena`]) that a block stays theirs to use until `&mut self` or drop.

use crate::{AllocError, Allocator, Layout};
use core::mem::{self, MaybeUninit};
use core::ptr::{self, NonNull};

/// Typed allocation in an arena: values, strings and slices, handed back as references.
///
/// A returned reference borrows the arena (`&self`), so the borrow checker proves what the arena
/// needs: `reset` and [`Rewind::rewind`] take `&mut self` and cannot run while a reference lives,
/// and the arena cannot be dropped under it. Every method is fallible and never panics on its
/// own: when the arena is full the answer is `Err(AllocError)` and nothing was written. (A
/// closure or `Clone` you pass in may still panic; the arena stays sound, see each method.)
///
/// # Destructors do not run
/// As in bumpalo, a value placed in an arena is never dropped: `reset`, [`Rewind::rewind`] and
/// dropping the arena reuse or free the bytes without running destructors. Use the arena for
/// plain data (`Copy` types, `&str`, slices, structs of those), or drop a value yourself with
/// [`core::ptr::drop_in_place`] when it owns resources.
///
/// # Implementing it
/// An arena opts in with one line, `unsafe impl<A: Allocator> Arena for MyArena<A> {}`; every
/// method is provided.
///
/// # Safety
/// An implementor promises that a block returned by [`Allocator::allocate`] stays valid for
/// reads and writes, and is not handed out again or used by the arena, until the caller gives it
/// back ([`Allocator::deallocate`], `grow`, `shrink`) or the arena is used through `&mut self`
/// or dropped. No method taking `&self` may invalidate a live block.
///
/// # Examples
/// ```
/// use libdd_alloc::{Arena, ChainAllocator, System};
///
/// let arena = ChainAllocator::new_in(4096, System)?;
/// let name = arena.try_alloc_str("tokio::runtime::park")?;
/// let point = arena.try_alloc((3u32, 4u32))?;
/// let ids = arena.try_alloc_slice_copy(&[1u64, 2, 3])?;
/// point.0 += 1;
/// assert_eq!((&*name, *point, &*ids), ("tokio::runtime::park", (4, 4), &[1, 2, 3][..]));
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
// `&self -> &mut T` is the point of an arena: each call hands out a distinct block (the `Arena`
// contract), so the `&mut`s never alias.
#[allow(clippy::mut_from_ref)]
pub unsafe trait Arena: Allocator {
    /// Moves `value` into the arena.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room; `value` is dropped.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::new::<[u64; 2]>(), System)?;
    /// let x = arena.try_alloc(7u64)?;
    /// *x += 1;
    /// assert_eq!(*x, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    fn try_alloc<T>(&self, value: T) -> Result<&mut T, AllocError> {
        let slot = self.try_alloc_uninit::<T>()?;
        Ok(slot.write(value))
    }

    /// Allocates room for a `T`, then calls `f` and writes its result there (so a large value
    /// can be built in place). `f` is not called when the allocation fails.
    ///
    /// If `f` panics, the block is given back (if it is still the most recent one) and the panic
    /// continues; no reference to it was created.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(1 << 16, System)?;
    /// let table = arena.try_alloc_with(|| [0u32; 1024])?;
    /// table[1023] = 5;
    /// assert_eq!(table.iter().sum::<u32>(), 5);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    fn try_alloc_with<T, F: FnOnce() -> T>(&self, f: F) -> Result<&mut T, AllocError> {
        let layout = Layout::new::<T>();
        let block = self.allocate(layout)?.cast::<T>();
        let guard = GiveBack {
            arena: self,
            block: block.cast(),
            layout,
        };
        let value = f();
        mem::forget(guard);
        // SAFETY: the block is fresh, sized and aligned for `T`, and stays ours for as long as
        // `&self` is borrowed (the `Arena` contract).
        unsafe {
            block.as_ptr().write(value);
            Ok(&mut *block.as_ptr())
        }
    }

    /// Copies `s` into the arena. An empty string takes no arena bytes.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u8>(64)?, System)?;
    /// let s = arena.try_alloc_str("std::collections::HashMap::get")?;
    /// s.make_ascii_uppercase();
    /// assert_eq!(s, "STD::COLLECTIONS::HASHMAP::GET");
    /// assert_eq!(arena.used_bytes(), 30);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    fn try_alloc_str(&self, s: &str) -> Result<&mut str, AllocError> {
        let bytes = self.try_alloc_slice_copy(s.as_bytes())?;
        // SAFETY: the bytes are an exact copy of a `str`, so they are valid UTF-8.
        Ok(unsafe { core::str::from_utf8_unchecked_mut(bytes) })
    }

    /// Copies a slice of `Copy` values into the arena. An empty slice, or a slice of zero-size
    /// values, takes no arena bytes.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let frames = arena.try_alloc_slice_copy(&[0x1000u64, 0x2000, 0x3000])?;
    /// frames.reverse();
    /// assert_eq!(frames, &[0x3000, 0x2000, 0x1000]);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    fn try_alloc_slice_copy<T: Copy>(&self, src: &[T]) -> Result<&mut [T], AllocError> {
        // The layout of an existing slice is always valid.
        let block = self.allocate(Layout::for_value(src))?.cast::<T>();
        // SAFETY: the block is fresh (so it does not overlap `src`), sized and aligned for
        // `src.len()` values of `T`; `T: Copy`, so a bitwise copy is a valid copy. The block stays
        // ours while `&self` is borrowed.
        unsafe {
            ptr::copy_nonoverlapping(src.as_ptr(), block.as_ptr(), src.len());
            Ok(core::slice::from_raw_parts_mut(block.as_ptr(), src.len()))
        }
    }

    /// Clones each element of `src` into the arena.
    ///
    /// If a `clone` panics midway, the elements cloned so far are dropped, the block is given back
    /// (if it is still the most recent one) and the panic continues: no partly initialised slice
    /// is ever exposed.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room; nothing is cloned then.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct Frame { function: &'static str, line: u32 }
    /// let stack = [Frame { function: "main", line: 3 }, Frame { function: "poll", line: 80 }];
    /// let copy = arena.try_alloc_slice_clone(&stack)?;
    /// copy[1].line += 1;
    /// assert_eq!(copy[1], Frame { function: "poll", line: 81 });
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    fn try_alloc_slice_clone<T: Clone>(&self, src: &[T]) -> Result<&mut [T], AllocError> {
        // The layout of an existing slice is always valid.
        let layout = Layout::for_value(src);
        let block = self.allocate(layout)?.cast::<T>();
        // SAFETY: the block is fresh, sized and aligned for `src.len()` values of `T`, and came
        // from `self` with `layout`.
        unsafe { fill_slice(self, block, layout, src.len(), src.iter().cloned()) }?;
        // SAFETY: `fill_slice` succeeded, so all values are initialised; the block stays ours
        // while `&self` is borrowed.
        Ok(unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), src.len()) })
    }

    /// Allocates a slice of `len` values, the `i`th being `f(i)`, called in order from 0.
    ///
    /// If `f` panics midway, the values made so far are dropped, the block is given back (if it is
    /// still the most recent one) and the panic continues.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room or `len` values of `T` would exceed
    /// `isize::MAX` bytes; `f` is not called then.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let squares = arena.try_alloc_slice_fill_with(5, |i| i * i)?;
    /// assert_eq!(squares, &[0, 1, 4, 9, 16]);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    fn try_alloc_slice_fill_with<T, F: FnMut(usize) -> T>(
        &self,
        len: usize,
        f: F,
    ) -> Result<&mut [T], AllocError> {
        let layout = Layout::array::<T>(len).map_err(|_| AllocError)?;
        let block = self.allocate(layout)?.cast::<T>();
        // SAFETY: the block is fresh, sized and aligned for `len` values of `T`, and came from
        // `self` with `layout`.
        unsafe { fill_slice(self, block, layout, len, (0..len).map(f)) }?;
        // SAFETY: `fill_slice` succeeded, so all `len` values are initialised; the block stays
        // ours while `&self` is borrowed.
        Ok(unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), len) })
    }

    /// Allocates an uninitialised block for `layout`: [`Allocator::allocate`] without the slice
    /// length. A zero-size layout gets a dangling, aligned pointer and takes no arena bytes.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, ChainAllocator, Layout, System};
    /// let arena = ChainAllocator::new_in(1 << 16, System)?;
    /// let page = arena.try_alloc_layout(Layout::from_size_align(4096, 4096)?)?;
    /// assert_eq!(page.as_ptr() as usize % 4096, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    fn try_alloc_layout(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        Ok(self.allocate(layout)?.cast())
    }

    /// Allocates room for a `T` and leaves it uninitialised.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let slot = arena.try_alloc_uninit::<u32>()?;
    /// assert_eq!(*slot.write(9), 9);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    fn try_alloc_uninit<T>(&self) -> Result<&mut MaybeUninit<T>, AllocError> {
        let block = self.allocate(Layout::new::<T>())?.cast::<MaybeUninit<T>>();
        // SAFETY: the block is sized and aligned for `T`; `MaybeUninit` needs no initialisation;
        // the block stays ours while `&self` is borrowed.
        Ok(unsafe { &mut *block.as_ptr() })
    }
}

/// Gives a block back to the arena unless forgotten: the unwind path of the `try_alloc_*`
/// methods that call user code after allocating.
struct GiveBack<'a, A: Allocator + ?Sized> {
    arena: &'a A,
    block: NonNull<u8>,
    layout: Layout,
}

impl<A: Allocator + ?Sized> Drop for GiveBack<'_, A> {
    fn drop(&mut self) {
        // SAFETY: the block came from `arena` with `layout` and nothing refers to it.
        unsafe { self.arena.deallocate(self.block, self.layout) };
    }
}

/// Writes the first `len` items of `items` into `block`. If `items` panics, drops the values
/// written so far and gives the block back before the panic continues; if it ends early, does the
/// same and returns `Err` (no caller's iterator does).
///
/// # Safety
/// `block` is a fresh block of `arena` allocated with `layout`, which fits `len` values of `T`.
unsafe fn fill_slice<A: Allocator + ?Sized, T>(
    arena: &A,
    block: NonNull<T>,
    layout: Layout,
    len: usize,
    mut items: impl Iterator<Item = T>,
) -> Result<(), AllocError> {
    /// Drops the initialised prefix, then gives the block back (its `give_back` field), unless
    /// forgotten.
    struct Partial<'a, A: Allocator + ?Sized, T> {
        _give_back: GiveBack<'a, A>,
        block: NonNull<T>,
        initialised: usize,
    }
    impl<A: Allocator + ?Sized, T> Drop for Partial<'_, A, T> {
        fn drop(&mut self) {
            let prefix = ptr::slice_from_raw_parts_mut(self.block.as_ptr(), self.initialised);
            // SAFETY: exactly the first `initialised` values were written and nothing else refers
            // to them.
            unsafe { ptr::drop_in_place(prefix) };
        }
    }

    let mut partial = Partial {
        _give_back: GiveBack {
            arena,
            block: block.cast(),
            layout,
        },
        block,
        initialised: 0,
    };
    while partial.initialised < len {
        let value = items.next().ok_or(AllocError)?;
        // SAFETY: `initialised < len`, so the slot is inside the block, and it is not written yet.
        unsafe { block.as_ptr().add(partial.initialised).write(value) };
        partial.initialised += 1;
    }
    // Every value is written: neither drop them nor give the block back.
    mem::forget(partial);
    Ok(())
}

/// A position in an arena to come back to with [`Rewind::rewind`]. Opaque and `Copy`.
///
/// It records which chunk was the newest (by its depth in the chain) and how many of its bytes
/// were handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Number of chunks the arena had (the newest is at this depth); 0 for an arena with none.
    pub(crate) chunks: usize,
    /// Bytes handed out from the newest chunk's usable range.
    pub(crate) used: usize,
}

impl Checkpoint {
    /// Where a rewind puts the cursor of the chunk it stops at: the newest chunk whose `depth`
    /// (1 for the oldest) is at most `chunks`.
    ///
    /// `Some(used)` if the checkpoint names that chunk (the arena clamps `used` to the chunk).
    /// `None` if the checkpoint lies past every chunk the arena has now: it is stale (the arena
    /// was rewound to before it) or from another arena. The arena then stays where it is, so no
    /// block allocated before the checkpoint is ever handed out again: such a block is in a
    /// chunk at most `chunks` deep, and in the chunk at depth `chunks` it ends at or before
    /// `used`. Depths are contiguous, so `None` means the rewind freed no chunk either.
    #[inline]
    pub(crate) fn used_in_chunk(self, depth: usize) -> Option<usize> {
        (depth >= self.chunks).then_some(self.used)
    }
}

/// Arenas that can roll back to a [`Checkpoint`] in O(1): everything allocated since is freed at
/// once (destructors do not run). [`scope`](Rewind::scope) does it around a closure.
///
/// Sound by construction: [`rewind`](Rewind::rewind) takes `&mut self`, so no reference into
/// the arena is alive, and any checkpoint (even one from another arena or from before a `reset`)
/// at worst leaves some bytes unused; it never hands out memory twice. (Like `reset`, it relies
/// on a container that owns the arena by value never exposing `&mut` to it while it holds
/// blocks: see [`LinearAllocator::reset`](crate::LinearAllocator::reset).)
///
/// # Examples
/// ```
/// use libdd_alloc::{Arena, LinearAllocator, Layout, Rewind, System};
///
/// let mut arena = LinearAllocator::new_in(Layout::array::<u8>(1024)?, System)?;
/// let before = arena.checkpoint();
/// let scratch = arena.try_alloc_slice_fill_with(100, |i| i as u8)?;
/// assert_eq!(scratch[99], 99);
/// arena.rewind(before);
/// assert_eq!(arena.used_bytes(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Rewind: Arena {
    /// The current position.
    fn checkpoint(&self) -> Checkpoint;

    /// Frees everything allocated since `checkpoint`, in O(1) plus one backing deallocation per
    /// chunk taken since.
    ///
    /// Any checkpoint is safe to pass. One of this arena that is stale (the arena was already
    /// rewound to before it) never frees a block allocated before it: the arena stays where it
    /// is, or moves forward and leaves bytes unused. One from another arena is clamped to the
    /// current chunk: it may free more than intended, but `&mut self` proves no reference into
    /// the arena is alive, so no memory is ever reused while referenced.
    fn rewind(&mut self, checkpoint: Checkpoint);

    /// Runs `f` with a [`Scope`]: a handle that allocates from this arena, whose allocations
    /// borrow the handle and so cannot outlive the call. On return (or unwind), everything the
    /// scope allocated is freed with [`rewind`](Rewind::rewind). Scopes nest.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, ChainAllocator, Rewind, System};
    ///
    /// let mut arena = ChainAllocator::new_in(4096, System)?;
    /// let before = arena.used_bytes();
    /// let total = arena.scope(|scope| -> Result<usize, libdd_alloc::AllocError> {
    ///     let frames = scope.try_alloc_slice_fill_with(1000, |i| i)?;
    ///     Ok(frames.iter().sum())
    /// })?;
    /// assert_eq!(total, 499_500);
    /// assert_eq!(arena.used_bytes(), before);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    fn scope<R, F: FnOnce(&mut Scope<'_, Self>) -> R>(&mut self, f: F) -> R
    where
        Self: Sized,
    {
        let checkpoint = self.checkpoint();
        let mut scope = Scope {
            arena: self,
            checkpoint,
        };
        f(&mut scope)
    }
}

/// A handle, given by [`Rewind::scope`], that allocates from an arena and frees everything it
/// allocated when the scope ends.
///
/// It implements [`Allocator`] and [`Arena`] by forwarding to the arena, so the typed methods and
/// collections work on it; their results borrow the handle. [`arena`](Scope::arena) reads the
/// arena's statistics; [`scope`](Scope::scope) nests another scope over the same arena.
///
/// # Panics
/// Never by itself. The rewind at the end of the scope may call the arena's backing allocator
/// (to free chunks taken inside the scope); if the closure is unwinding from a panic and that
/// backing allocator panics too, Rust aborts the process (a panic during a panic). The arena is
/// never left inconsistent: a backing panic outside unwinding only leaks the chunks not yet freed.
///
/// # Examples
/// ```
/// use libdd_alloc::{Arena, LinearAllocator, Layout, Rewind, System};
///
/// let mut arena = LinearAllocator::new_in(Layout::array::<u8>(256)?, System)?;
/// arena.try_alloc(1u64)?;
/// arena.scope(|outer| {
///     outer.try_alloc(2u64)?;
///     outer.scope(|inner| inner.try_alloc(3u64).map(|_| ()))?;
///     assert_eq!(outer.arena().used_bytes(), 16);
///     Ok::<(), libdd_alloc::AllocError>(())
/// })?;
/// assert_eq!(arena.used_bytes(), 8);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Scope<'a, A: Rewind> {
    arena: &'a mut A,
    checkpoint: Checkpoint,
}

impl<A: Rewind> Scope<'_, A> {
    /// The arena this scope allocates from, e.g. to read its statistics.
    pub fn arena(&self) -> &A {
        self.arena
    }

    /// The arena's current position, as [`Rewind::checkpoint`].
    pub fn checkpoint(&self) -> Checkpoint {
        self.arena.checkpoint()
    }

    /// Rolls the arena back, as [`Rewind::rewind`]; `&mut self` proves nothing the scope
    /// allocated is still borrowed.
    pub fn rewind(&mut self, checkpoint: Checkpoint) {
        self.arena.rewind(checkpoint);
    }

    /// A nested scope over the same arena, as [`Rewind::scope`]: what `f` allocates is freed when
    /// it returns, and the outer scope's allocations stay.
    pub fn scope<R, F: FnOnce(&mut Scope<'_, A>) -> R>(&mut self, f: F) -> R {
        self.arena.scope(f)
    }
}

impl<A: Rewind> Drop for Scope<'_, A> {
    fn drop(&mut self) {
        self.arena.rewind(self.checkpoint);
    }
}

impl<A: Rewind> core::fmt::Debug for Scope<'_, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scope")
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

// SAFETY: forwards to the arena, whose blocks satisfy the `Allocator` contract; the scope only
// ends (and rewinds) when it is dropped, when nothing borrows it any more.
unsafe impl<A: Rewind> Allocator for Scope<'_, A> {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.arena.allocate(layout)
    }

    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.arena.allocate_zeroed(layout)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded caller contract; the scope's blocks are the arena's.
        unsafe { self.arena.deallocate(ptr, layout) }
    }

    #[inline]
    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract.
        unsafe { self.arena.grow(ptr, old, new) }
    }

    #[inline]
    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract.
        unsafe { self.arena.grow_zeroed(ptr, old, new) }
    }

    #[inline]
    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract.
        unsafe { self.arena.shrink(ptr, old, new) }
    }
}

// SAFETY: the scope's blocks are the arena's, which stay valid until the arena is used through
// `&mut`. The scope holds the only `&mut` to the arena and uses it only in `rewind(&mut self)`
// and in its own drop, when nothing borrows the scope.
unsafe impl<A: Rewind> Arena for Scope<'_, A> {}

// The arenas of this crate. SAFETY (each line): the arena's `Allocator` impl hands out disjoint
// parts of chunks it owns, which stay valid until `reset`/`rewind` (both `&mut self`) or drop;
// through `&self`, only the most recent block is ever resized or given back, and only by its
// owner's `deallocate`/`grow`/`shrink` calls.
// SAFETY: see above; with the atomic cursor each byte is handed out once (compare-exchange on
// the cursor).
unsafe impl<C: crate::arena::Cursor, A: Allocator> Arena for crate::arena::Linear<C, A> {}
// SAFETY: see above; with the atomic cursor each byte is handed out once (compare-exchange on
// a chunk's cursor), and chunks are freed only in `reset`/`rewind` (`&mut self`) or drop.
unsafe impl<C: crate::arena::ChainCursor, A: Allocator> Arena for crate::arena::Chain<C, A> {}
// SAFETY: see above; the virtual arenas hand out only committed bytes (the atomic one each
// once, by compare-exchange) and never move, decommit or unmap them while `&self` is shared
// (`reset` and `reset_and_release` take `&mut self`).
unsafe impl<C: crate::arena::Cursor> Arena for crate::arena::Virtual<C> {}
