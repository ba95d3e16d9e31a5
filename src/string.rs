//! [`ArenaString`], a growable UTF-8 string on any [`Allocator`], and the [`format_in!`]
//! macro that formats into an arena with no heap and no panic.
//!
//! The string keeps one block of `u8`s (alignment 1) from its allocator and grows it with
//! [`Allocator::grow`]. On the arenas of this crate that grow is in place while the string's
//! block is the arena's most recent one, so a string built in one go costs one allocation and a
//! few cursor moves.
//!
//! [`format_in!`]: crate::format_in

use crate::{AllocError, Allocator, Arena, Layout};
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// The smallest capacity a growing string asks for, so that pushing one character at a time
/// does not call the allocator for every byte.
const MIN_CAPACITY: usize = 16;

/// A growable UTF-8 string whose bytes live in the allocator `A`: usually `&arena`.
///
/// Like `alloc::string::String`, but every operation that may allocate is fallible
/// (`try_push_str`, `try_reserve`, ...) and there are no panicking variants. Writing to it
/// through [`core::fmt::Write`] reports an allocation failure as [`fmt::Error`].
///
/// Growth goes through [`Allocator::grow`]: on this crate's arenas it is in place (same address,
/// no copy) while the string's block is the arena's most recent one; otherwise the arena copies
/// it to a new block and the old bytes stay used until the arena is reset. Dropping the string
/// gives its block back with [`Allocator::deallocate`], which on an arena frees the bytes only
/// if the block is still the most recent one.
///
/// [`into_str`](ArenaString::into_str) freezes a string built on `&'a arena` into a `&'a str`.
///
/// # Signal safety
/// The string itself does no I/O, takes no lock and never panics; it is exactly as
/// async-signal-safe as its allocator. On [`SyncLinearAllocator`](crate::SyncLinearAllocator),
/// [`SyncChainAllocator`](crate::SyncChainAllocator) (backed by
/// [`VirtualAllocator`](crate::VirtualAllocator)) and [`SyncVirtualArena`](crate::SyncVirtualArena)
/// a handler may build strings in the very arena the interrupted code is building one in.
///
/// # Examples
/// ```
/// use core::fmt::Write;
/// use libdd_alloc::{ArenaString, ChainAllocator, System};
///
/// let arena = ChainAllocator::new_in(4096, System)?;
/// let mut line = ArenaString::new_in(&arena);
/// line.try_push_str("frame ")?;
/// write!(line, "{:#x}", 0x7f00_1234u64).map_err(|_| libdd_alloc::AllocError)?;
/// line.try_push('!')?;
/// assert_eq!(line, "frame 0x7f001234!");
/// let frozen: &str = line.into_str();
/// assert_eq!(frozen.len(), 17);
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
pub struct ArenaString<A: Allocator> {
    // Invariant: if `capacity == 0` there is no block and `ptr` is dangling; otherwise `ptr` is a
    // block of `Layout::from_size_align(capacity, 1)` from `allocator`, owned by this string.
    // Always `len <= capacity <= isize::MAX`, and the first `len` bytes are valid UTF-8.
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
    allocator: A,
}

// SAFETY: the string owns its bytes exclusively, like `Vec<u8, A>`; sending it sends the
// allocator with it, so it is `Send` exactly when `A` is.
unsafe impl<A: Allocator + Send> Send for ArenaString<A> {}
// SAFETY: `&ArenaString` gives only `&str` and `&A`: `Sync` exactly when `A` is.
unsafe impl<A: Allocator + Sync> Sync for ArenaString<A> {}

impl<A: Allocator> ArenaString<A> {
    /// An empty string that has not allocated yet. O(1), cannot fail.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u8>(64)?, System)?;
    /// let s = ArenaString::new_in(&arena);
    /// assert_eq!((s.len(), s.capacity(), arena.used_bytes()), (0, 0, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub const fn new_in(allocator: A) -> Self {
        Self {
            ptr: NonNull::dangling(),
            len: 0,
            capacity: 0,
            allocator,
        }
    }

    /// An empty string with room for at least `capacity` bytes, allocated at once (nothing is
    /// allocated for 0).
    ///
    /// # Errors
    /// `Err(AllocError)` when `capacity > isize::MAX` or the allocator fails.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u8>(64)?, System)?;
    /// let s = ArenaString::try_with_capacity_in(40, &arena)?;
    /// assert_eq!((s.capacity(), arena.used_bytes()), (40, 40));
    /// assert!(ArenaString::try_with_capacity_in(65, &arena).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn try_with_capacity_in(capacity: usize, allocator: A) -> Result<Self, AllocError> {
        let mut string = Self::new_in(allocator);
        string.try_reserve_exact(capacity)?;
        Ok(string)
    }

    /// A copy of `s` in the allocator, with capacity exactly `s.len()`.
    ///
    /// # Errors
    /// `Err(AllocError)` when the allocator fails.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let s = ArenaString::try_from_str_in("SIGSEGV", &arena)?;
    /// assert_eq!((s.as_str(), s.capacity()), ("SIGSEGV", 7));
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn try_from_str_in(s: &str, allocator: A) -> Result<Self, AllocError> {
        let mut string = Self::try_with_capacity_in(s.len(), allocator)?;
        string.try_push_str(s)?;
        Ok(string)
    }

    /// Formats `args` into a new string on `allocator`, starting with room for
    /// `capacity_hint` bytes. This is what [`format_in!`](crate::format_in) calls.
    ///
    /// The first block is `capacity_hint` bytes (or none, when `args` is a plain string without
    /// arguments: then it is copied once, exactly); when the output outgrows it the block grows
    /// by doubling, and at the end it shrinks to the output's length, so on an arena the slack
    /// goes back while the string is the most recent block. If the hinted block cannot be had,
    /// it starts empty and grows as usual, falling back to exactly what the output needs when a
    /// doubled block is refused.
    ///
    /// # Errors
    /// `Err(AllocError)` when the allocator cannot hold the output, or a `Display`/`Debug`
    /// implementation among `args` returns `fmt::Error`. Whatever was allocated is given back.
    ///
    /// # Panics
    /// Never itself. But the caller's own `format_args!` panics, before this is called, when it
    /// takes a width or precision above 65,535 from an argument (`{:w$}`, `{:.*}`; Rust 1.87 and
    /// later): bound such a value first. And `core::fmt` panics while writing a float in
    /// exponent form with the precision 65,535 (`{:.65535e}`, `{:.65535E}`: the digit count
    /// wraps to 0). [`format_in!`](crate::format_in) refuses both forms.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let s = ArenaString::try_from_fmt_in(format_args!("tid {}", 42), 32, &arena)?;
    /// assert_eq!((s.as_str(), s.capacity()), ("tid 42", 6));
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn try_from_fmt_in(
        args: fmt::Arguments<'_>,
        capacity_hint: usize,
        allocator: A,
    ) -> Result<Self, AllocError> {
        if let Some(literal) = args.as_str() {
            return Self::try_from_str_in(literal, allocator);
        }
        let mut string = Self::new_in(allocator);
        // A refused hint is not an error: the writes below reserve exactly what they need.
        let _ = string.try_reserve_exact(capacity_hint);
        fmt::write(&mut string, args).map_err(|_| AllocError)?;
        string.shrink_to_fit();
        Ok(string)
    }

    /// The length in bytes.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let s = ArenaString::try_from_str_in("é!", &arena)?;
    /// assert_eq!(s.len(), 3);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the string is empty.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let s = ArenaString::new_in(&arena);
    /// assert!(s.is_empty());
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes the string can hold without allocating.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let mut s = ArenaString::try_with_capacity_in(32, &arena)?;
    /// s.try_push_str("abc")?;
    /// assert_eq!((s.len(), s.capacity()), (3, 32));
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// The allocator the string's bytes come from.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let s = ArenaString::try_from_str_in("x", &arena)?;
    /// assert!(core::ptr::eq(*s.allocator(), &arena));
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub const fn allocator(&self) -> &A {
        &self.allocator
    }

    /// The contents as a `&str`. O(1).
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let s = ArenaString::try_from_str_in("main", &arena)?;
    /// assert_eq!(s.as_str(), "main");
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: the first `len` bytes of the block are initialised, valid UTF-8 (type
        // invariant); with `len == 0` the dangling pointer is valid for an empty slice.
        unsafe {
            core::str::from_utf8_unchecked(core::slice::from_raw_parts(self.ptr.as_ptr(), self.len))
        }
    }

    /// The contents as a `&mut str`. O(1).
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let mut s = ArenaString::try_from_str_in("main", &arena)?;
    /// s.as_mut_str().make_ascii_uppercase();
    /// assert_eq!(s, "MAIN");
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn as_mut_str(&mut self) -> &mut str {
        // SAFETY: as in `as_str`; `&mut self` makes the borrow unique, and `&mut str` can only
        // be changed in ways that keep it valid UTF-8.
        unsafe {
            core::str::from_utf8_unchecked_mut(core::slice::from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ))
        }
    }

    /// Makes sure `additional` more bytes fit, growing the block if needed: to at least double
    /// the capacity (amortised O(1) pushes), or to exactly what is needed if the doubled block
    /// is refused.
    ///
    /// # Errors
    /// `Err(AllocError)` when `len + additional` exceeds `isize::MAX` or the allocator cannot
    /// provide it; the string is unchanged then.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let mut s = ArenaString::new_in(&arena);
    /// s.try_reserve(100)?;
    /// assert!(s.capacity() >= 100);
    /// assert!(s.try_reserve(usize::MAX).is_err());
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), AllocError> {
        if additional <= self.capacity - self.len {
            return Ok(());
        }
        self.grow_amortized(additional)
    }

    /// Makes sure `additional` more bytes fit, growing the block to exactly `len + additional`
    /// bytes if needed.
    ///
    /// # Errors
    /// As [`try_reserve`](Self::try_reserve).
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let mut s = ArenaString::try_from_str_in("ab", &arena)?;
    /// s.try_reserve_exact(3)?;
    /// assert_eq!(s.capacity(), 5);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn try_reserve_exact(&mut self, additional: usize) -> Result<(), AllocError> {
        if additional <= self.capacity - self.len {
            return Ok(());
        }
        let needed = self.len.checked_add(additional).ok_or(AllocError)?;
        self.set_capacity(needed)
    }

    /// Appends `s`.
    ///
    /// # Errors
    /// `Err(AllocError)` when the string cannot grow; it is unchanged then.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let mut s = ArenaString::new_in(&arena);
    /// s.try_push_str("pid ")?;
    /// s.try_push_str("4242")?;
    /// assert_eq!(s, "pid 4242");
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn try_push_str(&mut self, s: &str) -> Result<(), AllocError> {
        self.try_reserve(s.len())?;
        // SAFETY: `try_reserve` made room for `s.len()` bytes after `len`, inside the block; `s`
        // cannot be inside the spare capacity (nothing refers to it), so the two do not overlap.
        // Appending valid UTF-8 to valid UTF-8 keeps it valid.
        unsafe {
            self.ptr
                .as_ptr()
                .add(self.len)
                .copy_from_nonoverlapping(s.as_ptr(), s.len());
        }
        self.len += s.len();
        Ok(())
    }

    /// Appends one character.
    ///
    /// # Errors
    /// `Err(AllocError)` when the string cannot grow; it is unchanged then.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let mut s = ArenaString::new_in(&arena);
    /// s.try_push('µ')?;
    /// s.try_push('s')?;
    /// assert_eq!((s.as_str(), s.len()), ("µs", 3));
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn try_push(&mut self, ch: char) -> Result<(), AllocError> {
        self.try_push_str(ch.encode_utf8(&mut [0; 4]))
    }

    /// Removes and returns the last character, or `None` if the string is empty. The capacity
    /// is kept.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let mut s = ArenaString::try_from_str_in("ok\n", &arena)?;
    /// assert_eq!(s.pop(), Some('\n'));
    /// assert_eq!(s, "ok");
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn pop(&mut self) -> Option<char> {
        let ch = self.as_str().chars().next_back()?;
        self.len -= ch.len_utf8();
        Some(ch)
    }

    /// Empties the string; the capacity is kept.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let mut s = ArenaString::try_from_str_in("main", &arena)?;
    /// s.clear();
    /// assert_eq!((s.len(), s.capacity()), (0, 4));
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shrinks the block to the string's length. On an arena the freed tail goes back while the
    /// block is the most recent one. Best effort: if the allocator refuses, nothing changes.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, LinearAllocator, Layout, System};
    /// let arena = LinearAllocator::new_in(Layout::array::<u8>(64)?, System)?;
    /// let mut s = ArenaString::try_with_capacity_in(64, &arena)?;
    /// s.try_push_str("short")?;
    /// s.shrink_to_fit();
    /// assert_eq!((s.capacity(), arena.used_bytes()), (5, 5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shrink_to_fit(&mut self) {
        if self.capacity == self.len {
            return;
        }
        if self.len == 0 {
            self.release();
            return;
        }
        let (Ok(old), Ok(new)) = (
            Layout::from_size_align(self.capacity, 1),
            Layout::from_size_align(self.len, 1),
        ) else {
            return;
        };
        // SAFETY: `ptr` is a block of `old` from `allocator` (type invariant), and
        // `new.size() <= old.size()`.
        if let Ok(block) = unsafe { self.allocator.shrink(self.ptr, old, new) } {
            self.ptr = block.cast();
            self.capacity = self.len;
        }
    }

    /// The slow path of `try_reserve`: doubles, or grows exactly when doubling is refused.
    #[cold]
    #[inline(never)]
    fn grow_amortized(&mut self, additional: usize) -> Result<(), AllocError> {
        let needed = self.len.checked_add(additional).ok_or(AllocError)?;
        let doubled = self.capacity.saturating_mul(2).max(MIN_CAPACITY);
        if doubled > needed && self.set_capacity(doubled).is_ok() {
            return Ok(());
        }
        self.set_capacity(needed)
    }

    /// Moves the block to `capacity > self.capacity` bytes (allocate or grow), keeping the
    /// contents. On failure nothing changes.
    fn set_capacity(&mut self, capacity: usize) -> Result<(), AllocError> {
        let new = Layout::from_size_align(capacity, 1).map_err(|_| AllocError)?;
        let block = if self.capacity == 0 {
            self.allocator.allocate(new)?
        } else {
            let old = Layout::from_size_align(self.capacity, 1).map_err(|_| AllocError)?;
            // SAFETY: `ptr` is a block of `old` from `allocator` (type invariant), and
            // `new.size() >= old.size()` (the callers only grow).
            unsafe { self.allocator.grow(self.ptr, old, new) }?
        };
        self.ptr = block.cast();
        // The allocator may hand out more than asked; all of it is ours to use and to give back
        // with a layout of that size (the `Allocator` "fits" rule). Capped, to keep the
        // `isize::MAX` invariant whatever the allocator returns.
        self.capacity = block.len().max(capacity).min(isize::MAX as usize);
        Ok(())
    }

    /// Gives the block back, leaving an empty string with no block.
    fn release(&mut self) {
        if self.capacity != 0 {
            // SAFETY: the block is from `allocator` with this layout (type invariant), which is
            // valid because it was valid when the block was made.
            unsafe {
                self.allocator.deallocate(
                    self.ptr,
                    Layout::from_size_align_unchecked(self.capacity, 1),
                )
            };
        }
        self.ptr = NonNull::dangling();
        self.len = 0;
        self.capacity = 0;
    }
}

impl<'a, A: Arena + ?Sized> ArenaString<&'a A> {
    /// Freezes the string into a `&'a str` that lives as long as the arena borrow. The block is
    /// first shrunk to the string's length (best effort), then kept: it is never given back, so
    /// its bytes stay used until the arena is reset, rewound or dropped, which the borrow `'a`
    /// forbids while the `&str` lives. O(1).
    ///
    /// Only on arenas (`A: Arena`): a general allocator makes no promise that a block outlives
    /// the value that owns it.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, SyncChainAllocator, VirtualAllocator};
    /// let arena = SyncChainAllocator::new_in(4096, VirtualAllocator {})?;
    /// let names: [&str; 2] = [
    ///     ArenaString::try_from_str_in("main", &arena)?.into_str(),
    ///     ArenaString::try_from_str_in("worker", &arena)?.into_str(),
    /// ];
    /// assert_eq!(names, ["main", "worker"]);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn into_str(self) -> &'a str {
        self.into_mut_str()
    }

    /// As [`into_str`](Self::into_str), but the frozen string may still be changed in place
    /// (`make_ascii_uppercase` and friends).
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{ArenaString, ChainAllocator, System};
    /// let arena = ChainAllocator::new_in(4096, System)?;
    /// let s = ArenaString::try_from_str_in("warn", &arena)?.into_mut_str();
    /// s.make_ascii_uppercase();
    /// assert_eq!(s, "WARN");
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn into_mut_str(mut self) -> &'a mut str {
        self.shrink_to_fit();
        let string = core::mem::ManuallyDrop::new(self);
        // SAFETY: the first `len` bytes of the block are valid UTF-8 (type invariant). The block
        // (or, for `len == 0`, no block: the dangling pointer is valid for an empty slice) came
        // from the arena `A` through `&'a A`, whose `Allocator` impl is the blanket forwarding
        // one, so it is a block of `A`. The `Arena` contract keeps such a block valid, and never
        // hands it out again, until it is given back or the arena is used through `&mut` or
        // dropped. `ManuallyDrop` means it is never given back, and the shared borrow `&'a A`
        // rules out `&mut` use and drop for all of `'a`. The string is consumed, so the returned
        // reference is the only one to the bytes.
        unsafe {
            core::str::from_utf8_unchecked_mut(core::slice::from_raw_parts_mut(
                string.ptr.as_ptr(),
                string.len,
            ))
        }
    }
}

impl<A: Allocator> Drop for ArenaString<A> {
    /// Gives the block back ([`Allocator::deallocate`]): on an arena the bytes are reused only
    /// if the block is still the most recent one.
    #[inline]
    fn drop(&mut self) {
        self.release();
    }
}

impl<A: Allocator> Deref for ArenaString<A> {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<A: Allocator> DerefMut for ArenaString<A> {
    #[inline]
    fn deref_mut(&mut self) -> &mut str {
        self.as_mut_str()
    }
}

impl<A: Allocator> AsRef<str> for ArenaString<A> {
    #[inline]
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl<A: Allocator> AsRef<[u8]> for ArenaString<A> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl<A: Allocator> core::borrow::Borrow<str> for ArenaString<A> {
    #[inline]
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl<A: Allocator> fmt::Display for ArenaString<A> {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl<A: Allocator> fmt::Debug for ArenaString<A> {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// An allocation failure is `fmt::Error`; the string then holds what was written before it.
impl<A: Allocator> fmt::Write for ArenaString<A> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.try_push_str(s).map_err(|_| fmt::Error)
    }

    #[inline]
    fn write_char(&mut self, ch: char) -> fmt::Result {
        self.try_push(ch).map_err(|_| fmt::Error)
    }
}

impl<A: Allocator, B: Allocator> PartialEq<ArenaString<B>> for ArenaString<A> {
    #[inline]
    fn eq(&self, other: &ArenaString<B>) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<A: Allocator> Eq for ArenaString<A> {}

impl<A: Allocator> PartialEq<str> for ArenaString<A> {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<A: Allocator> PartialEq<&str> for ArenaString<A> {
    #[inline]
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<A: Allocator> core::hash::Hash for ArenaString<A> {
    #[inline]
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// What [`format_in!`](crate::format_in) reads from its format string, at compile time.
#[derive(Clone, Copy)]
struct TemplateFacts {
    /// Placeholders (`{...}`; an escaped `{{` is text).
    placeholders: usize,
    /// Whether some placeholder takes its width or precision from an argument (`{:w$}`,
    /// `{:1$}`, `{:.p$}`, `{:.*}`).
    count_from_argument: bool,
    /// Whether some placeholder has the exponent form with the largest precision,
    /// `{:.65535e}` or `{:.65535E}`: `core::fmt` panics on a float there (see
    /// [`format_exponent_precisions_fit`]).
    exponent_at_max_precision: bool,
}

/// Reads a format string as `format_args!` does (`std::fmt`'s grammar): text, `{{` and `}}`
/// escapes, and placeholders `{argument:spec}`. In a spec, a fill character is the character
/// before an alignment (`<`, `^`, `>`), whatever it is (`{:$>5}`, `{:*<5}`, `{:}>5}` are
/// literal widths); after it, `$` and `*` appear only in a count taken from an argument.
/// A template `format_args!` rejects may be read differently; it does not compile anyway.
const fn scan_template(template: &str) -> TemplateFacts {
    let mut facts = TemplateFacts {
        placeholders: 0,
        count_from_argument: false,
        exponent_at_max_precision: false,
    };
    let mut rest = template.as_bytes();
    while let [first, tail @ ..] = rest {
        rest = tail;
        if *first != b'{' {
            continue;
        }
        if let [b'{', after @ ..] = rest {
            rest = after; // an escaped `{{`
            continue;
        }
        facts.placeholders = facts.placeholders.saturating_add(1);
        while let [byte, after @ ..] = rest {
            if *byte == b':' || *byte == b'}' {
                break;
            }
            rest = after; // the argument's name or index
        }
        if let [b':', spec @ ..] = rest {
            rest = skip_fill_and_alignment(spec);
            // The literal precision (digits after `.`), and whether the type is `e` or `E`
            // (after the fill, an `e` is the type or part of a count's name, which is refused).
            let (mut precision, mut in_precision, mut exponent) = (0u32, false, false);
            while let [byte, after @ ..] = rest {
                match *byte {
                    b'}' => break,
                    b'$' | b'*' => facts.count_from_argument = true,
                    b'.' => in_precision = true,
                    digit @ b'0'..=b'9' if in_precision => {
                        precision = precision
                            .saturating_mul(10)
                            .saturating_add((digit - b'0') as u32);
                    }
                    b'e' | b'E' => exponent = true,
                    _ => in_precision = false,
                }
                rest = after;
            }
            if exponent && precision >= u16::MAX as u32 {
                facts.exponent_at_max_precision = true;
            }
        }
        // `rest` starts at the placeholder's closing `}`, which the loop reads as text.
    }
    facts
}

/// `spec` without its leading fill character and alignment, if it starts with them.
const fn skip_fill_and_alignment(spec: &[u8]) -> &[u8] {
    // The fill is one UTF-8 character: its length is told by its lead byte.
    let after_fill = match spec {
        [0x00..=0x7F, after @ ..]
        | [0xC0..=0xDF, _, after @ ..]
        | [0xE0..=0xEF, _, _, after @ ..]
        | [0xF0..=0xFF, _, _, _, after @ ..] => after,
        _ => return spec,
    };
    match after_fill {
        [b'<' | b'^' | b'>', after @ ..] => after,
        _ => spec,
    }
}

/// The first block [`format_in!`](crate::format_in) asks for, from its format string: the
/// template's length plus 16 bytes per placeholder (enough for any integer, a pointer or a short
/// name), rounded up to 16. Evaluated at compile time.
#[doc(hidden)]
pub const fn format_capacity_hint(template: &str) -> usize {
    template
        .len()
        .saturating_add(scan_template(template).placeholders.saturating_mul(16))
        .saturating_add(15)
        & !15
}

/// Whether every width and precision in the format string is a literal (`{:>8}`, `{:.3}`), as
/// [`format_in!`](crate::format_in) requires: none is taken from an argument (`{:w$}`, `{:1$}`,
/// `{:.p$}`, `{:.*}`). Evaluated at compile time.
#[doc(hidden)]
pub const fn format_counts_are_literal(template: &str) -> bool {
    !scan_template(template).count_from_argument
}

/// Whether no placeholder has the exponent form with the largest precision (`{:.65535e}`,
/// `{:.65535E}`), as [`format_in!`](crate::format_in) requires: `core::fmt` panics on a float
/// there (Rust 1.87 and later: the precision is a `u16`, and the digit count, one more, wraps
/// to 0). Evaluated at compile time.
#[doc(hidden)]
pub const fn format_exponent_precisions_fit(template: &str) -> bool {
    !scan_template(template).exponent_at_max_precision
}

/// Formats into an arena: `format_in!(&arena, "pid {} sig {}", pid, sig)` is a
/// `Result<&str, AllocError>` whose `&str` lives as long as the arena borrow.
///
/// No heap, no panic: the text is written by `core::fmt` straight into an [`ArenaString`] on
/// the arena, which grows in place while it is the arena's most recent block and is shrunk to
/// fit at the end (see [`ArenaString::try_from_fmt_in`] for the growth policy). A format string
/// without arguments is copied once. The first argument is a reference to any [`Arena`] (all
/// this crate's arenas, and [`Scope`](crate::Scope)); the rest is as for `format!`, with a
/// literal format string and literal widths and precisions.
///
/// # Compile errors
/// A width or precision taken from an argument (`{:w$}`, `{:1$}`, `{:.p$}`, `{:.*}`) does not
/// compile. Since Rust 1.87 `core::fmt` keeps widths and precisions as `u16`, and the
/// `format_args!` the macro expands to panics ("Formatting argument out of range") when such an
/// argument is above 65,535, before any formatting starts; the macro cannot see the argument's
/// value (it may be a captured variable), so it refuses the form. (Rust 1.84 to 1.86 keep a
/// `usize` there and do not panic.) A literal width or precision is checked by the compiler
/// (up to 65,535 since 1.87) and never panics, with one exception the macro also refuses: a
/// float in exponent form with the precision 65,535 (`{:.65535e}`, `{:.65535E}`), where
/// `core::fmt` (Rust 1.87 and later) computes the digit count, precision + 1, in a `u16` that
/// wraps to 0, and panics ("assertion failed: ndigits > 0"); the macro cannot see the
/// argument's type, so it refuses that form for every argument (65,534 compiles). For a width
/// known only at run time, write the padding yourself: a `Display` type that writes `n` fill
/// characters, or [`ArenaString::try_push`] in a loop.
///
/// ```compile_fail,E0080
/// # use libdd_alloc::{format_in, ChainAllocator, System};
/// let arena = ChainAllocator::new_in(4096, System)?;
/// let w = 65_536;
/// let line = format_in!(&arena, "{:w$}", 1)?; // refused: a width from an argument
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
///
/// # Errors
/// `Err(AllocError)` when the arena cannot hold the text, or a `Display`/`Debug` implementation
/// returns `fmt::Error`; nothing stays allocated then, except bytes an arena cannot take back
/// because another block was allocated after them.
///
/// # Signal safety
/// As async-signal-safe as the arena (see [`ArenaString`]) and the `Display`/`Debug` impls of
/// the arguments: integers, `&str`, `char`, `bool` and pointers format with no allocation,
/// lock or panic.
///
/// # Examples
/// ```
/// use libdd_alloc::{format_in, SyncLinearAllocator, Layout, VirtualAllocator};
///
/// let arena = SyncLinearAllocator::new_in(Layout::from_size_align(4096, 4096)?, VirtualAllocator {})?;
/// let (pid, signal) = (4242, "SIGSEGV");
/// let line = format_in!(&arena, "pid {} got {signal} at {:#x}", pid, 0xdead_beefu32)?;
/// assert_eq!(line, "pid 4242 got SIGSEGV at 0xdeadbeef");
/// assert_eq!(arena.used_bytes(), line.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[macro_export]
macro_rules! format_in {
    ($arena:expr, $template:literal $($arguments:tt)*) => {{
        // A const item, not an inline `const` block: `cargo check` evaluates items too, so the
        // refusal shows before a build.
        const _: () = ::core::assert!(
            $crate::__format_exponent_precisions_fit($template),
            "format_in! takes no precision of 65,535 in exponent form ({{:.65535e}}, \
             {{:.65535E}}): core::fmt panics on a float there (Rust 1.87 and later) and \
             format_in! never panics; use at most 65,534"
        );
        const _: () = ::core::assert!(
            $crate::__format_counts_are_literal($template),
            "format_in! takes no width or precision from an argument ({{:w$}}, {{:1$}}, \
             {{:.p$}}, {{:.*}}): core::fmt panics on one above 65,535 (Rust 1.87 and later) \
             and format_in! never panics; use a literal, or write the padding"
        );
        $crate::ArenaString::try_from_fmt_in(
            ::core::format_args!($template $($arguments)*),
            const { $crate::__format_capacity_hint($template) },
            $arena,
        )
        .map($crate::ArenaString::into_str)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChainAllocator, LinearAllocator, System};
    use core::fmt::Write;

    #[test]
    fn capacity_hint_counts_placeholders_not_escaped_braces() {
        assert_eq!(format_capacity_hint(""), 0);
        assert_eq!(format_capacity_hint("abc"), 16);
        assert_eq!(format_capacity_hint("pid {} sig {}"), 48);
        assert_eq!(format_capacity_hint("{{}}"), 16);
        assert_eq!(format_capacity_hint("{x:>8}"), 32);
        // A `{` fill character opens no placeholder.
        assert_eq!(format_capacity_hint("{:{>5}"), 32);
    }

    #[test]
    fn counts_from_arguments_are_found_and_fill_characters_are_not_taken_for_them() {
        for from_argument in [
            "{:w$}",
            "{:1$}",
            "{0:>1$}",
            "{:.p$}",
            "{:.*}",
            "{:8.p$}",
            "{x:x<w$}",
            "{:*^w$}",
            "{:$>0$}",
            "ok {} then {:é>w$.2}",
        ] {
            assert!(!format_counts_are_literal(from_argument), "{from_argument}");
        }
        for literal in [
            "",
            "{}",
            "{:>8}",
            "{x:08.3}",
            "{:$>5}",
            "{:*<5}",
            "{:}>5}",
            "{:{>5}",
            "{:é>5}",
            "{:#x?}",
            "{{:w$}} {{:.*}}",
            "$ * {} *$",
        ] {
            assert!(format_counts_are_literal(literal), "{literal}");
        }
    }

    #[test]
    fn the_exponent_form_with_precision_65535_is_found_and_nothing_else_is() {
        for panics in [
            "{:.65535e}",
            "{:.65535E}",
            "{0:+#012.65535e}",
            "{x:*^9.65535E}",
            "a {} b {:.65535e}",
        ] {
            assert!(!format_exponent_precisions_fit(panics), "{panics}");
        }
        for fits in [
            "{:.65534e}",
            "{:.65535}",
            "{:.65535?}",
            "{:>65535e}",
            "{:65535.1e}",
            "{:e}",
            "{{:.65535e}}",
            "{:.65535}e",
            "{:e>5.3}",
        ] {
            assert!(format_exponent_precisions_fit(fits), "{fits}");
        }
    }

    #[test]
    fn format_in_takes_literal_widths_up_to_65535_and_fill_characters_that_look_like_counts() {
        let arena = ChainAllocator::new_in(4096, System).unwrap();
        let wide = format_in!(&arena, "{:>65535}", 'x').unwrap();
        assert_eq!((wide.len(), wide.trim_start()), (65_535, "x"));
        let filled = format_in!(&arena, "{:$>5}{:*<4}{:}>3}{:.2}", 1, 2, 3, 0.125).unwrap();
        assert_eq!(filled, "$$$$12***}}30.12");
    }

    #[test]
    fn growth_of_the_most_recent_block_stays_in_place_and_used_bytes_is_exact() {
        let arena = ChainAllocator::new_in(4096, System).unwrap();
        let header = arena.used_bytes();
        let mut s = ArenaString::new_in(&arena);
        s.try_push('x').unwrap();
        let start = s.as_ptr();
        for i in 0..200 {
            write!(s, "{i},").unwrap();
            assert_eq!(s.as_ptr(), start, "moved at {i}");
            assert_eq!(arena.used_bytes(), header + s.capacity());
        }
        s.shrink_to_fit();
        assert_eq!(arena.used_bytes(), header + s.len());
        assert_eq!(s.as_ptr(), start);
        drop(s);
        assert_eq!(arena.used_bytes(), header);
    }

    #[test]
    fn growth_after_another_block_copies_and_keeps_the_contents() {
        let arena = ChainAllocator::new_in(4096, System).unwrap();
        let mut s = ArenaString::try_from_str_in("head", &arena).unwrap();
        let other = arena.try_alloc_str("other").unwrap();
        let before = s.as_ptr();
        s.try_push_str(" and tail").unwrap();
        assert_ne!(s.as_ptr(), before);
        assert_eq!((s.as_str(), &*other), ("head and tail", "other"));
    }

    #[test]
    fn refused_growth_leaves_the_string_unchanged() {
        let arena = LinearAllocator::new_in(Layout::array::<u8>(20).unwrap(), System).unwrap();
        let mut s = ArenaString::try_from_str_in("0123456789", &arena).unwrap();
        assert_eq!(s.try_push_str("0123456789x"), Err(AllocError));
        assert_eq!((s.as_str(), s.capacity()), ("0123456789", 10));
        // Doubling (to 20) is refused only if it does not fit; exact growth fills the arena.
        s.try_push_str("0123456789").unwrap();
        assert_eq!((s.len(), arena.used_bytes()), (20, 20));
        assert_eq!(s.try_push('x'), Err(AllocError));
        assert_eq!(write!(s, "{}", 1), Err(fmt::Error));
    }

    #[test]
    fn doubling_refused_falls_back_to_exact_growth() {
        let arena = LinearAllocator::new_in(Layout::array::<u8>(24).unwrap(), System).unwrap();
        let mut s = ArenaString::try_from_str_in("0123456789abcdef", &arena).unwrap();
        // Doubling to 32 does not fit in 24; exactly 24 does.
        s.try_push_str("01234567").unwrap();
        assert_eq!((s.capacity(), arena.used_bytes()), (24, 24));
    }

    #[test]
    fn sizes_near_isize_max_are_refused() {
        let arena = ChainAllocator::new_in(4096, System).unwrap();
        let mut s = ArenaString::try_from_str_in("a", &arena).unwrap();
        assert_eq!(s.try_reserve(usize::MAX), Err(AllocError));
        assert_eq!(s.try_reserve(isize::MAX as usize), Err(AllocError));
        assert_eq!(s.try_reserve_exact(usize::MAX - 1), Err(AllocError));
        assert!(ArenaString::try_with_capacity_in(isize::MAX as usize + 1, &arena).is_err());
        assert_eq!(s, "a");
    }

    #[test]
    fn format_in_writes_exactly_and_gives_the_slack_back() {
        let arena = ChainAllocator::new_in(4096, System).unwrap();
        let header = arena.used_bytes();
        let s = format_in!(&arena, "pid {} sig {} name {}", 4242, 11, "worker").unwrap();
        assert_eq!(s, "pid 4242 sig 11 name worker");
        assert_eq!(arena.used_bytes(), header + s.len());
        let long = format_in!(&arena, "{:>300}", "x").unwrap();
        assert_eq!(long.len(), 300);
        assert_eq!(arena.used_bytes(), header + s.len() + 300);
        let plain = format_in!(&arena, "no arguments").unwrap();
        assert_eq!(plain, "no arguments");
        assert_eq!(arena.used_bytes(), header + s.len() + 300 + 12);
    }

    #[test]
    fn format_in_fits_a_message_smaller_than_its_hint_in_a_nearly_full_arena() {
        // The hint for this template is 48 bytes; only 16 are left.
        let arena = LinearAllocator::new_in(Layout::array::<u8>(16).unwrap(), System).unwrap();
        let s = format_in!(&arena, "pid {} sig {}", 7, 9).unwrap();
        assert_eq!(s, "pid 7 sig 9");
        assert_eq!(arena.used_bytes(), 11);
        assert_eq!(format_in!(&arena, "{}", 123_456), Err(AllocError));
        assert_eq!(arena.used_bytes(), 11);
    }

    #[test]
    fn format_in_reports_a_failing_display_impl_and_gives_the_block_back() {
        struct Fails;
        impl fmt::Display for Fails {
            fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
                Err(fmt::Error)
            }
        }
        let arena = ChainAllocator::new_in(4096, System).unwrap();
        let header = arena.used_bytes();
        assert_eq!(format_in!(&arena, "a {} b", Fails), Err(AllocError));
        assert_eq!(arena.used_bytes(), header);
    }

    #[test]
    fn pop_and_clear_keep_utf8_boundaries() {
        let arena = ChainAllocator::new_in(4096, System).unwrap();
        let mut s = ArenaString::try_from_str_in("aé€", &arena).unwrap();
        assert_eq!(s.pop(), Some('€'));
        assert_eq!(s.pop(), Some('é'));
        assert_eq!(s, "a");
        s.clear();
        assert_eq!(s.pop(), None);
        assert!(s.is_empty());
    }

    #[test]
    fn empty_string_shrinks_to_no_block() {
        let arena = ChainAllocator::new_in(4096, System).unwrap();
        let header = arena.used_bytes();
        let mut s = ArenaString::try_with_capacity_in(100, &arena).unwrap();
        s.shrink_to_fit();
        assert_eq!((s.capacity(), arena.used_bytes()), (0, header));
        assert_eq!(s.into_str(), "");
    }
}
