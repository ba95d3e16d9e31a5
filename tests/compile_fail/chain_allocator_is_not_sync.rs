// `ChainAllocator` (`arena::Chain<CellCursor, A>`) moves its cursor and links its chunks through
// `Cell`s: it may not be shared between threads, whatever the backing allocator. Only
// `Chain<AtomicCursor, A>`, `SyncChainAllocator`, is `Sync`.
use libdd_alloc::{ChainAllocator, System};

fn shared<T: Sync>() {}

fn main() {
    shared::<ChainAllocator<System>>();
}
