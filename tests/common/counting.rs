//! Counting allocators: two backing allocators that count calls and live bytes and fail on
//! demand ([`Counting`]: counters in a borrowed [`Counts`], single-threaded, faults switchable at
//! any time; [`SyncCounting`]: owned atomic counters, fault schedule fixed at construction), and a
//! counting global allocator ([`CountingGlobal`]); and [`PanicsOn`], a backing allocator that
//! panics on a chosen call.

use libdd_alloc::{AllocError, Allocator, Layout, System};
use std::alloc::GlobalAlloc;
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// What a [`Counting`] allocator saw.
#[derive(Default, Debug)]
pub struct Counts {
    /// Calls to `allocate`/`allocate_zeroed`/`grow`/`grow_zeroed`/`shrink`, successful or not.
    pub calls: Cell<usize>,
    /// Bytes currently handed out (by returned length), summed over live blocks.
    pub live_bytes: Cell<usize>,
    /// Live blocks.
    pub live_blocks: Cell<usize>,
    /// Lengths of the blocks returned by successful `allocate` calls, in order.
    pub allocated: RefCell<Vec<usize>>,
    /// The call number (1-based, counted in `calls`) that fails; 0: none.
    pub fail_on: Cell<usize>,
    /// Every call fails while this is set.
    pub fail_all: Cell<bool>,
    /// Calls that were made to fail.
    pub failures: Cell<usize>,
}

impl Counts {
    pub fn calls(&self) -> usize {
        self.calls.get()
    }
    pub fn live_bytes(&self) -> usize {
        self.live_bytes.get()
    }
    pub fn live_blocks(&self) -> usize {
        self.live_blocks.get()
    }
}

/// Wraps a backing allocator and counts calls and live bytes into a [`Counts`] the test keeps
/// (so it can read them while the arena owns the allocator), which also decides which calls
/// fail, switchable at any time (see [`Counts::fail_on`], 1-based, and [`Counts::fail_all`]).
/// Single-threaded (`Cell`s); checks the size contract of `grow` and `shrink`.
#[derive(Clone)]
pub struct Counting<'a, A> {
    pub inner: A,
    pub counts: &'a Counts,
}

impl<'a, A> Counting<'a, A> {
    pub fn new(inner: A, counts: &'a Counts) -> Self {
        Self { inner, counts }
    }

    fn call(&self) -> Result<(), AllocError> {
        let c = self.counts;
        let n = c.calls.get() + 1;
        c.calls.set(n);
        if c.fail_all.get() || n == c.fail_on.get() {
            c.failures.set(c.failures.get() + 1);
            Err(AllocError)
        } else {
            Ok(())
        }
    }

    fn add(&self, block: NonNull<[u8]>) {
        let c = self.counts;
        c.live_bytes.set(c.live_bytes.get() + block.len());
        c.live_blocks.set(c.live_blocks.get() + 1);
    }

    fn remove(&self, size: usize) {
        let c = self.counts;
        c.live_bytes.set(c.live_bytes.get() - size);
        c.live_blocks.set(c.live_blocks.get() - 1);
    }
}

// SAFETY: forwards every call to `inner`, only counting around it.
unsafe impl<A: Allocator> Allocator for Counting<'_, A> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.call()?;
        let block = self.inner.allocate(layout)?;
        self.add(block);
        self.counts.allocated.borrow_mut().push(block.len());
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // The arenas give back the length they were handed (the contract allows it), so
        // `layout.size()` is exactly what `add` counted.
        self.remove(layout.size());
        // SAFETY: forwarded caller contract.
        unsafe { self.inner.deallocate(ptr, layout) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        assert!(
            new.size() >= old.size(),
            "grow contract: new {new:?} < old {old:?}"
        );
        self.call()?;
        // SAFETY: forwarded caller contract.
        let block = unsafe { self.inner.grow(ptr, old, new) }?;
        self.remove(old.size());
        self.add(block);
        Ok(block)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        assert!(
            new.size() <= old.size(),
            "shrink contract: new {new:?} > old {old:?}"
        );
        self.call()?;
        // SAFETY: forwarded caller contract.
        let block = unsafe { self.inner.shrink(ptr, old, new) }?;
        self.remove(old.size());
        self.add(block);
        Ok(block)
    }
}

/// No fault scheduled.
const NEVER: u64 = u64::MAX;

/// A backing allocator wrapping `A` that owns its counters (atomics: it is `Sync`, can be a
/// `static` and be shared by reference between arenas and threads) and fails on a schedule fixed
/// at construction. Unlike [`Counting`], its calls are numbered from 0, a double free or wrong
/// length panics, and it counts allocations, grows and shrinks separately.
///
/// Fallible calls (`allocate`, `allocate_zeroed`, `grow`, `grow_zeroed`, `shrink`) are numbered
/// from 0. [`fail_on`](Self::fail_on) makes exactly one of them fail; [`fail_from`](Self::fail_from)
/// makes it and every later one fail, like memory that has run out.
pub struct SyncCounting<A> {
    inner: A,
    fail_at: AtomicU64,
    fail_after_too: bool,
    calls: AtomicU64,
    failures: AtomicU64,
    allocations: AtomicU64,
    deallocations: AtomicU64,
    grows: AtomicU64,
    shrinks: AtomicU64,
    live_blocks: AtomicUsize,
    live_bytes: AtomicUsize,
}

impl<A: Allocator> SyncCounting<A> {
    /// Counts, never fails.
    pub const fn new(inner: A) -> Self {
        Self::with_faults(inner, NEVER, false)
    }

    /// Fails fallible call number `n` only.
    pub const fn fail_on(inner: A, n: u64) -> Self {
        Self::with_faults(inner, n, false)
    }

    /// Fails fallible call number `n` and every one after it.
    pub const fn fail_from(inner: A, n: u64) -> Self {
        Self::with_faults(inner, n, true)
    }

    const fn with_faults(inner: A, fail_at: u64, fail_after_too: bool) -> Self {
        Self {
            inner,
            fail_at: AtomicU64::new(fail_at),
            fail_after_too,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
            deallocations: AtomicU64::new(0),
            grows: AtomicU64::new(0),
            shrinks: AtomicU64::new(0),
            live_blocks: AtomicUsize::new(0),
            live_bytes: AtomicUsize::new(0),
        }
    }

    /// Fallible calls made so far (failed ones included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }
    /// Calls failed on purpose so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }
    /// Successful `allocate`/`allocate_zeroed` calls.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Relaxed)
    }
    /// `deallocate` calls.
    pub fn deallocations(&self) -> u64 {
        self.deallocations.load(Relaxed)
    }
    /// Successful `grow`/`grow_zeroed` calls.
    pub fn grows(&self) -> u64 {
        self.grows.load(Relaxed)
    }
    /// Successful `shrink` calls.
    pub fn shrinks(&self) -> u64 {
        self.shrinks.load(Relaxed)
    }
    /// Blocks handed out and not yet given back.
    pub fn live_blocks(&self) -> usize {
        self.live_blocks.load(Relaxed)
    }
    /// Bytes (lengths returned by `A`) handed out and not yet given back.
    pub fn live_bytes(&self) -> usize {
        self.live_bytes.load(Relaxed)
    }

    /// Numbers a fallible call and decides whether it fails.
    fn admit(&self) -> Result<(), AllocError> {
        let call = self.calls.fetch_add(1, Relaxed);
        let fail_at = self.fail_at.load(Relaxed);
        if call == fail_at || (self.fail_after_too && call > fail_at) {
            self.failures.fetch_add(1, Relaxed);
            return Err(AllocError);
        }
        Ok(())
    }

    fn took(&self, block: NonNull<[u8]>) -> NonNull<[u8]> {
        self.live_blocks.fetch_add(1, Relaxed);
        self.live_bytes.fetch_add(block.len(), Relaxed);
        block
    }

    /// Counts a successful resize in `counter`: the block of `old` became `block`.
    fn resized(&self, counter: &AtomicU64, old: Layout, block: NonNull<[u8]>) -> NonNull<[u8]> {
        counter.fetch_add(1, Relaxed);
        self.gave_back(old.size());
        self.took(block)
    }

    /// Forgets a block of `len` bytes; a double free or a wrong length shows as an underflow.
    fn gave_back(&self, len: usize) {
        let blocks = self.live_blocks.fetch_sub(1, Relaxed);
        assert!(blocks > 0, "more blocks given back than taken");
        let bytes = self.live_bytes.fetch_sub(len, Relaxed);
        assert!(bytes >= len, "more bytes given back than taken");
    }
}

// SAFETY: every call is forwarded to `A`; the counters only observe.
unsafe impl<A: Allocator> Allocator for SyncCounting<A> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.admit()?;
        let block = self.inner.allocate(layout)?;
        self.allocations.fetch_add(1, Relaxed);
        Ok(self.took(block))
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.admit()?;
        let block = self.inner.allocate_zeroed(layout)?;
        self.allocations.fetch_add(1, Relaxed);
        Ok(self.took(block))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.deallocations.fetch_add(1, Relaxed);
        // Arenas hand back the length `A` returned, so this is exactly what `took` counted.
        self.gave_back(layout.size());
        // SAFETY: forwarded caller contract.
        unsafe { self.inner.deallocate(ptr, layout) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.admit()?;
        // SAFETY: forwarded caller contract.
        let block = unsafe { self.inner.grow(ptr, old, new) }?;
        Ok(self.resized(&self.grows, old, block))
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.admit()?;
        // SAFETY: forwarded caller contract.
        let block = unsafe { self.inner.grow_zeroed(ptr, old, new) }?;
        Ok(self.resized(&self.grows, old, block))
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.admit()?;
        // SAFETY: forwarded caller contract.
        let block = unsafe { self.inner.shrink(ptr, old, new) }?;
        Ok(self.resized(&self.shrinks, old, block))
    }
}

// ---- A counting global allocator ----

/// A `#[global_allocator]` that forwards to `System` and counts the calls a thread makes while
/// it is watched (see [`global_calls_during`]), so the test harness's own allocations do not
/// interfere. Each test binary that uses it declares its own
/// `#[global_allocator] static GLOBAL: CountingGlobal = CountingGlobal;`.
pub struct CountingGlobal;

thread_local! {
    // `const` and `Copy`: no lazy initialisation and no destructor, so no allocation of their
    // own. Per thread, so that tests running in parallel do not count each other's calls.
    static WATCHED: Cell<bool> = const { Cell::new(false) };
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

fn note_call() {
    if WATCHED.with(Cell::get) {
        CALLS.with(|calls| calls.set(calls.get() + 1));
    }
}

// SAFETY: forwards to `System`, only counting.
unsafe impl GlobalAlloc for CountingGlobal {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_call();
        // SAFETY: forwarded caller contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_call();
        // SAFETY: forwarded caller contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_call();
        // SAFETY: forwarded caller contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        note_call();
        // SAFETY: forwarded caller contract.
        unsafe { System.realloc(ptr, layout, size) }
    }
}

/// Global allocator calls made by this thread while running `f` (counted only when the binary's
/// `#[global_allocator]` is a [`CountingGlobal`]).
pub fn global_calls_during(f: impl FnOnce()) -> usize {
    let before = CALLS.with(Cell::get);
    WATCHED.with(|w| w.set(true));
    f();
    WATCHED.with(|w| w.set(false));
    CALLS.with(Cell::get) - before
}

// ---- A backing allocator that panics ----

/// A backing allocator that panics on its fallible call number `n` (from 0: `allocate`,
/// `allocate_zeroed`, `grow`, `grow_zeroed`, `shrink`) and forwards every call to `A`
/// otherwise: a backing allocator is user code, and may panic.
pub struct PanicsOn<A> {
    inner: A,
    n: u64,
    calls: AtomicU64,
}

impl<A: Allocator> PanicsOn<A> {
    pub const fn new(inner: A, n: u64) -> Self {
        Self {
            inner,
            n,
            calls: AtomicU64::new(0),
        }
    }

    fn admit(&self) {
        let call = self.calls.fetch_add(1, Relaxed);
        assert!(
            call != self.n,
            "backing allocator panics on call {call}, as asked"
        );
    }
}

// SAFETY: every call that does not panic is forwarded to `A`.
unsafe impl<A: Allocator> Allocator for PanicsOn<A> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.admit();
        self.inner.allocate(layout)
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.admit();
        self.inner.allocate_zeroed(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded caller contract.
        unsafe { self.inner.deallocate(ptr, layout) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.admit();
        // SAFETY: forwarded caller contract.
        unsafe { self.inner.grow(ptr, old, new) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.admit();
        // SAFETY: forwarded caller contract.
        unsafe { self.inner.grow_zeroed(ptr, old, new) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.admit();
        // SAFETY: forwarded caller contract.
        unsafe { self.inner.shrink(ptr, old, new) }
    }
}
