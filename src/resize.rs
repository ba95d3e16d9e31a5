//! `grow`, `grow_zeroed` and `shrink` for every arena: in place for the most recent block, else a
//! copy. [`forward_resize!`] writes an arena's three `Allocator` methods over them.

use crate::bump::dangling;
use crate::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;

/// The in-place operations on an arena's most recent block that [`grow`] and [`shrink`] build
/// on: every [`Cursor`](crate::cursor::Cursor) provides them, and an arena whose most recent
/// block needs more care (a chain's newest chunk, a virtual arena's commit) wraps its cursor.
pub(crate) trait LastBlock {
    /// Gives back `[ptr, ptr + size)` if it is the most recent block; otherwise does nothing.
    fn release_if_last(&self, ptr: NonNull<u8>, size: usize);

    /// Resizes the most recent block `[ptr, ptr + old_size)` to `new.size()` in place, if it is
    /// the most recent block, `ptr` suits `new.align()` and the chunk has room.
    fn resize_last_in_place(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new: Layout,
    ) -> Option<NonNull<[u8]>>;

    /// Grows `ptr` from `old` to `new` in place some other way once
    /// [`resize_last_in_place`](Self::resize_last_in_place) could not (a chain can grow a
    /// chunk whose only block `ptr` is through its backing allocator). `None` by default.
    ///
    /// # Safety
    /// The `Allocator::grow` contract for `ptr`, `old` and `new` on the arena this is the last
    /// block of.
    #[inline(always)]
    unsafe fn grow_elsewhere_in_place(
        &self,
        _ptr: NonNull<u8>,
        _old: Layout,
        _new: Layout,
    ) -> Option<NonNull<[u8]>> {
        None
    }
}

/// Writes `grow`, `grow_zeroed` and `shrink` of an `unsafe impl Allocator` block as calls to
/// [`grow`], [`grow_zeroed`] and [`shrink`], so each arena forwards them in one line:
/// `forward_resize!(|arena| &arena.cursor);` names the [`LastBlock`] of `arena` (the
/// implementing value, `self`).
macro_rules! forward_resize {
    (|$arena:ident| $last:expr) => {
        $crate::resize::forward_resize!(@each |$arena| $last; grow grow_zeroed shrink);
    };
    (@each |$arena:ident| $last:expr; $($method:ident)*) => {$(
        unsafe fn $method(
            &self,
            ptr: core::ptr::NonNull<u8>,
            old: core::alloc::Layout,
            new: core::alloc::Layout,
        ) -> Result<core::ptr::NonNull<[u8]>, $crate::AllocError> {
            let $arena = self;
            // SAFETY: the caller keeps this method's `Allocator` contract, which is the
            // contract of the `resize` function of the same name; `$last` is the arena's
            // most recent block.
            unsafe { $crate::resize::$method($arena, $last, ptr, old, new) }
        }
    )*};
}
pub(crate) use forward_resize;

/// Grows `ptr` from `old` to `new`: in place when it is the most recent block of `cursor` and the
/// chunk has room (or [`LastBlock::grow_elsewhere_in_place`] manages), otherwise by
/// [`move_block`].
///
/// # Safety
/// The `Allocator::grow` contract: `ptr` is a live block of `old` from `arena`, whose current
/// chunk is `cursor`, and `new.size() >= old.size()`.
pub(crate) unsafe fn grow<A: Allocator + ?Sized>(
    arena: &A,
    cursor: &impl LastBlock,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    if old.size() != 0 {
        if let Some(block) = cursor.resize_last_in_place(ptr, old.size(), new) {
            return Ok(block);
        }
        // SAFETY: forwarded caller contract.
        if let Some(block) = unsafe { cursor.grow_elsewhere_in_place(ptr, old, new) } {
            return Ok(block);
        }
    }
    // SAFETY: forwarded caller contract.
    unsafe { move_block(arena, ptr, old, new) }
}

/// [`grow`], then zeroes the bytes past the old size, as `grow_zeroed` promises.
///
/// # Safety
/// As for [`grow`].
pub(crate) unsafe fn grow_zeroed<A: Allocator + ?Sized>(
    arena: &A,
    cursor: &impl LastBlock,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    // SAFETY: forwarded caller contract.
    let block = unsafe { grow(arena, cursor, ptr, old, new) }?;
    // SAFETY: the block is ours and at least `new.size() >= old.size()` long.
    unsafe { zero_tail(block, old.size()) };
    Ok(block)
}

/// Copies the block `ptr` of `old` into a new block of `new` from `arena` (which may take a new
/// chunk). The old bytes stay where they are until the arena is reset or dropped.
///
/// # Safety
/// `ptr` is a live block of `old` from `arena`.
pub(crate) unsafe fn move_block<A: Allocator + ?Sized>(
    arena: &A,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    let block = arena.allocate(new)?;
    let keep = old.size().min(new.size());
    // SAFETY: the new block is fresh, so it cannot overlap the old one; both hold `keep` bytes.
    unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), block.cast::<u8>().as_ptr(), keep) };
    Ok(block)
}

/// Zeroes `block[from..]`, as `grow_zeroed` promises for the bytes past the old size: they may be
/// left over from a block that was given back or reset.
///
/// # Safety
/// `block` is valid for writes and `from <= block.len()`.
pub(crate) unsafe fn zero_tail(block: NonNull<[u8]>, from: usize) {
    // SAFETY: `[from, len)` lies inside the block, per the caller.
    unsafe {
        block
            .cast::<u8>()
            .add(from)
            .write_bytes(0, block.len() - from)
    };
}

/// Shrinks `ptr` from `old` to `new`: in place (giving the tail back if it is the most recent
/// block) unless `new` needs a stricter alignment than `ptr` has, in which case it moves.
///
/// # Safety
/// The `Allocator::shrink` contract: `ptr` is a live block of `old` from `arena`, whose current
/// chunk is `cursor`, and `new.size() <= old.size()`.
pub(crate) unsafe fn shrink<A: Allocator + ?Sized>(
    arena: &A,
    cursor: &impl LastBlock,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    if new.size() == 0 {
        cursor.release_if_last(ptr, old.size());
        return Ok(dangling(new));
    }
    if ptr.as_ptr().addr() & (new.align() - 1) == 0 {
        return Ok(cursor
            .resize_last_in_place(ptr, old.size(), new)
            .unwrap_or(NonNull::slice_from_raw_parts(ptr, new.size())));
    }
    // SAFETY: forwarded caller contract.
    unsafe { move_block(arena, ptr, old, new) }
}
