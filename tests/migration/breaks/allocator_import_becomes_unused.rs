//! The same code on 2.x: the inherent `allocate` wins, the import is unused (an error here).
#![deny(unused_imports)]
use libdd_alloc::{Allocator, ChainAllocator, Layout, VirtualAllocator};

fn main() {
    let arena = ChainAllocator::new_lazy_in(4096, VirtualAllocator {});
    let block = arena.allocate(Layout::new::<u64>()).unwrap();
    assert_eq!(block.len(), 8);
}
