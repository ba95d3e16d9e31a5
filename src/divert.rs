//! [`Divert`]: a global allocator that forwards to another one until the program diverts
//! allocation to a lock-free arena it prepared, for the current thread (a signal handler) or the
//! whole process (a `fork` child).
//!
//! # Protocol
//! One word, `state`, is all the fast path reads: `ARENA_USED | diversions * ONE_DIVERSION`.
//! `diversions` counts the guards alive ([`ThreadDiversion`]s and [`ProcessDiversion`]s, in any
//! thread); `ARENA_USED` is set, for good, before the first guard exists, so before the arena
//! hands out its first block through `Divert`. Hence:
//! - `alloc` and `alloc_zeroed` take the forwarding path when no guard is alive anywhere
//!   (`state < ONE_DIVERSION`);
//! - `dealloc` and `realloc` take it when the arena was never diverted to (`state == 0`), since
//!   only then is no arena block out there; otherwise they test the address first.
//!
//! Which thread is diverted is written in `threads`, a fixed table of thread ids (one slot per
//! live [`ThreadDiversion`], claimed and released by compare-exchange): no thread-local
//! storage, so nothing here can call `malloc`. A thread reads only its own id from the table, and
//! only its own stores put it there, so relaxed orderings suffice: a thread sees its own writes in
//! program order, and a signal handler runs on the thread it interrupted. `ARENA_USED` is set by
//! the diverted thread before the arena hands it any block; a block reaches another thread only
//! through some synchronisation, after which that thread's relaxed load of `state` cannot read a
//! value older than the one with `ARENA_USED` (write-read coherence), so it routes the block's
//! `dealloc` to the address test.

use crate::arena::{AtomicCursor, Linear, Virtual};
use crate::{AllocError, Allocator};
use core::alloc::{GlobalAlloc, Layout};
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::sync::atomic::{
    AtomicPtr, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

/// Set for good before the arena may hold a block handed out through `Divert`.
const ARENA_USED: usize = 1;
/// What one live guard adds to `state`.
const ONE_DIVERSION: usize = 2;

/// How many [`ThreadDiversion`]s may be alive at once, over all threads (a nested handler's guard
/// takes a slot of its own). Zero where the current thread cannot be told without the OS.
#[cfg(any(target_os = "linux", target_os = "android"))]
const THREAD_SLOTS: usize = 64;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const THREAD_SLOTS: usize = 0;

/// The calling thread's id (nonzero), or `None` where threads are not told apart.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn this_thread() -> Option<usize> {
    Some(crate::os::thread_id())
}
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn this_thread() -> Option<usize> {
    None
}

mod sealed {
    /// What [`Divert`](super::Divert) needs of an arena beyond `Allocator + Sync`.
    pub trait Sealed {
        /// `(start, end)`: every block the arena hands out lies in it, for its whole life.
        fn address_range(&self) -> (usize, usize);
    }
}

/// An arena [`Divert`] can divert allocation to: lock-free and reentrant (a signal handler may
/// allocate from it while the code it interrupted was doing so), and every block of it in one
/// address range fixed for the arena's life, so "did this block come from the arena" is an O(1)
/// address test.
///
/// Sealed: implemented by [`SyncLinearAllocator<A>`](crate::SyncLinearAllocator) (the range is
/// its buffer) and [`SyncVirtualArena`](crate::SyncVirtualArena) (its reservation).
pub trait DivertArena: Allocator + Sync + 'static + sealed::Sealed {}

impl<A: Allocator + Sync + 'static> sealed::Sealed for Linear<AtomicCursor, A> {
    fn address_range(&self) -> (usize, usize) {
        Linear::address_range(self)
    }
}
impl<A: Allocator + Sync + 'static> DivertArena for Linear<AtomicCursor, A> {}

impl sealed::Sealed for Virtual<AtomicCursor> {
    fn address_range(&self) -> (usize, usize) {
        Virtual::address_range(self)
    }
}
impl DivertArena for Virtual<AtomicCursor> {}

/// A global allocator that forwards to `G` (usually [`System`](crate::System)) until the program
/// *diverts* allocation to a lock-free arena `T` it prepared: for the current thread while a
/// [`ThreadDiversion`] guard lives (a signal handler takes one), or for every thread while a
/// [`ProcessDiversion`] lives (the child of `fork` takes one). So `Vec`, `String`, `format!` and
/// `serde_json` work where `malloc` may deadlock: in a handler that interrupted `malloc`, or in a
/// child forked while another thread held the malloc lock.
///
/// While the calling thread is diverted:
/// - allocation comes from the arena: no lock, no libc call (one raw `mprotect` when a
///   [`SyncVirtualArena`](crate::SyncVirtualArena) commits its next step); a full arena is a null
///   pointer (so `Vec` and friends call `handle_alloc_error`), never a call to `G`;
/// - freeing an arena block gives it back in place when it is the arena's last one, else leaves it;
/// - a block that came from `G` before the diversion never goes back to `G`: freeing it leaks
///   it, growing or shrinking it copies it into the arena (and leaks the original).
///
/// So no path of a diverted thread calls `G`. After the diversion ends, `G` serves the thread
/// again; an arena block freed then, on any thread, still goes to the arena (an address test),
/// and one reallocated then moves to `G` (copied, and given back to the arena).
///
/// # Cost
/// Until a guard is taken, each call is one relaxed load of one word and a predictable branch
/// on top of `G`'s. While no guard is alive, `alloc` stays that; `dealloc` and `realloc` add an
/// address-range test once the arena was ever diverted to (blocks of it may still be out there).
/// While a guard is alive anywhere, every call also asks which thread it is on (a register read
/// and a scan of 64 slots on x86_64 and aarch64; a `gettid` syscall, about 0.2 µs, elsewhere)
/// unless a [`ProcessDiversion`] is alive.
///
/// # Finding the current thread
/// No thread-local storage: a `thread_local!` may call `malloc` on its first use (always in a
/// `dlopen`ed library, whose TLS block is allocated lazily by the dynamic loader), which is what a
/// handler must not do. Each [`ThreadDiversion`] writes an identity of its thread into a fixed
/// table of 64 slots, and a call is diverted when its thread's identity is in the table. On
/// x86_64 and aarch64 that identity is the thread pointer, read from its register (`%fs:0`, the
/// thread control block's pointer to itself, which is what glibc's and musl's `pthread_self`
/// return; `tpidr_el0` on aarch64): one instruction, no syscall, no lock, as mimalloc identifies
/// threads. Elsewhere it is the kernel's thread id from `gettid` (a raw syscall through rustix
/// where it makes them: no libc, no `errno`; it cannot fail). Both are async-signal-safe: a
/// register read, and a syscall like `write(2)`; calling `pthread_self` is not on POSIX's list,
/// and the stack pointer is no thread identity once a handler runs on an alternate stack.
///
/// # Platforms
/// [`divert_process`](Self::divert_process) needs no OS at all. [`divert_thread`](Self::divert_thread)
/// works on Linux and Android, and is `Err` elsewhere. On Linux and Android architectures other
/// than x86_64 and aarch64 where rustix goes through libc, the first `gettid` looks the symbol
/// up (a weak symbol), which [`prepare`](Self::prepare) does outside any handler. `Divert` needs no `std`: `G`
/// is any [`GlobalAlloc`] (`System` is in `std`).
///
/// # Signal safety
/// While diverted, every method is async-signal-safe when the arena is (both [`DivertArena`]s
/// are; a `SyncVirtualArena` commit is one raw `mprotect`): atomics, the arena, and the thread
/// pointer or `gettid`.
/// Nested handlers may each take a guard. When not diverted, a call is as safe as `G`'s.
///
/// # Examples
/// ```
/// use libdd_alloc::{Divert, Layout, SyncLinearAllocator, System, VirtualAllocator};
///
/// type Arena = SyncLinearAllocator<VirtualAllocator>;
/// #[global_allocator]
/// static GLOBAL: Divert<System, Arena> = Divert::new(System);
///
/// // Before any handler or fork: prepare the arena (its memory is mapped now).
/// let arena = Arena::new_in(Layout::from_size_align(1 << 20, 4096)?, VirtualAllocator {})?;
/// GLOBAL.prepare(Box::leak(Box::new(arena)))?;
///
/// let before = String::from("from System");
/// {
///     // In a handler (or, with `divert_process`, in a fork child):
///     let _diverted = GLOBAL.divert_process()?;
///     let report = format!("{before} and {}", "from the arena");
///     assert!(GLOBAL.arena().unwrap().used_bytes() >= report.len());
///     drop(before); // came from System: leaked, never given to System while diverted
/// }
/// let after = vec![1, 2, 3]; // System again
/// # assert!(GLOBAL.arena().unwrap().used_bytes() < (1 << 20));
/// # drop(after);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Divert<G, T> {
    inner: G,
    /// `ARENA_USED | live guards * ONE_DIVERSION`: the fast path's one load.
    state: AtomicUsize,
    /// Live [`ProcessDiversion`]s.
    processes: AtomicUsize,
    /// The prepared arena, or null; set once, never freed (`&'static`).
    arena: AtomicPtr<T>,
    /// Ids of the threads with a live [`ThreadDiversion`], 0 for a free slot.
    threads: [AtomicUsize; THREAD_SLOTS],
}

impl<G, T: DivertArena> Divert<G, T> {
    /// A `Divert` that forwards every call to `inner` until an arena is prepared and a diversion
    /// taken. `const`, for a `#[global_allocator]` static.
    ///
    /// ```
    /// use libdd_alloc::{Divert, SyncVirtualArena, System};
    /// #[global_allocator]
    /// static GLOBAL: Divert<System, SyncVirtualArena> = Divert::new(System);
    /// assert!(GLOBAL.arena().is_none());
    /// ```
    pub const fn new(inner: G) -> Self {
        #[allow(clippy::declare_interior_mutable_const)] // each use is a fresh atomic
        const FREE: AtomicUsize = AtomicUsize::new(0);
        Self {
            inner,
            state: AtomicUsize::new(0),
            processes: AtomicUsize::new(0),
            arena: AtomicPtr::new(ptr::null_mut()),
            threads: [FREE; THREAD_SLOTS],
        }
    }

    /// Sets the arena diversions allocate from. Call it once, before any handler that diverts
    /// is installed and before `fork`: it may allocate nothing itself, but the arena should
    /// already hold its memory (a `SyncLinearAllocator` over `VirtualAllocator` maps it in
    /// `new_in`; warm a `SyncVirtualArena` by allocating and giving back what handlers need).
    /// The arena lives for the rest of the program (`&'static`: `Box::leak` it, or a `static`),
    /// since a block of it may be freed at any later time.
    ///
    /// Where the thread is told by libc's `gettid` (rustix's libc backend, on architectures
    /// other than x86_64 and aarch64), this also makes the process's first call, which looks
    /// the symbol up.
    ///
    /// # Errors
    /// `Err(AllocError)` if an arena was prepared already (even the same one): blocks of the
    /// first may be alive, and only its range would be recognised.
    ///
    /// ```
    /// use libdd_alloc::{Divert, SyncVirtualArena, System};
    /// static DIVERT: Divert<System, SyncVirtualArena> = Divert::new(System);
    /// let arena: &'static SyncVirtualArena = Box::leak(Box::new(SyncVirtualArena::new(1 << 30)?));
    /// DIVERT.prepare(arena)?;
    /// assert!(DIVERT.prepare(arena).is_err());
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn prepare(&self, arena: &'static T) -> Result<(), AllocError> {
        let _ = this_thread();
        let arena = arena as *const T as *mut T;
        // Release: whoever sees the pointer (Acquire) sees the arena built.
        self.arena
            .compare_exchange(ptr::null_mut(), arena, Release, Relaxed)
            .map(|_| ())
            .map_err(|_| AllocError)
    }

    /// The prepared arena, if any: for its statistics.
    ///
    /// ```
    /// use libdd_alloc::{Divert, SyncVirtualArena, System};
    /// static DIVERT: Divert<System, SyncVirtualArena> = Divert::new(System);
    /// DIVERT.prepare(Box::leak(Box::new(SyncVirtualArena::new(1 << 20)?)))?;
    /// assert_eq!(DIVERT.arena().map(|a| a.used_bytes()), Some(0));
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    pub fn arena(&self) -> Option<&'static T> {
        // SAFETY: null, or set by `prepare` from a `&'static T` (Acquire pairs with its Release).
        unsafe { self.arena.load(Acquire).as_ref() }
    }

    /// Whether `ptr` lies in the prepared arena's address range: whether a block at `ptr` came
    /// from a diversion (and will go back to the arena when freed). O(1); `false` before
    /// [`prepare`](Self::prepare).
    ///
    /// ```
    /// use libdd_alloc::{Divert, SyncVirtualArena, System};
    /// use std::alloc::{GlobalAlloc, Layout};
    /// static DIVERT: Divert<System, SyncVirtualArena> = Divert::new(System);
    /// DIVERT.prepare(Box::leak(Box::new(SyncVirtualArena::new(1 << 20)?)))?;
    /// let guard = DIVERT.divert_process()?;
    /// let layout = Layout::new::<u64>();
    /// // SAFETY: a nonzero size; the block is freed with its layout.
    /// unsafe {
    ///     let block = DIVERT.alloc(layout);
    ///     assert!(DIVERT.arena_contains(block));
    ///     DIVERT.dealloc(block, layout);
    /// }
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn arena_contains(&self, ptr: *const u8) -> bool {
        self.arena_holding(ptr.cast_mut()).is_some()
    }

    /// The allocator calls are forwarded to when not diverted.
    pub fn inner(&self) -> &G {
        &self.inner
    }

    /// Diverts every thread's allocation to the arena until the guard is dropped: for the child
    /// of `fork` in a multi-threaded program, where a thread that no longer exists may hold the
    /// malloc lock forever. Take it first thing in the child, before anything allocates (and,
    /// before the child starts a thread, call [`forget_other_threads`](Self::forget_other_threads)).
    /// Guards nest. Other threads of a multi-threaded process see the diversion with their next calls
    /// (relaxed), which is harmless: every path is safe whichever way a call goes.
    ///
    /// # Errors
    /// `Err(AllocError)` if no arena was [`prepare`](Self::prepare)d.
    ///
    /// # Signal safety
    /// Async-signal-safe: two atomic additions.
    ///
    /// ```
    /// use libdd_alloc::{Divert, SyncVirtualArena, System};
    /// static DIVERT: Divert<System, SyncVirtualArena> = Divert::new(System);
    /// assert!(DIVERT.divert_process().is_err()); // nothing prepared
    /// DIVERT.prepare(Box::leak(Box::new(SyncVirtualArena::new(1 << 20)?)))?;
    /// let guard = DIVERT.divert_process()?;
    /// assert!(DIVERT.is_diverted());
    /// drop(guard);
    /// assert!(!DIVERT.is_diverted());
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn divert_process(&self) -> Result<ProcessDiversion<'_, G, T>, AllocError> {
        if self.arena().is_none() {
            return Err(AllocError);
        }
        self.processes.fetch_add(1, Relaxed);
        self.announce();
        Ok(ProcessDiversion { divert: self })
    }

    /// Diverts the calling thread's allocation to the arena until the guard is dropped (on this
    /// thread: the guard is not `Send`); other threads keep using `G`. For a signal handler: take
    /// it first, let every allocation of the handler be dropped or leaked before it. Nested
    /// handlers may take guards of their own. Linux and Android only (the thread is told by its
    /// thread pointer or `gettid`): elsewhere it is `Err`, and a handler that will end the process may take
    /// [`divert_process`](Self::divert_process) instead.
    ///
    /// A guard that is leaked (`mem::forget`) diverts its thread for good, and, as thread
    /// control blocks and thread ids are reused, whichever thread later gets its identity. So
    /// does the guard of another thread at a `fork`, in the child, unless the child calls
    /// [`forget_other_threads`](Self::forget_other_threads).
    ///
    /// # Errors
    /// `Err(AllocError)` if no arena was [`prepare`](Self::prepare)d, 64 thread diversions are
    /// alive already, or the platform is neither Linux nor Android.
    ///
    /// # Signal safety
    /// Async-signal-safe: a register read (or `gettid`, a syscall), atomic additions and a
    /// compare-exchange per slot tried; no lock, no libc call.
    ///
    /// ```
    /// use libdd_alloc::{Divert, SyncVirtualArena, System};
    /// static DIVERT: Divert<System, SyncVirtualArena> = Divert::new(System);
    /// DIVERT.prepare(Box::leak(Box::new(SyncVirtualArena::new(1 << 20)?)))?;
    /// let Ok(guard) = DIVERT.divert_thread() else {
    ///     return Ok(()); // neither Linux nor Android
    /// };
    /// assert!(DIVERT.is_diverted());
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert!(!DIVERT.is_diverted())); // another thread: not diverted
    /// });
    /// drop(guard);
    /// assert!(!DIVERT.is_diverted());
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn divert_thread(&self) -> Result<ThreadDiversion<'_, G, T>, AllocError> {
        let (Some(me), Some(_)) = (this_thread(), self.arena()) else {
            return Err(AllocError);
        };
        // Counted first, so that this thread's calls leave the fast path once the slot is its.
        self.announce();
        for (slot, id) in self.threads.iter().enumerate() {
            if id.load(Relaxed) == 0 && id.compare_exchange(0, me, Relaxed, Relaxed).is_ok() {
                return Ok(ThreadDiversion {
                    divert: self,
                    slot,
                    thread: me,
                    not_send: PhantomData,
                });
            }
        }
        self.state.fetch_sub(ONE_DIVERSION, Relaxed);
        Err(AllocError)
    }

    /// In the child of `fork`, ends the thread diversions of the parent's other threads: they do
    /// not exist in the child, so their guards are never dropped there, and their identities
    /// stay in the table. A thread the child starts may get one of them (glibc hands the dead
    /// threads' stacks, thread control block included, to the child's next threads) and would
    /// then be diverted for good without a guard: its blocks from the arena, the `G` blocks it
    /// frees leaked. Call it in the child before it starts a thread, whenever another thread
    /// may have held a [`ThreadDiversion`] at the `fork` (a signal handler running on it). The
    /// calling thread's own diversions are kept where its identity survives `fork` (the thread
    /// pointer, on x86_64 and aarch64); where it is `gettid`, the child's thread has a new id,
    /// so its guards from before the `fork` stopped diverting it at the `fork` already (a
    /// handler that forks takes [`divert_process`](Self::divert_process) in the child). O(64);
    /// no-op where threads are not told apart.
    ///
    /// Only for a process with one thread: called while other threads hold guards, it ends
    /// their diversions early (their handlers would then call `G`). Memory stays safe either
    /// way: a guard gives back only a slot that still holds its thread, and counts itself out
    /// only then.
    ///
    /// # Signal safety
    /// Async-signal-safe: a register read (or `gettid`) and one compare-exchange per slot.
    ///
    /// ```
    /// use libdd_alloc::{Divert, SyncVirtualArena, System};
    /// static DIVERT: Divert<System, SyncVirtualArena> = Divert::new(System);
    /// DIVERT.prepare(Box::leak(Box::new(SyncVirtualArena::new(1 << 20)?)))?;
    /// let Ok(mine) = DIVERT.divert_thread() else {
    ///     return Ok(()); // neither Linux nor Android
    /// };
    /// DIVERT.forget_other_threads(); // as the only thread of a fork child would
    /// assert!(DIVERT.is_diverted(), "this thread's own diversion is kept");
    /// drop(mine);
    /// assert!(!DIVERT.is_diverted());
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    pub fn forget_other_threads(&self) {
        let Some(me) = this_thread() else {
            return;
        };
        for id in &self.threads {
            let other = id.load(Relaxed);
            // A slot whose guard will never be dropped here: freed and counted out once, by
            // whichever of this and a (misplaced) guard drop wins the exchange.
            if other != 0 && other != me && id.compare_exchange(other, 0, Relaxed, Relaxed).is_ok()
            {
                self.state.fetch_sub(ONE_DIVERSION, Relaxed);
            }
        }
    }

    /// Whether the calling thread's allocations go to the arena now.
    ///
    /// ```
    /// use libdd_alloc::{Divert, SyncVirtualArena, System};
    /// static DIVERT: Divert<System, SyncVirtualArena> = Divert::new(System);
    /// assert!(!DIVERT.is_diverted());
    /// ```
    pub fn is_diverted(&self) -> bool {
        self.diverted_here(self.state.load(Relaxed))
    }

    /// Marks the arena used and counts one more live guard.
    fn announce(&self) {
        self.state.fetch_or(ARENA_USED, Relaxed);
        self.state.fetch_add(ONE_DIVERSION, Relaxed);
    }

    /// Whether the calling thread is diverted, given a `state` just read.
    #[inline]
    fn diverted_here(&self, state: usize) -> bool {
        if state < ONE_DIVERSION {
            return false;
        }
        if self.processes.load(Relaxed) != 0 {
            return true;
        }
        match this_thread() {
            Some(me) => self.threads.iter().any(|id| id.load(Relaxed) == me),
            None => false,
        }
    }

    /// The arena, if `ptr` lies in its range.
    #[inline]
    fn arena_holding(&self, ptr: *mut u8) -> Option<&'static T> {
        let arena = self.arena()?;
        let (start, end) = sealed::Sealed::address_range(arena);
        (start..end).contains(&ptr.addr()).then_some(arena)
    }

    /// `alloc` / `alloc_zeroed` while some diversion is alive.
    ///
    /// # Safety
    /// The `GlobalAlloc::alloc` contract.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(&self, layout: Layout, zeroed: bool) -> *mut u8
    where
        G: GlobalAlloc,
    {
        if !self.diverted_here(self.state.load(Relaxed)) {
            // SAFETY: forwarded caller contract.
            return unsafe {
                if zeroed {
                    self.inner.alloc_zeroed(layout)
                } else {
                    self.inner.alloc(layout)
                }
            };
        }
        let Some(arena) = self.arena() else {
            return ptr::null_mut();
        };
        let block = if zeroed {
            arena.allocate_zeroed(layout)
        } else {
            arena.allocate(layout)
        };
        block.map_or(ptr::null_mut(), |block| block.cast::<u8>().as_ptr())
    }

    /// `dealloc` once the arena was ever diverted to.
    ///
    /// # Safety
    /// The `GlobalAlloc::dealloc` contract.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(&self, ptr: *mut u8, layout: Layout)
    where
        G: GlobalAlloc,
    {
        if let Some(arena) = self.arena_holding(ptr) {
            // SAFETY: `ptr` is in the arena's range, so the arena handed it out, with `layout`
            // (the caller's contract); it is nonnull as a live block.
            unsafe { arena.deallocate(NonNull::new_unchecked(ptr), layout) };
        } else if !self.diverted_here(self.state.load(Relaxed)) {
            // SAFETY: not the arena's, so `G`'s: forwarded caller contract.
            unsafe { self.inner.dealloc(ptr, layout) };
        }
        // Else a block of `G` freed while diverted: leaked, so that `G` is not called.
    }

    /// `realloc` once the arena was ever diverted to.
    ///
    /// # Safety
    /// The `GlobalAlloc::realloc` contract.
    #[cold]
    #[inline(never)]
    unsafe fn realloc_slow(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8
    where
        G: GlobalAlloc,
    {
        // SAFETY: `realloc`'s contract: `new_size` is nonzero and, rounded up to
        // `layout.align()`, does not overflow `isize`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let diverted = self.diverted_here(self.state.load(Relaxed));
        if let Some(arena) = self.arena_holding(ptr) {
            // SAFETY: the arena handed out `ptr` with `layout` (in its range; caller contract).
            let block = unsafe { NonNull::new_unchecked(ptr) };
            if diverted {
                // SAFETY: as above; `grow` gets a size at least the old one, `shrink` a smaller.
                let resized = unsafe {
                    if new_size >= layout.size() {
                        arena.grow(block, layout, new)
                    } else {
                        arena.shrink(block, layout, new)
                    }
                };
                return resized.map_or(ptr::null_mut(), |block| block.cast::<u8>().as_ptr());
            }
            // Not diverted any more: the block moves to `G`, and its bytes go back to the arena.
            // SAFETY: `new` has a nonzero size (caller contract).
            let moved = unsafe { self.inner.alloc(new) };
            if !moved.is_null() {
                // SAFETY: both blocks are live, disjoint (one from `G`, one from the arena) and at
                // least as long as the smaller size; then the arena block is given up.
                unsafe {
                    ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                    arena.deallocate(block, layout);
                }
            }
            return moved;
        }
        if diverted {
            // A block of `G`, resized while diverted: copied into the arena, the original leaked.
            let Some(arena) = self.arena() else {
                return ptr::null_mut();
            };
            return match arena.allocate(new) {
                Ok(copy) => {
                    let copy = copy.cast::<u8>().as_ptr();
                    // SAFETY: `ptr` is live for `layout.size()` bytes (caller contract), `copy`
                    // is a fresh arena block of `new_size`, outside `G`'s blocks.
                    unsafe { ptr::copy_nonoverlapping(ptr, copy, layout.size().min(new_size)) };
                    copy
                }
                Err(AllocError) => ptr::null_mut(),
            };
        }
        // SAFETY: not the arena's, so `G`'s, and not diverted: forwarded caller contract.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

// SAFETY: when not diverted, every call is forwarded to `G` with the caller's arguments, and
// every block handed to `G` came from `G` (the address test keeps the arena's away). When
// diverted, blocks come from the arena, which hands out disjoint blocks that live as long as it
// does (`&'static`, never reset: nothing here takes `&mut`); `dealloc` and `realloc` tell an
// arena block by its address (the arena's blocks all lie in its fixed range, which `G`'s blocks,
// being other memory, cannot overlap) and never pass a `G` block to the arena. A null pointer
// reports every failure.
unsafe impl<G: GlobalAlloc, T: DivertArena> GlobalAlloc for Divert<G, T> {
    /// One relaxed load and a branch, then `G`'s `alloc`, unless a diversion is alive.
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.state.load(Relaxed) < ONE_DIVERSION {
            // SAFETY: forwarded caller contract.
            return unsafe { self.inner.alloc(layout) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { self.alloc_slow(layout, false) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if self.state.load(Relaxed) < ONE_DIVERSION {
            // SAFETY: forwarded caller contract.
            return unsafe { self.inner.alloc_zeroed(layout) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { self.alloc_slow(layout, true) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.state.load(Relaxed) == 0 {
            // SAFETY: never diverted, so no arena block exists: `ptr` is `G`'s.
            return unsafe { self.inner.dealloc(ptr, layout) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { self.dealloc_slow(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.state.load(Relaxed) == 0 {
            // SAFETY: never diverted, so no arena block exists: `ptr` is `G`'s.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { self.realloc_slow(ptr, layout, new_size) }
    }
}

impl<G, T: DivertArena> core::fmt::Debug for Divert<G, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Divert")
            .field("prepared", &self.arena().is_some())
            .field("diverted_here", &self.is_diverted())
            .finish_non_exhaustive()
    }
}

/// While it lives, the thread that took it allocates from the arena: see
/// [`Divert::divert_thread`]. Not `Send`: dropped on its own thread, which releases its slot.
#[must_use = "the thread is diverted only while the guard lives"]
pub struct ThreadDiversion<'a, G, T: DivertArena> {
    divert: &'a Divert<G, T>,
    slot: usize,
    /// The id this guard wrote into its slot.
    thread: usize,
    /// A guard names one thread: it stays on it.
    not_send: PhantomData<*const ()>,
}

impl<G, T: DivertArena> Drop for ThreadDiversion<'_, G, T> {
    fn drop(&mut self) {
        // The slot still holds this thread unless `forget_other_threads` freed it (and counted
        // it out), in which case it may hold another thread now: leave both alone.
        let mine = self.divert.threads.get(self.slot).is_some_and(|id| {
            id.compare_exchange(self.thread, 0, Relaxed, Relaxed)
                .is_ok()
        });
        if mine {
            self.divert.state.fetch_sub(ONE_DIVERSION, Relaxed);
        }
    }
}

impl<G, T: DivertArena> core::fmt::Debug for ThreadDiversion<'_, G, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ThreadDiversion").finish_non_exhaustive()
    }
}

/// While it lives, every thread allocates from the arena: see [`Divert::divert_process`].
#[must_use = "the process is diverted only while the guard lives"]
pub struct ProcessDiversion<'a, G, T: DivertArena> {
    divert: &'a Divert<G, T>,
}

impl<G, T: DivertArena> Drop for ProcessDiversion<'_, G, T> {
    fn drop(&mut self) {
        self.divert.processes.fetch_sub(1, Relaxed);
        self.divert.state.fetch_sub(ONE_DIVERSION, Relaxed);
    }
}

impl<G, T: DivertArena> core::fmt::Debug for ProcessDiversion<'_, G, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProcessDiversion").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom), any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;
    use crate::{SyncLinearAllocator, SyncVirtualArena, System, VirtualAllocator};
    use std::boxed::Box;
    use std::sync::atomic::AtomicUsize;

    /// `System`, counting the calls made on the thread whose id is `watched` (every call when 0).
    #[derive(Default)]
    struct Counting {
        watched: AtomicUsize,
        calls: AtomicUsize,
    }

    impl Counting {
        fn count(&self) {
            let watched = self.watched.load(Relaxed);
            if watched == 0 || watched == crate::os::thread_id() {
                self.calls.fetch_add(1, Relaxed);
            }
        }
        fn calls(&self) -> usize {
            self.calls.load(Relaxed)
        }
    }

    // SAFETY: forwards to `System`.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.count();
            // SAFETY: forwarded caller contract.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            self.count();
            // SAFETY: forwarded caller contract.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            self.count();
            // SAFETY: forwarded caller contract.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    type Arena = SyncLinearAllocator<VirtualAllocator>;

    /// A prepared `Divert` over a fresh 1 MiB arena, leaked like a `static` one.
    fn prepared() -> &'static Divert<Counting, Arena> {
        let divert = Box::leak(Box::new(Divert::new(Counting::default())));
        let layout = Layout::from_size_align(1 << 20, 4096).unwrap();
        let arena = Arena::new_in(layout, VirtualAllocator {}).unwrap();
        divert.prepare(Box::leak(Box::new(arena))).unwrap();
        divert
    }

    fn in_arena(divert: &Divert<Counting, Arena>, ptr: *mut u8) -> bool {
        divert.arena_holding(ptr).is_some()
    }

    const WORD: Layout = Layout::new::<u64>();

    #[test]
    fn forwards_everything_until_diverted() {
        let divert = prepared();
        // SAFETY: GlobalAlloc contract kept: nonzero size, blocks freed with their layouts.
        unsafe {
            let block = divert.alloc(WORD);
            let block = divert.realloc(block, WORD, 64);
            divert.dealloc(block, Layout::from_size_align(64, 8).unwrap());
            assert!(!in_arena(divert, block));
        }
        assert_eq!(divert.inner().calls(), 3);
        assert_eq!(divert.arena().unwrap().used_bytes(), 0);
        assert_eq!(divert.state.load(Relaxed), 0);
    }

    #[test]
    fn nothing_diverts_before_an_arena_is_prepared() {
        let divert = Divert::<Counting, Arena>::new(Counting::default());
        assert!(divert.divert_thread().is_err());
        assert!(divert.divert_process().is_err());
        assert!(!divert.is_diverted());
        assert_eq!(divert.state.load(Relaxed), 0);
    }

    #[test]
    fn a_second_prepare_is_refused() {
        let divert = prepared();
        let other = Arena::new_in(WORD, VirtualAllocator {}).unwrap();
        assert!(divert.prepare(Box::leak(Box::new(other))).is_err());
    }

    #[test]
    fn a_diverted_thread_allocates_from_the_arena_without_calling_the_inner_allocator() {
        let divert = prepared();
        divert
            .inner()
            .watched
            .store(crate::os::thread_id(), Relaxed);
        let guard = divert.divert_thread().unwrap();
        // SAFETY: GlobalAlloc contract kept.
        unsafe {
            let a = divert.alloc(WORD);
            let zeroed = divert.alloc_zeroed(Layout::new::<[u64; 4]>());
            assert!(in_arena(divert, a) && in_arena(divert, zeroed));
            assert_eq!(zeroed.cast::<[u64; 4]>().read(), [0; 4]);
            // The last block is given back in place; an older one stays.
            divert.dealloc(zeroed, Layout::new::<[u64; 4]>());
            assert_eq!(divert.arena().unwrap().used_bytes(), 8);
            let grown = divert.realloc(a, WORD, 32);
            assert_eq!(grown, a, "the last block grows in place");
        }
        assert_eq!(divert.inner().calls(), 0);
        drop(guard);
        assert!(!divert.is_diverted());
    }

    #[test]
    fn other_threads_keep_the_inner_allocator_while_one_is_diverted() {
        let divert = prepared();
        let _guard = divert.divert_thread().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(!divert.is_diverted());
                // SAFETY: GlobalAlloc contract kept.
                unsafe {
                    let block = divert.alloc(WORD);
                    assert!(!block.is_null() && !in_arena(divert, block));
                    divert.dealloc(block, WORD);
                }
            });
        });
        assert!(divert.is_diverted());
        assert_eq!(divert.arena().unwrap().used_bytes(), 0);
    }

    #[test]
    fn blocks_from_before_the_diversion_never_reach_the_inner_allocator_while_diverted() {
        let divert = prepared();
        // SAFETY: GlobalAlloc contract kept; the blocks given up while diverted are leaked.
        unsafe {
            let freed = divert.alloc(WORD);
            let grown = divert.alloc(WORD);
            let shrunk = divert.alloc(Layout::new::<[u8; 64]>());
            grown.cast::<u64>().write(0x0123_4567_89ab_cdef);
            shrunk.write_bytes(7, 64);
            let calls = divert.inner().calls();
            divert
                .inner()
                .watched
                .store(crate::os::thread_id(), Relaxed);
            let guard = divert.divert_thread().unwrap();
            divert.dealloc(freed, WORD);
            let moved = divert.realloc(grown, WORD, 4096);
            assert!(in_arena(divert, moved));
            assert_eq!(moved.cast::<u64>().read(), 0x0123_4567_89ab_cdef);
            let small = divert.realloc(shrunk, Layout::new::<[u8; 64]>(), 16);
            assert!(in_arena(divert, small));
            assert_eq!(std::slice::from_raw_parts(small, 16), &[7; 16]);
            assert_eq!(
                divert.inner().calls(),
                calls,
                "the inner allocator was called"
            );
            drop(guard);
            divert.inner().watched.store(0, Relaxed);
            // Diversion over: arena blocks go back to the arena, never to the inner allocator.
            divert.dealloc(small, Layout::from_size_align(16, 1).unwrap());
            let out = divert.realloc(moved, Layout::from_size_align(4096, 8).unwrap(), 8192);
            assert!(
                !in_arena(divert, out),
                "a reallocated arena block moves out"
            );
            assert_eq!(out.cast::<u64>().read(), 0x0123_4567_89ab_cdef);
            assert_eq!(
                divert.inner().calls(),
                calls + 1,
                "only the move's allocation"
            );
            divert.dealloc(out, Layout::from_size_align(8192, 8).unwrap());
            assert_eq!(divert.inner().calls(), calls + 2);
        }
    }

    #[test]
    fn an_arena_block_freed_after_the_diversion_goes_back_to_the_arena() {
        let divert = prepared();
        let guard = divert.divert_thread().unwrap();
        // SAFETY: GlobalAlloc contract kept.
        let block = unsafe { divert.alloc(WORD) };
        drop(guard);
        let calls = divert.inner().calls();
        std::thread::scope(|s| {
            let block = block as usize;
            // SAFETY: the block is live and freed once, with its layout, on another thread.
            s.spawn(move || unsafe { divert.dealloc(block as *mut u8, WORD) });
        });
        assert_eq!(divert.inner().calls(), calls);
        assert_eq!(
            divert.arena().unwrap().used_bytes(),
            0,
            "the last block given back"
        );
    }

    #[test]
    fn nested_diversions_end_with_the_outermost() {
        let divert = prepared();
        let outer = divert.divert_thread().unwrap();
        let inner = divert.divert_thread().unwrap();
        assert_ne!(inner.slot, outer.slot);
        drop(inner);
        assert!(divert.is_diverted());
        drop(outer);
        assert!(!divert.is_diverted());
        assert_eq!(divert.state.load(Relaxed), ARENA_USED);
    }

    #[test]
    fn thread_diversions_past_the_table_are_refused_and_undo_their_count() {
        let divert = prepared();
        let guards: std::vec::Vec<_> = (0..THREAD_SLOTS)
            .map(|_| divert.divert_thread().unwrap())
            .collect();
        assert!(divert.divert_thread().is_err());
        assert_eq!(
            divert.state.load(Relaxed),
            ARENA_USED + THREAD_SLOTS * ONE_DIVERSION
        );
        drop(guards);
        assert_eq!(divert.state.load(Relaxed), ARENA_USED);
        assert!(divert.divert_thread().is_ok());
    }

    #[test]
    fn forgetting_other_threads_frees_their_slots_once_and_keeps_our_own() {
        let divert = prepared();
        let mine = divert.divert_thread().unwrap();
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let theirs = divert.divert_thread().unwrap();
                barrier.wait(); // held
                barrier.wait(); // forgotten
                assert!(!divert.is_diverted(), "the forgotten diversion still holds");
                drop(theirs); // its slot is no longer its own: nothing counted twice
            });
            barrier.wait();
            assert_eq!(divert.state.load(Relaxed), ARENA_USED + 2 * ONE_DIVERSION);
            divert.forget_other_threads();
            assert_eq!(divert.state.load(Relaxed), ARENA_USED + ONE_DIVERSION);
            barrier.wait();
        });
        assert_eq!(divert.state.load(Relaxed), ARENA_USED + ONE_DIVERSION);
        assert!(divert.is_diverted());
        drop(mine);
        assert_eq!(divert.state.load(Relaxed), ARENA_USED);
        assert!(divert.threads.iter().all(|id| id.load(Relaxed) == 0));
    }

    #[test]
    fn a_process_diversion_diverts_every_thread() {
        let divert = prepared();
        let guard = divert.divert_process().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(divert.is_diverted());
                // SAFETY: GlobalAlloc contract kept.
                let block = unsafe { divert.alloc(WORD) };
                assert!(in_arena(divert, block));
            });
        });
        drop(guard);
        assert!(!divert.is_diverted());
    }

    #[test]
    fn a_full_arena_is_a_null_pointer_not_a_call_to_the_inner_allocator() {
        let divert = prepared();
        let _guard = divert.divert_thread().unwrap();
        // SAFETY: GlobalAlloc contract kept.
        unsafe {
            assert!(divert
                .alloc(Layout::from_size_align(2 << 20, 8).unwrap())
                .is_null());
            let block = divert.alloc(WORD);
            divert.alloc(WORD); // so that `block` is not the last one
            assert!(divert.realloc(block, WORD, 4 << 20).is_null());
        }
        assert_eq!(divert.inner().calls(), 0);
    }

    #[test]
    fn a_virtual_arena_is_told_by_its_reservation() {
        let divert = Box::leak(Box::new(Divert::<System, SyncVirtualArena>::new(System)));
        let arena = Box::leak(Box::new(SyncVirtualArena::new(1 << 30).unwrap()));
        divert.prepare(arena).unwrap();
        let guard = divert.divert_thread().unwrap();
        // SAFETY: GlobalAlloc contract kept.
        unsafe {
            let block = divert.alloc(Layout::from_size_align(1 << 20, 8).unwrap());
            let (start, end) = sealed::Sealed::address_range(arena);
            assert!((start..end).contains(&block.addr()));
            drop(guard);
            divert.dealloc(block, Layout::from_size_align(1 << 20, 8).unwrap());
        }
        assert_eq!(arena.used_bytes(), 0);
    }
}
