// `SyncChainAllocator<A>` is `Sync` only when its backing allocator is: `allocator()` hands out
// `&A` to every thread that shares the arena.
use core::cell::Cell;
use libdd_alloc::{AllocError, Allocator, Layout, SyncChainAllocator, System};
use std::ptr::NonNull;

/// A backing allocator that is `Send` but not `Sync` (it counts through a `Cell`).
struct Counting(Cell<usize>);

unsafe impl Allocator for Counting {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.0.set(self.0.get() + 1);
        System.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        unsafe { System.deallocate(ptr, layout) }
    }
}

fn shared<T: Sync>() {}
fn sent<T: Send>() {}

fn main() {
    sent::<SyncChainAllocator<Counting>>();
    shared::<SyncChainAllocator<Counting>>();
}
