//! Values whose destructors the arena runs: [`DropArena`], and the one list of drop records
//! every arena that offers it keeps.
//!
//! A value allocated with [`DropArena::try_alloc_owned`] gets a *drop record* in front of it, in
//! the same block of the arena: the address of the next older record, the highest block end of
//! that record and every older one (its *high-water mark*), and the function that drops the
//! value. The records form a singly linked list whose head lives in the arena, newest first, so
//! walking it from the head is reverse allocation order. Nothing else carries a header: plain
//! allocations, and values of a type without drop glue ([`core::mem::needs_drop`]), never
//! touch the list.
//!
//! Protocol (stated once here; the arenas call [`DropList::push`] and [`DropList::run_above`]):
//! - *Push* (through `&self`, from any thread or a signal handler): write the record, then link
//!   it in by compare-exchange of the head, retried if another push got in between (`Release` on
//!   success, so that whoever loads the new head (`Acquire`) sees the record written). The
//!   `Cell` head's exchange is a store that always succeeds. Lock-free and reentrant: a handler
//!   that pushes between this thread's load and exchange makes the exchange fail and retry, never
//!   wait.
//! - *Run* (through `&mut self` only: `reset`, `rewind`, the end of a scope, drop): pop records
//!   from the head while their high-water mark lies past the position the arena rolls back to,
//!   dropping each value. A record is popped before its value is dropped, so a destructor that
//!   panics leaves a consistent list; the rest still run (a guard continues the walk while the
//!   panic unwinds), and a second panic aborts the process, as for a slice's destructors.
//!
//! Why the high-water mark: records are pushed in the order their pushes win, which is the order
//! of allocation on one thread but not always across threads (a thread can allocate, be
//! preempted, and push after another thread's later block), nor when a value's initialiser
//! allocates droppable values itself. A rollback must run the destructor of every value whose
//! bytes it frees, and the list is sorted by high-water mark, so "pop while the mark is past the
//! position" never leaves behind a record whose bytes are freed, whatever the order of pushes.
//! It may also run a destructor whose bytes stay (a value pushed after one whose bytes are
//! freed): that is sound, since `&mut self` proves nothing refers to it, and each value is
//! dropped exactly once because it is popped before it is dropped. On one thread, without
//! initialisers that allocate, the marks are the block ends in order and exactly the values
//! allocated after the checkpoint are dropped.

use crate::cursor::PtrCell;
use crate::{AllocError, Arena};
use core::mem;
use core::pin::Pin;
use core::ptr::{self, NonNull};

/// The header in front of a value whose destructor the arena runs. `P` is how the arena orders
/// positions: an address (`usize`) for the one-region arenas, a [`ChunkPosition`] for the
/// chain arenas.
pub(crate) struct DropRecord<P> {
    /// The next older record, or null.
    next: *mut DropRecord<P>,
    /// The highest block end (as the arena orders positions) of this record's block and every
    /// older record's.
    high_water: P,
    /// Drops the value behind this record.
    drop: unsafe fn(NonNull<DropRecord<P>>),
}

/// A position in a chain arena: the depth of a chunk (1 for the oldest; a checkpoint names a
/// chunk by depth too), then an address in it. Ordered by depth first, so the order holds across
/// chunks, whose addresses are unordered. Two words, so a chain arena's drop record is four.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChunkPosition {
    pub(crate) depth: usize,
    pub(crate) addr: usize,
}

/// How an arena orders the positions of its drop records (sealed: `usize` and
/// [`ChunkPosition`]).
pub trait DropPosition: Copy + Ord + Default + sealed::Sealed {}
impl DropPosition for usize {}
impl DropPosition for ChunkPosition {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for super::ChunkPosition {}
}

/// A record and its value, in one block.
#[repr(C)]
struct Owned<T, P> {
    record: DropRecord<P>,
    value: T,
}

/// Drops the `T` of an [`Owned<T, P>`] whose record is `record`.
///
/// # Safety
/// `record` is the record of a live `Owned<T, P>` whose value is dropped at most this once.
unsafe fn drop_owned<T, P>(record: NonNull<DropRecord<P>>) {
    let owned = record.cast::<Owned<T, P>>().as_ptr();
    // SAFETY: the caller's contract; `record` is the first field of the `repr(C)` `Owned<T>`.
    unsafe { ptr::drop_in_place(ptr::addr_of_mut!((*owned).value)) };
}

/// The list of drop records of one arena. `H` is the head: a `Cell` for the single-thread
/// arenas, an atomic pointer for the lock-free ones (the cursor's [`PtrCell`]). `P` orders the
/// records' positions.
pub(crate) struct DropList<H: PtrCell, P: DropPosition = usize> {
    head: H,
    position: core::marker::PhantomData<P>,
}

impl<P: DropPosition> DropList<core::cell::Cell<*mut u8>, P> {
    /// [`new`](Self::new) in a `const` context, for the `Cell` arenas.
    pub(crate) const fn new_cell() -> Self {
        Self {
            head: core::cell::Cell::new(core::ptr::null_mut()),
            position: core::marker::PhantomData,
        }
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<P: DropPosition> DropList<crate::sync::atomic::AtomicPtr<u8>, P> {
    crate::sync::atomic::const_fn_unless_loom! {
        /// [`new`](Self::new) in a `const` context (a `static` arena's initialiser).
        pub(crate) const fn new_atomic() -> Self {
            Self {
                head: crate::sync::atomic::AtomicPtr::new(core::ptr::null_mut()),
                position: core::marker::PhantomData,
            }
        }
    }
}

impl<H: PtrCell, P: DropPosition> DropList<H, P> {
    /// An empty list.
    pub(crate) fn new() -> Self {
        Self {
            head: H::null(),
            position: core::marker::PhantomData,
        }
    }

    /// Links in `record` (its `drop` written, the rest not yet), whose block ends at position
    /// `end`. Lock-free: a retry happens only because another push succeeded meanwhile.
    ///
    /// # Safety
    /// `record` is a fresh record of this list's arena, whose value is initialised and stays
    /// valid until this list runs it.
    #[inline]
    unsafe fn push(&self, record: NonNull<DropRecord<P>>, end: P) {
        let record = record.as_ptr();
        let mut head = self.head.load().cast::<DropRecord<P>>();
        loop {
            let below = if head.is_null() {
                P::default()
            } else {
                // SAFETY: a record reachable from the head stays valid until a `&mut` run, which
                // cannot overlap this `&self` call; the `Acquire` load (or the failed exchange,
                // which reloads it) saw it written.
                unsafe { (*head).high_water }
            };
            // SAFETY: the record is ours until the exchange below publishes it.
            unsafe {
                (*record).next = head;
                (*record).high_water = end.max(below);
            }
            match self.head.exchange_weak(head.cast(), record.cast()) {
                Ok(()) => return,
                Err(now) => head = now.cast(),
            }
        }
    }

    /// Runs, newest first, the destructors of the values whose records have a high-water mark
    /// past `position`, and unlinks them: every value whose block reaches past `position`.
    /// `run_above(P::default())` runs them all.
    ///
    /// If a destructor panics, the others still run and then the panic continues; if another
    /// one panics while it unwinds, the process aborts.
    pub(crate) fn run_above(&mut self, position: P) {
        /// Finishes the walk if a destructor unwinds.
        struct Rest<'a, H: PtrCell, P: DropPosition>(&'a mut DropList<H, P>, P);
        impl<H: PtrCell, P: DropPosition> Drop for Rest<'_, H, P> {
            fn drop(&mut self) {
                self.0.pop_above(self.1);
            }
        }
        if self.head.get().is_null() {
            return;
        }
        let rest = Rest(self, position);
        rest.0.pop_above(position);
        mem::forget(rest);
    }

    /// As [`run_above`](Self::run_above) of the lowest position, then `then`, even if a destructor panicked: how an
    /// arena's drop runs the destructors before it frees their memory.
    pub(crate) fn run_all_then(&mut self, then: impl FnOnce()) {
        /// Calls its closure when dropped, unwinding or not.
        struct Then<F: FnOnce()>(Option<F>);
        impl<F: FnOnce()> Drop for Then<F> {
            fn drop(&mut self) {
                if let Some(then) = self.0.take() {
                    then();
                }
            }
        }
        let _then = Then(Some(then));
        self.run_above(P::default());
    }

    fn pop_above(&mut self, position: P) {
        loop {
            let head = self.head.get().cast::<DropRecord<P>>();
            // SAFETY: records stay valid until popped here; `&mut self` means no push is running.
            if head.is_null() || unsafe { (*head).high_water } <= position {
                return;
            }
            // SAFETY: as above. Unlink first, so that a destructor that panics leaves the list
            // consistent (and its value is never dropped twice).
            let (next, drop) = unsafe { ((*head).next, (*head).drop) };
            self.head.set(next.cast());
            // SAFETY: the record was pushed with its value initialised, and it is now unlinked,
            // so this is its value's one drop. `head` is not null.
            unsafe { drop(NonNull::new_unchecked(head)) };
        }
    }
}

/// Arenas that run destructors: a value allocated with [`try_alloc_owned`](Self::try_alloc_owned)
/// is dropped when its memory is reclaimed, at `reset`, at [`rewind`](crate::Rewind::rewind) to a
/// checkpoint taken before it, at the end of a [`scope`](crate::Rewind::scope) it was allocated
/// in, and when the arena is dropped; newest first (reverse allocation order). Implemented by
/// [`LinearAllocator`](crate::LinearAllocator), [`SyncLinearAllocator`](crate::SyncLinearAllocator),
/// [`VirtualArena`](crate::VirtualArena), [`SyncVirtualArena`](crate::SyncVirtualArena),
/// [`ChainAllocator`](crate::ChainAllocator), [`SyncChainAllocator`](crate::SyncChainAllocator),
/// a [`Scope`](crate::Scope) of those, and a [`LocalHandle`](crate::LocalHandle) on the lock-free
/// ones (the value is registered on the handle's arena). [`PinArena`] is implemented by the same
/// arenas when their memory is not borrowed (a backing allocator `A: 'static`).
///
/// # Cost
/// Free for what does not use it: plain allocations carry no header, and the allocation paths
/// are unchanged. A value of a type without drop glue ([`core::mem::needs_drop`] is false) is
/// allocated as by [`Arena::try_alloc`], with nothing registered. Any other value carries a
/// record of three words in front of it (four on the chain arenas, whose positions are a chunk
/// depth and an address), in the same block, and is linked in by one store (one
/// compare-exchange on the lock-free arenas). The chain arenas also find the chunk of the value,
/// walking down from the newest: one step unless other threads took chunks meanwhile. `reset`, `rewind` and drop cost nothing more when
/// no record is past their position, else one step per destructor they run.
///
/// # Destructors that panic
/// If a destructor panics during `reset`, `rewind`, a scope's end or the arena's drop, every other
/// destructor that call was to run still runs, and then the panic continues out of the call;
/// if a second destructor panics meanwhile, the process aborts (a panic while panicking), as for
/// a slice's elements. The arena stays consistent and usable: each value is dropped at most once.
/// A `reset` or `rewind` whose destructor panicked has not yet moved the cursor back (its bytes
/// stay allocated until the next `reset` or `rewind`); a dropped arena still frees its memory.
///
/// # Why `T: Send + 'static`
/// The destructor runs later, where the arena is then: on another thread if the arena was sent
/// there (hence `Send`), and after every borrow the value could hold has perhaps ended (hence
/// `'static`: a value holding a reference to a local, or to the arena itself, would be dropped
/// after the local died, or while `reset` holds `&mut` to the arena).
///
/// # Signal safety
/// On the lock-free arenas (and a [`LocalHandle`](crate::LocalHandle)) registration is
/// lock-free and reentrant: a signal handler may allocate such a value, even from the arena the
/// code it interrupted was registering on (see the protocol in `src/drops.rs`: one
/// compare-exchange of the head, retried only if another push won). Destructors never run in
/// the handler: only in `reset`, `rewind` and drop, which take `&mut`. On the `Cell` arenas
/// nothing is reentrant, as for their allocation.
///
/// # Safety
/// An implementor promises that every record pushed through
/// [`push_drop`](Self::push_drop) is run (its value dropped) before the bytes of its block
/// are handed out again or freed, and not earlier than the next `&mut self` use of the arena.
///
/// # Examples
/// ```
/// use libdd_alloc::{DropArena, Layout, LinearAllocator, Rewind, System};
///
/// let mut arena = LinearAllocator::new_in(Layout::array::<u8>(4096)?, System)?;
/// let kept = arena.try_alloc_owned(String::from("kept"))?;
/// kept.push('!');
/// let checkpoint = arena.checkpoint();
/// arena.try_alloc_owned(vec![1u64, 2, 3])?; // freed, and dropped, by the rewind
/// arena.rewind(checkpoint);
/// arena.reset(); // drops "kept!"
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
// `&self -> &mut T`: each call hands out a distinct block (the `Arena` contract).
#[allow(clippy::mut_from_ref)]
pub unsafe trait DropArena: Arena {
    /// Moves `value` into the arena, which drops it when its memory is reclaimed (see the
    /// trait). O(1).
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room; `value` is dropped.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{DropArena, SyncLinearAllocator, Layout, System};
    /// use std::sync::Arc;
    ///
    /// let shared = Arc::new(5);
    /// let mut arena = SyncLinearAllocator::new_in(Layout::array::<u64>(64)?, System)?;
    /// std::thread::scope(|s| {
    ///     for _ in 0..4 {
    ///         s.spawn(|| arena.try_alloc_owned(Arc::clone(&shared)).map(|_| ()));
    ///     }
    /// });
    /// assert_eq!(Arc::strong_count(&shared), 5);
    /// arena.reset();
    /// assert_eq!(Arc::strong_count(&shared), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    fn try_alloc_owned<T: Send + 'static>(&self, value: T) -> Result<&mut T, AllocError> {
        self.try_alloc_owned_with(|| value)
    }

    /// Allocates room for a `T` and its drop record, then calls `f` and writes its result
    /// there; the arena drops it when its memory is reclaimed (see the trait). `f` is not called
    /// when the allocation fails. If `f` panics, the block is given back (if it is still the most
    /// recent one), nothing is registered and the panic continues.
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{DropArena, VirtualArena};
    /// let arena = VirtualArena::new(1 << 20)?;
    /// let names = arena.try_alloc_owned_with(|| vec![String::from("main"); 3])?;
    /// assert_eq!(names.len(), 3);
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    fn try_alloc_owned_with<T: Send + 'static, F: FnOnce() -> T>(
        &self,
        f: F,
    ) -> Result<&mut T, AllocError> {
        if !mem::needs_drop::<T>() {
            return self.try_alloc_with(f);
        }
        let owned = self.try_alloc_with(|| Owned {
            record: DropRecord {
                next: ptr::null_mut(),
                high_water: Self::Position::default(),
                drop: drop_owned::<T, Self::Position>,
            },
            value: f(),
        })?;
        // A pointer to the whole block (not to the record field alone), so that the record's
        // drop function may reach the value through it.
        let owned = NonNull::from(owned);
        let end = owned.as_ptr().addr() + mem::size_of::<Owned<T, Self::Position>>();
        // SAFETY: the record is fresh and its value initialised; the block stays valid until
        // the arena is used through `&mut` (the `Arena` contract), when it runs the record. The
        // reference returned below covers the value only, which the list never touches before
        // that `&mut` use; the list reads and writes the record part.
        unsafe {
            self.push_drop(owned.cast(), end);
            Ok(&mut (*owned.as_ptr()).value)
        }
    }

    /// How the arena orders the positions of its drop records. The crate's own; not part of
    /// the API.
    #[doc(hidden)]
    type Position: DropPosition;

    /// Links a drop record into the arena's list. The crate's own; not part of the API.
    ///
    /// # Safety
    /// `record` is a fresh drop record (from this crate, of `Self::Position`) of a block of this
    /// arena ending at the address `end`, with its value initialised.
    #[doc(hidden)]
    unsafe fn push_drop(&self, record: NonNull<u8>, end: usize);
}

/// Arenas that can pin a value: [`try_alloc_pinned`](Self::try_alloc_pinned) hands out a
/// `Pin<&mut T>` that lives as long as the borrow of the arena.
///
/// # Why the pinning guarantee holds
/// `Pin` asks that the value is never moved, and that its memory is neither reused nor freed
/// before its destructor has run. The value is written once into its own block and the arena
/// never moves a block. Its memory comes back to the arena only through `&mut self`: `reset`,
/// `rewind` (also at the end of a [`scope`](crate::Rewind::scope)) and the arena's drop, and each of
/// these first runs the destructor of every value whose bytes it frees ([`DropArena`]'s
/// contract; with a panicking destructor the others still run, or the process aborts). What is
/// left are the ways to skip those calls:
/// - `mem::forget` of the arena (or `Box::leak`, a cycle of `Arc`s): its memory is then never
///   freed, and never reused, since that too needs the arena. This is why an arena whose memory
///   is borrowed from the caller cannot pin: a [`LinearAllocator`](crate::LinearAllocator) over
///   a backing allocator `&'a B` would give its buffer back to `B` only in its own drop, and
///   forgetting the arena ends the borrow, after which `B` may free or reuse the buffer (drop a
///   bump allocator, reset it). Hence the bound `A: 'static` on the backing allocator: a
///   `'static` allocator's blocks stay valid until they are deallocated or every copy of it is
///   dropped (the `Allocator` contract), and the forgotten arena holds a copy. The virtual
///   arenas own their reservation outright.
/// - `mem::forget` of a [`Scope`](crate::Scope): impossible, the closure only gets `&mut`; and
///   two scopes cannot be swapped (their lifetimes are distinct, universally quantified).
/// - `mem::forget` of a [`LocalHandle`](crate::LocalHandle): its slabs are the arena's, which
///   stays borrowed and frees them only through `&mut`, after the destructors.
/// - a stale or foreign [`Checkpoint`](crate::Checkpoint): a rewind drops every value whose
///   bytes it frees, whatever the checkpoint says (`src/drops.rs`).
///
/// A value of a type without drop glue gets no drop record; its "destructor" is nothing, so its
/// memory may be reused at once.
///
/// # Safety
/// An implementor promises all of the above: its memory is freed or reused only after the
/// destructors of the values in it ran, even if the arena (or any guard) is forgotten.
///
/// # Examples
/// ```
/// use libdd_alloc::{PinArena, VirtualArena};
/// use std::marker::PhantomPinned;
///
/// struct Node { id: u32, _pin: PhantomPinned }
/// let arena = VirtualArena::new(1 << 20)?;
/// let node = arena.try_alloc_pinned(Node { id: 7, _pin: PhantomPinned })?;
/// assert_eq!(node.id, 7);
/// # Ok::<(), libdd_alloc::AllocError>(())
/// ```
// `&self -> Pin<&mut T>`: each call hands out a distinct block (the `Arena` contract).
#[allow(clippy::mut_from_ref)]
pub unsafe trait PinArena: DropArena {
    /// Moves `value` into the arena and pins it there: it is never moved again, and its
    /// destructor runs before its memory is reclaimed (see the trait). O(1), as
    /// [`try_alloc_owned`](DropArena::try_alloc_owned).
    ///
    /// # Errors
    /// `Err(AllocError)` when the arena has no room; `value` is dropped.
    ///
    /// # Signal safety
    /// As [`try_alloc_owned`](DropArena::try_alloc_owned): lock-free and reentrant on the
    /// lock-free arenas.
    ///
    /// # Examples
    /// ```
    /// use libdd_alloc::{PinArena, SyncVirtualArena};
    /// let arena = SyncVirtualArena::new(1 << 20)?;
    /// let mut future = arena.try_alloc_pinned(async { 6 * 7 })?;
    /// let _: std::pin::Pin<&mut dyn std::future::Future<Output = i32>> = future.as_mut();
    /// # Ok::<(), libdd_alloc::AllocError>(())
    /// ```
    #[inline]
    fn try_alloc_pinned<T: Send + 'static>(&self, value: T) -> Result<Pin<&mut T>, AllocError> {
        let value = self.try_alloc_owned(value)?;
        // SAFETY: the value never moves (the arena never moves a block, and no one else holds
        // it), and its memory is reclaimed only after its destructor ran: the trait's contract.
        Ok(unsafe { Pin::new_unchecked(value) })
    }
}

/// The `push_drop` of an arena that keeps its own list, `end` being the position (as the list
/// orders them) of the record's block end.
///
/// # Safety
/// As [`DropArena::push_drop`], for the arena that owns `list`.
#[inline]
pub(crate) unsafe fn push_to<H: PtrCell, P: DropPosition>(
    list: &DropList<H, P>,
    record: NonNull<u8>,
    end: P,
) {
    // SAFETY: forwarded caller contract.
    unsafe { list.push(record.cast(), end) };
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{
        Arena, ChainAllocator, LinearAllocator, PinArena, Rewind, SyncChainAllocator,
        SyncLinearAllocator, SyncVirtualArena, System, VirtualArena,
    };
    use core::alloc::Layout;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::{Arc, Mutex};
    use std::vec::Vec;

    /// Appends its id to the log when dropped; panics then if `panics`.
    struct Logged {
        id: u32,
        log: Arc<Mutex<Vec<u32>>>,
        panics: bool,
    }

    impl Drop for Logged {
        fn drop(&mut self) {
            self.log.lock().unwrap().push(self.id);
            assert!(!self.panics, "destructor {} panics", self.id);
        }
    }

    fn logged(log: &Arc<Mutex<Vec<u32>>>, id: u32) -> Logged {
        Logged {
            id,
            log: Arc::clone(log),
            panics: false,
        }
    }

    fn taken(log: &Arc<Mutex<Vec<u32>>>) -> Vec<u32> {
        core::mem::take(&mut *log.lock().unwrap())
    }

    /// Makes a fresh arena of one kind.
    type Make<'a> = &'a mut dyn FnMut() -> Box<dyn Subject>;

    /// Every arena that runs destructors, made fresh.
    fn each_arena(check: &mut dyn FnMut(Make<'_>)) {
        check(&mut || {
            Box::new(
                LinearAllocator::new_in(Layout::from_size_align(1 << 16, 64).unwrap(), System)
                    .unwrap(),
            )
        });
        check(&mut || {
            Box::new(
                SyncLinearAllocator::new_in(Layout::from_size_align(1 << 16, 64).unwrap(), System)
                    .unwrap(),
            )
        });
        check(&mut || Box::new(VirtualArena::new(1 << 20).unwrap()));
        check(&mut || Box::new(SyncVirtualArena::new(1 << 20).unwrap()));
        // Chunks of 256 bytes hold three or four values each: the values span many chunks.
        check(&mut || {
            Box::new(
                ChainAllocator::new_in(256, System)
                    .unwrap()
                    .with_max_chunk_size(256),
            )
        });
        check(&mut || {
            Box::new(
                SyncChainAllocator::new_in(256, System)
                    .unwrap()
                    .with_max_chunk_size(256),
            )
        });
    }

    use std::boxed::Box;

    /// The arena operations the tests need, object-safe.
    trait Subject {
        fn put(&self, value: Logged) -> *mut Logged;
        fn put_plain(&self, value: u64);
        fn mark(&self) -> crate::Checkpoint;
        fn roll_back(&mut self, checkpoint: crate::Checkpoint);
        fn clear(&mut self);
        fn used(&self) -> usize;
        /// Puts `ids` inside a scope (the one equal to `panicking` panics when dropped), then
        /// ends it.
        fn scoped(&mut self, log: &Arc<Mutex<Vec<u32>>>, ids: &[u32], panicking: Option<u32>);
    }

    macro_rules! subject {
        ($($ty:ty),*) => {$( subject!(@one $ty, 0); )*};
        (@one $ty:ty, $overhead:expr) => {
            impl Subject for $ty {
                fn put(&self, value: Logged) -> *mut Logged {
                    self.try_alloc_owned(value).unwrap()
                }
                fn put_plain(&self, value: u64) {
                    self.try_alloc(value).unwrap();
                }
                fn mark(&self) -> crate::Checkpoint {
                    Rewind::checkpoint(self)
                }
                fn roll_back(&mut self, checkpoint: crate::Checkpoint) {
                    Rewind::rewind(self, checkpoint)
                }
                fn clear(&mut self) {
                    <$ty>::reset(self)
                }
                fn used(&self) -> usize {
                    // Not counting the header of a chain's kept chunk.
                    self.used_bytes() - $overhead
                }
                fn scoped(&mut self, log: &Arc<Mutex<Vec<u32>>>, ids: &[u32], panicking: Option<u32>) {
                    self.scope(|scope| {
                        for &id in ids {
                            scope.try_alloc_owned(logged(log, id)).unwrap().panics =
                                Some(id) == panicking;
                        }
                    });
                }
            }
        };
    }
    subject!(
        LinearAllocator<System>,
        SyncLinearAllocator<System>,
        VirtualArena,
        SyncVirtualArena
    );
    subject!(@one ChainAllocator<System>, ChainAllocator::<System>::CHAIN_NODE_OVERHEAD);
    subject!(@one SyncChainAllocator<System>, SyncChainAllocator::<System>::CHAIN_NODE_OVERHEAD);

    const RECORD: usize = 3 * core::mem::size_of::<usize>();

    #[test]
    fn reset_drops_every_value_newest_first_and_only_once() {
        each_arena(&mut |make| {
            let log = Arc::new(Mutex::new(Vec::new()));
            let mut arena = make();
            for id in 0..5 {
                arena.put(logged(&log, id));
                arena.put_plain(u64::from(id));
            }
            arena.clear();
            assert_eq!(taken(&log), [4, 3, 2, 1, 0]);
            assert_eq!(arena.used(), 0);
            arena.clear();
            assert!(taken(&log).is_empty());
            arena.put(logged(&log, 9));
            drop(arena);
            assert_eq!(taken(&log), [9]);
        });
    }

    #[test]
    fn rewind_drops_exactly_the_values_allocated_after_the_checkpoint() {
        each_arena(&mut |make| {
            let log = Arc::new(Mutex::new(Vec::new()));
            let mut arena = make();
            arena.put(logged(&log, 0));
            let first = arena.mark();
            arena.put(logged(&log, 1));
            arena.put_plain(1);
            let second = arena.mark();
            arena.put(logged(&log, 2));
            arena.put(logged(&log, 3));
            arena.roll_back(second);
            assert_eq!(taken(&log), [3, 2]);
            arena.roll_back(second);
            assert!(taken(&log).is_empty());
            arena.roll_back(first);
            assert_eq!(taken(&log), [1]);
            // A stale checkpoint (past the cursor now) moves nothing back and drops nothing.
            arena.roll_back(second);
            assert!(taken(&log).is_empty());
            drop(arena);
            assert_eq!(taken(&log), [0]);
        });
    }

    #[test]
    fn scope_end_drops_the_values_of_the_scope_only() {
        each_arena(&mut |make| {
            let log = Arc::new(Mutex::new(Vec::new()));
            let mut arena = make();
            arena.put(logged(&log, 0));
            let used = arena.used();
            arena.scoped(&log, &[1, 2, 3], None);
            assert_eq!(taken(&log), [3, 2, 1]);
            assert_eq!(arena.used(), used);
            drop(arena);
            assert_eq!(taken(&log), [0]);
        });
    }

    #[test]
    fn a_foreign_checkpoint_drops_every_value_whose_bytes_it_frees() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut arena =
            LinearAllocator::new_in(Layout::from_size_align(4096, 64).unwrap(), System).unwrap();
        let other =
            LinearAllocator::new_in(Layout::from_size_align(4096, 64).unwrap(), System).unwrap();
        let empty = other.checkpoint();
        arena.try_alloc_owned(logged(&log, 0)).unwrap();
        arena.try_alloc_owned(logged(&log, 1)).unwrap();
        arena.roll_back(empty);
        assert_eq!(taken(&log), [1, 0]);
        assert_eq!(arena.used_bytes(), 0);
    }

    #[test]
    fn values_registered_out_of_order_are_all_dropped_when_their_bytes_are_freed() {
        // The outer value's initialiser registers an inner one after a checkpoint: the inner
        // record is pushed first although its bytes come after the outer's.
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut arena =
            LinearAllocator::new_in(Layout::from_size_align(4096, 64).unwrap(), System).unwrap();
        let mut inside = None;
        arena
            .try_alloc_owned_with(|| {
                inside = Some(arena.checkpoint());
                arena.try_alloc_owned(logged(&log, 2)).unwrap();
                logged(&log, 1)
            })
            .unwrap();
        arena.roll_back(inside.unwrap());
        // The inner value's bytes are freed, so it is dropped; the outer one, pushed after it,
        // is dropped early (its bytes stay), and only once.
        assert_eq!(taken(&log), [1, 2]);
        arena.clear();
        drop(arena);
        assert!(taken(&log).is_empty());
    }

    #[test]
    fn values_without_drop_glue_take_no_record_and_others_one() {
        let arena =
            LinearAllocator::new_in(Layout::from_size_align(4096, 64).unwrap(), System).unwrap();
        arena.try_alloc_owned(7u64).unwrap();
        assert_eq!(arena.used_bytes(), 8);
        let log = Arc::new(Mutex::new(Vec::new()));
        let before = arena.used_bytes();
        arena.try_alloc_owned(logged(&log, 0)).unwrap();
        assert_eq!(
            arena.used_bytes() - before,
            RECORD + core::mem::size_of::<Logged>()
        );
    }

    #[test]
    fn full_arena_drops_the_value_and_registers_nothing() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut arena =
            LinearAllocator::new_in(Layout::from_size_align(16, 16).unwrap(), System).unwrap();
        assert!(arena.try_alloc_owned(logged(&log, 0)).is_err());
        assert_eq!(taken(&log), [0]);
        arena.clear();
        assert!(taken(&log).is_empty());
    }

    #[test]
    fn panicking_initialiser_gives_the_block_back_and_registers_nothing() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut arena =
            LinearAllocator::new_in(Layout::from_size_align(4096, 64).unwrap(), System).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| {
            arena
                .try_alloc_owned_with(|| -> Logged { panic!("initialiser") })
                .map(|_| ())
        }));
        assert!(result.is_err());
        assert_eq!(arena.used_bytes(), 0);
        arena.clear();
        assert!(taken(&log).is_empty());
    }

    /// How a run of destructors ends: `reset`, `rewind`, a scope's end, or the arena's drop.
    #[derive(Clone, Copy, Debug)]
    enum Ending {
        Reset,
        Rewind,
        Scope,
        Drop,
    }

    #[test]
    fn a_panicking_destructor_at_every_index_still_lets_the_others_run_once() {
        const N: u32 = 6;
        for ending in [Ending::Reset, Ending::Rewind, Ending::Scope, Ending::Drop] {
            for panicking in 0..N {
                each_arena(&mut |make| {
                    let log = Arc::new(Mutex::new(Vec::new()));
                    let mut arena = make();
                    arena.put(logged(&log, 100));
                    let checkpoint = arena.mark();
                    let put_all = |arena: &dyn Subject| {
                        for id in 0..N {
                            let value = arena.put(logged(&log, id));
                            // SAFETY: fresh value of ours, no other reference to it.
                            unsafe { (*value).panics = id == panicking };
                        }
                    };
                    let result = catch_unwind(AssertUnwindSafe(|| match ending {
                        Ending::Reset => {
                            put_all(&*arena);
                            arena.clear();
                        }
                        Ending::Rewind => {
                            put_all(&*arena);
                            arena.roll_back(checkpoint);
                        }
                        Ending::Scope => {
                            let ids: Vec<u32> = (0..N).collect();
                            arena.scoped(&log, &ids, Some(panicking));
                        }
                        Ending::Drop => {
                            put_all(&*arena);
                            drop(core::mem::replace(&mut arena, make()));
                        }
                    }));
                    assert!(result.is_err(), "{ending:?}: the panic continues");
                    let mut expected: Vec<u32> = (0..N).rev().collect();
                    if matches!(ending, Ending::Reset | Ending::Drop) {
                        expected.push(100);
                    }
                    assert_eq!(taken(&log), expected, "{ending:?}, panic at {panicking}");
                    // Consistent and usable: nothing is dropped twice, allocation works, and a
                    // reset reclaims the bytes the interrupted call left allocated.
                    arena.put(logged(&log, 200));
                    arena.clear();
                    let left = taken(&log);
                    assert_eq!(
                        left,
                        if matches!(ending, Ending::Rewind | Ending::Scope) {
                            std::vec![200, 100]
                        } else {
                            std::vec![200]
                        }
                    );
                    assert_eq!(arena.used(), 0);
                });
            }
        }
    }

    #[test]
    fn threads_register_concurrently_and_each_value_is_dropped_once() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut arena = SyncVirtualArena::new(1 << 24).unwrap();
        threads_register(&arena, &log);
        arena.clear();
        each_thread_dropped_once_newest_first(&log);
        // Chunks of 4 KiB: the threads' values and their handles' slabs span many chunks.
        let mut chain = SyncChainAllocator::new_in(4096, System)
            .unwrap()
            .with_max_chunk_size(4096);
        threads_register(&chain, &log);
        chain.clear();
        each_thread_dropped_once_newest_first(&log);
    }

    /// Four threads register 500 values each, half on the arena, half through a handle.
    fn threads_register<A: DropArena + crate::LocalSource + Sync>(
        arena: &A,
        log: &Arc<Mutex<Vec<u32>>>,
    ) where
        for<'a> crate::LocalHandle<'a, A>: DropArena,
    {
        std::thread::scope(|s| {
            for thread in 0..4u32 {
                s.spawn(move || {
                    let local = crate::LocalHandle::new(arena);
                    for i in 0..500 {
                        let id = thread * 10_000 + i;
                        if i % 2 == 0 {
                            arena.try_alloc_owned(logged(log, id)).unwrap();
                        } else {
                            local.try_alloc_owned(logged(log, id)).unwrap();
                        }
                    }
                });
            }
        });
    }

    fn each_thread_dropped_once_newest_first(log: &Arc<Mutex<Vec<u32>>>) {
        let dropped = taken(log);
        assert_eq!(dropped.len(), 2000);
        for thread in 0..4u32 {
            let mine: Vec<u32> = dropped
                .iter()
                .copied()
                .filter(|id| id / 10_000 == thread)
                .collect();
            let expected: Vec<u32> = (0..500).rev().map(|i| thread * 10_000 + i).collect();
            assert_eq!(mine, expected, "thread {thread}: each once, newest first");
        }
    }

    #[test]
    fn a_value_pinned_through_a_forgotten_handle_is_dropped_before_its_memory_is_reused() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut arena = SyncVirtualArena::new(1 << 20).unwrap();
        let local = arena.local();
        let pinned = local
            .try_alloc_pinned((logged(&log, 1), core::marker::PhantomPinned))
            .unwrap();
        let address = &*pinned as *const _ as usize;
        core::mem::forget(local);
        arena.reset();
        assert_eq!(
            taken(&log),
            [1],
            "dropped before the reset hands the bytes out again"
        );
        let again = arena.try_alloc([0u8; 64]).unwrap();
        assert!(
            again.as_ptr() as usize <= address,
            "the memory is reused only now"
        );
    }

    #[test]
    fn a_value_pinned_in_a_scope_is_dropped_at_its_end() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut arena =
            LinearAllocator::new_in(Layout::from_size_align(4096, 64).unwrap(), System).unwrap();
        arena.scope(|scope| {
            let pinned = scope.try_alloc_pinned(logged(&log, 3)).unwrap();
            assert_eq!(pinned.id, 3);
        });
        assert_eq!(taken(&log), [3]);
        assert_eq!(arena.used_bytes(), 0);
    }
}
