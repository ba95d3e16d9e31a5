// `ChainAllocator` links its chunks and moves its cursor through `Cell`s: it may not be shared
// between threads, whatever the backing allocator (pinned before it is folded with
// `SyncChainAllocator` over a cursor; the notes below name its fields and will change then).
use libdd_alloc::{ChainAllocator, System};

fn shared<T: Sync>() {}

fn main() {
    shared::<ChainAllocator<System>>();
}
