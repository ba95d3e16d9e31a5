//! libdd-alloc 1.0: `ChainAllocator::new_in` is a `const fn` returning `Self`.
use std::sync::Mutex;
use upstream::{Allocator, ChainAllocator, Layout, VirtualAllocator};

const EMPTY: ChainAllocator<VirtualAllocator> = ChainAllocator::new_in(4096, VirtualAllocator {});
static SHARED: Mutex<ChainAllocator<VirtualAllocator>> =
    Mutex::new(ChainAllocator::new_in(4096, VirtualAllocator {}));
thread_local! {
    static CONST_INIT: ChainAllocator<VirtualAllocator> =
        const { ChainAllocator::new_in(4096, VirtualAllocator {}) };
    static LAZY_INIT: ChainAllocator<VirtualAllocator> =
        ChainAllocator::new_in(4096, VirtualAllocator {});
}

fn main() {
    let layout = Layout::new::<u64>();
    let local = EMPTY;
    assert!(local.allocate(layout).is_ok());
    assert!(SHARED.lock().unwrap().allocate(layout).is_ok());
    CONST_INIT.with(|arena| assert!(arena.allocate(layout).is_ok()));
    LAZY_INIT.with(|arena| assert!(arena.allocate(layout).is_ok()));
}
