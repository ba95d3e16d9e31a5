//! The same code on 2.x: the inherent `allocate(Layout)` wins over the trait method (E0308).
use libdd_alloc::{AllocError, ChainAllocator, Layout, VirtualAllocator};
// `Allocator` is not imported: with both traits in scope, 1.0 would report the call ambiguous (E0034).
use std::ptr::NonNull;

trait Intern {
    fn allocate(&self, s: &str) -> Result<&str, AllocError>;
}

impl<A: libdd_alloc::Allocator + Clone> Intern for ChainAllocator<A> {
    fn allocate(&self, s: &str) -> Result<&str, AllocError> {
        let layout = Layout::for_value(s);
        let block: NonNull<[u8]> = libdd_alloc::Allocator::allocate(self, layout)?;
        let dst = block.cast::<u8>().as_ptr();
        // SAFETY: the block is fresh and at least `s.len()` bytes long; the bytes are UTF-8.
        unsafe {
            dst.copy_from_nonoverlapping(s.as_ptr(), s.len());
            Ok(std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                dst,
                s.len(),
            )))
        }
    }
}

fn main() {
    let arena = ChainAllocator::new_lazy_in(4096, VirtualAllocator {});
    let name = arena.allocate("main").unwrap();
    assert_eq!(name, "main");
}
