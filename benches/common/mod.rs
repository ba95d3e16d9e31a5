//! The benchmark harness shared by `examples/compare.rs` (the interleaved comparison that writes
//! `docs/BENCHMARKS.md` and `docs/compare.svg`), `benches/compare.rs` (divan, `cargo bench`) and
//! `examples/alloc_count.rs` (the callgrind driver of `scripts/callgrind.sh`).
//!
//! - [`contenders`]: the [`Arena`](contenders::Arena) trait and one small impl per allocator.
//! - [`workloads`]: the workloads, generic over `Arena`, so every arena's fast path is inlined
//!   into the same loop.
//! - [`registry`]: the list of columns. **Adding an allocator** = one `impl Arena` in
//!   `contenders.rs` plus one line in [`registry::entries`].
#![allow(dead_code)]

pub mod contenders;
pub mod registry;
pub mod workloads;

use core::alloc::Layout;

/// A fixed-seed xorshift64 generator: the same inputs on every run, for every allocator.
pub struct XorShift(u64);

impl XorShift {
    /// A generator started from `seed` (any non-zero value).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The workloads, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Many allocations of one constant layout (32 bytes, align 8).
    Small,
    /// Sizes 1..=128 and alignments 1..=16 from the fixed-seed generator.
    Mixed,
    /// A profiler string table: strings interned into the arena, indexed by a hashbrown set.
    Strings,
    /// A `Vec<u64>` grown by `push` inside the arena.
    VecGrowth,
    /// Small batches of allocations, each followed by a reset of the arena.
    Reset,
    /// Two threads allocating from one shared arena.
    TwoThreads,
    /// 64 KiB blocks from a page allocator, freed in batches.
    Pages,
}

impl Workload {
    /// Every workload, in table order.
    pub const ALL: [Workload; 7] = [
        Workload::Small,
        Workload::Mixed,
        Workload::Strings,
        Workload::VecGrowth,
        Workload::Reset,
        Workload::TwoThreads,
        Workload::Pages,
    ];

    /// Position in [`Workload::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short name for tables and command lines.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Small => "small",
            Workload::Mixed => "mixed",
            Workload::Strings => "strings",
            Workload::VecGrowth => "vec",
            Workload::Reset => "reset",
            Workload::TwoThreads => "threads",
            Workload::Pages => "pages",
        }
    }

    /// What one operation is, for the table.
    pub fn describe(self) -> &'static str {
        match self {
            Workload::Small => "one 32-byte allocation (align 8), first byte written",
            Workload::Mixed => "one allocation, size 1..=128, align 1..=16",
            Workload::Strings => "one string-table lookup (interning on a miss)",
            Workload::VecGrowth => "one `Vec<u64>::push` inside the arena",
            Workload::Reset => "one allocation in an allocate-then-reset cycle",
            Workload::TwoThreads => "one 32-byte allocation, two threads sharing the arena",
            Workload::Pages => "one 64 KiB block: allocate, touch, free",
        }
    }

    /// Parses [`Workload::name`].
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// How much the arena is asked to hold: chained arenas start with a first chunk of
/// `first_chunk` bytes, fixed arenas (`LinearAllocator`) get `total` bytes, and `count` is how
/// many allocations will be made (the system allocator's bookkeeping is sized for it).
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    pub first_chunk: usize,
    pub total: usize,
    pub count: usize,
}

impl Capacity {
    /// One chunk that holds everything.
    pub fn one_chunk(total: usize, count: usize) -> Self {
        Self {
            first_chunk: total,
            total,
            count,
        }
    }
}

/// The inputs of every workload, generated once per process from fixed seeds.
pub struct Inputs {
    /// Allocations per repetition of [`Workload::Small`].
    pub small_count: usize,
    /// Layouts of [`Workload::Mixed`], one per allocation.
    pub mixed: Vec<Layout>,
    /// Upper bound of the bytes `mixed` needs, alignment padding included.
    pub mixed_bound: usize,
    /// How many times the memory run of [`Workload::Mixed`] goes through `mixed`, starting from a
    /// small chunk, so that arenas must grow.
    pub mixed_memory_passes: usize,
    /// Distinct strings of the string table.
    pub words: Vec<String>,
    /// Indices into `words`: the lookups of the string table, with repeats.
    pub lookups: Vec<u32>,
    /// Final length of the `Vec<u64>` of [`Workload::VecGrowth`].
    pub vec_len: usize,
    /// Cycles per repetition of [`Workload::Reset`], and allocations per cycle.
    pub reset_cycles: usize,
    pub reset_batch: usize,
    /// Allocations per thread in [`Workload::TwoThreads`].
    pub per_thread: usize,
    /// Batches of [`PAGE_BATCH`] blocks in [`Workload::Pages`].
    pub page_batches: usize,
    /// Repetitions per sample, per workload (indexed by [`Workload::index`]).
    pub reps: [usize; 7],
}

/// The first chunk of arenas that must grow (the memory runs and `Vec` growth).
pub const SMALL_FIRST_CHUNK: usize = 64 << 10;
/// The chunk size hint of the string table, as a profiler would use it.
pub const STRING_TABLE_HINT: usize = 4 << 20;
/// Blocks per batch in [`Workload::Pages`], and their size.
pub const PAGE_BATCH: usize = 16;
pub const PAGE_BLOCK: usize = 64 << 10;

impl Inputs {
    /// Full-size inputs (`quick == false`) or a few-second smoke run.
    ///
    /// The arenas of small, mixed and reset stay within the L2 cache (512 KiB or less), so that
    /// they measure the allocator rather than the memory bus.
    pub fn new(quick: bool) -> Self {
        let scale = if quick { 4 } else { 1 };
        let mut rng = XorShift::new(0x9E37_79B9_7F4A_7C15);
        let mixed: Vec<Layout> = (0..8_192 / scale)
            .map(|_| {
                let size = 1 + rng.below(128) as usize;
                let align = 1usize << rng.below(5);
                Layout::from_size_align(size, align).expect("valid layout")
            })
            .collect();
        let mixed_bound = mixed.iter().map(|l| l.size() + l.align() - 1).sum();

        // Function-name-like strings: a few shared prefixes, a varying tail.
        const PREFIXES: [&str; 8] = [
            "std::",
            "core::ptr::",
            "alloc::vec::",
            "tokio::runtime::",
            "_ZN4core3fmt",
            "libdd_profiling::",
            "hashbrown::raw::",
            "",
        ];
        let word_count = 20_000 / scale;
        let words: Vec<String> = (0..word_count)
            .map(|i| {
                let prefix = PREFIXES[rng.below(PREFIXES.len() as u64) as usize];
                let tail_len = 4 + rng.below(48) as usize;
                let mut s = String::with_capacity(prefix.len() + tail_len + 8);
                s.push_str(prefix);
                for _ in 0..tail_len {
                    s.push((b'a' + rng.below(26) as u8) as char);
                }
                s.push_str(&i.to_string());
                s
            })
            .collect();
        // Every word once (in a shuffled order), then three skewed repeat lookups per word.
        let mut lookups: Vec<u32> = (0..word_count as u32).collect();
        for i in (1..lookups.len()).rev() {
            lookups.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for _ in 0..3 * word_count {
            let hot = rng.below(4) != 0;
            let range = if hot { word_count / 100 } else { word_count };
            lookups.push(rng.below(range.max(1) as u64) as u32);
        }

        let reps = if quick {
            [8, 8, 1, 2, 1, 2, 2]
        } else {
            [64, 64, 4, 16, 4, 16, 8]
        };
        Self {
            small_count: 16_384 / scale,
            mixed,
            mixed_bound,
            mixed_memory_passes: 50,
            words,
            lookups,
            vec_len: (1 << 16) / scale,
            reset_cycles: 1_000 / scale,
            reset_batch: 500,
            per_thread: 16_384 / scale,
            page_batches: 100 / scale,
            reps,
        }
    }

    /// Repetitions per sample of `workload`.
    pub fn reps(&self, workload: Workload) -> usize {
        self.reps[workload.index()]
    }
}

/// What one timed sample measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Wall time per operation.
    pub ns_per_op: f64,
    /// Minor page faults per operation (Linux; 0 elsewhere): a check that a workload measures
    /// the allocator, not the kernel.
    pub faults_per_op: f64,
    /// Bytes the arena holds from its backing allocator at the end (None: not measurable).
    pub reserved: Option<usize>,
    /// Bytes the workload asked for (string bytes; the final `Vec` capacity).
    pub requested: usize,
}

/// Minor page faults of this process so far (Linux: `/proc/self/stat`; 0 elsewhere).
pub fn minor_faults() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the parenthesised command name; minflt is field 10 of the whole line.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(7))
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// Runs `f` with the stack moved down by `(k % 16) * 264 + 8` bytes and a heap block of
/// `(k % 16) * 4104 + 24` bytes held, so that the arena and its chunks land at other addresses
/// for each `k`.
///
/// Where an arena's cursor sits relative to the blocks being written (modulo 4 KiB) can make the
/// CPU's memory-dependence prediction stall the loop: the same code then runs 3 to 5 ns per
/// allocation instead of 0.9, for every allocator alike, depending only on addresses. Rotating
/// the addresses over the rounds makes the median the common case instead of one layout's luck.
pub fn on_shifted_stack<R>(k: usize, f: impl FnOnce() -> R) -> R {
    #[inline(never)]
    fn shifted<const N: usize, R>(f: impl FnOnce() -> R) -> R {
        let pad = std::hint::black_box([0u8; N]);
        let out = f();
        std::hint::black_box(&pad);
        out
    }
    let k = k % 16;
    let jitter = std::hint::black_box(vec![0u8; k * 4104 + 24]);
    macro_rules! pick {
        ($($k:literal)*) => {
            match k {
                $($k => shifted::<{ $k * 264 + 8 }, R>(f),)*
                _ => shifted::<8, R>(f),
            }
        };
    }
    let out = pick!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    drop(jitter);
    out
}
