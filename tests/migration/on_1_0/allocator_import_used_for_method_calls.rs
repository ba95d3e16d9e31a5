//! libdd-alloc 1.0: `allocate` is only the trait's, so the import is used.
#![deny(unused_imports)]
use upstream::{Allocator, ChainAllocator, Layout, VirtualAllocator};

fn main() {
    let arena = ChainAllocator::new_in(4096, VirtualAllocator {});
    let block = arena.allocate(Layout::new::<u64>()).unwrap();
    assert_eq!(block.len(), 8);
}
