//! Fill 1 GiB in 64-byte pieces: `VirtualArena` (one reservation, committed in steps) against
//! `ChainAllocator<VirtualAllocator>` (a new mapping per chunk).
//!
//! `cargo bench --bench vm` runs both, interleaved, and prints the median of 7 rounds and the
//! ratio. `cargo bench --bench vm -- arena` (or `chain`, or `none` for the start-up baseline)
//! runs one fill and refill only, for counting syscalls: `scripts/bench-vm.sh` runs it under
//! `strace -c -f`.

use libdd_alloc::{Allocator, ChainAllocator, Layout, VirtualAllocator, VirtualArena};
use std::hint::black_box;
use std::time::{Duration, Instant};

const TOTAL: usize = 1 << 30;
const PIECE: usize = 64;
const ROUNDS: usize = 7;

/// Allocates `TOTAL` bytes in `PIECE`-byte pieces and writes every piece.
#[inline(never)]
fn fill(arena: &impl Allocator) -> Duration {
    let layout = Layout::new::<[u8; PIECE]>();
    let start = Instant::now();
    for i in 0..TOTAL / PIECE {
        let block = arena.allocate(layout).expect("out of memory");
        // SAFETY: the block is ours and PIECE bytes long.
        unsafe { block.cast::<u8>().write_bytes(i as u8, PIECE) };
    }
    let elapsed = start.elapsed();
    black_box(arena);
    elapsed
}

/// A fresh fill, then a refill after `reset` (the arena keeps every page resident; the chain
/// keeps only its largest chunk).
fn arena_fill() -> (Duration, Duration) {
    let mut arena = VirtualArena::new(2 * TOTAL).expect("reserve");
    let fresh = fill(&arena);
    arena.reset();
    (fresh, fill(&arena))
}

fn chain_fill() -> (Duration, Duration) {
    let mut arena = ChainAllocator::new_in(1 << 20, VirtualAllocator {}).expect("first chunk");
    let fresh = fill(&arena);
    arena.reset();
    (fresh, fill(&arena))
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let only = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    match only.as_deref() {
        Some("arena") => return println!("arena fill, refill: {:?}", arena_fill()),
        Some("chain") => return println!("chain fill, refill: {:?}", chain_fill()),
        // Process start-up alone: the syscall baseline to subtract.
        Some("none") => return,
        _ => {}
    }
    let (mut arena, mut chain) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always runs on a warmer machine.
        if round % 2 == 0 {
            arena.push(arena_fill());
            chain.push(chain_fill());
        } else {
            chain.push(chain_fill());
            arena.push(arena_fill());
        }
    }
    let split = |runs: &[(Duration, Duration)]| -> (Duration, Duration) {
        (
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1).collect()),
        )
    };
    let (arena, chain) = (split(&arena), split(&chain));
    let pieces = (TOTAL / PIECE) as f64;
    let line = |name: &str, d: Duration| {
        let ns = d.as_nanos() as f64 / pieces;
        println!(
            "  {name:<34} {:>8.1} ms  ({ns:.2} ns/piece)",
            d.as_secs_f64() * 1e3
        );
    };
    println!("fill 1 GiB in {PIECE}-byte pieces, median of {ROUNDS} interleaved rounds");
    println!("fresh (every page faulted in):");
    line("VirtualArena", arena.0);
    line("ChainAllocator<VirtualAllocator>", chain.0);
    println!(
        "  ratio chain / arena: {:.3}",
        chain.0.as_secs_f64() / arena.0.as_secs_f64()
    );
    println!("refill after reset:");
    line("VirtualArena", arena.1);
    line("ChainAllocator<VirtualAllocator>", chain.1);
    println!(
        "  ratio chain / arena: {:.3}",
        chain.1.as_secs_f64() / arena.1.as_secs_f64()
    );
}
