//! Helpers shared by the integration tests: backing allocators that count or fail, and fill
//! patterns that prove blocks do not overlap.
#![allow(dead_code)] // each test file uses a different subset

use libdd_alloc::{
    AllocError, Allocator, ChainAllocator, Layout, LinearAllocator, SyncChainAllocator,
    SyncLinearAllocator, SyncVirtualArena, VirtualArena,
};
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

/// What a [`Counting`] allocator saw.
#[derive(Default, Debug)]
pub struct Counts {
    /// Calls to `allocate`/`allocate_zeroed`/`grow`/`grow_zeroed`/`shrink`, successful or not.
    pub calls: Cell<usize>,
    /// Bytes currently handed out (by returned length), summed over live blocks.
    pub live_bytes: Cell<usize>,
    /// Live blocks.
    pub live_blocks: Cell<usize>,
    /// Calls to `deallocate`.
    pub deallocations: Cell<usize>,
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

/// Wraps a backing allocator and counts calls and live bytes into a shared [`Counts`], which
/// also decides which calls fail (see [`Counts::fail_on`] and [`Counts::fail_all`]).
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
        self.counts
            .deallocations
            .set(self.counts.deallocations.get() + 1);
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

/// The byte pattern for block number `id` at offset `i`: different blocks differ at (almost)
/// every offset, so an overlap shows up when the blocks are checked.
pub fn pattern(id: usize, i: usize) -> u8 {
    (id.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (id >> 8)) as u8
}

/// Fills `len` bytes at `ptr` with block `id`'s pattern.
///
/// # Safety
/// `[ptr, ptr + len)` is valid for writes.
pub unsafe fn fill(ptr: NonNull<u8>, len: usize, id: usize) {
    for i in 0..len {
        // SAFETY: per the caller.
        unsafe { ptr.add(i).write(pattern(id, i)) };
    }
}

/// Checks that the first `len` bytes at `ptr` still hold block `id`'s pattern.
///
/// # Safety
/// `[ptr, ptr + len)` is valid for reads.
pub unsafe fn check(ptr: NonNull<u8>, len: usize, id: usize) {
    for i in 0..len {
        // SAFETY: per the caller.
        let byte = unsafe { ptr.add(i).read() };
        assert_eq!(
            byte,
            pattern(id, i),
            "block {id} changed at offset {i} of {len}"
        );
    }
}

pub fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

pub fn addr(block: NonNull<[u8]>) -> usize {
    block.cast::<u8>().as_ptr() as usize
}

/// Whether the test runs under valgrind, whose `memalign` aborts on alignments above 2^24 and
/// more: tests cap the alignments they ask of `System` there.
pub fn under_valgrind() -> bool {
    std::env::var("LD_PRELOAD").is_ok_and(|p| p.contains("vgpreload"))
}

/// The statistics every arena has, for tests generic over arenas.
pub trait Stats {
    fn used(&self) -> usize;
    fn reserved(&self) -> usize;
}

macro_rules! stats {
    ($([$($generics:tt)*] $ty:ty),* $(,)?) => {$(
        impl<$($generics)*> Stats for $ty {
            fn used(&self) -> usize {
                self.used_bytes()
            }
            fn reserved(&self) -> usize {
                self.reserved_bytes()
            }
        }
    )*};
}
stats!(
    [A: Allocator] LinearAllocator<A>,
    [A: Allocator] ChainAllocator<A>,
    [] VirtualArena,
    [A: Allocator] SyncLinearAllocator<A>,
    [A: Allocator] SyncChainAllocator<A>,
    [] SyncVirtualArena,
);
