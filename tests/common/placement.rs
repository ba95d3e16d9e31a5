//! [`PageAligned`]: a backing allocator whose blocks all start on a page boundary, so that a
//! workload makes the same backing calls in every run.
//!
//! How many chunks an arena takes for a workload depends on where its chunks start: a request
//! aligned to 64 bytes needs 0 to 48 bytes of padding in a chunk that starts 16-aligned, and
//! that decides whether it still fits. `System` places a block wherever the heap has room, and
//! every thread of a test binary shares that heap (on Windows, the one process heap), so the
//! placement, and the number of backing calls, changes with what the tests running beside it
//! allocate. Fault-injection sweeps count the calls of a clean run and then fault each index in
//! turn: they need the count to be the same in every run.

use libdd_alloc::{AllocError, Allocator, Layout};
use std::ptr::NonNull;

/// The alignment every block gets: a page, more than any workload's layouts ask for.
pub const PLACEMENT_ALIGN: usize = 4096;

/// Forwards every call to `A` with the layout's alignment raised to [`PLACEMENT_ALIGN`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PageAligned<A>(pub A);

fn raised(layout: Layout) -> Result<Layout, AllocError> {
    layout.align_to(PLACEMENT_ALIGN).map_err(|_| AllocError)
}

/// The raised layout of a block `A` handed out: it was valid when the block was allocated.
fn raised_existing(layout: Layout) -> Layout {
    raised(layout).expect("the block was allocated with this raised layout")
}

// SAFETY: every call is forwarded to `A` with the same raised layout for the same block, and
// a block aligned to `PLACEMENT_ALIGN` is aligned to the smaller alignment the caller asked for.
unsafe impl<A: Allocator> Allocator for PageAligned<A> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.0.allocate(raised(layout)?)
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.0.allocate_zeroed(raised(layout)?)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded caller contract; `ptr` was allocated with the raised layout.
        unsafe { self.0.deallocate(ptr, raised_existing(layout)) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded caller contract, both layouts raised alike.
        unsafe { self.0.grow(ptr, raised_existing(old), raised(new)?) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: as in `grow`.
        unsafe { self.0.grow_zeroed(ptr, raised_existing(old), raised(new)?) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: as in `grow`.
        unsafe { self.0.shrink(ptr, raised_existing(old), raised(new)?) }
    }
}
