//! The callgrind driver of `scripts/drop-count.sh`: `N` values with a destructor allocated in one
//! arena, then every destructor run (at `reset`, or, for bump-scope, when its box is dropped),
//! nothing else. The script runs it with `N` and with 0 and divides the difference of the
//! instruction counts by `N`: the cost per value of allocate + drop.
//!
//! ```text
//! cargo run --release --example drop_count -- <contender> <N>
//! cargo run --release --example drop_count -- --list
//! ```
//! Every arena is sized up front for the largest `N` the script uses, so no run takes a chunk
//! while it counts.

use libdd_alloc::{
    Arena, ChainAllocator, DropArena, Layout, LinearAllocator, SyncChainAllocator,
    SyncLinearAllocator, SyncVirtualArena, System, VirtualArena,
};
use std::hint::black_box;

/// A value with drop glue and nothing else to pay for: its destructor reads it.
struct Token(u64);

impl Drop for Token {
    #[inline(never)]
    fn drop(&mut self) {
        black_box(self.0);
    }
}

/// Room for this many values in every arena.
const CAPACITY: usize = 1 << 16;
/// Bytes per value, with any arena's header, rounded up.
const SLOT: usize = 64;

fn ours<A: DropArena>(arena: &A, n: u64) {
    for i in 0..n {
        black_box(arena.try_alloc_owned(Token(i)).expect("room"));
    }
}

const CONTENDERS: &[&str] = &[
    "linear",
    "sync-linear",
    "chain",
    "sync-chain",
    "virtual",
    "sync-virtual",
    "local-handle",
    "blink-put",
    "bump-scope-box",
    "bump-scope-box-kept",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        CONTENDERS.iter().for_each(|c| println!("{c}"));
        return;
    }
    let [name, n] = args.as_slice() else {
        eprintln!("usage: drop_count <contender> <N>   (drop_count --list)");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N");
    assert!(n as usize <= CAPACITY);
    let layout = Layout::from_size_align(CAPACITY * SLOT, 64).expect("layout");
    match name.as_str() {
        "linear" => {
            let mut arena = LinearAllocator::new_in(layout, System).expect("arena");
            ours(&arena, n);
            arena.reset();
        }
        "sync-linear" => {
            let mut arena = SyncLinearAllocator::new_in(layout, System).expect("arena");
            ours(&arena, n);
            arena.reset();
        }
        // One chunk for every value: the chain's largest is kept and reused by the reset.
        "chain" => {
            let mut arena = ChainAllocator::new_in(layout.size(), System).expect("arena");
            ours(&arena, n);
            arena.reset();
        }
        "sync-chain" => {
            let mut arena = SyncChainAllocator::new_in(layout.size(), System).expect("arena");
            ours(&arena, n);
            arena.reset();
        }
        "virtual" => {
            let mut arena = VirtualArena::new(layout.size()).expect("arena");
            // Commit up front, so that no run pays for a commit while it counts.
            arena
                .try_alloc_slice_fill_copy(layout.size() - 4096, 0u8)
                .expect("commit");
            arena.reset();
            ours(&arena, n);
            arena.reset();
        }
        "sync-virtual" | "local-handle" => {
            let mut arena = SyncVirtualArena::new(layout.size()).expect("arena");
            arena
                .try_alloc_slice_fill_copy(layout.size() - 4096, 0u8)
                .expect("commit");
            arena.reset();
            if name == "local-handle" {
                ours(&arena.local(), n);
            } else {
                ours(&arena, n);
            }
            arena.reset();
        }
        "blink-put" => {
            let mut blink = blink_alloc::Blink::with_chunk_size(layout.size());
            // Take the chunk before counting.
            blink.put(Token(0));
            blink.reset();
            for i in 0..n {
                black_box(blink.put(Token(i)));
            }
            blink.reset();
        }
        "bump-scope-box" => {
            let mut bump: bump_scope::Bump = bump_scope::Bump::with_capacity(layout);
            for i in 0..n {
                // The box drops its value when it is dropped: here, at once.
                drop(black_box(bump.alloc(Token(i))));
            }
            bump.reset();
        }
        "bump-scope-box-kept" => {
            // Boxes kept until the reset, as the values of the other rows are: in a vector
            // allocated up front (the same in the run with 0).
            let mut bump: bump_scope::Bump = bump_scope::Bump::with_capacity(layout);
            let mut boxes = Vec::with_capacity(CAPACITY);
            for i in 0..n {
                boxes.push(bump.alloc(Token(i)));
            }
            drop(black_box(boxes));
            bump.reset();
        }
        other => {
            eprintln!("unknown contender {other}; try --list");
            std::process::exit(2);
        }
    }
}
