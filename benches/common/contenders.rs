//! One small adapter per allocator, behind the [`Arena`] trait the workloads are generic over.
//!
//! Each adapter uses the allocator's own fastest fallible entry point for a raw [`Layout`]
//! (`allocate`, `try_alloc_layout`, `try_allocate_layout`), so that every arena's fast path is
//! inlined into the same benchmark loop. Chained arenas get their backing from the system
//! allocator in the CPU workloads, so that a fresh arena per repetition reuses warm heap pages
//! instead of measuring page faults; the string table uses `VirtualAllocator` for ours and the
//! original, as a profiler does.

use super::Capacity;
use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use libdd_alloc::{
    Allocator, ChainAllocator, LinearAllocator, LocalHandle, PageAllocator, PageOptions,
    SyncChainAllocator, SyncLinearAllocator, System, VirtualAllocator, VirtualArena,
};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// An arena as the workloads see it.
pub trait Arena: Sized {
    /// Column name.
    const NAME: &'static str;

    /// A fixed-size arena (sized by the caller, so its memory figures say nothing).
    const FIXED_SIZE: bool = false;

    /// A fresh arena sized by `capacity`.
    fn new(capacity: Capacity) -> Self;

    /// Allocates a block of the non-zero-size `layout`; panics (out of line) on failure.
    fn alloc(&self, layout: Layout) -> NonNull<u8>;

    /// Frees every allocation. Arenas without a reset are dropped and created again.
    fn reset(&mut self);

    /// Bytes currently taken from the backing allocator, if the arena can tell.
    fn reserved_bytes(&self) -> Option<usize>;

    /// Copies `s` into the arena.
    #[inline(always)]
    fn alloc_str(&self, s: &str) -> &str {
        let layout = Layout::for_value(s);
        if layout.size() == 0 {
            return "";
        }
        let ptr = self.alloc(layout);
        // SAFETY: the block is fresh, `s.len()` bytes long and cannot overlap `s`; its bytes are a
        // copy of valid UTF-8, and it lives as long as the arena, which `&self` borrows.
        unsafe {
            core::ptr::copy_nonoverlapping(s.as_ptr(), ptr.as_ptr(), s.len());
            core::str::from_utf8_unchecked(core::slice::from_raw_parts(ptr.as_ptr(), s.len()))
        }
    }

    /// Pushes `n` values into a `Vec<u64>` that lives in the arena; returns the final capacity in
    /// bytes, or `None` when the arena cannot hold a growable `Vec`.
    fn vec_push(&self, n: usize) -> Option<usize>;
}

/// The failure path every adapter shares: never taken in these workloads.
#[cold]
#[inline(never)]
pub fn out_of_memory() -> ! {
    panic!("benchmark arena ran out of memory")
}

/// Pushes `n` values into an `allocator_api2` 0.2 `Vec` in `alloc`; returns its capacity in bytes.
#[inline(always)]
pub fn vec_push_api2<A: Allocator>(alloc: A, n: usize) -> usize {
    let mut v = allocator_api2::vec::Vec::<u64, A>::new_in(alloc);
    for i in 0..n {
        v.push(i as u64);
    }
    std::hint::black_box(v.as_ptr());
    v.capacity() * 8
}

/// Pushes `n` values into an `allocator_api2` 0.4 `Vec` in `alloc` (blink-alloc's trait).
#[inline(always)]
pub fn vec_push_api2_04<A: allocator_api2_04::alloc::Allocator>(alloc: A, n: usize) -> usize {
    let mut v = allocator_api2_04::vec::Vec::<u64, A>::new_in(alloc);
    for i in 0..n {
        v.push(i as u64);
    }
    std::hint::black_box(v.as_ptr());
    v.capacity() * 8
}

#[inline(always)]
fn block(result: Result<NonNull<[u8]>, impl Sized>) -> NonNull<u8> {
    match result {
        Ok(block) => block.cast(),
        Err(_) => out_of_memory(),
    }
}

// ----- ours ---------------------------------------------------------------------------------

/// The `Arena` methods every one of our arenas implements the same way: forward to the arena.
macro_rules! ours_arena_methods {
    () => {
        #[inline(always)]
        fn alloc(&self, layout: Layout) -> NonNull<u8> {
            block(self.0.allocate(layout))
        }
        fn reset(&mut self) {
            self.0.reset();
        }
        fn reserved_bytes(&self) -> Option<usize> {
            Some(self.0.reserved_bytes())
        }
        fn vec_push(&self, n: usize) -> Option<usize> {
            Some(vec_push_api2(&self.0, n))
        }
    };
}

/// `LinearAllocator<System>`: one buffer of `capacity.total` bytes.
pub struct OursLinear(LinearAllocator<System>);

impl Arena for OursLinear {
    const NAME: &'static str = "ours Linear";
    const FIXED_SIZE: bool = true;
    fn new(capacity: Capacity) -> Self {
        let layout = Layout::from_size_align(capacity.total, 16).expect("layout");
        Self(LinearAllocator::new_in(layout, System).expect("buffer"))
    }
    ours_arena_methods!();
}

/// `ChainAllocator<B>`: a first chunk of `capacity.first_chunk` bytes plus the chunk header.
pub struct OursChain<B: Allocator = System>(ChainAllocator<B>);

/// Ours, backed by `VirtualAllocator`: the string table's arena.
pub type OursChainVirtual = OursChain<VirtualAllocator>;

impl<B: Allocator + Backing> Arena for OursChain<B> {
    const NAME: &'static str = "ours Chain";
    fn new(capacity: Capacity) -> Self {
        let hint = capacity.first_chunk + ChainAllocator::<B>::CHAIN_NODE_OVERHEAD;
        Self(ChainAllocator::new_in(hint, B::backing()).expect("first chunk"))
    }
    ours_arena_methods!();
}

/// `SyncLinearAllocator<System>`: one buffer of `capacity.total` bytes, atomic cursor.
pub struct OursSyncLinear(SyncLinearAllocator<System>);

impl Arena for OursSyncLinear {
    const NAME: &'static str = "ours SyncLinear";
    const FIXED_SIZE: bool = true;
    fn new(capacity: Capacity) -> Self {
        let layout = Layout::from_size_align(capacity.total, 16).expect("layout");
        Self(SyncLinearAllocator::new_in(layout, System).expect("buffer"))
    }
    ours_arena_methods!();
}

/// `SyncChainAllocator<B>`: a first chunk of `capacity.first_chunk` bytes plus the chunk header.
pub struct OursSyncChain<B: Allocator = System>(SyncChainAllocator<B>);

/// The lock-free chain, backed by `VirtualAllocator`: the string table's arena.
pub type OursSyncChainVirtual = OursSyncChain<VirtualAllocator>;

impl<B: Allocator + Backing> Arena for OursSyncChain<B> {
    const NAME: &'static str = "ours SyncChain";
    fn new(capacity: Capacity) -> Self {
        let hint = capacity.first_chunk + SyncChainAllocator::<B>::CHAIN_NODE_OVERHEAD;
        Self(SyncChainAllocator::new_in(hint, B::backing()).expect("first chunk"))
    }
    ours_arena_methods!();
}

/// A thread-owned [`LocalHandle`] on a `SyncChainAllocator<System>` (first chunk as for
/// [`OursSyncChain`]): the shared arena at per-thread speed. The handle borrows the boxed arena,
/// which the adapter owns and drops after it.
pub struct OursLocal {
    handle: core::mem::ManuallyDrop<LocalHandle<'static, SyncChainAllocator<System>>>,
    arena: Box<SyncChainAllocator<System>>,
}

impl OursLocal {
    fn handle(
        arena: &SyncChainAllocator<System>,
    ) -> core::mem::ManuallyDrop<LocalHandle<'static, SyncChainAllocator<System>>> {
        // SAFETY: the arena is boxed (it does not move) and outlives the handle: `reset` and
        // drop drop the handle before they touch or drop the arena.
        core::mem::ManuallyDrop::new(unsafe {
            core::mem::transmute::<
                LocalHandle<'_, SyncChainAllocator<System>>,
                LocalHandle<'static, SyncChainAllocator<System>>,
            >(arena.local())
        })
    }
}

impl Drop for OursLocal {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, before the arena (a field dropped after this body).
        unsafe { core::mem::ManuallyDrop::drop(&mut self.handle) };
    }
}

impl Arena for OursLocal {
    const NAME: &'static str = "ours Local";
    fn new(capacity: Capacity) -> Self {
        let hint = capacity.first_chunk + SyncChainAllocator::<System>::CHAIN_NODE_OVERHEAD;
        let arena = Box::new(SyncChainAllocator::new_in(hint, System).expect("first chunk"));
        Self {
            handle: Self::handle(&arena),
            arena,
        }
    }
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> NonNull<u8> {
        block(self.handle.allocate(layout))
    }
    fn reset(&mut self) {
        // SAFETY: dropped once; replaced below before any other use.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.handle) };
        self.arena.reset();
        self.handle = Self::handle(&self.arena);
    }
    fn reserved_bytes(&self) -> Option<usize> {
        Some(self.arena.reserved_bytes())
    }
    fn vec_push(&self, n: usize) -> Option<usize> {
        Some(vec_push_api2(&*self.handle, n))
    }
}

/// Address space reserved by every `VirtualArena` of the benchmarks (nothing is committed until
/// used).
const VIRTUAL_ARENA_RESERVATION: usize = 1 << 30;

thread_local! {
    /// The warm `VirtualArena` of [`OursVirtualArena`], between two repetitions.
    static WARM_VIRTUAL_ARENA: RefCell<Option<VirtualArena>> = const { RefCell::new(None) };
}

/// `VirtualArena` (one reservation, committed in steps), **reused warm**: `new` takes this
/// thread's arena (reset, its committed pages still resident) instead of mapping a fresh one,
/// and drop resets it and puts it back. A fresh reservation per repetition would measure the
/// kernel's page faults (one per 4 KiB the workload touches) rather than the allocator, as
/// malloc-backed chunks would if malloc did not recycle warm memory. Its memory figures are
/// those of [`OursVirtualArenaFresh`] (the warm arena's commit is a high-water mark of earlier
/// workloads).
pub struct OursVirtualArena(Option<VirtualArena>);

impl Arena for OursVirtualArena {
    const NAME: &'static str = "ours VirtualArena";
    fn new(_: Capacity) -> Self {
        let warm = WARM_VIRTUAL_ARENA.with(|slot| slot.borrow_mut().take());
        Self(Some(warm.unwrap_or_else(|| {
            VirtualArena::new(VIRTUAL_ARENA_RESERVATION).expect("reservation")
        })))
    }
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> NonNull<u8> {
        match &self.0 {
            Some(arena) => block(arena.allocate(layout)),
            None => out_of_memory(),
        }
    }
    fn reset(&mut self) {
        if let Some(arena) = &mut self.0 {
            arena.reset();
        }
    }
    fn reserved_bytes(&self) -> Option<usize> {
        None
    }
    fn vec_push(&self, n: usize) -> Option<usize> {
        self.0.as_ref().map(|arena| vec_push_api2(arena, n))
    }
}

impl Drop for OursVirtualArena {
    fn drop(&mut self) {
        if let Some(mut arena) = self.0.take() {
            arena.reset();
            WARM_VIRTUAL_ARENA.with(|slot| *slot.borrow_mut() = Some(arena));
        }
    }
}

/// `VirtualArena`, a fresh reservation per arena: the string table (as a profiler uses it,
/// like `ChainAllocator<VirtualAllocator>`) and the memory figures (`committed_bytes`).
pub struct OursVirtualArenaFresh(VirtualArena);

impl Arena for OursVirtualArenaFresh {
    const NAME: &'static str = "ours VirtualArena";
    fn new(_: Capacity) -> Self {
        Self(VirtualArena::new(VIRTUAL_ARENA_RESERVATION).expect("reservation"))
    }
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> NonNull<u8> {
        block(self.0.allocate(layout))
    }
    fn reset(&mut self) {
        self.0.reset();
    }
    fn reserved_bytes(&self) -> Option<usize> {
        Some(self.0.committed_bytes())
    }
    fn vec_push(&self, n: usize) -> Option<usize> {
        Some(vec_push_api2(&self.0, n))
    }
}

/// How an adapter generic over its backing allocator gets one.
pub trait Backing {
    fn backing() -> Self;
}
impl Backing for System {
    fn backing() -> Self {
        System
    }
}
impl Backing for VirtualAllocator {
    fn backing() -> Self {
        VirtualAllocator {}
    }
}
impl Backing for PageAllocator {
    fn backing() -> Self {
        PageAllocator::new(PageOptions::new()).expect("page allocator")
    }
}
impl Backing for upstream::VirtualAllocator {
    fn backing() -> Self {
        upstream::VirtualAllocator {}
    }
}

// ----- the original: libdd-alloc 1.0 ---------------------------------------------------------

/// libdd-alloc 1.0's `LinearAllocator<System>`. It has no `reset`: `reset` makes a new one.
pub struct UpstreamLinear {
    arena: upstream::LinearAllocator<System>,
    capacity: Capacity,
}

impl Arena for UpstreamLinear {
    const NAME: &'static str = "upstream Linear";
    const FIXED_SIZE: bool = true;
    fn new(capacity: Capacity) -> Self {
        let layout = Layout::from_size_align(capacity.total, 16).expect("layout");
        let arena = upstream::LinearAllocator::new_in(layout, System).expect("buffer");
        Self { arena, capacity }
    }
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> NonNull<u8> {
        block(self.arena.allocate(layout))
    }
    fn reset(&mut self) {
        *self = Self::new(self.capacity);
    }
    fn reserved_bytes(&self) -> Option<usize> {
        Some(self.arena.reserved_bytes())
    }
    fn vec_push(&self, n: usize) -> Option<usize> {
        Some(vec_push_api2(&self.arena, n))
    }
}

/// libdd-alloc 1.0's `ChainAllocator<B>` (fixed-size chunks; `new_in` is a `const fn`). It has
/// no `reset`: `reset` makes a new one.
pub struct UpstreamChain<B: Allocator + Clone = System> {
    arena: upstream::ChainAllocator<B>,
    capacity: Capacity,
}

/// The original, backed by its `VirtualAllocator`: the string table's arena.
pub type UpstreamChainVirtual = UpstreamChain<upstream::VirtualAllocator>;

impl<B: Allocator + Clone + Backing> Arena for UpstreamChain<B> {
    const NAME: &'static str = "upstream Chain";
    fn new(capacity: Capacity) -> Self {
        let hint = capacity.first_chunk + upstream::ChainAllocator::<B>::CHAIN_NODE_OVERHEAD;
        let arena = upstream::ChainAllocator::new_in(hint, B::backing());
        Self { arena, capacity }
    }
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> NonNull<u8> {
        block(self.arena.allocate(layout))
    }
    fn reset(&mut self) {
        *self = Self::new(self.capacity);
    }
    fn reserved_bytes(&self) -> Option<usize> {
        Some(self.arena.reserved_bytes())
    }
    fn vec_push(&self, n: usize) -> Option<usize> {
        Some(vec_push_api2(&self.arena, n))
    }
}

// ----- peers ----------------------------------------------------------------------------------

/// `bumpalo::Bump` (bumps downwards, chunks from the global allocator).
pub struct Bumpalo(bumpalo::Bump);

impl Arena for Bumpalo {
    const NAME: &'static str = "bumpalo";
    fn new(capacity: Capacity) -> Self {
        Self(bumpalo::Bump::with_capacity(capacity.first_chunk))
    }
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> NonNull<u8> {
        match self.0.try_alloc_layout(layout) {
            Ok(ptr) => ptr,
            Err(_) => out_of_memory(),
        }
    }
    fn reset(&mut self) {
        self.0.reset();
    }
    fn reserved_bytes(&self) -> Option<usize> {
        Some(self.0.allocated_bytes_including_metadata())
    }
    #[inline(always)]
    fn alloc_str(&self, s: &str) -> &str {
        self.0.alloc_str(s)
    }
    fn vec_push(&self, n: usize) -> Option<usize> {
        Some(vec_push_api2(&self.0, n))
    }
}

/// `bump_scope::Bump` with default settings (bumps upwards, chunks from the global allocator).
pub struct BumpScope(bump_scope::Bump);

impl Arena for BumpScope {
    const NAME: &'static str = "bump-scope";
    fn new(capacity: Capacity) -> Self {
        let layout = Layout::from_size_align(capacity.first_chunk, 1).expect("layout");
        Self(bump_scope::Bump::with_capacity(layout))
    }
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> NonNull<u8> {
        use bump_scope::traits::BumpAllocatorTyped;
        match self.0.try_allocate_layout(layout) {
            Ok(ptr) => ptr,
            Err(_) => out_of_memory(),
        }
    }
    fn reset(&mut self) {
        self.0.reset();
    }
    fn reserved_bytes(&self) -> Option<usize> {
        Some(self.0.stats().size())
    }
    #[inline(always)]
    fn alloc_str(&self, s: &str) -> &str {
        match self.0.try_alloc_str(s) {
            Ok(s) => s.into_ref(),
            Err(_) => out_of_memory(),
        }
    }
    fn vec_push(&self, n: usize) -> Option<usize> {
        Some(vec_push_api2(&self.0, n))
    }
}

/// The global allocator (allocator-api2 0.4, blink-alloc's trait), counting the bytes it holds, so
/// that blink-alloc's memory can be reported: it has no statistics of its own.
#[derive(Clone, Default)]
pub struct CountingGlobal(Arc<AtomicUsize>);

// SAFETY: forwards to the global allocator; the counter does not affect the blocks.
unsafe impl allocator_api2_04::alloc::Allocator for CountingGlobal {
    fn allocate(
        &self,
        layout: Layout,
    ) -> Result<NonNull<[u8]>, allocator_api2_04::alloc::AllocError> {
        let block = allocator_api2_04::alloc::Global.allocate(layout)?;
        self.0.fetch_add(block.len(), Ordering::Relaxed);
        Ok(block)
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.0.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded caller contract; the block came from `Global`.
        unsafe { allocator_api2_04::alloc::Global.deallocate(ptr, layout) }
    }
}

/// `blink_alloc::BlinkAlloc` (single-threaded), chunks from the global allocator.
pub struct Blink(blink_alloc::BlinkAlloc<CountingGlobal>, CountingGlobal);

impl Arena for Blink {
    const NAME: &'static str = "blink";
    fn new(capacity: Capacity) -> Self {
        let counter = CountingGlobal::default();
        let arena =
            blink_alloc::BlinkAlloc::with_chunk_size_in(capacity.first_chunk, counter.clone());
        Self(arena, counter)
    }
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> NonNull<u8> {
        block(self.0.allocate(layout))
    }
    fn reset(&mut self) {
        self.0.reset();
    }
    fn reserved_bytes(&self) -> Option<usize> {
        Some((self.1).0.load(Ordering::Relaxed))
    }
    fn vec_push(&self, n: usize) -> Option<usize> {
        Some(vec_push_api2_04(&self.0, n))
    }
}

/// `blink_alloc::SyncBlinkAlloc`: blink-alloc's thread-safe arena, shared directly (not through
/// per-thread `local()` proxies, which would be one arena per thread).
pub struct SyncBlink(blink_alloc::SyncBlinkAlloc<CountingGlobal>, CountingGlobal);

impl Arena for SyncBlink {
    const NAME: &'static str = "blink Sync";
    fn new(capacity: Capacity) -> Self {
        let counter = CountingGlobal::default();
        let arena =
            blink_alloc::SyncBlinkAlloc::with_chunk_size_in(capacity.first_chunk, counter.clone());
        Self(arena, counter)
    }
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> NonNull<u8> {
        block(self.0.allocate(layout))
    }
    fn reset(&mut self) {
        self.0.reset();
    }
    fn reserved_bytes(&self) -> Option<usize> {
        Some((self.1).0.load(Ordering::Relaxed))
    }
    fn vec_push(&self, n: usize) -> Option<usize> {
        Some(vec_push_api2_04(&self.0, n))
    }
}

/// The system allocator (`malloc`), with every block recorded so that `reset` and drop free them:
/// the cost of freeing is part of its time, as the arenas' reset is part of theirs.
pub struct SystemMalloc {
    blocks: UnsafeCell<Vec<(NonNull<u8>, Layout)>>,
}

impl Arena for SystemMalloc {
    const NAME: &'static str = "System";
    fn new(capacity: Capacity) -> Self {
        Self {
            blocks: UnsafeCell::new(Vec::with_capacity(capacity.count)),
        }
    }
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> NonNull<u8> {
        let ptr = block(System.allocate(layout));
        // SAFETY: `SystemMalloc` is not `Sync` and this is the only access to `blocks` while it
        // runs (no reference to it escapes).
        unsafe { (*self.blocks.get()).push((ptr, layout)) };
        ptr
    }
    fn reset(&mut self) {
        for (ptr, layout) in self.blocks.get_mut().drain(..) {
            // SAFETY: each recorded block came from `System` with this layout, and is freed once.
            unsafe { System.deallocate(ptr, layout) };
        }
    }
    fn reserved_bytes(&self) -> Option<usize> {
        None
    }
    fn vec_push(&self, n: usize) -> Option<usize> {
        Some(vec_push_api2(System, n))
    }
}

impl Drop for SystemMalloc {
    fn drop(&mut self) {
        self.reset();
    }
}
