//! 2.x: `new_lazy_in` is the `const fn` that returns `Self` (1.0's lazy `new_in`): one word per form.
use libdd_alloc::{ChainAllocator, Layout, VirtualAllocator};
use std::sync::Mutex;

const EMPTY: ChainAllocator<VirtualAllocator> =
    ChainAllocator::new_lazy_in(4096, VirtualAllocator {});
static SHARED: Mutex<ChainAllocator<VirtualAllocator>> =
    Mutex::new(ChainAllocator::new_lazy_in(4096, VirtualAllocator {}));
thread_local! {
    static CONST_INIT: ChainAllocator<VirtualAllocator> =
        const { ChainAllocator::new_lazy_in(4096, VirtualAllocator {}) };
    static LAZY_INIT: ChainAllocator<VirtualAllocator> =
        ChainAllocator::new_lazy_in(4096, VirtualAllocator {});
}

fn main() {
    let layout = Layout::new::<u64>();
    let local = EMPTY;
    assert!(local.allocate(layout).is_ok());
    assert!(SHARED.lock().unwrap().allocate(layout).is_ok());
    CONST_INIT.with(|arena| assert!(arena.allocate(layout).is_ok()));
    LAZY_INIT.with(|arena| assert!(arena.allocate(layout).is_ok()));
}
