//! What `Divert` costs while nothing is diverted: the std collection workload of
//! `divert_overhead/workload.rs` with a `Divert<System, SyncVirtualArena>` as the global
//! allocator (prepared, never diverted). `divert_overhead_system` runs the same workload on
//! `System`; `scripts/divert-overhead.sh` runs both, interleaved, and prints the ratio.
//!
//! ```text
//! cargo run --release --example divert_overhead [ROUNDS]   # median ns per round on stdout
//! ```

use libdd_alloc::{Divert, SyncVirtualArena, System};

#[path = "divert_overhead/workload.rs"]
mod workload;

#[global_allocator]
static GLOBAL: Divert<System, SyncVirtualArena> = Divert::new(System);

fn main() {
    let arena = SyncVirtualArena::new(1 << 30).expect("reservation");
    GLOBAL.prepare(Box::leak(Box::new(arena))).expect("prepare");
    workload::main_with("Divert<System>");
}
