//! Under ThreadSanitizer (`scripts/tsan.sh` builds with `--cfg tsan`): `VirtualAllocator` maps and
//! unmaps with raw syscalls that TSan does not see, so pages unmapped by one thread and mapped
//! again at the same address by another look like racing writes. The kernel orders the two
//! calls; [`mapped`] and [`unmapping`] tell TSan so, and [`SeenByTsan`] is a `VirtualAllocator`
//! that calls them. (A loser of a `SyncChainAllocator` publish race unmaps its chunk, and a
//! thread racing it may get the same address back: the thread tests do this.) Without
//! `cfg(tsan)` they do nothing.

use libdd_alloc::{AllocError, Allocator, Layout, VirtualAllocator};
use std::ptr::NonNull;

static TOKEN: u8 = 0;

#[cfg(tsan)]
extern "C" {
    fn __tsan_acquire(addr: *mut std::ffi::c_void);
    fn __tsan_release(addr: *mut std::ffi::c_void);
}

fn token() -> *mut std::ffi::c_void {
    std::ptr::addr_of!(TOKEN).cast_mut().cast()
}

/// Call after mapping.
pub fn mapped() {
    #[cfg(tsan)]
    // SAFETY: an annotation call of the TSan runtime, which is linked under `cfg(tsan)`.
    unsafe {
        __tsan_acquire(token())
    };
    let _ = token;
}

/// Call before unmapping.
pub fn unmapping() {
    #[cfg(tsan)]
    // SAFETY: as above.
    unsafe {
        __tsan_release(token())
    };
}

/// `VirtualAllocator`, with its maps and unmaps ordered for TSan.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeenByTsan;

// SAFETY: forwards to `VirtualAllocator`, only annotating.
unsafe impl Allocator for SeenByTsan {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let block = VirtualAllocator {}.allocate(layout)?;
        mapped();
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        unmapping();
        // SAFETY: forwarded caller contract.
        unsafe { VirtualAllocator {}.deallocate(ptr, layout) };
    }
}
