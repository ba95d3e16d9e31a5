//! The callgrind driver of `scripts/callgrind.sh`: one arena, `N` allocations of the small or
//! mixed workload (or the first `N` string-table lookups, all misses), nothing else. The script runs it with `N` and with 0 and divides the
//! difference of the instruction counts by `N`.
//!
//! ```text
//! cargo run --release --example alloc_count -- <allocator> <small|mixed|strings> <N>
//! cargo run --release --example alloc_count -- --list
//! ```
//! The inputs are generated in full whatever `N` is, so the two runs differ only by the
//! allocations (and the loop around them: a counter, the write of the first byte).

#[path = "../benches/common/mod.rs"]
mod common;

use common::registry::{entries, slug};
use common::{Inputs, Workload};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let entries = entries();
    if args.first().map(String::as_str) == Some("--list") {
        for entry in entries.iter().filter(|e| e.count.is_some()) {
            println!("{}", slug(entry.name));
        }
        return;
    }
    let usage = "usage: alloc_count <allocator> <small|mixed|strings> <N>   (alloc_count --list)";
    let [name, workload, n] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let Some(entry) = entries
        .iter()
        .find(|e| slug(e.name) == *name && e.count.is_some())
    else {
        eprintln!("unknown allocator {name:?}\n{usage}");
        std::process::exit(2);
    };
    let (Some(workload), Ok(n)) = (Workload::from_name(workload), n.parse::<usize>()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let inputs = Inputs::new(false);
    let available = match workload {
        Workload::Small => inputs.small_count,
        Workload::Strings => inputs.words.len(),
        _ => inputs.mixed.len(),
    };
    if n > available {
        eprintln!("N must be at most {available} for {}", workload.name());
        std::process::exit(2);
    }
    match (workload, entry.count, entry.count_strings) {
        (Workload::Strings, _, Some(count_strings)) => count_strings(&inputs, n),
        (Workload::Small | Workload::Mixed, Some(count), _) => count(&inputs, workload, n),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
