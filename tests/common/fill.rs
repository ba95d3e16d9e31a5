//! Byte patterns that prove blocks do not overlap: each block is filled with the pattern of its
//! own id, and checked later.

use std::ptr::NonNull;

/// The byte pattern for block number `id` at offset `i`: different blocks differ at (almost)
/// every offset, so an overlap shows up when the blocks are checked.
pub fn pattern(id: usize, i: usize) -> u8 {
    (id.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (id >> 8)) as u8
}

/// Fills `len` bytes at `ptr` with block `id`'s pattern.
///
/// # Safety
/// `[ptr, ptr + len)` is valid for writes.
pub unsafe fn fill(ptr: NonNull<u8>, len: usize, id: usize) {
    for i in 0..len {
        // SAFETY: per the caller.
        unsafe { ptr.add(i).write(pattern(id, i)) };
    }
}

/// Checks that the first `len` bytes at `ptr` still hold block `id`'s pattern.
///
/// # Safety
/// `[ptr, ptr + len)` is valid for reads.
pub unsafe fn check(ptr: NonNull<u8>, len: usize, id: usize) {
    for i in 0..len {
        // SAFETY: per the caller.
        let byte = unsafe { ptr.add(i).read() };
        assert_eq!(
            byte,
            pattern(id, i),
            "block {id} changed at offset {i} of {len}"
        );
    }
}

/// Whether the first `len` bytes at `ptr` still hold block `id`'s pattern.
///
/// # Safety
/// `[ptr, ptr + len)` is valid for reads.
pub unsafe fn holds(ptr: NonNull<u8>, len: usize, id: usize) -> bool {
    // SAFETY: per the caller.
    (0..len).all(|i| unsafe { ptr.add(i).read() } == pattern(id, i))
}
