//! AddressSanitizer poisoning of the bytes an arena has not handed out (feature `asan-poison`).
//!
//! An arena's chunk is one allocation as far as ASan knows, so a write that runs past the end of
//! a block into the free rest of the chunk goes unseen. With the feature on, the free part of
//! each chunk is poisoned and each block unpoisoned as it is handed out (as LLVM's
//! `BumpPtrAllocator` does), so such an overrun is reported as `use-after-poison`. Memory is
//! unpoisoned again before it goes back to the backing allocator, whose next user (perhaps a
//! fresh `mmap` at the same address, which ASan does not see) must find it clean.
//!
//! The feature needs the ASan runtime: build with `RUSTFLAGS=-Zsanitizer=address` on nightly
//! (`scripts/asan.sh` does), or linking fails on the two symbols below. Without the feature these
//! functions are empty and vanish.
//!
//! ASan tracks memory in 8-byte granules: poisoning may leave up to 7 bytes after a block
//! addressable, and never poisons bytes of a block.

use core::ptr::NonNull;

#[cfg(feature = "asan-poison")]
extern "C" {
    fn __asan_poison_memory_region(addr: *const core::ffi::c_void, size: usize);
    fn __asan_unpoison_memory_region(addr: *const core::ffi::c_void, size: usize);
}

/// Marks `[start, start + len)` as not to be touched: ASan reports any access to it.
#[inline(always)]
pub(crate) fn poison(start: NonNull<u8>, len: usize) {
    set_poisoned(start, len, true);
}

/// Marks `[start, start + len)` as usable again.
#[inline(always)]
pub(crate) fn unpoison(start: NonNull<u8>, len: usize) {
    set_poisoned(start, len, false);
}

/// A block at `start` went from `old_size` to `new_size` bytes in place: the bytes between the
/// two ends change hands.
#[inline(always)]
pub(crate) fn resized(start: NonNull<u8>, old_size: usize, new_size: usize) {
    let from = start.as_ptr().wrapping_add(old_size.min(new_size));
    if let Some(from) = NonNull::new(from) {
        set_poisoned(from, old_size.abs_diff(new_size), new_size < old_size);
    }
}

/// Poisons or unpoisons `[start, start + len)`: the one place that calls the ASan runtime, and
/// nothing at all without the feature.
#[inline(always)]
fn set_poisoned(start: NonNull<u8>, len: usize, poisoned: bool) {
    #[cfg(feature = "asan-poison")]
    if len != 0 {
        let set = if poisoned {
            __asan_poison_memory_region
        } else {
            __asan_unpoison_memory_region
        };
        // SAFETY: only changes ASan's shadow bytes for the range; callers pass a range of a
        // chunk they own, so no one else's bookkeeping is affected.
        unsafe { set(start.as_ptr().cast(), len) };
    }
    #[cfg(not(feature = "asan-poison"))]
    let _ = (start, len, poisoned);
}
