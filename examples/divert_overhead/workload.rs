//! The workload of `examples/divert_overhead.rs` and `examples/divert_overhead_system.rs`: std
//! collections through the global allocator, which is all that differs between the two binaries.
//! Not an example of its own (no `main.rs` in this folder).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

/// One round: `Vec` growth, `String` building with `format!`, a `HashMap<String, u64>` filled,
/// queried and dropped, and short-lived boxes: about 7,300 allocations, as many frees and 2,000
/// reallocations (counted under callgrind).
pub fn round(seed: u64) -> u64 {
    let mut check = 0u64;
    for n in 0..50u64 {
        let v: Vec<u64> = (0..(n * 40 + seed % 7)).collect();
        check = check.wrapping_add(v.iter().sum::<u64>());
    }
    let mut text = String::new();
    for i in 0..2_000u64 {
        let part = format!("frame #{i}: {:#x};", i.wrapping_mul(seed | 1));
        text.push_str(&part);
    }
    check = check.wrapping_add(text.len() as u64);
    let mut map: HashMap<String, u64> = HashMap::new();
    for i in 0..4_000u64 {
        map.insert(format!("key-{i}-{seed}"), i);
    }
    for i in (0..4_000u64).step_by(3) {
        check = check.wrapping_add(map[&format!("key-{i}-{seed}")]);
    }
    drop(map);
    for i in 0..8_000u64 {
        let boxed = black_box(Box::new([i; 4]));
        check = check.wrapping_add(boxed[3]);
    }
    check
}

/// Runs `rounds` rounds after a warm-up and prints the median nanoseconds per round (the only
/// line on stdout; scripts/divert-overhead.sh reads it), and a checksum on stderr.
pub fn main_with(name: &str) {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let mut check = 0u64;
    for seed in 0..20 {
        check = check.wrapping_add(round(seed));
    }
    let mut times: Vec<u128> = Vec::with_capacity(rounds);
    for seed in 0..rounds as u64 {
        let start = Instant::now();
        check = check.wrapping_add(black_box(round(black_box(seed))));
        times.push(start.elapsed().as_nanos());
    }
    times.sort_unstable();
    println!("{}", times.get(rounds / 2).copied().unwrap_or(0));
    eprintln!("{name}: {rounds} rounds, checksum {check:#x}");
}
