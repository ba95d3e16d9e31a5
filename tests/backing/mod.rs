//! Helpers shared by the hardening tests: a backing allocator that counts every call and every
//! live byte and can fail on demand, fill patterns, and a forked child for tests that must not
//! disturb the test process (address-space limits, checks on unmapped pages).
#![allow(dead_code)]

use libdd_alloc::{AllocError, Allocator, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// No fault scheduled.
const NEVER: u64 = u64::MAX;

/// A backing allocator wrapping `A` that counts calls and live blocks, and fails on demand.
///
/// Fallible calls (`allocate`, `allocate_zeroed`, `grow`, `grow_zeroed`, `shrink`) are numbered
/// from 0. [`fail_on`](Self::fail_on) makes exactly one of them fail; [`fail_from`](Self::fail_from)
/// makes it and every later one fail, like memory that has run out.
pub struct Counting<A> {
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

impl<A: Allocator> Counting<A> {
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

    fn took(&self, block: NonNull<[u8]>) {
        self.live_blocks.fetch_add(1, Relaxed);
        self.live_bytes.fetch_add(block.len(), Relaxed);
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
unsafe impl<A: Allocator> Allocator for Counting<A> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.admit()?;
        let block = self.inner.allocate(layout)?;
        self.allocations.fetch_add(1, Relaxed);
        self.took(block);
        Ok(block)
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.admit()?;
        let block = self.inner.allocate_zeroed(layout)?;
        self.allocations.fetch_add(1, Relaxed);
        self.took(block);
        Ok(block)
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
        self.grows.fetch_add(1, Relaxed);
        self.gave_back(old.size());
        self.took(block);
        Ok(block)
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
        self.grows.fetch_add(1, Relaxed);
        self.gave_back(old.size());
        self.took(block);
        Ok(block)
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
        self.shrinks.fetch_add(1, Relaxed);
        self.gave_back(old.size());
        self.took(block);
        Ok(block)
    }
}

/// The byte at offset `i` of a block filled with `seed`.
pub fn pattern(seed: u8, i: usize) -> u8 {
    seed.wrapping_mul(0x9D) ^ (i as u8) ^ ((i >> 8) as u8).wrapping_mul(7)
}

/// Fills `len` bytes at `ptr` with the pattern of `seed`.
///
/// # Safety
/// `[ptr, ptr + len)` is a live block owned by the caller.
pub unsafe fn fill(ptr: NonNull<u8>, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: inside the block, per the caller.
        unsafe { ptr.add(i).write(pattern(seed, i)) };
    }
}

/// Whether `len` bytes at `ptr` hold the pattern of `seed`.
///
/// # Safety
/// `[ptr, ptr + len)` is a live block owned by the caller.
pub unsafe fn holds(ptr: NonNull<u8>, len: usize, seed: u8) -> bool {
    // SAFETY: inside the block, per the caller.
    (0..len).all(|i| unsafe { ptr.add(i).read() } == pattern(seed, i))
}

/// Runs `body` in a forked child and returns its exit code (or `128 + signal` if it was killed).
///
/// The child shares nothing with the test threads of the parent that could be mid-way through a
/// lock: `body` must not allocate from the global allocator, print or panic (each of those may
/// take a lock another thread held at fork time). It reports through the code it returns; the
/// child then leaves with `_exit`, running no destructors.
pub fn in_forked_child(body: fn() -> i32) -> i32 {
    // SAFETY: the child only runs `body`, which by contract uses no lock-taking function, then
    // calls `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = body();
        // SAFETY: `_exit` ends the child without touching the parent's state.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid failed");
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// Pages of address space the process has mapped, read from `/proc/self/statm` with raw calls
/// (no allocation: this runs in a forked child).
pub fn mapped_pages() -> Option<usize> {
    let mut buf = [0u8; 64];
    // SAFETY: a NUL-terminated path; `buf` is a valid buffer of its length.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let text = buf.get(..usize::try_from(n).ok()?)?;
    let mut pages = 0usize;
    for &byte in text.iter().take_while(|b| b.is_ascii_digit()) {
        pages = pages
            .checked_mul(10)?
            .checked_add(usize::from(byte - b'0'))?;
    }
    Some(pages)
}

/// Whether the test runs under valgrind, whose own mappings (shadow memory, its address-space
/// manager) show in `/proc/self/statm`, so page-exact address-space checks cannot hold there.
pub fn under_valgrind() -> bool {
    std::env::var("LD_PRELOAD").is_ok_and(|preload| preload.contains("vgpreload"))
}
