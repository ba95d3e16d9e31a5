//! The workloads of `examples/compare.rs` under divan: `cargo bench --bench compare`.
//! (`cargo bench --bench compare -- small` runs one workload.) Each benchmark is one repetition
//! of the workload: a fresh arena, the work, and the drop.

mod common;

use common::contenders::*;
use common::workloads;
use common::{Inputs, PAGE_BATCH};
use divan::counter::ItemsCount;
use divan::Bencher;
use libdd_alloc::{PageAllocator, System, VirtualAllocator};
use std::sync::OnceLock;

fn main() {
    divan::main();
}

fn inputs() -> &'static Inputs {
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    INPUTS.get_or_init(|| Inputs::new(false))
}

#[divan::bench(types = [OursLinear, OursChain, OursSyncLinear, OursSyncChain, OursVirtualArena, UpstreamLinear, UpstreamChain, Bumpalo, BumpScope, Blink, SyncBlink, SystemMalloc])]
fn small<A: Arena>(bencher: Bencher) {
    let inputs = inputs();
    bencher
        .counter(ItemsCount::new(inputs.small_count))
        .bench_local(|| workloads::small_rep::<A>(inputs));
}

#[divan::bench(types = [OursLinear, OursChain, OursSyncLinear, OursSyncChain, OursVirtualArena, UpstreamLinear, UpstreamChain, Bumpalo, BumpScope, Blink, SyncBlink, SystemMalloc])]
fn mixed<A: Arena>(bencher: Bencher) {
    let inputs = inputs();
    bencher
        .counter(ItemsCount::new(inputs.mixed.len()))
        .bench_local(|| workloads::mixed_rep::<A>(inputs));
}

#[divan::bench(types = [OursLinear, OursChainVirtual, OursSyncLinear, OursSyncChainVirtual, OursVirtualArenaFresh, UpstreamLinear, UpstreamChainVirtual, Bumpalo, BumpScope, Blink, SyncBlink, SystemMalloc], sample_count = 20)]
fn strings<A: Arena>(bencher: Bencher) {
    let inputs = inputs();
    bencher
        .counter(ItemsCount::new(inputs.lookups.len()))
        .bench_local(|| workloads::strings_rep::<A>(inputs));
}

#[divan::bench(types = [OursLinear, OursChain, OursSyncLinear, OursSyncChain, OursVirtualArena, UpstreamLinear, UpstreamChain, Bumpalo, BumpScope, Blink, SyncBlink, SystemMalloc])]
fn vec_growth<A: Arena>(bencher: Bencher) {
    let inputs = inputs();
    bencher
        .counter(ItemsCount::new(inputs.vec_len))
        .bench_local(|| workloads::vec_rep::<A>(inputs));
}

#[divan::bench(types = [OursLinear, OursChain, OursSyncLinear, OursSyncChain, OursVirtualArena, UpstreamLinear, UpstreamChain, Bumpalo, BumpScope, Blink, SyncBlink, SystemMalloc])]
fn reset_cycles<A: Arena>(bencher: Bencher) {
    let inputs = inputs();
    bencher
        .counter(ItemsCount::new(inputs.reset_cycles * inputs.reset_batch))
        .bench_local(|| workloads::reset_rep::<A>(inputs));
}

// Thread-safe arenas only.
#[divan::bench(types = [OursSyncLinear, OursSyncChain, SyncBlink])]
fn two_threads<A: Arena + Sync>(bencher: Bencher) {
    let inputs = inputs();
    bencher
        .counter(ItemsCount::new(2 * inputs.per_thread))
        .bench_local(|| workloads::two_threads_rep::<A>(inputs));
}

#[divan::bench]
fn two_threads_system(bencher: Bencher) {
    let inputs = inputs();
    bencher
        .counter(ItemsCount::new(2 * inputs.per_thread))
        .bench_local(|| workloads::system_two_threads_rep(inputs));
}

#[divan::bench(types = [VirtualAllocator, PageAllocator, upstream::VirtualAllocator, System])]
fn pages<P: libdd_alloc::Allocator + Backing>(bencher: Bencher) {
    let inputs = inputs();
    bencher
        .counter(ItemsCount::new(inputs.page_batches * PAGE_BATCH))
        .bench_local(|| workloads::pages_rep::<P>(inputs));
}
