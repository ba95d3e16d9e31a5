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
/// As in bumpalo, a value placed in an arena by these methods is never dropped: `reset`,
/// [`Rewind::rewind`] and dropping the arena reuse or free the bytes without running
/// destructors. Use them for plain data (`Copy` types, `&str`, slices, structs of those); for a
/// value that owns resources, use [`DropArena::try_alloc_owned`](crate::DropArena::try_alloc_owned),
/// whose destructor the arena runs when it reclaims the bytes.
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
        fill_exact(self, src.len(), src.iter().cloned())
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
        fill_exact(self, len, (0..len).map(f))
    }

    /// Allocates a slice of `len` copies of `value`.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room or `len` values of `T` would exceed
    /// `isize::MAX` bytes.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u32>(8)?, System)?;
    /// let counters = arena.try_alloc_slice_fill_copy(8, 7u32)?;
    /// assert_eq!(counters, &[7; 8]);
    /// assert!(arena.try_alloc_slice_fill_copy(1, 0u8).is_err()); // full
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    fn try_alloc_slice_fill_copy<T: Copy>(
        &self,
        len: usize,
        value: T,
    ) -> Result<&mut [T], AllocError> {
        self.try_alloc_slice_fill_with(len, |_| value)
    }

    /// Allocates a slice of `len` clones of `value` (the last one a clone too: `value` stays
    /// the caller's).
    ///
    /// If a `clone` panics midway, the clones made so far are dropped, the block is given back
    /// (if it is still the most recent one) and the panic continues.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room or `len` values of `T` would exceed
    /// `isize::MAX` bytes; nothing is cloned then.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let labels = arena.try_alloc_slice_fill_clone(3, &"unknown")?;
    /// assert_eq!(labels, &["unknown"; 3]);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    fn try_alloc_slice_fill_clone<T: Clone>(
        &self,
        len: usize,
        value: &T,
    ) -> Result<&mut [T], AllocError> {
        self.try_alloc_slice_fill_with(len, |_| value.clone())
    }

    /// Allocates a slice of `len` values of `T::default()`.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room or `len` values of `T` would exceed
    /// `isize::MAX` bytes.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let histogram = arena.try_alloc_slice_fill_default::<u64>(16)?;
    /// histogram[3] += 1;
    /// assert_eq!(histogram.iter().sum::<u64>(), 1);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    fn try_alloc_slice_fill_default<T: Default>(&self, len: usize) -> Result<&mut [T], AllocError> {
        self.try_alloc_slice_fill_with(len, |_| T::default())
    }

    /// Allocates a slice holding the items of an iterator that knows its length
    /// ([`ExactSizeIterator`]): one block of exactly `len()` values, no growth.
    ///
    /// If the iterator panics midway, the items taken so far are dropped, the block is given
    /// back (if it is still the most recent one) and the panic continues.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room, `len()` values of `T` would exceed
    /// `isize::MAX` bytes, or the iterator breaks its contract and yields fewer items than
    /// `len()` (then the items it gave are dropped and the block is given back). Items past
    /// `len()` are not taken.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u16>(4)?, System)?;
    /// let ports = arena.try_alloc_slice_fill_iter([80u16, 443, 8080, 8126])?;
    /// assert_eq!(ports, &[80, 443, 8080, 8126]);
    /// assert_eq!(arena.used_bytes(), 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    fn try_alloc_slice_fill_iter<T, I>(&self, iter: I) -> Result<&mut [T], AllocError>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: ExactSizeIterator,
    {
        let iter = iter.into_iter();
        fill_exact(self, iter.len(), iter)
    }

    /// Allocates a slice holding every item of any iterator, whose length need not be known.
    ///
    /// The block starts at the iterator's lower size hint and grows while items come: in place
    /// while it is the arena's most recent block (no copy), else it moves to a new block of
    /// twice the size (the old bytes stay unused until `reset`/`rewind`). When the iterator ends
    /// the block shrinks to the exact slice, giving the spare tail back if it is still the most
    /// recent block, so with an iterator that does not allocate from this arena itself, exactly
    /// the slice's bytes (and alignment padding) stay allocated. Near the end of the arena's
    /// room a doubling that does not fit is retried for one more item.
    ///
    /// If the iterator panics midway, the items taken so far are dropped, the block is given
    /// back (if it is still the most recent one) and the panic continues: the arena stays
    /// consistent and usable.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room for the items (or their size would exceed
    /// `isize::MAX` bytes); the items taken so far are dropped, and the block is given back if
    /// it is still the most recent one. The rest of the iterator is not consumed.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{Arena, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u32>(64)?, System)?;
    /// let text = "3 14 15 x 92 65";
    /// let numbers = arena.try_alloc_slice_from_iter(text.split(' ').filter_map(|w| w.parse::<u32>().ok()))?;
    /// assert_eq!(numbers, &[3, 14, 15, 92, 65]);
    /// assert_eq!(arena.used_bytes(), 5 * 4); // the spare capacity was given back
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn try_alloc_slice_from_iter<T, I>(&self, iter: I) -> Result<&mut [T], AllocError>
    where
        I: IntoIterator<Item = T>,
    {
        let iter = iter.into_iter();
        let mut slice = PartialSlice::new(self, iter.size_hint().0)?;
        for item in iter {
            slice.push(item)?;
        }
        Ok(slice.finish())
    }

    /// Allocates room for a `T`, then builds it with `f`, which may fail: on `Ok` the value is
    /// written there, on `Err` the block is given back (if it is still the most recent one,
    /// which it is unless `f` allocated from this arena itself), so that nothing but alignment
    /// padding before it stays allocated, and `f`'s error is returned. `f` is not called when the allocation fails.
    ///
    /// If `f` panics, the block is given back likewise and the panic continues.
    ///
    /// # Errors
    /// [`AllocOrInitError::Alloc`] when the arena has no room; [`AllocOrInitError::Init`] with
    /// `f`'s error.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{AllocOrInitError, Arena, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u64>(4)?, System)?;
    /// let port = arena.try_alloc_try_with(|| "8126".parse::<u16>())?;
    /// assert_eq!(*port, 8126);
    /// let used = arena.used_bytes();
    /// let bad = arena.try_alloc_try_with(|| "x".parse::<u16>());
    /// assert!(matches!(bad, Err(AllocOrInitError::Init(_))));
    /// assert_eq!(arena.used_bytes(), used); // nothing stayed allocated
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    fn try_alloc_try_with<T, E, F: FnOnce() -> Result<T, E>>(
        &self,
        f: F,
    ) -> Result<&mut T, AllocOrInitError<E>> {
        let layout = Layout::new::<T>();
        let block = self.allocate(layout)?.cast::<T>();
        let guard = GiveBack {
            arena: self,
            block: block.cast(),
            layout,
        };
        let value = f().map_err(AllocOrInitError::Init)?;
        mem::forget(guard);
        // SAFETY: the block is fresh, sized and aligned for `T`, and stays ours for as long as
        // `&self` is borrowed (the `Arena` contract).
        unsafe {
            block.as_ptr().write(value);
            Ok(&mut *block.as_ptr())
        }
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

/// Allocates a slice of exactly `len` values, the first `len` items of `items`: the one body of
/// the `try_alloc_slice_*` methods that call user code. If `items` panics, or ends early (then
/// `Err`; no caller's iterator does unless it breaks the `ExactSizeIterator` contract), the
/// values written so far are dropped and the block is given back.
fn fill_exact<A: Allocator + ?Sized, T>(
    arena: &A,
    len: usize,
    items: impl Iterator<Item = T>,
) -> Result<&mut [T], AllocError> {
    let mut slice = PartialSlice::new(arena, len)?;
    for item in items.take(len) {
        slice.push(item)?;
    }
    if slice.len < len {
        return Err(AllocError);
    }
    Ok(slice.finish())
}

/// A slice being written into a block of an arena, item by item, growing the block when full.
/// Dropped before [`finish`](Self::finish) (an iterator that panicked or ran short, an arena out
/// of room), it drops the values written so far and gives the block back.
struct PartialSlice<'a, A: Allocator + ?Sized, T> {
    arena: &'a A,
    block: NonNull<T>,
    /// The layout the block was allocated (or last grown) with.
    layout: Layout,
    /// Room in the block, in values (`usize::MAX` for a zero-size `T`).
    capacity: usize,
    /// The first `len` values are written.
    len: usize,
}

impl<'a, A: Allocator + ?Sized, T> PartialSlice<'a, A, T> {
    /// A block with room for `capacity` values (no arena bytes for none, or for a zero-size `T`).
    fn new(arena: &'a A, capacity: usize) -> Result<Self, AllocError> {
        let layout = Layout::array::<T>(capacity).map_err(|_| AllocError)?;
        let block = arena.allocate(layout)?.cast::<T>();
        Ok(Self {
            arena,
            block,
            layout,
            capacity: if mem::size_of::<T>() == 0 {
                usize::MAX
            } else {
                capacity
            },
            len: 0,
        })
    }

    /// Writes `item` after the others, growing the block first if it is full.
    #[inline]
    fn push(&mut self, item: T) -> Result<(), AllocError> {
        if self.len == self.capacity {
            self.grow()?;
        }
        // SAFETY: `len < capacity`, so the slot lies inside the block, and it is not written yet.
        unsafe { self.block.as_ptr().add(self.len).write(item) };
        self.len += 1;
        Ok(())
    }

    /// Makes room for at least one more value: twice the capacity (at least 4), or, when that
    /// does not fit, one more.
    #[cold]
    fn grow(&mut self) -> Result<(), AllocError> {
        if mem::size_of::<T>() == 0 {
            // `usize::MAX` zero-size values already.
            return Err(AllocError);
        }
        let doubled = self.capacity.saturating_mul(2).max(4);
        self.grow_to(doubled)
            .or_else(|AllocError| self.grow_to(self.capacity + 1))
    }

    fn grow_to(&mut self, capacity: usize) -> Result<(), AllocError> {
        let new = Layout::array::<T>(capacity).map_err(|_| AllocError)?;
        // SAFETY: the block came from `arena` with `self.layout`, and `new` is larger with the
        // same alignment. The arena moves the first `len` values (bytes) if the block moves.
        let block = unsafe { self.arena.grow(self.block.cast(), self.layout, new) }?;
        self.block = block.cast();
        self.layout = new;
        self.capacity = capacity;
        Ok(())
    }

    /// The written values as a slice of the arena; the spare tail is given back when the block
    /// is still the most recent one.
    fn finish(self) -> &'a mut [T] {
        let this = mem::ManuallyDrop::new(self);
        let mut block = this.block;
        // SAFETY: `len <= capacity` values of `T` fit in `layout`, so their size is a valid
        // layout size with the same alignment.
        let exact = unsafe {
            Layout::from_size_align_unchecked(mem::size_of::<T>() * this.len, this.layout.align())
        };
        if exact.size() < this.layout.size() {
            // SAFETY: the block came from `arena` with `layout`; `exact` is smaller, with the
            // same alignment. On `Err` the larger block stays ours.
            if let Ok(shrunk) = unsafe { this.arena.shrink(block.cast(), this.layout, exact) } {
                block = shrunk.cast();
            }
        }
        // SAFETY: the first `len` values are written (and moved with the block if it moved);
        // the block stays ours while the arena is borrowed for `'a` (the `Arena` contract).
        unsafe { core::slice::from_raw_parts_mut(block.as_ptr(), this.len) }
    }
}

impl<A: Allocator + ?Sized, T> Drop for PartialSlice<'_, A, T> {
    fn drop(&mut self) {
        let written = ptr::slice_from_raw_parts_mut(self.block.as_ptr(), self.len);
        // The block goes back even if a value's destructor panics.
        let _give_back = GiveBack {
            arena: self.arena,
            block: self.block.cast(),
            layout: self.layout,
        };
        // SAFETY: exactly the first `len` values were written and nothing else refers to them.
        unsafe { ptr::drop_in_place(written) };
    }
}

/// The error of [`Arena::try_alloc_try_with`]: the arena had no room, or the initialiser failed.
///
/// # Examples
/// ```
/// use libdd_alloc::{AllocOrInitError, Arena, LinearAllocator, Layout, System};
/// let arena = LinearAllocator::new_in(Layout::new::<u8>(), System)?;
/// let full = arena.try_alloc_try_with(|| Ok::<u64, ()>(1));
/// assert!(matches!(full, Err(AllocOrInitError::Alloc(_))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocOrInitError<E> {
    /// The arena had no room; the initialiser was not called.
    Alloc(AllocError),
    /// The initialiser returned this error; nothing stayed allocated for the value.
    Init(E),
}

impl<E> From<AllocError> for AllocOrInitError<E> {
    fn from(error: AllocError) -> Self {
        Self::Alloc(error)
    }
}

impl<E: core::fmt::Display> core::fmt::Display for AllocOrInitError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Alloc(error) => core::fmt::Display::fmt(error, f),
            Self::Init(error) => write!(f, "initialiser failed: {error}"),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for AllocOrInitError<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Alloc(_) => None,
            Self::Init(error) => Some(error),
        }
    }
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
/// once (destructors run only for the values of [`DropArena::try_alloc_owned`](crate::DropArena),
/// newest first, one step each). [`scope`](Rewind::scope) does it around a closure.
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
    /// scope allocated is freed with [`rewind`](Rewind::rewind), which first drops the values
    /// the scope allocated with [`DropArena::try_alloc_owned`](crate::DropArena). Scopes nest.
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
/// It implements [`Allocator`] and [`Arena`] by forwarding to the arena (and
/// [`DropArena`](crate::DropArena) and [`PinArena`](crate::PinArena) when the arena does: such
/// values are dropped when the scope ends), so the typed methods and collections work on it;
/// their results borrow the handle. [`arena`](Scope::arena) reads the
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

// SAFETY: the scope's blocks and drop records are the arena's, which runs the records when it
// reclaims their bytes (at the latest when the scope ends and rewinds).
unsafe impl<A: Rewind + crate::DropArena> crate::DropArena for Scope<'_, A> {
    type Position = A::Position;

    #[inline]
    unsafe fn push_drop(&self, record: NonNull<u8>, end: usize) {
        // SAFETY: forwarded caller contract; the record's block came from the arena.
        unsafe { self.arena.push_drop(record, end) };
    }
}

// SAFETY: the scope's blocks are the arena's, which pins; a scope cannot be forgotten (the
// closure gets only `&mut`), and its end is a rewind, which runs the destructors first.
unsafe impl<A: Rewind + crate::PinArena> crate::PinArena for Scope<'_, A> {}

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
#[cfg(all(any(unix, windows), target_has_atomic = "ptr"))]
unsafe impl<C: crate::arena::Cursor> Arena for crate::arena::Virtual<C> {}
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{ChainAllocator, LinearAllocator, System};
    use core::cell::Cell;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn linear(size: usize) -> LinearAllocator<System> {
        LinearAllocator::new_in(Layout::from_size_align(size, 16).unwrap(), System).unwrap()
    }

    /// Counts its drops in the shared cell.
    struct Counted<'a>(&'a Cell<usize>);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    /// An iterator with no size hint, so every growth is the arena's.
    fn unhinted(n: u32) -> impl Iterator<Item = u32> {
        (0..n).filter(|_| true)
    }

    #[test]
    fn from_iter_grows_in_place_while_most_recent_and_keeps_exactly_the_slice() {
        let arena = linear(4096);
        let first = arena.try_alloc(1u8).unwrap() as *mut u8 as usize;
        let slice = arena.try_alloc_slice_from_iter(unhinted(100)).unwrap();
        assert!(slice.iter().copied().eq(0..100));
        // It started right after the byte (aligned) and never moved: four doublings in place.
        assert_eq!(slice.as_ptr() as usize, first + 4);
        assert_eq!(arena.used_bytes(), 4 + 100 * 4);
    }

    #[test]
    fn from_iter_moves_when_the_iterator_allocates_after_it() {
        let arena = linear(8192);
        let items = (0..50u64).map(|i| {
            // An allocation of the iterator's own: the slice's block is not the last one.
            *arena.try_alloc(i as u8).unwrap() as u64 * 3
        });
        let slice = arena.try_alloc_slice_from_iter(items).unwrap();
        assert!(slice.iter().copied().eq((0..50).map(|i| i * 3)));
    }

    #[test]
    fn from_iter_gives_back_an_overstated_size_hint() {
        let arena = linear(4096);
        struct Liar(u32);
        impl Iterator for Liar {
            type Item = u32;
            fn next(&mut self) -> Option<u32> {
                self.0 = self.0.checked_sub(1)?;
                Some(self.0)
            }
            fn size_hint(&self) -> (usize, Option<usize>) {
                (100, None)
            }
        }
        assert_eq!(
            arena.try_alloc_slice_from_iter(Liar(3)).unwrap(),
            &[2, 1, 0]
        );
        assert_eq!(arena.used_bytes(), 12);
        assert!(arena.try_alloc_slice_from_iter(Liar(0)).unwrap().is_empty());
        assert_eq!(arena.used_bytes(), 12);
    }

    #[test]
    fn from_iter_retries_one_more_item_when_a_doubling_does_not_fit() {
        // Room for 5 u32: capacity 4, then 8 does not fit, then 5 does.
        let arena = linear(20);
        let slice = arena.try_alloc_slice_from_iter(unhinted(5)).unwrap();
        assert!(slice.iter().copied().eq(0..5));
        assert_eq!(arena.remaining_capacity(), 0);
    }

    #[test]
    fn from_iter_out_of_room_drops_what_it_took_and_gives_the_block_back() {
        let arena = linear(64);
        let drops = Cell::new(0);
        let taken = Cell::new(0);
        let items = (0..100).map(|_| {
            taken.set(taken.get() + 1);
            Counted(&drops)
        });
        assert!(arena.try_alloc_slice_from_iter(items).is_err());
        assert_eq!(drops.get(), taken.get());
        assert_eq!(arena.used_bytes(), 0);
    }

    #[test]
    fn from_iter_panic_at_every_index_drops_the_prefix_and_leaves_the_arena_usable() {
        for at in 0..40u32 {
            let arena = linear(4096);
            let drops = Cell::new(0);
            let result = catch_unwind(AssertUnwindSafe(|| {
                let items = (0..40).filter(|_| true).map(|i| {
                    assert_ne!(i, at, "iterator panics");
                    Counted(&drops)
                });
                arena.try_alloc_slice_from_iter(items).map(|s| s.len())
            }));
            assert!(result.is_err());
            assert_eq!(drops.get(), at as usize);
            assert_eq!(arena.used_bytes(), 0);
            let after = arena.try_alloc_slice_from_iter(unhinted(10)).unwrap();
            assert!(after.iter().copied().eq(0..10));
        }
    }

    #[test]
    fn from_iter_of_zero_size_values_uses_no_bytes() {
        let arena = linear(16);
        let units = arena
            .try_alloc_slice_from_iter((0..1000).map(|_| ()))
            .unwrap();
        assert_eq!(units.len(), 1000);
        assert_eq!(arena.used_bytes(), 0);
    }

    #[test]
    fn from_iter_on_a_chain_crosses_chunks() {
        let arena = ChainAllocator::new_in(256, System).unwrap();
        let slice = arena.try_alloc_slice_from_iter(unhinted(10_000)).unwrap();
        assert!(slice.iter().copied().eq(0..10_000));
    }

    #[test]
    fn fill_iter_that_ends_short_is_err_and_gives_everything_back() {
        struct Short<'a>(u32, &'a Cell<usize>);
        impl<'a> Iterator for Short<'a> {
            type Item = Counted<'a>;
            fn next(&mut self) -> Option<Counted<'a>> {
                self.0 = self.0.checked_sub(1)?;
                Some(Counted(self.1))
            }
        }
        impl ExactSizeIterator for Short<'_> {
            fn len(&self) -> usize {
                10 // a lie: it has fewer
            }
        }
        let arena = linear(4096);
        let drops = Cell::new(0);
        assert!(arena.try_alloc_slice_fill_iter(Short(4, &drops)).is_err());
        assert_eq!(drops.get(), 4);
        assert_eq!(arena.used_bytes(), 0);
    }

    #[test]
    fn fill_clone_copy_and_default_fill_every_slot() {
        let arena = linear(4096);
        let names = arena
            .try_alloc_slice_fill_clone(3, &std::string::String::from("x"))
            .unwrap();
        assert!(names.iter().all(|n| n == "x"));
        assert_eq!(arena.try_alloc_slice_fill_copy(4, 9u16).unwrap(), &[9; 4]);
        assert_eq!(
            arena.try_alloc_slice_fill_default::<u8>(5).unwrap(),
            &[0; 5]
        );
        for name in names.iter_mut() {
            // SAFETY: each string is dropped once and not used after.
            unsafe { ptr::drop_in_place(name) };
        }
        assert!(arena.try_alloc_slice_fill_copy(usize::MAX, 0u64).is_err());
    }

    #[test]
    fn try_with_err_or_panic_leaves_nothing_allocated() {
        let arena = linear(64);
        arena.try_alloc(1u64).unwrap();
        let before = arena.used_bytes();
        let err = arena.try_alloc_try_with(|| Err::<u64, _>("bad"));
        assert_eq!(err.unwrap_err(), AllocOrInitError::Init("bad"));
        assert_eq!(arena.used_bytes(), before);
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            arena.try_alloc_try_with(|| -> Result<u64, ()> { panic!("initialiser") })
        }));
        assert!(panicked.is_err());
        assert_eq!(arena.used_bytes(), before);
        assert_eq!(*arena.try_alloc_try_with(|| Ok::<u64, ()>(5)).unwrap(), 5);
        assert_eq!(arena.used_bytes(), 16);
        let full = arena.try_alloc_try_with(|| Ok::<[u64; 8], ()>([0; 8]));
        assert_eq!(full.unwrap_err(), AllocOrInitError::Alloc(AllocError));
    }
}
