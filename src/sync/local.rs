//! [`LocalHandle`]: a thread-owned handle on a lock-free arena that bumps inside a slab of it
//! without a locked instruction, and stays reentrant from signal handlers on its own thread.

use super::mark::Mark;
use crate::bump::{dangling, fit, resize_last};
use crate::resize::LastBlock;
#[cfg(any(unix, windows))]
use crate::SyncVirtualArena;
use crate::{AllocError, Allocator, Arena, Layout};
use crate::{SyncChainAllocator, SyncLinearAllocator};
use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Size of a handle's first slab.
const FIRST_SLAB: usize = 1 << 10;
/// Slabs double up to this size.
const MAX_SLAB: usize = 64 << 10;
/// A request larger than the current slab's size divided by this (its alignment padding counted
/// at its worst) goes to the shared arena directly, so that the tail a slab loses when it is
/// replaced, which is smaller than the request that did not fit, is at most this fraction of it.
const LARGE_FRACTION: usize = 8;

mod sealed {
    use crate::{Allocator, Layout};
    use core::ptr::NonNull;

    /// What a [`LocalHandle`](super::LocalHandle) needs from the arena it claims slabs from: its
    /// lock-free allocation, and in-place changes to its most recent block (a slab tail given
    /// back, a slab grown in place), each one compare-exchange.
    pub trait Sealed: Allocator {
        /// Gives back `[ptr, ptr + size)` if it is the arena's most recent claim.
        fn release_last(&self, ptr: NonNull<u8>, size: usize);
        /// The largest slab worth claiming: one that fits a regular chunk (a larger one would
        /// get a chunk of its own, past the arena's chunk bound).
        fn largest_slab(&self) -> usize {
            usize::MAX
        }
        /// Resizes the arena's most recent claim `[ptr, ptr + old_size)` in place.
        fn resize_last(
            &self,
            ptr: NonNull<u8>,
            old_size: usize,
            new: Layout,
        ) -> Option<NonNull<[u8]>>;
    }
}

/// The lock-free arenas a [`LocalHandle`] can be taken on: [`SyncChainAllocator`],
/// [`SyncVirtualArena`] and [`SyncLinearAllocator`]. Sealed: it cannot be implemented outside
/// this crate.
pub trait LocalSource: sealed::Sealed {}

impl<A: Allocator> sealed::Sealed for SyncChainAllocator<A> {
    #[inline]
    fn release_last(&self, ptr: NonNull<u8>, size: usize) {
        LastBlock::release_if_last(self, ptr, size);
    }
    #[inline]
    fn resize_last(&self, ptr: NonNull<u8>, old: usize, new: Layout) -> Option<NonNull<[u8]>> {
        LastBlock::resize_last_in_place(self, ptr, old, new)
    }
    fn largest_slab(&self) -> usize {
        self.max_chunk_size()
            .saturating_sub(Self::CHAIN_NODE_OVERHEAD)
            .max(FIRST_SLAB)
    }
}
impl<A: Allocator> LocalSource for SyncChainAllocator<A> {}

impl<A: Allocator> sealed::Sealed for SyncLinearAllocator<A> {
    #[inline]
    fn release_last(&self, ptr: NonNull<u8>, size: usize) {
        self.last_block().release_if_last(ptr, size);
    }
    #[inline]
    fn resize_last(&self, ptr: NonNull<u8>, old: usize, new: Layout) -> Option<NonNull<[u8]>> {
        self.last_block().resize_last_in_place(ptr, old, new)
    }
}
impl<A: Allocator> LocalSource for SyncLinearAllocator<A> {}

#[cfg(any(unix, windows))]
impl sealed::Sealed for SyncVirtualArena {
    #[inline]
    fn release_last(&self, ptr: NonNull<u8>, size: usize) {
        super::virtual_arena::LastOf(self).release_if_last(ptr, size);
    }
    #[inline]
    fn resize_last(&self, ptr: NonNull<u8>, old: usize, new: Layout) -> Option<NonNull<[u8]>> {
        super::virtual_arena::LastOf(self).resize_last_in_place(ptr, old, new)
    }
}
#[cfg(any(unix, windows))]
impl LocalSource for SyncVirtualArena {}

/// A thread-owned handle on a lock-free arena ([`SyncChainAllocator`], [`SyncVirtualArena`] or
/// [`SyncLinearAllocator`], from their `local()` method): it claims a *slab* of the shared arena
/// with one compare-exchange, then bumps inside it with plain loads and stores, no locked
/// instruction, so that each thread allocates at the speed of a `Cell` arena while all of them
/// share one arena (and its memory budget).
///
/// It is `!Sync` (one thread uses it; [`Send`] when the arena is `Sync`) and borrows the arena,
/// so `reset(&mut self)` cannot run while a handle lives. It implements [`Allocator`] and
/// [`Arena`], so `Vec::new_in(&handle)` and [`try_alloc_str`](Arena::try_alloc_str) work. Its
/// most recent block grows, shrinks and is given back in place; a growth past the slab's end
/// grows the slab in place first, when the slab is still the arena's most recent claim, so a
/// lone handle's block keeps its address whenever it would on the arena directly. Blocks stay
/// valid until the *arena* is reset or dropped: dropping the handle frees nothing handed out.
///
/// # Slabs
/// The first slab is 1 KiB; each new one doubles, up to 64 KiB (and, on a
/// [`SyncChainAllocator`], to what a chunk of its maximum size holds, so that slabs never get
/// chunks of their own). When a request does not fit,
/// the handle first grows its slab in place (when the slab is still the arena's most recent
/// claim, the usual case for a thread alone), by the next slab's size or, at the end of a
/// chunk, by the largest half, quarter, ... of it that still fits, so that a lone handle fills
/// a chunk in a few refills; otherwise it gives the unused tail back (one
/// compare-exchange, which succeeds when the slab is still the arena's last claim) and claims a
/// new slab. A request larger than an eighth of the current slab (its size plus its alignment
/// minus one, the padding it may need; before the first slab, an eighth of that slab's size) is
/// served by the shared arena directly and keeps the slab, so a replaced slab loses at most an
/// eighth of itself. If the
/// arena cannot give a whole slab, the handle asks it for the request alone: the handle fails
/// only when the arena does.
///
/// # Statistics
/// [`used_bytes`](Self::used_bytes) counts the bytes this handle handed out of its slabs
/// (alignment padding included); blocks it served from the shared arena (large requests, or
/// a reentrant call, see below) count in the arena's statistics only. The arena counts a live
/// handle's whole slab as used. When the handle is dropped it gives its slab's unused tail back
/// if that slab is still the arena's last claim; a tail it could not give back (another thread
/// claimed after it) stays counted as used by the arena. A handle alone on its arena whose
/// slab stayed the arena's last claim (every request fit it, growing it in place, and so did
/// every growth of its most recent block) therefore leaves the arena's `used_bytes` exactly as
/// if it had allocated, grown, shrunk and given back from the arena directly; a
/// request the arena served directly, or a slab that could not grow in place (the end of a
/// `SyncChainAllocator` chunk), leaves that slab's unused tail counted as used.
///
/// # Signal safety
/// Reentrant on its own thread: a signal handler that interrupts the handle anywhere, even
/// inside an allocation, and allocates from the same handle gets a disjoint block. The handle's
/// state is a mark, its cursor `cur` and the slab's end `limit`. `cur` and `limit` are relaxed
/// atomics (plain loads and stores), ordered by compiler fences
/// ([`compiler_fence`](core::sync::atomic::compiler_fence)), as that function's docs describe
/// for signal handlers; the mark is a counter: *free*, *held* by the outermost call,
/// or held with `k` nested calls in progress on top of it. Every operation that writes the slab
/// state (allocation, deallocation, in-place resizing, slab refill) runs the same protocol; the
/// statistics only read it, and a handler that reads them mid-refill gets a snapshot, never a
/// panic.
///
/// 1. take the mark: one step down, in one step that a signal cannot split (below); if it was
///    not free, go to step 6;
/// 2. a compiler fence;
/// 3. load `cur` and `limit`, compute the block with the shared bump arithmetic;
/// 4. store the new `cur` (or, when the slab is full, replace the slab, still holding the
///    mark);
/// 5. a compiler fence, then store *free*; return.
/// 6. (nested) use the shared arena's own lock-free path, which hands out disjoint blocks by
///    compare-exchange; a nested deallocation or in-place resize does nothing (the block stays
///    allocated; a grow moves it). Then give back the one step this call took (a compiler
///    fence, a load and a store of the value one step up): a nested call never frees a mark it
///    did not take.
///
/// Taking the mark is one instruction on x86_64 when built by rustc 1.87 or later (a non-`lock`
/// `dec` of the mark and a branch on its result, through `asm!` label operands; the build
/// script detects the compiler), and a relaxed load then a relaxed store elsewhere (and below
/// 1.87, under loom, and under Miri). Both are atomic with respect to a handler on the same
/// thread: an instruction cannot be split (a signal is delivered between instructions, so H
/// runs wholly before the `dec` or wholly after it), and a handler that lands between the load
/// and the store gives back every step it took before the interrupted code resumes, so the
/// store writes what it would have written without it.
///
/// Why no byte is handed out twice, by where a handler H (which itself runs these steps on
/// the same handle, to completion, before the interrupted code resumes: handlers nest LIFO)
/// lands in the interrupted code's operation:
/// - before step 1 (or inside the portable step 1, between its load and its store): the mark
///   is free, so H runs the whole protocol and leaves the mark free and `cur`/`limit`
///   consistent. The interrupted code has read nothing but the mark (which H restored), so it
///   proceeds on H's final state.
/// - between step 1 and step 5's store (the held window, which is every read and write of
///   `cur` and `limit`): H finds the mark held and takes step 6. It does not read or write the
///   slab state, so the interrupted read-compute-store is not disturbed, and its block comes
///   from the shared arena, disjoint from the slab (which the arena handed to this handle by
///   compare-exchange) and from every other block.
/// - after step 5's store: the operation is complete; H starts from a consistent state.
///
/// The same holds for a handler that interrupts a nested (step 6) call, or the slow path: the
/// mark is still held. Because nested calls give back only their own steps, the slow path
/// tells from the mark's value alone whether its call holds the mark or is nested. Replacing
/// a slab calls the arena (and through it the backing allocator) holding the mark, with the
/// state consistent (the old slab's tail already given back or kept), so a backing allocator
/// that fails, panics or calls back into this handle leaves it consistent; if it unwinds, the
/// mark is given back. Growing a slab in place (a refill, or the growth of the most recent
/// block past the slab's end) calls only the arena's in-place resize of its last claim, which
/// calls no backing allocator, holding the mark; `limit` is stored before `cur` moves past the
/// old end, so the state is consistent at every instruction. The compiler fences (and the
/// `asm!` block, which may read and write any memory, so the compiler moves no access across
/// it) keep the compiler from moving the state's loads and stores out of the window, and
/// order each holder's accesses after the previous holder's: so the holder may read `limit`
/// with a plain load, which the compiler folds into the fit check. The CPU needs no fence, since a signal handler runs on the same
/// core, in program order with the code it interrupted. Nesting deeper than 2^32 - 2 calls
/// would wrap the counter; signal handlers nest a few levels at most.
///
/// Whether a slab refill is async-signal-safe depends on the arena's backing allocator, as
/// described on the arena; inside a slab an allocation calls nothing.
///
/// The argument covers one thread and its own signal handlers only. A handle is `Send`, not
/// `Sync`: after moving it to another thread, a handler of the old thread that still holds a
/// pointer to it races the new owner (a data race, the caller's to prevent, e.g. by clearing
/// the pointer with the signal blocked before the move).
///
/// # Examples
/// ```
/// use libdd_alloc::{Allocator, Arena, Layout, SyncChainAllocator, VirtualAllocator};
///
/// let arena = SyncChainAllocator::new_in(1 << 20, VirtualAllocator {})?;
/// std::thread::scope(|s| {
///     for t in 0..2 {
///         let arena = &arena;
///         s.spawn(move || {
///             let local = arena.local();
///             for i in 0..1000u64 {
///                 let x = local.try_alloc(i * t).unwrap();
///                 assert_eq!(*x, i * t);
///             }
///             assert_eq!(local.used_bytes(), 8000);
///         });
///     }
/// });
/// assert!(arena.used_bytes() >= 2 * 8000);
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
///
/// A handle cannot be shared between threads (each thread takes its own):
/// ```compile_fail
/// use libdd_alloc::{SyncChainAllocator, System};
/// let arena = SyncChainAllocator::new_in(4096, System).unwrap();
/// let local = arena.local();
/// std::thread::scope(|s| {
///     s.spawn(|| drop(&local)); // error: `LocalHandle` is not `Sync`
/// });
/// ```
///
/// # Rewind
/// A handle does not implement [`Rewind`](crate::Rewind): a checkpoint taken in an older slab
/// could not be rolled back to (that slab's tail may belong to another thread by now), so
/// `rewind` could not keep its promise of freeing everything allocated since. Roll back the
/// arena itself (`&mut`, once the handles are dropped).
pub struct LocalHandle<'a, A: LocalSource> {
    arena: &'a A,
    /// Held while an operation reads or writes the slab state (the mark of the protocol).
    mark: Mark,
    /// First free byte of the slab; carries the slab's provenance.
    cur: AtomicPtr<u8>,
    /// One past the slab (0 before the first slab: nothing fits).
    limit: AtomicUsize,
    /// First byte of the slab (0 before the first).
    slab_start: AtomicUsize,
    /// Bytes handed out of the slabs before the current one.
    earlier_used: AtomicUsize,
    /// Size of the next slab (or of the current one's in-place growth).
    next_slab: AtomicUsize,
    /// Allocations that found the mark set and went to the shared arena.
    interrupted: AtomicUsize,
    /// `!Sync`: the protocol orders accesses on one thread (and its signal handlers) only.
    _not_sync: PhantomData<Cell<()>>,
}

/// Gives the mark back when the slow path returns, or if a call into the arena (and so into a
/// backing allocator) unwinds: as the holder (`true`) or as a nested call.
struct GiveBack<'h>(&'h Mark, bool);

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.exit();
        } else {
            self.0.leave_nested();
        }
    }
}

impl<'a, A: LocalSource> LocalHandle<'a, A> {
    /// A handle with no slab yet: the first allocation claims one.
    pub(crate) fn new(arena: &'a A) -> Self {
        Self {
            arena,
            mark: Mark::new(),
            cur: AtomicPtr::new(core::ptr::null_mut()),
            limit: AtomicUsize::new(0),
            slab_start: AtomicUsize::new(0),
            earlier_used: AtomicUsize::new(0),
            next_slab: AtomicUsize::new(FIRST_SLAB),
            interrupted: AtomicUsize::new(0),
            _not_sync: PhantomData,
        }
    }

    /// The arena this handle claims its slabs from, e.g. to read its statistics.
    ///
    /// ```
    /// # use libdd_alloc::{SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(4096, System)?;
    /// let local = arena.local();
    /// assert_eq!(local.arena().reserved_bytes(), 4096);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn arena(&self) -> &'a A {
        self.arena
    }

    /// Bytes this handle handed out of its slabs, alignment padding included (not the blocks it
    /// served from the shared arena directly). O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(1 << 16, System)?;
    /// let local = arena.local();
    /// local.allocate(Layout::new::<u8>())?;
    /// local.allocate(Layout::from_size_align(8, 8)?)?;
    /// assert_eq!(local.used_bytes(), 16); // 1 byte, 7 of padding, 8 bytes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn used_bytes(&self) -> usize {
        // Wrapping: a handler that reads this while the interrupted code installs a slab may see
        // a cursor and a start of different slabs (a snapshot, never a panic).
        let current = self
            .cur
            .load(Ordering::Relaxed)
            .addr()
            .wrapping_sub(self.slab_start.load(Ordering::Relaxed));
        self.earlier_used
            .load(Ordering::Relaxed)
            .wrapping_add(current)
    }

    /// Bytes left in the current slab: allocations that fit there touch no shared state. O(1).
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(1 << 16, System)?;
    /// let local = arena.local();
    /// assert_eq!(local.remaining_capacity(), 0); // no slab yet
    /// local.allocate(Layout::new::<u64>())?;
    /// assert_eq!(local.remaining_capacity(), 1024 - 8); // the first slab is 1 KiB
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn remaining_capacity(&self) -> usize {
        self.limit
            .load(Ordering::Relaxed)
            .saturating_sub(self.cur.load(Ordering::Relaxed).addr())
    }

    /// Allocations that interrupted another call on this handle (a signal handler that landed
    /// inside it) and were therefore served by the shared arena. O(1); a count kept with plain
    /// loads and stores, which may miss one when such calls nest.
    ///
    /// ```
    /// # use libdd_alloc::{Allocator, Layout, SyncChainAllocator, System};
    /// let arena = SyncChainAllocator::new_in(4096, System)?;
    /// let local = arena.local();
    /// local.allocate(Layout::new::<u64>())?;
    /// assert_eq!(local.interrupted_allocations(), 0);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn interrupted_allocations(&self) -> usize {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Every allocation the slab cannot serve at once, behind one call site and with no flag,
    /// so that the fast path returns its block straight to the caller (with two slow calls, or
    /// a flag, LLVM tests the fast path's block for null again, or keeps the flag in a
    /// register). Entered with the mark taken; the mark's value says by whom: this call holds
    /// it and the slab has no room (the slow path of step 4), or this call interrupted another
    /// on this handle (step 6). Gives the mark back (step 5) before it returns or unwinds.
    #[cold]
    #[inline(never)]
    fn allocate_slow(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let holder = self.mark.held_by_caller();
        let _give_back = GiveBack(&self.mark, holder);
        if !holder {
            let count = self.interrupted.load(Ordering::Relaxed);
            self.interrupted
                .store(count.wrapping_add(1), Ordering::Relaxed);
            return self.arena.allocate(layout);
        }
        self.refill_marked(layout)
    }

    /// Doubles the next slab's size, up to the bound.
    fn grow_next_slab(&self, slab: usize) {
        let bound = MAX_SLAB.min(sealed::Sealed::largest_slab(self.arena));
        self.next_slab
            .store(slab.saturating_mul(2).min(bound), Ordering::Relaxed);
    }

    /// The slab's end, read by a holder of the mark with a plain (non-atomic) load, which the
    /// compiler may fold into the fit check's compare, as the `Cell` arenas' is.
    #[inline(always)]
    fn limit_held(&self) -> usize {
        // SAFETY: the caller holds the mark. Every write of `limit` after `new` is made by a
        // holder of the mark (the slow path), and the holders on this thread (the interrupted code
        // and the signal handlers that ran while the mark was free) are ordered by
        // happens-before: each gives the mark back with a compiler fence then a store, and the
        // next one takes it by reading that store, then a compiler fence (the fence-to-fence
        // synchronization of `compiler_fence`, as C++'s `atomic_signal_fence`). So this read
        // races with no write; the statistics, which read `limit` without the mark, only read.
        // Another thread never touches `limit` meanwhile: the handle is `!Sync`, and moving it
        // (`Send`) synchronizes.
        unsafe { *self.limit.as_ptr() }
    }

    /// Bumps `layout` out of `[cur, limit)` and stores the new cursor. Under the mark.
    #[inline(always)]
    fn bump_in(&self, cur: *mut u8, limit: usize, layout: Layout) -> Option<NonNull<[u8]>> {
        let fit = fit(cur.addr(), limit, layout)?;
        self.cur
            .store(cur.with_addr(fit.new_cur), Ordering::Relaxed);
        // SAFETY: `fit.start` lies in `[cur, limit)` of the slab (fit guarantees it), so it is
        // not null; `with_addr` keeps the slab's provenance, which `cur` carries.
        let start = unsafe { NonNull::new_unchecked(cur.with_addr(fit.start)) };
        Some(NonNull::slice_from_raw_parts(start, layout.size()))
    }

    /// Grows the current slab in place so that it reaches at least `needed_end` (an address past
    /// `limit`), if the slab is still the arena's most recent claim; returns the new `limit`,
    /// already stored. Under the mark, held by the calling call, with a slab installed.
    ///
    /// By a slab or, at the end of a chunk, by the largest half, quarter, ... of one that fits,
    /// and at last by exactly what is needed: a lone handle fills a chunk as direct allocation
    /// would, in a few growths (each at least halves the room left) rather than one per
    /// request. Each attempt is one call of the arena's in-place resize of its last block (one
    /// compare-exchange; on `SyncVirtualArena` it may commit pages first), which calls no
    /// backing allocator: nothing here unwinds or re-enters the handle, except a signal
    /// handler, which finds the mark held and leaves the slab state alone. An attempt takes
    /// effect whole or not at all, so on `None` the slab is as it was.
    fn grow_slab_in_place(&self, needed_end: usize) -> Option<usize> {
        let start = self.slab_start.load(Ordering::Relaxed);
        let limit = self.limit.load(Ordering::Relaxed);
        let slab = self.next_slab.load(Ordering::Relaxed);
        let start_ptr = NonNull::new(self.cur.load(Ordering::Relaxed).with_addr(start))?;
        let len = limit - start;
        let needed = needed_end.checked_sub(start)?;
        let mut step = slab;
        let grown = loop {
            let new_len = len.saturating_add(step).max(needed);
            let grown = Layout::from_size_align(new_len, 1)
                .ok()
                .and_then(|new| self.arena.resize_last(start_ptr, len, new));
            if grown.is_some() || new_len == needed {
                break grown;
            }
            step /= 2;
        }?;
        let limit = start + grown.len();
        self.limit.store(limit, Ordering::Relaxed);
        self.grow_next_slab(slab);
        Some(limit)
    }

    /// The slow path, under the mark: the slab has no room for `layout`. Grows the slab in
    /// place, or gives its tail back and claims a new one, or serves a large request from the
    /// arena. Before each call into the arena the state is consistent (a slab whose every free
    /// byte is ours), so a backing allocator that unwinds or re-enters finds it so.
    fn refill_marked(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let slab = self.next_slab.load(Ordering::Relaxed);
        let cur = self.cur.load(Ordering::Relaxed);
        let limit = self.limit.load(Ordering::Relaxed);
        let start = self.slab_start.load(Ordering::Relaxed);
        // The tail lost if the slab is replaced is below the request, padding included.
        let current = match limit - start {
            0 => slab,
            len => len,
        };
        if layout.size().saturating_add(layout.align() - 1) > current / LARGE_FRACTION {
            return self.arena.allocate(layout);
        }
        if start != 0 {
            // Grow the slab in place while it is the arena's most recent claim.
            let grown = fit(cur.addr(), usize::MAX, layout)
                .and_then(|fit| self.grow_slab_in_place(fit.new_cur));
            if let Some(limit) = grown {
                if let Some(block) = self.bump_in(cur, limit, layout) {
                    return Ok(block);
                }
            }
            // Give the tail back (one compare-exchange; kept, and counted as used by the arena,
            // if another claim followed the slab) and keep a full slab until the next one.
            let limit = self.limit.load(Ordering::Relaxed);
            if let Some(tail) = NonNull::new(cur) {
                self.arena.release_last(tail, limit - cur.addr());
            }
            self.limit.store(cur.addr(), Ordering::Relaxed);
        }
        let claimed = Layout::from_size_align(slab.max(layout.size()), layout.align())
            .map_err(|_| AllocError)
            .and_then(|slab_layout| self.arena.allocate(slab_layout));
        let Ok(memory) = claimed else {
            // Not a whole slab: the arena may still have room for the request alone.
            return self.arena.allocate(layout);
        };
        let new_start = memory.cast::<u8>().as_ptr();
        self.earlier_used
            .store(self.used_bytes(), Ordering::Relaxed);
        // Install: the slab is ours alone (the arena handed it out by compare-exchange).
        self.slab_start.store(new_start.addr(), Ordering::Relaxed);
        self.cur.store(new_start, Ordering::Relaxed);
        let limit = new_start.addr() + memory.len();
        self.limit.store(limit, Ordering::Relaxed);
        self.grow_next_slab(slab);
        // The slab was sized and aligned for the request, so this fits.
        self.bump_in(new_start, limit, layout).ok_or(AllocError)
    }
}

impl<A: LocalSource> Drop for LocalHandle<'_, A> {
    /// Gives the unused tail of the slab back to the arena, if the slab is still its last claim.
    ///
    /// Holding the mark for good: a signal handler that still reaches the handle through a
    /// pointer (a profiler that drops it with the signal unblocked) takes the shared path
    /// instead of bumping a block out of the tail this gives back.
    fn drop(&mut self) {
        self.mark.hold_for_good();
        let cur = self.cur.load(Ordering::Relaxed);
        let limit = self.limit.load(Ordering::Relaxed);
        if let Some(tail) = NonNull::new(cur) {
            if limit > cur.addr() {
                self.arena.release_last(tail, limit - cur.addr());
            }
        }
    }
}

impl<A: LocalSource> core::fmt::Debug for LocalHandle<'_, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalHandle")
            .field("used_bytes", &self.used_bytes())
            .field("remaining_capacity", &self.remaining_capacity())
            .finish_non_exhaustive()
    }
}

impl<A: LocalSource> LocalHandle<'_, A> {
    /// Whether `block` (the address of a live block of this handle) lies in the current slab.
    /// Under the mark. A block outside it is one the arena served directly, or one of an older
    /// slab: the arena's in-place operations are right for both, as they act only on a block
    /// that ends at the arena's cursor, and every byte past that cursor is free (a live slab
    /// lies below it).
    #[inline(always)]
    fn in_slab(&self, block: usize) -> bool {
        block >= self.slab_start.load(Ordering::Relaxed)
            && block < self.limit.load(Ordering::Relaxed)
    }

    /// The cursor after growing the slab's most recent block `[block, block + old_size)` to
    /// `new_size` bytes past the slab's end: the slab grows in place first (when it is still the
    /// arena's most recent claim), then the block, so that the block keeps its address and the
    /// bytes used are those the arena would use for its own last block. `None` (the block will
    /// move) when the block is not the slab's most recent one or the slab cannot grow. Under the
    /// mark, held by the calling call; `cur` is the cursor it read.
    ///
    /// Invariants for the protocol on the type: the slab state is consistent at every
    /// instruction (the slab's new end is stored before the cursor moves into it, and the bytes
    /// between are the slab's, free), and the arena is called only to grow the slab, as a
    /// refill does (see [`grow_slab_in_place`](Self::grow_slab_in_place)).
    #[cold]
    #[inline(never)]
    fn grow_last_past_slab_end(
        &self,
        cur: usize,
        block: usize,
        old_size: usize,
        new_size: usize,
    ) -> Option<usize> {
        // Only the most recent block: growing the slab for an older one would waste its room.
        if block.wrapping_add(old_size) != cur {
            return None;
        }
        let limit = self.grow_slab_in_place(block.checked_add(new_size)?)?;
        resize_last(cur, limit, block, old_size, new_size)
    }
}

/// The handle's most recent block, for `resize.rs`: in place under the mark, inside the
/// current slab by the handle's cursor, outside it by the arena's; a nested call leaves the
/// block as it is.
impl<A: LocalSource> LastBlock for LocalHandle<'_, A> {
    #[inline]
    fn release_if_last(&self, ptr: NonNull<u8>, size: usize) {
        if !self.mark.enter() {
            self.mark.leave_nested();
            return;
        }
        let cur = self.cur.load(Ordering::Relaxed);
        let block = ptr.as_ptr().addr();
        if self.in_slab(block) {
            if block.wrapping_add(size) == cur.addr() {
                self.cur.store(cur.with_addr(block), Ordering::Relaxed);
            }
        } else {
            // A block the arena served directly (large, or a fallback): the arena's own
            // compare-exchange gives it back if it is still the arena's most recent block.
            self.arena.release_last(ptr, size);
        }
        self.mark.exit();
    }

    #[inline]
    fn resize_last_in_place(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        let block = ptr.as_ptr().addr();
        if block & (new.align() - 1) != 0 {
            return None;
        }
        if !self.mark.enter() {
            self.mark.leave_nested();
            return None;
        }
        let cur = self.cur.load(Ordering::Relaxed);
        let resized = if self.in_slab(block) {
            let limit = self.limit.load(Ordering::Relaxed);
            resize_last(cur.addr(), limit, block, old_size, new.size())
                .or_else(|| self.grow_last_past_slab_end(cur.addr(), block, old_size, new.size()))
                .map(|new_cur| {
                    self.cur.store(cur.with_addr(new_cur), Ordering::Relaxed);
                    NonNull::slice_from_raw_parts(ptr, new.size())
                })
        } else {
            // Served by the arena directly: in place if it is the arena's most recent block.
            self.arena.resize_last(ptr, old_size, new)
        };
        self.mark.exit();
        resized
    }
}

// SAFETY: a block is handed out either from the handle's slab, by moving the cursor past it
// under the mark (the protocol on the type: no other call reads or writes the cursor in that
// window), or by the arena's own lock-free allocation. A slab is a block the arena handed to
// this handle alone, so the two kinds are disjoint. Blocks live until the arena is reset
// (`&mut`, impossible while the handle borrows it) or dropped. Only the most recent block of
// the current slab is resized or given back in place.
unsafe impl<A: LocalSource> Allocator for LocalHandle<'_, A> {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        if self.mark.enter() {
            let cur = self.cur.load(Ordering::Relaxed);
            if let Some(block) = self.bump_in(cur, self.limit_held(), layout) {
                self.mark.exit();
                return Ok(block);
            }
        }
        self.allocate_slow(layout)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            self.release_if_last(ptr, layout.size());
        }
    }

    crate::resize::forward_resize!(|arena| arena);
}

// SAFETY: the handle's blocks are disjoint (see the `Allocator` impl) and stay valid until the
// arena is used through `&mut` or dropped, which the handle's borrow of the arena rules out
// while a reference it returned (which borrows the handle) lives.
unsafe impl<A: LocalSource> Arena for LocalHandle<'_, A> {}

// SAFETY: the handle's blocks are blocks of its arena (slabs of it, or its own blocks), so its
// records go on the arena's list, which runs them before those bytes are reclaimed. Pushing is
// lock-free on the arena's atomic head, so a handler on this thread may push too.
unsafe impl<A: LocalSource + crate::DropArena> crate::DropArena for LocalHandle<'_, A> {
    type Position = A::Position;

    #[inline]
    unsafe fn push_drop(&self, record: NonNull<u8>, end: usize) {
        // SAFETY: forwarded caller contract; the record's block is in the arena.
        unsafe { self.arena.push_drop(record, end) };
    }
}

// SAFETY: the handle's blocks are its arena's, which pins: forgetting the handle leaves them in
// the arena, which frees them only through `&mut`, after their destructors.
unsafe impl<A: LocalSource + crate::PinArena> crate::PinArena for LocalHandle<'_, A> {}

macro_rules! local_constructor {
    ($($(#[$attr:meta])* [$($generics:tt)*] $ty:ty, $example:literal;)*) => {$(
        $(#[$attr])*
        impl<$($generics)*> $ty {
            /// A thread-owned handle that allocates from this arena without a locked
            /// instruction, in slabs it claims from the arena: see [`LocalHandle`]. It borrows
            /// the arena, so the arena cannot be reset while it lives. Takes no memory until its
            /// first allocation.
            ///
            /// # Examples
            /// ```
            #[doc = $example]
            /// ```
            pub fn local(&self) -> LocalHandle<'_, Self> {
                LocalHandle::new(self)
            }
        }
    )*};
}

local_constructor! {
    [A: Allocator] SyncChainAllocator<A>,
    "use libdd_alloc::{Arena, SyncChainAllocator, VirtualAllocator};\n\
     let arena = SyncChainAllocator::new_in(1 << 16, VirtualAllocator {})?;\n\
     let local = arena.local();\n\
     assert_eq!(local.try_alloc_str(\"frame\")?, \"frame\");\n\
     # Ok::<(), libdd_alloc::AllocError>(())";
    [A: Allocator] SyncLinearAllocator<A>,
    "use libdd_alloc::{Arena, Layout, SyncLinearAllocator, System};\n\
     let arena = SyncLinearAllocator::new_in(Layout::array::<u8>(1 << 16)?, System)?;\n\
     let local = arena.local();\n\
     assert_eq!(*local.try_alloc(7u32)?, 7);\n\
     # Ok::<(), Box<dyn std::error::Error>>(())";
    #[cfg(any(unix, windows))]
    [] SyncVirtualArena,
    "use libdd_alloc::{Arena, SyncVirtualArena};\n\
     let arena = SyncVirtualArena::new(1 << 30)?;\n\
     let local = arena.local();\n\
     assert_eq!(local.try_alloc_slice_copy(&[1u64, 2])?, &[1, 2]);\n\
     # Ok::<(), libdd_alloc::AllocError>(())";
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::System;
    use std::vec::Vec;

    type Chain = SyncChainAllocator<System>;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn is_send_but_not_sync() {
        fn send<T: Send>() {}
        send::<LocalHandle<'static, Chain>>();
        // `!Sync` is pinned by the `compile_fail` example on `LocalHandle`.
    }

    #[test]
    fn allocations_pack_exactly_inside_one_slab() {
        let arena = Chain::new_in(1 << 16, System).unwrap();
        let local = arena.local();
        let a = local.allocate(layout(8, 8)).unwrap();
        let b = local.allocate(layout(1, 1)).unwrap();
        let c = local.allocate(layout(8, 8)).unwrap();
        let (a, b, c) = (
            a.cast::<u8>().as_ptr().addr(),
            b.cast::<u8>().as_ptr().addr(),
            c.cast::<u8>().as_ptr().addr(),
        );
        assert_eq!((b - a, c - a), (8, 16));
        assert_eq!(local.used_bytes(), 24);
        assert_eq!(local.remaining_capacity(), FIRST_SLAB - 24);
    }

    #[test]
    fn a_lone_handle_grows_its_slab_in_place_and_leaves_the_arena_as_direct_allocation_would() {
        let direct = Chain::new_in(1 << 20, System).unwrap();
        let arena = Chain::new_in(1 << 20, System).unwrap();
        let used_before = arena.used_bytes();
        {
            let local = arena.local();
            let mut prev_end = None;
            for i in 0..10_000usize {
                let l = layout(1 + i % 100, 1 << (i % 4));
                direct.allocate(l).unwrap();
                let block = local.allocate(l).unwrap();
                let start = block.cast::<u8>().as_ptr().addr();
                if let Some(end) = prev_end {
                    // One contiguous run: every refill grew the slab in place.
                    assert!(start >= end && start - end < l.align());
                }
                prev_end = Some(start + l.size());
            }
            assert_eq!(local.used_bytes(), direct.used_bytes() - used_before);
        }
        assert_eq!(arena.used_bytes(), direct.used_bytes());
        assert_eq!(arena.reserved_bytes(), direct.reserved_bytes());
    }

    #[test]
    fn a_lone_handle_takes_the_end_of_a_chunk_in_a_few_refills_not_one_per_request() {
        let arena = Chain::new_in(100_000, System).unwrap();
        let local = arena.local();
        let l = layout(8, 8);
        let first = local.allocate(l).unwrap().cast::<u8>().as_ptr().addr();
        let slab = local.slab_start.load(Ordering::Relaxed);
        let (mut refills, mut limit, mut end) = (0, local.limit.load(Ordering::Relaxed), first + 8);
        loop {
            let start = local.allocate(l).unwrap().cast::<u8>().as_ptr().addr();
            if local.slab_start.load(Ordering::Relaxed) != slab {
                break; // the chunk is full: a new slab in a new chunk
            }
            // One contiguous run to the chunk's end, as direct allocation would give.
            assert_eq!(start, end);
            end = start + 8;
            let now = local.limit.load(Ordering::Relaxed);
            if now != limit {
                (refills, limit) = (refills + 1, now);
            }
        }
        // The slab grew to the very end of the chunk: no room left there for 8 bytes.
        let usable = 100_000 - Chain::CHAIN_NODE_OVERHEAD;
        assert!(
            end - slab <= usable && end - slab + 8 > usable,
            "{}",
            end - slab
        );
        // 1 KiB doubling to 64 KiB reaches 63 KiB in 6 growths; the last 36 KiB or so take one
        // growth per halving (about 12), where growing by the request alone took 4,500.
        assert!(refills <= 24, "{refills} refills");
    }

    #[test]
    fn slabs_start_at_one_kib_and_double_up_to_the_bound() {
        let arena = Chain::new_in(8 << 20, System).unwrap();
        let other = arena.local();
        let local = arena.local();
        let mut sizes = Vec::new();
        for _ in 0..200_000 {
            if local.remaining_capacity() < 8 {
                // Make every slab non-last, so that the next one is a fresh claim.
                other.allocate(layout(1, 1)).unwrap();
                local.allocate(layout(8, 8)).unwrap();
                sizes.push(local.remaining_capacity() + 8);
            } else {
                local.allocate(layout(8, 8)).unwrap();
            }
        }
        assert_eq!(
            &sizes[..8],
            &[
                1 << 10,
                2 << 10,
                4 << 10,
                8 << 10,
                16 << 10,
                32 << 10,
                64 << 10,
                64 << 10
            ]
        );
    }

    #[test]
    fn a_large_request_goes_to_the_arena_and_keeps_the_slab() {
        let arena = Chain::new_in(1 << 20, System).unwrap();
        let local = arena.local();
        local.allocate(layout(8, 8)).unwrap();
        let remaining = local.remaining_capacity();
        let big = local.allocate(layout(FIRST_SLAB, 8)).unwrap();
        assert_eq!(big.len(), FIRST_SLAB);
        assert_eq!(local.remaining_capacity(), remaining);
        assert_eq!(local.used_bytes(), 8);
    }

    #[test]
    fn dropping_the_handle_gives_the_tail_back_only_when_the_slab_is_the_last_claim() {
        let arena = Chain::new_in(1 << 20, System).unwrap();
        let base = arena.used_bytes();
        {
            let local = arena.local();
            local.allocate(layout(24, 8)).unwrap();
            assert_eq!(arena.used_bytes(), base + FIRST_SLAB);
        }
        assert_eq!(arena.used_bytes(), base + 24);
        let local = arena.local();
        local.allocate(layout(24, 8)).unwrap();
        arena.allocate(layout(8, 8)).unwrap(); // claimed after the slab
        drop(local);
        assert_eq!(arena.used_bytes(), base + 24 + FIRST_SLAB + 8);
    }

    #[test]
    fn most_recent_block_grows_shrinks_and_is_given_back_in_place() {
        let arena = Chain::new_in(1 << 20, System).unwrap();
        let local = arena.local();
        local.allocate(layout(8, 8)).unwrap();
        let small = layout(16, 8);
        let block = local.allocate(small).unwrap().cast::<u8>();
        // SAFETY: fresh block of `small`.
        unsafe { block.as_ptr().write_bytes(7, 16) };
        let big = layout(256, 8);
        // SAFETY: `block` is of `small`, from `local`.
        let grown = unsafe { local.grow(block, small, big) }.unwrap();
        assert_eq!(grown.cast::<u8>(), block);
        // SAFETY: the first 16 bytes were kept.
        assert!(unsafe { core::slice::from_raw_parts(block.as_ptr(), 16) }
            .iter()
            .all(|&b| b == 7));
        assert_eq!(local.used_bytes(), 8 + 256);
        // SAFETY: now of `big`.
        let shrunk = unsafe { local.shrink(block, big, small) }.unwrap();
        assert_eq!((shrunk.cast::<u8>(), local.used_bytes()), (block, 8 + 16));
        // SAFETY: now of `small`.
        unsafe { local.deallocate(block, small) };
        assert_eq!(local.used_bytes(), 8);
        assert_eq!(local.allocate(small).unwrap().cast::<u8>(), block);
    }

    #[test]
    fn an_older_block_is_not_given_back_and_grows_by_moving() {
        let arena = Chain::new_in(1 << 20, System).unwrap();
        let local = arena.local();
        let l = layout(16, 8);
        let old = local.allocate(l).unwrap().cast::<u8>();
        // SAFETY: fresh block.
        unsafe { old.as_ptr().write_bytes(3, 16) };
        local.allocate(l).unwrap();
        // SAFETY: `old` is of `l`, from `local`.
        unsafe { local.deallocate(old, l) };
        assert_eq!(local.used_bytes(), 32);
        // SAFETY: as above.
        let moved = unsafe { local.grow(old, l, layout(64, 8)) }
            .unwrap()
            .cast::<u8>();
        assert_ne!(moved, old);
        // SAFETY: 16 bytes were copied.
        assert!(unsafe { core::slice::from_raw_parts(moved.as_ptr(), 16) }
            .iter()
            .all(|&b| b == 3));
    }

    #[test]
    fn a_call_made_while_the_mark_is_set_uses_the_shared_arena() {
        let arena = Chain::new_in(1 << 20, System).unwrap();
        let local = arena.local();
        let l = layout(8, 8);
        local.allocate(l).unwrap();
        let (used, remaining) = (local.used_bytes(), local.remaining_capacity());
        // What a signal handler that interrupted an allocation sees.
        assert!(local.mark.enter());
        let nested = local.allocate(l).unwrap();
        assert_eq!(local.interrupted_allocations(), 1);
        let nested_addr = nested.cast::<u8>().as_ptr().addr();
        // Outside the slab, and the slab state untouched.
        let slab = local.slab_start.load(Ordering::Relaxed);
        assert!(nested_addr >= slab + FIRST_SLAB || nested_addr + 8 <= slab);
        assert_eq!(
            (local.used_bytes(), local.remaining_capacity()),
            (used, remaining)
        );
        // A nested give-back or resize leaves everything as it is.
        // SAFETY: `nested` is of `l`, from `local`.
        unsafe { local.deallocate(nested.cast(), l) };
        assert!(local
            .resize_last_in_place(nested.cast(), 8, layout(16, 8))
            .is_none());
        assert_eq!(local.used_bytes(), used);
        // Each nested call gave back only its own step: the interrupted call still holds it.
        assert!(local.mark.held_by_caller());
        local.mark.exit();
        local.allocate(l).unwrap();
        assert_eq!(local.used_bytes(), used + 8);
    }

    #[test]
    fn zero_size_and_impossible_layouts() {
        let arena = Chain::new_in(4096, System).unwrap();
        let local = arena.local();
        let z = local.allocate(layout(0, 64)).unwrap();
        assert_eq!((z.len(), z.cast::<u8>().as_ptr().addr() % 64), (0, 0));
        // Within a chunk header of `isize::MAX`: no chunk can hold it on any target (on i686 a
        // 2 GiB request alone may succeed).
        assert!(local.allocate(layout(isize::MAX as usize - 8, 1)).is_err());
        assert_eq!(local.used_bytes(), 0);
        // A huge alignment either fails or is met; it never hands out a misaligned block.
        let huge: usize = if cfg!(target_pointer_width = "64") {
            1 << 31
        } else {
            1 << 29
        };
        if let Ok(block) = local.allocate(layout(8, huge)) {
            assert_eq!(block.cast::<u8>().as_ptr().addr() % huge, 0);
        }
        let before = local.used_bytes();
        local.allocate(layout(8, 8)).unwrap();
        assert_eq!(local.used_bytes(), before + 8);
    }

    #[test]
    fn a_full_linear_arena_still_serves_what_fits_then_fails() {
        let arena = SyncLinearAllocator::new_in(layout(1500, 8), System).unwrap();
        let local = arena.local();
        local.allocate(layout(8, 8)).unwrap(); // a 1 KiB slab
        for _ in 0..(1500 - 8) / 100 {
            local.allocate(layout(100, 4)).unwrap();
        }
        assert!(local.allocate(layout(100, 4)).is_err());
        drop(local);
        assert!(arena.used_bytes() <= 1500);
        assert!(arena.used_bytes() >= 8 + 14 * 100);
    }

    #[test]
    fn virtual_arena_handle_commits_as_it_goes() {
        let arena = SyncVirtualArena::new(1 << 30).unwrap();
        let local = arena.local();
        for i in 0..100_000u64 {
            *local.try_alloc(i).unwrap() += 1;
        }
        assert_eq!(local.used_bytes(), 800_000);
        assert!(arena.committed_bytes() >= 800_000);
        drop(local);
        assert_eq!(arena.used_bytes(), 800_000);
    }
}
