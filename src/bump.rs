//! The one piece of bump arithmetic every arena in this crate uses.
//!
//! Arenas bump *upwards*: a chunk is the address range `[start, limit)`, and a cursor `cur` with
//! `start <= cur <= limit` marks the first free byte. Bumping upwards is what lets the most recent
//! allocation grow, shrink or be given back in place: it is the block that ends at `cur`.
//!
//! The functions here are pure arithmetic on addresses (`usize`), so the cursors of
//! [`crate::cursor`] (plain stores for the `Cell` arenas, compare-exchange for the atomic ones)
//! share them. They
//! never overflow, never panic and are `#[inline(always)]`: with a constant [`Layout`] a fit
//! check compiles to a few instructions and one branch.

use crate::asan;
use core::alloc::Layout;
use core::ptr::NonNull;

/// Where a block lands in a chunk: it starts at `start` and the cursor moves to `new_cur`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fit {
    /// Address of the first byte of the block; a multiple of the layout's alignment.
    pub start: usize,
    /// Address one past the block: the cursor after the allocation.
    pub new_cur: usize,
}

/// Fits a non-zero-size `layout` at the cursor `cur` of a chunk that ends at `limit`.
///
/// Returns `None` when it does not fit. Requires `cur <= limit`.
///
/// The block starts at `cur` rounded up to the alignment and ends `size` bytes later; both sums
/// wrap instead of overflowing, and a wrapped end is always below `cur`, so the one range check
/// `cur <= new_cur <= limit` also rejects every overflow. Why a wrapped end lands below `cur`:
/// [`Layout`] guarantees `size + align - 1 <= isize::MAX`. If `cur + align - 1` wraps, the
/// start becomes 0 and the end is `size <= isize::MAX < cur`. Otherwise the start is at most
/// `cur + align - 1`, so the true end is at most `cur + isize::MAX`, and if that passes
/// `usize::MAX` the wrapped end is that minus 2^N, below `cur`.
///
/// With a constant layout this is an add, an and, an add and two compares: the fast path of
/// every arena.
#[inline(always)]
pub(crate) fn fit(cur: usize, limit: usize, layout: Layout) -> Option<Fit> {
    debug_assert!(cur <= limit);
    let mask = layout.align() - 1;
    let start = cur.wrapping_add(mask) & !mask;
    let new_cur = start.wrapping_add(layout.size());
    if new_cur < cur || new_cur > limit {
        return None;
    }
    Some(Fit { start, new_cur })
}

/// The cursor after resizing the block `[block, block + old_size)` to `new_size` bytes in place.
///
/// Only the most recent block (the one that ends exactly at `cur`) can change size in place.
/// Returns `None` when the block is not the most recent one or the new size does not fit before
/// `limit`. Requires `cur <= limit`. The caller checks that `block` suits the new alignment.
#[inline(always)]
pub(crate) fn resize_last(
    cur: usize,
    limit: usize,
    block: usize,
    old_size: usize,
    new_size: usize,
) -> Option<usize> {
    debug_assert!(cur <= limit);
    // `block + old_size` cannot overflow for a block that really ends at `cur`; a wrapped sum
    // of a foreign pointer can only compare unequal, which is the right answer.
    if block.wrapping_add(old_size) != cur || block > limit || new_size > limit - block {
        return None;
    }
    Some(block + new_size)
}

/// Rounds `value` up to a multiple of `align` (a power of two), or `None` on overflow.
#[inline]
pub(crate) fn align_up(value: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    Some(value.checked_add(align - 1)? & !(align - 1))
}

/// The layout of a new chunk for an arena that needs room for a block of `layout` after a
/// chunk header of `header` (size and alignment): `regular` bytes, or more if the block needs
/// it. The chunk is aligned for both the header and the block, so the block can start at the
/// first `layout.align()` boundary after the header. `None` on overflow.
#[inline]
pub(crate) fn chunk_layout(header: Layout, regular: usize, layout: Layout) -> Option<Layout> {
    let align = layout.align().max(header.align());
    let needed = align_up(header.size(), layout.align())?.checked_add(layout.size())?;
    Layout::from_size_align(needed.max(regular), align).ok()
}

/// The pointer handed out for a zero-size `layout`: dangling, non-null and well aligned.
/// It owns no arena bytes, and giving it back does nothing.
#[inline(always)]
pub(crate) fn dangling(layout: Layout) -> NonNull<[u8]> {
    // SAFETY: an alignment is a power of two, so never zero.
    let ptr = unsafe { NonNull::new_unchecked(core::ptr::without_provenance_mut(layout.align())) };
    NonNull::slice_from_raw_parts(ptr, 0)
}

/// Lifts the ASan poisoning a [`CellCursor`](crate::cursor::CellCursor) put on the free bytes of a chunk. Call it before the
/// chunk goes back to its backing allocator or is moved by it. Free without `asan-poison`.
#[inline(always)]
pub(crate) fn unpoison_chunk(start: NonNull<u8>, len: usize) {
    asan::unpoison(start, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn fit_pads_to_alignment_and_packs_exactly() {
        assert_eq!(
            fit(1001, 2000, layout(8, 8)),
            Some(Fit {
                start: 1008,
                new_cur: 1016
            })
        );
        assert_eq!(
            fit(1000, 2000, layout(3, 1)),
            Some(Fit {
                start: 1000,
                new_cur: 1003
            })
        );
    }

    #[test]
    fn fit_uses_the_last_byte_and_refuses_one_more() {
        assert_eq!(fit(1000, 1016, layout(16, 8)).unwrap().new_cur, 1016);
        assert_eq!(fit(1000, 1016, layout(17, 8)), None);
        assert_eq!(fit(1001, 1016, layout(9, 8)), None);
    }

    #[test]
    fn fit_never_overflows_near_the_top_of_the_address_space() {
        let top = usize::MAX - 10;
        assert_eq!(fit(top, usize::MAX, layout(1, 1 << 20)), None);
        let huge = layout(isize::MAX as usize - (1 << 20) + 1, 1 << 20);
        let far = fit(4096, usize::MAX, huge).unwrap();
        assert_eq!(far.start % (1 << 20), 0);
        assert_eq!(far.new_cur - far.start, huge.size());
        assert_eq!(fit(4096, isize::MAX as usize / 2, huge), None);
        assert_eq!(fit(0, 0, layout(1, 1)), None);
    }

    /// The same fit, computed with checked arithmetic: what `fit`'s wrapping range check must
    /// agree with.
    fn checked_fit(cur: usize, limit: usize, layout: Layout) -> Option<Fit> {
        let start = align_up(cur, layout.align())?;
        let new_cur = start.checked_add(layout.size())?;
        (new_cur <= limit).then_some(Fit { start, new_cur })
    }

    #[test]
    fn fit_agrees_with_checked_arithmetic_near_both_ends_of_the_address_space() {
        let max_size = |align: usize| isize::MAX as usize - (align - 1);
        // 2^40 and 2^62 on 64-bit, 2^24 and 2^30 on 32-bit.
        let (mid, top) = (1 << (usize::BITS / 2 + 8), 1 << (usize::BITS - 2));
        let aligns = [1, 2, 8, 16, 4096, 1 << 20, mid, top];
        let mut checked = 0;
        for align in aligns {
            let sizes = [
                1,
                7,
                align,
                align + 1,
                1 << 20,
                max_size(align) / 2,
                max_size(align),
            ];
            for size in sizes {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                for cur in [
                    0,
                    1,
                    4095,
                    4096,
                    usize::MAX / 2,
                    usize::MAX - align,
                    usize::MAX - 1,
                ] {
                    for limit in [
                        cur,
                        cur.saturating_add(size),
                        cur.saturating_add(1 << 21),
                        usize::MAX,
                    ] {
                        assert_eq!(
                            fit(cur, limit, layout),
                            checked_fit(cur, limit, layout),
                            "cur {cur:#x} limit {limit:#x} size {size:#x} align {align:#x}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000);
    }

    #[test]
    fn resize_last_only_moves_the_block_that_ends_at_the_cursor() {
        assert_eq!(resize_last(1016, 2000, 1008, 8, 100), Some(1108));
        assert_eq!(resize_last(1016, 2000, 1008, 8, 0), Some(1008));
        assert_eq!(resize_last(1016, 2000, 1000, 8, 100), None);
        assert_eq!(resize_last(1016, 1100, 1008, 8, 100), None);
        assert_eq!(resize_last(1016, 2000, usize::MAX, 1017, 1), None);
    }

    #[test]
    fn align_up_rounds_and_reports_overflow() {
        assert_eq!(align_up(0, 4096), Some(0));
        assert_eq!(align_up(1, 4096), Some(4096));
        assert_eq!(align_up(4096, 4096), Some(4096));
        assert_eq!(align_up(usize::MAX - 1, 4096), None);
    }

    #[test]
    fn chunk_layout_makes_room_for_header_and_aligned_block() {
        let header = layout(32, 16);
        assert_eq!(
            chunk_layout(header, 4096, layout(8, 8)),
            Some(layout(4096, 16))
        );
        assert_eq!(
            chunk_layout(header, 4096, layout(8192, 64)),
            Some(layout(64 + 8192, 64))
        );
        assert_eq!(chunk_layout(header, 0, layout(1, 1)), Some(layout(33, 16)));
        assert_eq!(
            chunk_layout(header, 0, layout(isize::MAX as usize - 8, 1)),
            None
        );
    }

    #[test]
    fn dangling_is_aligned_and_empty() {
        let block = dangling(layout(0, 64));
        assert_eq!(block.len(), 0);
        assert_eq!(block.cast::<u8>().as_ptr().addr() % 64, 0);
    }
}
