//! 2.x: drop `Allocator` from the import (the inherent `allocate` needs none).
#![deny(unused_imports)]
use libdd_alloc::{ChainAllocator, Layout, VirtualAllocator};

fn main() {
    let arena = ChainAllocator::new_lazy_in(4096, VirtualAllocator {});
    let block = arena.allocate(Layout::new::<u64>()).unwrap();
    assert_eq!(block.len(), 8);
}
