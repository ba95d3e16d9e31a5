//! The baseline of `examples/divert_overhead.rs`: the same std collection workload with `System`
//! as the global allocator. `scripts/divert-overhead.sh` runs both and prints the ratio.
//!
//! ```text
//! cargo run --release --example divert_overhead_system [ROUNDS]   # median ns per round on stdout
//! ```

use libdd_alloc::System;

#[path = "divert_overhead/workload.rs"]
mod workload;

#[global_allocator]
static GLOBAL: System = System;

fn main() {
    workload::main_with("System");
}
