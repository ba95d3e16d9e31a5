//! Formatting a ~100-byte message into an arena: ours (`format_in!`) against `bumpalo::format!`
//! and bump-scope's `bump_format!`, interleaved, median of many rounds, ratios from the same run.
//!
//! ```text
//! cargo run --release --example format_compare              # the timed comparison
//! cargo run --release --example format_compare -- count <contender> <N>   # for callgrind
//! cargo run --release --example format_compare -- --list
//! ```
//! Each round formats `BATCH` messages into a pre-sized arena with every contender in turn (the
//! order rotates each round), then resets the arenas. The message has four integer and two
//! string arguments: `"pid 4242 tid 17 got SIGPROF (27) at 0x7f3a1c2b4e80 in tokio::runtime::park,
//! sample 12345 of cpu-time"`, 100 bytes (the tid, address and sample number change per message).

use libdd_alloc::{
    format_in, ChainAllocator, Layout, SyncLinearAllocator, System, VirtualAllocator,
};
use std::hint::black_box;
use std::time::Instant;

const BATCH: usize = 1000;
const ROUNDS: usize = 61;
/// Room for a batch in every arena, so that no contender takes a new chunk in the timed loop.
const ARENA_BYTES: usize = 1 << 20;

/// The arguments of message `i`.
fn args(i: usize) -> (u32, u64, &'static str, u32, usize, &'static str, u64) {
    (
        4242,
        black_box(17 + (i % 8) as u64),
        black_box("SIGPROF"),
        27,
        // A typical user-space address; 32-bit targets keep its low bits.
        black_box((0x7f3a_1c2b_4e80_u64 as usize).wrapping_add(i * 64)),
        black_box("tokio::runtime::park"),
        black_box(12_345 + i as u64),
    )
}

/// One contender: formats `n` messages into its arena and resets it.
trait Contender {
    const NAME: &'static str;
    /// The name on the command line.
    const SLUG: &'static str;
    fn new() -> Self;
    /// Formats `n` messages and returns the total length (so nothing is optimised away).
    fn batch(&mut self, n: usize) -> usize;
}

macro_rules! message {
    ($mac:path, $($arena:tt)+) => {
        |i: usize| {
            let (pid, tid, sig, signo, addr, func, sample) = args(i);
            $mac!($($arena)+, "pid {} tid {} got {} ({}) at {:#x} in {}, sample {} of cpu-time", pid, tid, sig, signo, addr, func, sample)
        }
    };
}

struct OursChain(ChainAllocator<System>);
impl Contender for OursChain {
    const NAME: &'static str = "ours ChainAllocator<System> format_in!";
    const SLUG: &'static str = "ours-chain";
    fn new() -> Self {
        Self(ChainAllocator::new_in(ARENA_BYTES, System).expect("arena"))
    }
    fn batch(&mut self, n: usize) -> usize {
        let mut total = 0;
        {
            let arena = &self.0;
            for i in 0..n {
                let (pid, tid, sig, signo, addr, func, sample) = args(i);
                let s = format_in!(
                    arena,
                    "pid {} tid {} got {} ({}) at {:#x} in {}, sample {} of cpu-time",
                    pid,
                    tid,
                    sig,
                    signo,
                    addr,
                    func,
                    sample
                )
                .expect("room");
                total += black_box(s).len();
            }
        }
        self.0.reset();
        total
    }
}

struct OursSyncLinear(SyncLinearAllocator<VirtualAllocator>);
impl Contender for OursSyncLinear {
    const NAME: &'static str = "ours SyncLinearAllocator<VirtualAllocator> format_in!";
    const SLUG: &'static str = "ours-sync-linear";
    fn new() -> Self {
        let layout = Layout::from_size_align(ARENA_BYTES, 4096).expect("layout");
        Self(SyncLinearAllocator::new_in(layout, VirtualAllocator {}).expect("arena"))
    }
    fn batch(&mut self, n: usize) -> usize {
        let mut total = 0;
        {
            let arena = &self.0;
            for i in 0..n {
                let (pid, tid, sig, signo, addr, func, sample) = args(i);
                let s = format_in!(
                    arena,
                    "pid {} tid {} got {} ({}) at {:#x} in {}, sample {} of cpu-time",
                    pid,
                    tid,
                    sig,
                    signo,
                    addr,
                    func,
                    sample
                )
                .expect("room");
                total += black_box(s).len();
            }
        }
        self.0.reset();
        total
    }
}

struct Bumpalo(bumpalo::Bump);
impl Contender for Bumpalo {
    const NAME: &'static str = "bumpalo::format!";
    const SLUG: &'static str = "bumpalo";
    fn new() -> Self {
        Self(bumpalo::Bump::with_capacity(ARENA_BYTES))
    }
    fn batch(&mut self, n: usize) -> usize {
        let mut total = 0;
        {
            let bump = &self.0;
            let format = message!(bumpalo::format, in bump);
            for i in 0..n {
                total += black_box(format(i).into_bump_str()).len();
            }
        }
        self.0.reset();
        total
    }
}

struct BumpScope(bump_scope::Bump);
impl Contender for BumpScope {
    const NAME: &'static str = "bump-scope bump_format!(try in)";
    const SLUG: &'static str = "bump-scope";
    fn new() -> Self {
        let layout = Layout::from_size_align(ARENA_BYTES, 1).expect("layout");
        Self(bump_scope::Bump::with_capacity(layout))
    }
    fn batch(&mut self, n: usize) -> usize {
        let mut total = 0;
        {
            let bump = &self.0;
            let format = message!(bump_scope::bump_format, try in bump);
            for i in 0..n {
                total += black_box(format(i).expect("room").into_str()).len();
            }
        }
        self.0.reset();
        total
    }
}

/// Type-erased contender, for the interleaved loop.
struct Entry {
    name: &'static str,
    slug: &'static str,
    run: Box<dyn FnMut(usize) -> usize>,
}

fn entry<C: Contender + 'static>() -> Entry {
    let mut contender = C::new();
    // Warm the arena: its pages are touched before any timing.
    contender.batch(BATCH);
    Entry {
        name: C::NAME,
        slug: C::SLUG,
        run: Box::new(move |n| contender.batch(n)),
    }
}

fn entries() -> Vec<Entry> {
    vec![
        entry::<OursChain>(),
        entry::<OursSyncLinear>(),
        entry::<Bumpalo>(),
        entry::<BumpScope>(),
    ]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut entries = entries();
    match args.first().map(String::as_str) {
        Some("--list") => {
            for e in &entries {
                println!("{}", e.slug);
            }
            return;
        }
        Some("count") => {
            let (Some(name), Some(Ok(n))) = (args.get(1), args.get(2).map(|n| n.parse::<usize>()))
            else {
                eprintln!("usage: format_compare count <contender> <N>");
                std::process::exit(2);
            };
            let Some(e) = entries.iter_mut().find(|e| e.slug == name) else {
                eprintln!("unknown contender {name:?}; see --list");
                std::process::exit(2);
            };
            black_box((e.run)(n));
            return;
        }
        _ => {}
    }
    let expected_len = (entries[0].run)(1);
    for e in entries.iter_mut() {
        assert_eq!(
            (e.run)(1),
            expected_len,
            "{} formats a different message",
            e.name
        );
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); entries.len()];
    for round in 0..ROUNDS {
        for k in 0..entries.len() {
            let index = (k + round) % entries.len();
            let start = Instant::now();
            black_box((entries[index].run)(BATCH));
            samples[index].push(start.elapsed().as_nanos() as f64 / BATCH as f64);
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let fastest_peer = medians[2].min(medians[3]);
    println!("Formatting one {expected_len}-byte message (4 integers, 2 strings, 1 hex), {BATCH} per round, median of {ROUNDS} interleaved rounds:");
    println!();
    println!("| contender | ns per message | vs the faster peer |");
    println!("|---|---:|---:|");
    for (e, m) in entries.iter().zip(&medians) {
        println!("| {} | {:.1} | {:.2}x |", e.name, m, m / fastest_peer);
    }
}
