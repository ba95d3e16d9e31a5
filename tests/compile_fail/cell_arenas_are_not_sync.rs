// The single-thread arenas move their cursor through a `Cell`: none of them may be shared
// between threads, whatever the backing allocator (`LinearAllocator<A>` is `Linear<CellCursor, A>`,
// `VirtualArena` is `Virtual<CellCursor>`: the generic arenas must not become `Sync` for them).
use libdd_alloc::arena::{CellCursor, Linear, Virtual};
use libdd_alloc::{LinearAllocator, System, VirtualAllocator, VirtualArena};

fn shared<T: Sync>() {}

fn main() {
    shared::<LinearAllocator<System>>();
    shared::<LinearAllocator<VirtualAllocator>>();
    shared::<Linear<CellCursor, System>>();
    shared::<VirtualArena>();
    shared::<Virtual<CellCursor>>();
}
