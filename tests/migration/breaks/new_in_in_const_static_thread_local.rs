//! The same code on 2.x: `new_in` allocates and returns a `Result`, so it is not `const` (E0015),
//! and the lazy `thread_local!` form gets a `Result` (E0308).
use libdd_alloc::{ChainAllocator, Layout, VirtualAllocator};
use std::sync::Mutex;

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
