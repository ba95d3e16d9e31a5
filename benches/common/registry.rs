//! The columns of the comparison: which allocator runs which workload.
//!
//! To add an allocator: write its `impl Arena` in `contenders.rs`, then add one line to
//! [`entries`], e.g. `Entry::arena::<OursSyncChain>().shared::<OursSyncChain>().original(UPSTREAM_CHAIN)`.

use super::contenders::*;
use super::workloads;
use super::{Inputs, Sample, Workload};
use libdd_alloc::{Allocator, PageAllocator, System, VirtualAllocator};

/// A timed run of one workload: `Inputs::reps` repetitions, one sample.
pub type Run = fn(&Inputs) -> Sample;

/// One column: an allocator and the workloads it takes part in.
pub struct Entry {
    pub name: &'static str,
    /// The column this one is compared with as "the original" (libdd-alloc 1.0).
    pub original: Option<&'static str>,
    /// One run per workload, indexed by [`Workload::index`]; `None` where it does not apply.
    pub runs: [Option<Run>; 7],
    /// The untimed growth run that measures the memory of the mixed workload.
    pub mixed_memory: Option<Run>,
    /// An untimed run that measures the memory of the `Vec` growth workload, where the timed
    /// run cannot (a reused warm arena).
    pub vec_memory: Option<Run>,
    /// The callgrind driver: `n` allocations of the small or mixed workload.
    pub count: Option<fn(&Inputs, Workload, usize)>,
    /// The callgrind driver of the string table: the first `n` lookups (all misses).
    pub count_strings: Option<fn(&Inputs, usize)>,
}

pub const UPSTREAM_LINEAR: &str = "upstream Linear";
pub const UPSTREAM_CHAIN: &str = "upstream Chain";
pub const UPSTREAM_VIRTUAL: &str = "upstream Virtual";

/// Every column, in table order.
pub fn entries() -> Vec<Entry> {
    vec![
        Entry::arena::<OursLinear>().original(UPSTREAM_LINEAR),
        Entry::arena::<OursChain>()
            .strings::<OursChainVirtual>()
            .original(UPSTREAM_CHAIN),
        Entry::arena::<OursSyncLinear>()
            .shared::<OursSyncLinear>()
            .original(UPSTREAM_LINEAR),
        Entry::arena::<OursSyncChain>()
            .strings::<OursSyncChainVirtual>()
            .shared::<OursSyncChain>()
            .original(UPSTREAM_CHAIN),
        Entry::arena::<OursLocal>()
            .with(Workload::TwoThreads, workloads::two_threads_local)
            .original(UPSTREAM_CHAIN),
        Entry::arena::<OursVirtualArena>()
            .strings::<OursVirtualArenaFresh>()
            .memory::<OursVirtualArenaFresh>()
            .original(UPSTREAM_CHAIN),
        Entry::pages_only::<VirtualAllocator>("ours Virtual").original(UPSTREAM_VIRTUAL),
        Entry::pages_only::<PageAllocator>("ours Page").original(UPSTREAM_VIRTUAL),
        Entry::arena::<UpstreamLinear>(),
        Entry::arena::<UpstreamChain>().strings::<UpstreamChainVirtual>(),
        Entry::pages_only::<upstream::VirtualAllocator>(UPSTREAM_VIRTUAL),
        Entry::arena::<Bumpalo>(),
        Entry::arena::<BumpScope>(),
        Entry::arena::<Blink>().with(Workload::TwoThreads, workloads::two_threads_blink_local),
        Entry::arena::<SyncBlink>().shared::<SyncBlink>(),
        Entry::arena::<SystemMalloc>()
            .with(Workload::TwoThreads, workloads::system_two_threads)
            .pages::<System>(),
    ]
}

/// The column each workload's times are divided by in the "x reference" ratios and the chart.
pub fn reference(workload: Workload) -> &'static str {
    match workload {
        Workload::TwoThreads | Workload::Pages => "System",
        _ => "bumpalo",
    }
}

/// A command-line name: `ours Chain` -> `ours-chain`.
pub fn slug(name: &str) -> String {
    name.to_lowercase().replace(' ', "-")
}

impl Entry {
    fn empty(name: &'static str) -> Self {
        Self {
            name,
            original: None,
            runs: [None; 7],
            mixed_memory: None,
            vec_memory: None,
            count: None,
            count_strings: None,
        }
    }

    /// An arena in the single-threaded workloads (small, mixed, strings, Vec growth, reset).
    pub fn arena<A: Arena>() -> Self {
        let mut entry = Self::empty(A::NAME)
            .with(Workload::Small, workloads::small::<A>)
            .with(Workload::Mixed, workloads::mixed::<A>)
            .with(Workload::Strings, workloads::strings::<A>)
            .with(Workload::VecGrowth, workloads::vec_growth::<A>)
            .with(Workload::Reset, workloads::reset_cycles::<A>);
        entry.mixed_memory = Some(workloads::mixed_memory::<A>);
        entry.count = Some(workloads::count::<A>);
        entry.count_strings = Some(workloads::count_strings::<A>);
        entry
    }

    /// A page allocator, in the page workload only.
    pub fn pages_only<P: Allocator + Backing>(name: &'static str) -> Self {
        Self::empty(name).pages::<P>()
    }

    /// Also runs the page workload with `P`.
    pub fn pages<P: Allocator + Backing>(self) -> Self {
        self.with(Workload::Pages, workloads::pages::<P>)
    }

    /// Runs the string table with the arena `S` instead (same allocator, other backing).
    pub fn strings<S: Arena>(mut self) -> Self {
        self.count_strings = Some(workloads::count_strings::<S>);
        self.with(Workload::Strings, workloads::strings::<S>)
    }

    /// Measures the memory figures (mixed growth, `Vec` growth) with the arena `S` instead, in
    /// untimed runs: for arenas whose timed runs reuse a warm arena.
    pub fn memory<S: Arena>(mut self) -> Self {
        self.mixed_memory = Some(workloads::mixed_memory::<S>);
        self.vec_memory = Some(workloads::vec_memory::<S>);
        self
    }

    /// Also runs the two-thread workload, sharing one `S`.
    pub fn shared<S: Arena + Sync>(self) -> Self {
        self.with(Workload::TwoThreads, workloads::two_threads::<S>)
    }

    /// Compares this column with `original` in the "vs the original" table.
    pub fn original(mut self, original: &'static str) -> Self {
        self.original = Some(original);
        self
    }

    /// Sets the run of one workload.
    pub fn with(mut self, workload: Workload, run: Run) -> Self {
        self.runs[workload.index()] = Some(run);
        self
    }

    /// The run of `workload`, if this column takes part.
    pub fn run(&self, workload: Workload) -> Option<Run> {
        self.runs[workload.index()]
    }
}
