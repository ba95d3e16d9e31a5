//! Adversarial review of the issue-10 §1 soundness fixes (branch `sound`): attacks from safe code
//! plus an `unsafe impl Allocator` for a backing allocator that honours the `Allocator` contract,
//! on every arena that takes a backing allocator.
//!
//! The centrepiece is [`Chaos`], a backing allocator that does everything the trait allows: it
//! fails, hands out more than asked (and hidden slack so that a later `grow` can stay in place and
//! return the same pointer), moves or keeps blocks on `grow` and `shrink`, and at every call
//! re-enters the arena it backs (through a `Weak`, as a user would) with *any* operation on *any*
//! block someone owns: allocate, deallocate, grow (which may grow a chunk's only block, and so
//! call back into the backing allocator, nested), shrink, typed allocation, checkpoint,
//! statistics. A property test drives each arena with random operations, checkpoints, rewinds
//! and resets, and after every step checks that every owned block lies inside a block the
//! backing allocator has live (a block in a freed chunk is a use-after-free even without ASan),
//! holds its bytes, and overlaps no other.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::fill::{fill, holds, pattern};
use common::scripted::{quiet_scripted_panics, Action as ScriptedAction, Scripted, ScriptedPanic};
use libdd_alloc::{
    AllocError, Allocator, Arena, ChainAllocator, Checkpoint, Layout, LinearAllocator, Rewind,
    SyncChainAllocator, SyncLinearAllocator, System,
};
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::rc::{Rc, Weak};

// ---- The arenas, behind one object-safe interface ----

/// What the tests need of every arena.
trait Subject: Allocator + Rewind + 'static {
    /// `(used_bytes, reserved_bytes, remaining_capacity)`.
    fn stats(&self) -> (usize, usize, usize);
    fn reset_all(&mut self);
}

macro_rules! subject {
    ($($ty:ident),*) => {$(
        impl<A: Allocator + 'static> Subject for $ty<A> {
            fn stats(&self) -> (usize, usize, usize) {
                (self.used_bytes(), self.reserved_bytes(), self.remaining_capacity())
            }
            fn reset_all(&mut self) {
                self.reset();
            }
        }
    )*};
}
subject!(
    ChainAllocator,
    SyncChainAllocator,
    LinearAllocator,
    SyncLinearAllocator
);

/// The arena as the backing allocator reaches it: through a `RefCell`, so a re-entrant call
/// made while the arena is borrowed mutably (`reset`, `rewind`) finds it busy (`None`), as a
/// `try_borrow` user would.
trait Target {
    fn allocate(&self, layout: Layout) -> Option<Result<NonNull<[u8]>, AllocError>>;
    /// # Safety
    /// The `Allocator::deallocate` contract.
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) -> Option<()>;
    /// Grow (zeroed or not) or shrink, as `new` is larger or smaller.
    ///
    /// # Safety
    /// The `Allocator::grow`/`shrink` contract.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zeroed: bool,
    ) -> Option<Result<NonNull<[u8]>, AllocError>>;
    /// `try_alloc_slice_fill_with(len, f)`, as a raw block.
    fn typed(
        &self,
        len: usize,
        f: &mut dyn FnMut(usize) -> u8,
    ) -> Option<Result<NonNull<u8>, AllocError>>;
    fn checkpoint(&self) -> Option<Checkpoint>;
    fn stats(&self) -> Option<(usize, usize, usize)>;
}

impl<T: Subject> Target for RefCell<T> {
    fn allocate(&self, layout: Layout) -> Option<Result<NonNull<[u8]>, AllocError>> {
        Some(self.try_borrow().ok()?.allocate(layout))
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) -> Option<()> {
        let arena = self.try_borrow().ok()?;
        // SAFETY: forwarded caller contract.
        unsafe { arena.deallocate(ptr, layout) };
        Some(())
    }
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zeroed: bool,
    ) -> Option<Result<NonNull<[u8]>, AllocError>> {
        let arena = self.try_borrow().ok()?;
        // SAFETY: forwarded caller contract.
        Some(unsafe {
            if new.size() < old.size() {
                arena.shrink(ptr, old, new)
            } else if zeroed {
                arena.grow_zeroed(ptr, old, new)
            } else {
                arena.grow(ptr, old, new)
            }
        })
    }
    fn typed(
        &self,
        len: usize,
        f: &mut dyn FnMut(usize) -> u8,
    ) -> Option<Result<NonNull<u8>, AllocError>> {
        let arena = self.try_borrow().ok()?;
        Some(
            arena
                .try_alloc_slice_fill_with(len, f)
                .map(|s| NonNull::new(s.as_mut_ptr()).unwrap()),
        )
    }
    fn checkpoint(&self) -> Option<Checkpoint> {
        Some(self.try_borrow().ok()?.checkpoint())
    }
    fn stats(&self) -> Option<(usize, usize, usize)> {
        Some(self.try_borrow().ok()?.stats())
    }
}

// ---- State shared by the test and the backing allocator ----

/// A small deterministic generator (xorshift64*), so a failing seed replays exactly.
struct Rng(Cell<u64>);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(Cell::new(seed | 1))
    }
    fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn one_in(&self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// A block of the arena that someone (the test or the backing allocator) owns, filled with block
/// `id`'s pattern. `epoch` orders it against checkpoints: it was (re)allocated at that epoch.
#[derive(Clone, Copy, Debug)]
struct Owned {
    ptr: NonNull<u8>,
    layout: Layout,
    id: usize,
    epoch: u64,
}

/// A block the backing allocator has out: the layout it got from `System` (hidden slack
/// included) and the length it reported.
#[derive(Clone, Copy, Debug)]
struct Backing {
    truth: Layout,
    reported: usize,
}

#[derive(Default)]
struct Counters {
    reentries: Cell<usize>,
    reentries_in_grow: Cell<usize>,
    grows: Cell<usize>,
    grows_in_place: Cell<usize>,
    shrinks: Cell<usize>,
    failures: Cell<usize>,
    deallocations: Cell<usize>,
    rewinds: Cell<usize>,
    resets: Cell<usize>,
}

struct Shared {
    rng: Rng,
    /// Every block someone owns and nobody is resizing or freeing right now.
    owned: RefCell<Vec<Owned>>,
    next_id: Cell<usize>,
    epoch: Cell<u64>,
    /// Blocks the backing allocator has out, by address.
    live: RefCell<BTreeMap<usize, Backing>>,
    bad_frees: Cell<usize>,
    /// Whether the backing allocator may fail yet (not while the arena is built).
    armed: Cell<bool>,
    /// One call in this many panics (0: never).
    panic_one_in: Cell<usize>,
    calls: Cell<usize>,
    panics: Cell<usize>,
    /// Nesting of re-entrant calls (bounded, or a grow that logs its own grows never ends).
    level: Cell<u32>,
    counters: Counters,
    /// The arena's `Debug`-free type name, for messages.
    name: &'static str,
}

impl Shared {
    fn new(seed: u64, name: &'static str) -> Rc<Self> {
        Rc::new(Self {
            rng: Rng::new(seed),
            owned: RefCell::new(Vec::new()),
            next_id: Cell::new(1),
            epoch: Cell::new(0),
            live: RefCell::new(BTreeMap::new()),
            bad_frees: Cell::new(0),
            armed: Cell::new(false),
            panic_one_in: Cell::new(0),
            calls: Cell::new(0),
            panics: Cell::new(0),
            level: Cell::new(0),
            counters: Counters::default(),
            name,
        })
    }

    fn tick(&self) -> u64 {
        let e = self.epoch.get() + 1;
        self.epoch.set(e);
        e
    }

    fn fresh_id(&self) -> usize {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Takes an owned block out of the list (last one half the time): while its owner resizes or
    /// frees it, nobody else may touch it.
    fn take(&self) -> Option<Owned> {
        let mut owned = self.owned.borrow_mut();
        if owned.is_empty() {
            return None;
        }
        let i = if self.rng.one_in(2) {
            owned.len() - 1
        } else {
            self.rng.below(owned.len())
        };
        Some(owned.remove(i))
    }

    fn put(&self, block: Owned) {
        self.owned.borrow_mut().push(block);
    }

    /// The backing block that contains `[addr, addr + len)`, if one is live.
    fn contained(&self, addr: usize, len: usize) -> bool {
        let live = self.live.borrow();
        live.range(..=addr)
            .next_back()
            .is_some_and(|(&start, b)| addr + len <= start + b.reported)
    }

    /// Every owned block lies inside a live backing block, holds its pattern, and overlaps no
    /// other.
    fn verify(&self, when: &str) {
        let owned = self.owned.borrow();
        let mut ranges: Vec<(usize, usize, usize)> = Vec::new();
        for b in owned.iter() {
            let addr = b.ptr.as_ptr() as usize;
            let len = b.layout.size();
            assert!(
                self.contained(addr, len),
                "{}: {when}: block {} ({addr:#x}+{len}) is not inside memory the backing \
                 allocator has live: a use-after-free",
                self.name,
                b.id
            );
            // SAFETY: the block lies in live backing memory (checked above) and is owned.
            let intact = unsafe { holds(b.ptr, len, b.id) };
            assert!(
                intact,
                "{}: {when}: block {} ({addr:#x}+{len}) changed",
                self.name, b.id
            );
            ranges.push((addr, len, b.id));
        }
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "{}: {when}: blocks {} and {} overlap",
                self.name,
                w[0].2,
                w[1].2
            );
        }
    }
}

/// A random non-zero size, mostly small, sometimes a chunk's worth or more.
fn random_size(rng: &Rng) -> usize {
    match rng.below(10) {
        0 => 600 + rng.below(2500),
        1 | 2 => 200 + rng.below(400),
        _ => 1 + rng.below(200),
    }
}

/// One random operation on `target`, the way either side would do it: `Err` and a busy arena
/// are both fine, only what happens to blocks matters.
fn random_op(shared: &Shared, target: &dyn Target) {
    let rng = &shared.rng;
    match rng.below(12) {
        0..=3 => {
            let layout = Layout::from_size_align(random_size(rng), 1 << rng.below(7)).unwrap();
            if let Some(Ok(block)) = target.allocate(layout) {
                let ptr = block.cast::<u8>();
                assert_eq!(ptr.as_ptr() as usize % layout.align(), 0, "misaligned");
                assert!(block.len() >= layout.size());
                let id = shared.fresh_id();
                // SAFETY: a fresh block of at least `layout.size()` bytes.
                unsafe { fill(ptr, layout.size(), id) };
                let epoch = shared.tick();
                shared.put(Owned {
                    ptr,
                    layout,
                    id,
                    epoch,
                });
            }
        }
        4 | 5 => {
            if let Some(b) = shared.take() {
                // SAFETY: an owned block of the arena, with its layout, taken out of the list.
                if unsafe { target.deallocate(b.ptr, b.layout) }.is_none() {
                    shared.put(b);
                }
            }
        }
        6..=8 => {
            let Some(b) = shared.take() else { return };
            let old = b.layout;
            let new_size = match rng.below(4) {
                0 => 1 + rng.below(old.size()), // shrink
                1 => old.size() + 600 + rng.below(3000),
                _ => old.size() + 1 + rng.below(2 * old.size() + 64),
            };
            let align = if rng.one_in(4) {
                1 << rng.below(7)
            } else {
                old.align()
            };
            let new = Layout::from_size_align(new_size, align).unwrap();
            let zeroed = rng.one_in(3);
            // SAFETY: an owned block of the arena with layout `old`, taken out of the list.
            match unsafe { target.resize(b.ptr, old, new, zeroed) } {
                Some(Ok(block)) => {
                    let ptr = block.cast::<u8>();
                    assert_eq!(ptr.as_ptr() as usize % align, 0, "misaligned resize");
                    let kept = old.size().min(new.size());
                    let addr = ptr.as_ptr() as usize;
                    assert!(
                        shared.contained(addr, new.size()),
                        "{}: a resized block is not in live backing memory",
                        shared.name
                    );
                    // SAFETY: the resized block is ours, `new.size()` bytes.
                    unsafe {
                        assert!(holds(ptr, kept, b.id), "{}: resize lost bytes", shared.name);
                        if zeroed && new.size() > old.size() {
                            let tail = std::slice::from_raw_parts(
                                ptr.add(kept).as_ptr(),
                                new.size() - kept,
                            );
                            assert!(tail.iter().all(|&x| x == 0), "grow_zeroed tail not zero");
                        }
                        fill(ptr, new.size(), b.id);
                    }
                    let epoch = shared.tick();
                    shared.put(Owned {
                        ptr,
                        layout: new,
                        id: b.id,
                        epoch,
                    });
                }
                // Failed or busy: the block is as it was, and still ours.
                _ => shared.put(b),
            }
        }
        9 => {
            let len = 1 + rng.below(300);
            let id = shared.fresh_id();
            // The filling closure may itself re-enter (it is user code too).
            let mut f = |i: usize| {
                if i == 0 && rng.one_in(4) {
                    nested(shared, target);
                }
                pattern(id, i)
            };
            if let Some(Ok(ptr)) = target.typed(len, &mut f) {
                let epoch = shared.tick();
                shared.put(Owned {
                    ptr,
                    layout: Layout::array::<u8>(len).unwrap(),
                    id,
                    epoch,
                });
            }
        }
        10 => {
            if let Some((used, reserved, remaining)) = target.stats() {
                assert_eq!(
                    used + remaining,
                    reserved,
                    "{}: used + remaining != reserved",
                    shared.name
                );
            }
            let _ = target.checkpoint();
        }
        _ => shared.verify("inside a random operation"),
    }
}

/// Runs a few random operations one level deeper, if the nesting bound allows.
fn nested(shared: &Shared, target: &dyn Target) {
    if shared.level.get() >= 2 {
        return;
    }
    /// Restores the nesting level, on unwind too.
    struct Level<'a>(&'a Cell<u32>);
    impl Drop for Level<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    shared.level.set(shared.level.get() + 1);
    let _level = Level(&shared.level);
    shared
        .counters
        .reentries
        .set(shared.counters.reentries.get() + 1);
    for _ in 0..1 + shared.rng.below(4) {
        random_op(shared, target);
    }
}

// ---- The backing allocator ----

/// A backing allocator over `System` that uses every freedom the `Allocator` trait gives, and
/// re-enters the arena it backs (see the module docs). It keeps the exact set of blocks it has
/// out: a free of a block it does not have out is counted in `bad_frees` and not forwarded.
struct Chaos {
    shared: Rc<Shared>,
    target: Weak<dyn Target>,
}

impl Chaos {
    /// Re-enters the arena, half the time, if it can be reached (not while it is built or
    /// dropped: the `Weak` does not upgrade then).
    fn maybe_reenter(&self) {
        if self.shared.rng.one_in(2) {
            if let Some(target) = self.target.upgrade() {
                nested(&self.shared, &*target);
            }
        }
    }

    /// Takes a block from `System` for `layout`, sometimes with more than asked (reported) and
    /// hidden slack after it (for a later in-place grow).
    fn take(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let rng = &self.shared.rng;
        let extra = [0, 0, 0, 16, 100, 1000][rng.below(6)];
        let slack = [0, 0, 512, 8192][rng.below(4)];
        let reported = layout.size() + extra;
        let truth =
            Layout::from_size_align(reported + slack, layout.align()).map_err(|_| AllocError)?;
        let block = System.allocate(truth)?;
        let prev = self.shared.live.borrow_mut().insert(
            block.cast::<u8>().as_ptr() as usize,
            Backing { truth, reported },
        );
        assert!(prev.is_none(), "System handed out a live block");
        Ok(NonNull::slice_from_raw_parts(block.cast(), reported))
    }

    /// The block at `ptr`, if it is live and `layout` fits it (the `Allocator` contract).
    fn lookup(&self, ptr: NonNull<u8>, layout: Layout) -> Option<Backing> {
        let b = *self.shared.live.borrow().get(&(ptr.as_ptr() as usize))?;
        (layout.size() <= b.reported && layout.align() == b.truth.align()).then_some(b)
    }

    fn give_back(&self, ptr: NonNull<u8>) {
        let b = self
            .shared
            .live
            .borrow_mut()
            .remove(&(ptr.as_ptr() as usize))
            .unwrap();
        // SAFETY: a live block from `System` with this layout.
        unsafe { System.deallocate(ptr, b.truth) };
    }

    fn fail(&self) -> bool {
        let fail = self.shared.armed.get() && self.shared.rng.one_in(10);
        if fail {
            let c = &self.shared.counters.failures;
            c.set(c.get() + 1);
        }
        fail
    }

    /// Resizes `ptr` (of `old`) to `new`: in place when the block (with its slack) is big enough
    /// and suitably aligned, half the time; otherwise moves it.
    ///
    /// # Safety
    /// `ptr` is live in `self.live` and `old` fits it.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zeroed: bool,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let b = self.lookup(ptr, old).unwrap();
        let rng = &self.shared.rng;
        let fits = new.size() <= b.truth.size()
            && new.align() <= b.truth.align()
            && ptr.as_ptr() as usize % new.align() == 0;
        let block = if fits && rng.one_in(2) {
            // Same pointer; sometimes reports the whole block (more than asked).
            let reported = if rng.one_in(2) {
                b.truth.size()
            } else {
                new.size()
            };
            self.shared.live.borrow_mut().insert(
                ptr.as_ptr() as usize,
                Backing {
                    truth: b.truth,
                    reported,
                },
            );
            if new.size() > old.size() {
                let c = &self.shared.counters.grows_in_place;
                c.set(c.get() + 1);
            }
            NonNull::slice_from_raw_parts(ptr, reported)
        } else {
            let block = self.take(new)?;
            let keep = old.size().min(new.size());
            // SAFETY: distinct live blocks, both at least `keep` bytes.
            unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), block.cast().as_ptr(), keep) };
            self.give_back(ptr);
            block
        };
        if zeroed {
            let from = old.size();
            // SAFETY: the block is at least `block.len() >= from` bytes.
            unsafe {
                block
                    .cast::<u8>()
                    .add(from)
                    .write_bytes(0, block.len() - from)
            };
        }
        Ok(block)
    }

    /// Panics now and then, as user code may (a failed assertion in a tracking allocator).
    fn maybe_panic(&self, method: &'static str) {
        let s = &self.shared;
        let call = s.calls.get();
        s.calls.set(call + 1);
        let n = s.panic_one_in.get();
        if s.armed.get() && n != 0 && s.rng.one_in(n) {
            s.panics.set(s.panics.get() + 1);
            std::panic::panic_any(ScriptedPanic { method, call });
        }
    }

    fn reenter_around<R>(&self, f: impl FnOnce() -> R) -> R {
        self.maybe_panic("before");
        self.maybe_reenter();
        let r = f();
        self.maybe_reenter();
        // After the work: a block already moved or freed, then a panic.
        self.maybe_panic("after");
        r
    }
}

// SAFETY: every block comes from `System` and is recorded with the layout it was taken with; it
// is valid until given back through `deallocate`, `grow` or `shrink`, which free exactly the
// blocks recorded. `grow`/`shrink` keep the first `min(old, new)` bytes, in place or moved. The
// re-entrant calls only use the arena through its safe interface and blocks their owners hold.
unsafe impl Allocator for Chaos {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.reenter_around(|| {
            if self.fail() {
                return Err(AllocError);
            }
            self.take(layout)
        })
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.reenter_around(|| {
            let c = &self.shared.counters.deallocations;
            c.set(c.get() + 1);
            if self.lookup(ptr, layout).is_some() {
                self.give_back(ptr);
            } else {
                self.shared.bad_frees.set(self.shared.bad_frees.get() + 1);
            }
        })
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        assert!(new.size() >= old.size());
        let c = &self.shared.counters.grows;
        c.set(c.get() + 1);
        let before = self.shared.counters.reentries.get();
        let r = self.reenter_around(|| {
            if self.lookup(ptr, old).is_none() {
                self.shared.bad_frees.set(self.shared.bad_frees.get() + 1);
                return Err(AllocError);
            }
            if self.fail() {
                return Err(AllocError);
            }
            // SAFETY: live (checked), `old` fits it.
            unsafe { self.resize(ptr, old, new, false) }
        });
        if self.shared.counters.reentries.get() > before {
            let c = &self.shared.counters.reentries_in_grow;
            c.set(c.get() + 1);
        }
        r
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        assert!(new.size() >= old.size());
        self.reenter_around(|| {
            if self.lookup(ptr, old).is_none() {
                self.shared.bad_frees.set(self.shared.bad_frees.get() + 1);
                return Err(AllocError);
            }
            // SAFETY: live (checked), `old` fits it.
            unsafe { self.resize(ptr, old, new, true) }
        })
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        assert!(new.size() <= old.size());
        let c = &self.shared.counters.shrinks;
        c.set(c.get() + 1);
        self.reenter_around(|| {
            if self.lookup(ptr, old).is_none() {
                self.shared.bad_frees.set(self.shared.bad_frees.get() + 1);
                return Err(AllocError);
            }
            // SAFETY: live (checked), `old` fits it.
            unsafe { self.resize(ptr, old, new, false) }
        })
    }
}

// ---- The property test ----

/// Builds the arena `make` makes over a [`Chaos`] that can reach it, drives it with `ops` random
/// operations (checkpoints, rewinds and resets among them), checking every block after each
/// step, drops it, and checks nothing leaked or was freed twice.
fn chaos_run<T: Subject>(
    seed: u64,
    name: &'static str,
    ops: usize,
    make: impl FnOnce(Chaos) -> T,
) -> Rc<Shared> {
    chaos_run_panicking(seed, name, ops, 0, make)
}

/// Runs `f`; `true` if a scripted panic came out of it (any other panic goes on).
fn chaos_panic_in(f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => false,
        Err(payload) if payload.is::<ScriptedPanic>() => true,
        Err(payload) => resume_unwind(payload),
    }
}

/// [`chaos_run`], with one backing call in `panic_one_in` panicking (0: none). Each step runs
/// under `catch_unwind`; a block whose owner was resizing or freeing it when the panic came is
/// forgotten (its state is the backing allocator's business), every other must stay valid.
fn chaos_run_panicking<T: Subject>(
    seed: u64,
    name: &'static str,
    ops: usize,
    panic_one_in: usize,
    make: impl FnOnce(Chaos) -> T,
) -> Rc<Shared> {
    quiet_scripted_panics();
    let shared = Shared::new(seed, name);
    shared.panic_one_in.set(panic_one_in);
    let arena: Rc<RefCell<T>> = Rc::new_cyclic(|weak: &Weak<RefCell<T>>| {
        let target: Weak<dyn Target> = weak.clone();
        RefCell::new(make(Chaos {
            shared: shared.clone(),
            target,
        }))
    });
    shared.armed.set(true);
    let rng = &shared.rng;
    let mut checkpoint: Option<(Checkpoint, u64)> = None;
    for step in 0..ops {
        let panicked = chaos_panic_in(|| match rng.below(40) {
            0 => {
                checkpoint = Some((arena.borrow().checkpoint(), shared.tick()));
            }
            1 => {
                if let Some((cp, epoch)) = checkpoint.take() {
                    // Everything (re)allocated since the checkpoint goes.
                    shared.owned.borrow_mut().retain(|b| b.epoch < epoch);
                    arena.borrow_mut().rewind(cp);
                    let c = &shared.counters.rewinds;
                    c.set(c.get() + 1);
                    shared.verify(&format!("after rewind at step {step}"));
                }
            }
            2 => {
                shared.owned.borrow_mut().clear();
                checkpoint = None;
                arena.borrow_mut().reset_all();
                let c = &shared.counters.resets;
                c.set(c.get() + 1);
            }
            _ => random_op(&shared, &*arena),
        });
        if panicked {
            // A panic out of `rewind` leaves the arena between the checkpoint and where it
            // was: the blocks from before the checkpoint are still checked.
            checkpoint = None;
        }
        shared.verify(&format!("after step {step} (panicked: {panicked})"));
        let (used, reserved, remaining) = arena.borrow().stats();
        assert_eq!(used + remaining, reserved, "{name}: statistics disagree");
    }
    shared.owned.borrow_mut().clear();
    chaos_panic_in(|| drop(arena));
    assert_eq!(shared.bad_frees.get(), 0, "{name}: a block was freed twice");
    let leaked = std::mem::take(&mut *shared.live.borrow_mut());
    if shared.panics.get() == 0 {
        assert!(leaked.is_empty(), "{name}: the arena leaked backing blocks");
    }
    for (addr, b) in leaked {
        // SAFETY: a block from `System` with this layout that the (dropped) arena leaked.
        unsafe { System.deallocate(NonNull::new(addr as *mut u8).unwrap(), b.truth) };
    }
    shared
}

fn small_chain(chaos: Chaos) -> ChainAllocator<Chaos> {
    ChainAllocator::new_lazy_in(256, chaos).with_max_chunk_size(1024)
}

fn small_sync_chain(chaos: Chaos) -> SyncChainAllocator<Chaos> {
    SyncChainAllocator::new_lazy_in(256, chaos).with_max_chunk_size(1024)
}

/// Totals over many seeds, to show the run exercised what it claims to.
fn totals(runs: &[Rc<Shared>]) -> (usize, usize, usize, usize, usize) {
    let sum = |f: fn(&Counters) -> usize| runs.iter().map(|s| f(&s.counters)).sum::<usize>();
    (
        sum(|c| c.reentries.get()),
        sum(|c| c.reentries_in_grow.get()),
        sum(|c| c.grows.get()),
        sum(|c| c.grows_in_place.get()),
        sum(|c| c.rewinds.get()),
    )
}

fn config() -> Config {
    Config {
        cases: common::proptest_cases(64),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn chain_over_a_chaotic_reentrant_backing_allocator_keeps_every_block_valid(seed in any::<u64>()) {
        chaos_run(seed, "ChainAllocator", 400, small_chain);
    }

    #[test]
    fn chain_over_a_chaotic_backing_allocator_that_also_panics_keeps_every_other_block_valid(seed in any::<u64>()) {
        chaos_run_panicking(seed, "ChainAllocator", 400, 60, small_chain);
    }

    #[test]
    fn sync_chain_over_a_chaotic_backing_allocator_that_also_panics_keeps_every_other_block_valid(seed in any::<u64>()) {
        chaos_run_panicking(seed, "SyncChainAllocator", 400, 60, small_sync_chain);
    }

    #[test]
    fn sync_chain_over_a_chaotic_reentrant_backing_allocator_keeps_every_block_valid(seed in any::<u64>()) {
        chaos_run(seed, "SyncChainAllocator", 400, small_sync_chain);
    }
}

/// The chaos runs reach what they are meant to: re-entry inside `grow` of a chunk (which only
/// `ChainAllocator` asks for), in-place grows, rewinds.
#[test]
fn chaos_runs_reach_reentrant_chunk_grows_and_rewinds() {
    let runs: Vec<_> = (0..32)
        .map(|seed| chaos_run(seed, "ChainAllocator", 400, small_chain))
        .collect();
    let (reentries, in_grow, grows, in_place, rewinds) = totals(&runs);
    eprintln!(
        "ChainAllocator: {reentries} re-entries, {in_grow} inside a chunk grow, {grows} chunk \
         grows ({in_place} in place), {rewinds} rewinds"
    );
    assert!(reentries > 100 && in_grow > 10 && grows > 20 && in_place > 0 && rewinds > 10);
}

#[test]
fn linear_arenas_over_a_chaotic_backing_allocator_keep_every_block_valid() {
    for seed in 0..16 {
        chaos_run(seed, "LinearAllocator", 300, |c| {
            LinearAllocator::new_in(Layout::from_size_align(1 << 16, 64).unwrap(), c).unwrap()
        });
        chaos_run(seed, "SyncLinearAllocator", 300, |c| {
            SyncLinearAllocator::new_in(Layout::from_size_align(1 << 16, 64).unwrap(), c).unwrap()
        });
    }
}

// ---- Targeted attacks on `ChainAllocator`'s growth of a chunk's only block ----

/// What [`Hooked::grow`] does with the chunk, after running its hook.
#[derive(Clone, Copy, PartialEq, Debug)]
enum GrowMode {
    /// A new block, a copy, the old one freed.
    Move,
    /// The same pointer (the block was taken with room to spare).
    InPlace,
    /// A new block reporting `extra` bytes more than asked.
    Larger(usize),
    /// `Err`, the chunk untouched.
    Fail,
}

type Hook = Box<dyn FnOnce(&ChainAllocator<Hooked>)>;

/// The books of a [`Hooked`] allocator, shared with the test so that they outlive the arena.
struct Books {
    hook: Cell<Option<Hook>>,
    mode: Cell<GrowMode>,
    /// Live blocks: address -> (true layout, reported length).
    live: RefCell<BTreeMap<usize, (Layout, usize)>>,
    bad_frees: Cell<usize>,
    /// `(old, new)` of every `grow` call.
    grows: RefCell<Vec<(Layout, Layout)>>,
}

impl Books {
    /// Sum of the lengths reported for the live blocks: what `reserved_bytes` must equal.
    fn live_bytes(&self) -> usize {
        self.live.borrow().values().map(|&(_, r)| r).sum()
    }

    /// Whether `[ptr, ptr + len)` lies inside a live block (as reported).
    fn holds_live(&self, ptr: NonNull<u8>, len: usize) -> bool {
        let addr = ptr.as_ptr() as usize;
        self.live
            .borrow()
            .range(..=addr)
            .next_back()
            .is_some_and(|(&start, &(_, reported))| addr + len <= start + reported)
    }
}

impl Drop for Books {
    fn drop(&mut self) {
        // Whatever the arena leaked goes back (the tests assert first that nothing did), so
        // LeakSanitizer reports only what escaped the books.
        for (addr, (truth, _)) in std::mem::take(&mut *self.live.borrow_mut()) {
            // SAFETY: a live block from `System` with this layout.
            unsafe { System.deallocate(NonNull::new(addr as *mut u8).unwrap(), truth) };
        }
    }
}

/// Backing allocator for the targeted tests: forwards to `System` (every block taken with
/// [`ROOM`] bytes of hidden room, so an in-place grow is possible), keeps the exact set of blocks
/// it has out, and runs a one-shot hook on the arena it backs inside its next `grow`, before
/// doing what its [`GrowMode`] says.
struct Hooked {
    arena: Weak<ChainAllocator<Hooked>>,
    books: Rc<Books>,
}

const ROOM: usize = 16 << 10;

type HookedArena = ChainAllocator<Hooked>;

/// A lazy chain of 256-byte chunks (up to `max_chunk`) over a [`Hooked`], and its books.
fn hooked_arena(max_chunk: usize) -> (Rc<HookedArena>, Rc<Books>) {
    let books = Rc::new(Books {
        hook: Cell::new(None),
        mode: Cell::new(GrowMode::Move),
        live: RefCell::new(BTreeMap::new()),
        bad_frees: Cell::new(0),
        grows: RefCell::new(Vec::new()),
    });
    let arena = Rc::new_cyclic(|weak| {
        ChainAllocator::new_lazy_in(
            256,
            Hooked {
                arena: weak.clone(),
                books: books.clone(),
            },
        )
        .with_max_chunk_size(max_chunk)
    });
    (arena, books)
}

impl Books {
    fn on_next_grow(&self, hook: impl FnOnce(&HookedArena) + 'static) {
        self.hook.set(Some(Box::new(hook)));
    }
}

impl Hooked {
    fn take(&self, layout: Layout, reported: usize) -> Result<NonNull<[u8]>, AllocError> {
        let size = reported.checked_add(ROOM).ok_or(AllocError)?;
        let truth = Layout::from_size_align(size, layout.align()).map_err(|_| AllocError)?;
        let block = System.allocate(truth)?;
        self.books
            .live
            .borrow_mut()
            .insert(block.cast::<u8>().as_ptr() as usize, (truth, reported));
        Ok(NonNull::slice_from_raw_parts(block.cast(), reported))
    }

    /// Forgets a live block that `layout` fits, returning its true layout; counts anything else
    /// as a bad free.
    fn forget(&self, ptr: NonNull<u8>, layout: Layout) -> Option<Layout> {
        let mut live = self.books.live.borrow_mut();
        let addr = ptr.as_ptr() as usize;
        match live.get(&addr) {
            Some(&(truth, reported))
                if layout.size() <= reported && layout.align() == truth.align() =>
            {
                live.remove(&addr);
                Some(truth)
            }
            _ => {
                self.books.bad_frees.set(self.books.bad_frees.get() + 1);
                None
            }
        }
    }
}

// SAFETY: blocks come from `System`, recorded with their true layout, valid until given back;
// `grow` keeps the old contents (copied, or in place within the hidden room).
unsafe impl Allocator for Hooked {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.take(layout, layout.size())
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if let Some(truth) = self.forget(ptr, layout) {
            // SAFETY: live, from `System`, with this layout.
            unsafe { System.deallocate(ptr, truth) };
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.books.grows.borrow_mut().push((old, new));
        if let (Some(hook), Some(arena)) = (self.books.hook.take(), self.arena.upgrade()) {
            hook(&arena);
        }
        let mode = self.books.mode.get();
        if mode == GrowMode::Fail {
            return Err(AllocError);
        }
        let addr = ptr.as_ptr() as usize;
        let (truth, _) = *self.books.live.borrow().get(&addr).ok_or(AllocError)?;
        if mode == GrowMode::InPlace && new.size() <= truth.size() {
            self.books
                .live
                .borrow_mut()
                .insert(addr, (truth, new.size()));
            return Ok(NonNull::slice_from_raw_parts(ptr, new.size()));
        }
        let extra = match mode {
            GrowMode::Larger(extra) => extra,
            _ => 0,
        };
        let block = self.take(new, new.size() + extra)?;
        // SAFETY: distinct live blocks of at least `old.size()` bytes; `ptr` is then given back.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), block.cast().as_ptr(), old.size());
            self.deallocate(ptr, old);
        }
        Ok(block)
    }
}

/// A block of the arena the test owns: `(pointer, layout, pattern id)`.
type Block = (NonNull<u8>, Layout, usize);

/// A block of `size` bytes (16-aligned) from `arena`, filled with block `id`'s pattern.
fn filled(arena: &HookedArena, size: usize, id: usize) -> Block {
    let layout = Layout::from_size_align(size, 16).unwrap();
    let ptr = arena.allocate(layout).unwrap().cast::<u8>();
    // SAFETY: a fresh block of `size` bytes.
    unsafe { fill(ptr, size, id) };
    (ptr, layout, id)
}

/// Grows `block` to `size` bytes and refills it; checks the old bytes came along.
fn grown(arena: &HookedArena, block: Block, size: usize) -> Block {
    let (ptr, old, id) = block;
    let new = Layout::from_size_align(size, old.align()).unwrap();
    // SAFETY: the block is live with layout `old`; `new` is larger.
    let ptr = unsafe { arena.grow(ptr, old, new) }.unwrap().cast::<u8>();
    // SAFETY: the grown block is ours, `size` bytes, the first `old.size()` copied.
    unsafe {
        assert!(holds(ptr, old.size(), id), "grow lost block {id}'s bytes");
        fill(ptr, size, id);
    }
    (ptr, new, id)
}

/// The arena's accounting is exact, and every listed block lies in live backing memory, holds
/// its pattern and overlaps no other.
fn check_blocks(arena: &HookedArena, books: &Books, blocks: &[Block]) {
    assert_eq!(
        arena.reserved_bytes(),
        books.live_bytes(),
        "reserved_bytes is not what the arena holds"
    );
    assert_eq!(
        arena.used_bytes() + arena.remaining_capacity(),
        arena.reserved_bytes()
    );
    let mut ranges = Vec::new();
    for &(ptr, layout, id) in blocks {
        assert!(
            books.holds_live(ptr, layout.size()),
            "block {id} is in freed memory"
        );
        // SAFETY: in live memory (checked above), owned by the test.
        let intact = unsafe { holds(ptr, layout.size(), id) };
        assert!(intact, "block {id} changed");
        ranges.push((ptr.as_ptr() as usize, layout.size(), id));
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "blocks {} and {} overlap",
            w[0].2,
            w[1].2
        );
    }
    assert_eq!(books.bad_frees.get(), 0, "a block was freed twice");
}

/// Drops the arena and checks it gave back every block it had, exactly once.
fn drop_and_check(arena: Rc<HookedArena>, books: &Books) {
    drop(Rc::into_inner(arena).expect("one owner"));
    assert_eq!(books.bad_frees.get(), 0, "a block was freed twice");
    assert_eq!(
        books.live.borrow().len(),
        0,
        "the arena leaked backing blocks"
    );
}

/// Chunks of 256 bytes; a block of 224 fills one exactly (after the 32-byte header).
const FILLS_A_CHUNK: usize = 256 - ChainAllocator::<System>::CHAIN_NODE_OVERHEAD;

/// While the backing allocator grows the chunk of `v`, the arena's newest chunk is the one below
/// it, full; a block that fills that chunk exactly ends at the cursor, so it counts as that
/// chunk's only (and most recent) block. The hook grows it: the arena asks the backing allocator
/// to grow *that* chunk too, nested inside the first grow. Both chunks move; both blocks keep
/// their bytes, and the chain links both moved chunks (drop frees each once).
#[test]
fn reentrant_grow_of_the_block_that_fills_the_chunk_below_grows_that_chunk_too() {
    for mode in [GrowMode::Move, GrowMode::InPlace, GrowMode::Larger(1000)] {
        let (arena, books) = hooked_arena(256);
        books.mode.set(mode);
        let b = filled(&arena, FILLS_A_CHUNK, 1);
        let v = filled(&arena, 100, 2);
        let cell = Rc::new(Cell::new(None));
        let out = cell.clone();
        books.on_next_grow(move |arena| out.set(Some(grown(arena, b, 2000))));
        let v = grown(&arena, v, 1000);
        let b = cell.get().expect("the hook ran");
        assert_eq!(
            books.grows.borrow().len(),
            2,
            "{mode:?}: both chunks were grown"
        );
        check_blocks(&arena, &books, &[b, v]);
        // The arena goes on from the newest chunk, v's.
        let w = filled(&arena, 50, 3);
        check_blocks(&arena, &books, &[b, v, w]);
        drop_and_check(arena, &books);
    }
}

/// While the backing allocator grows the chunk of `v`, the hook frees the block that fills the
/// chunk below (it ends at the cursor then, so it is the most recent block) and allocates in its
/// place: it gets the freed bytes, inside the chunk below. After the grow the arena allocates
/// from the grown chunk again, never from under the hook's block.
#[test]
fn reentrant_free_of_the_block_filling_the_chunk_below_reuses_it_and_nothing_else() {
    let (arena, books) = hooked_arena(256);
    let b = filled(&arena, FILLS_A_CHUNK, 1);
    let v = filled(&arena, 100, 2);
    let cell = Rc::new(Cell::new(None));
    let out = cell.clone();
    books.on_next_grow(move |arena| {
        // SAFETY: `b` is live with its layout; the hook owns it from here.
        unsafe { arena.deallocate(b.0, b.1) };
        out.set(Some(filled(arena, 64, 3)));
    });
    let v = grown(&arena, v, 1000);
    let record = cell.get().expect("the hook ran");
    assert_eq!(record.0, b.0, "the freed bytes were handed out again");
    let w = filled(&arena, 64, 4);
    check_blocks(&arena, &books, &[v, record, w]);
    drop_and_check(arena, &books);
}

/// A checkpoint taken inside the backing allocator's `grow` of a chunk (when that chunk is
/// unlinked) and rewound to later frees exactly the chunks linked since: the grown one and the
/// one the hook's own allocation took. The statistics are then what they were in the hook.
#[test]
fn checkpoint_taken_inside_a_chunk_grow_rewinds_to_the_chain_the_hook_saw() {
    for mode in [GrowMode::Move, GrowMode::InPlace, GrowMode::Fail] {
        let (arena, books) = hooked_arena(256);
        books.mode.set(mode);
        let a = filled(&arena, 200, 1);
        let v = filled(&arena, 100, 2);
        let seen = Rc::new(Cell::new(None));
        let out = seen.clone();
        books.on_next_grow(move |arena| {
            let checkpoint = arena.checkpoint();
            let stats = (arena.used_bytes(), arena.reserved_bytes());
            out.set(Some((checkpoint, stats)));
            // A record big enough to need a chunk of its own.
            let _ = filled(arena, 150, 3);
        });
        let new = Layout::from_size_align(1000, 16).unwrap();
        // SAFETY: `v` is live with its layout; `new` is larger.
        let v = unsafe { arena.grow(v.0, v.1, new) }.map(|b| (b.cast::<u8>(), new, 2));
        assert!(
            v.is_ok(),
            "{mode:?}: grow moves the block when the chunk cannot grow"
        );
        let (checkpoint, stats) = seen.get().expect("the hook ran");
        // One chunk (a's) is linked while the hook runs.
        assert_eq!(
            stats.1, 256,
            "{mode:?}: the chunk being grown is not counted"
        );
        let mut arena = Rc::into_inner(arena).unwrap();
        arena.rewind(checkpoint);
        assert_eq!(
            (arena.used_bytes(), arena.reserved_bytes()),
            stats,
            "{mode:?}"
        );
        let arena = Rc::new(arena);
        check_blocks(&arena, &books, &[a]);
        drop_and_check(arena, &books);
    }
}

/// Growing a chunk's only block to sizes near `isize::MAX` asks the backing allocator for a
/// chunk it cannot give (or no chunk at all when the size overflows): `Err`, the block intact
/// where it was, the statistics unchanged, also when the backing allocator re-entered first
/// (whose block then stays valid).
#[test]
fn chunk_grow_to_a_size_near_isize_max_is_an_error_that_changes_nothing() {
    let overhead = ChainAllocator::<System>::CHAIN_NODE_OVERHEAD;
    // On 32-bit a grow to nearly 2 GiB may simply succeed: there only the size whose chunk
    // would pass `isize::MAX` is certain to fail.
    let sizes: &[usize] = if cfg!(target_pointer_width = "64") {
        &[
            isize::MAX as usize - overhead - 15,
            isize::MAX as usize - overhead,
            isize::MAX as usize - 15,
        ]
    } else {
        &[isize::MAX as usize - 15]
    };
    for &size in sizes {
        for reenter in [false, true] {
            let (arena, books) = hooked_arena(256);
            let v = filled(&arena, 100, 1);
            let cell = Rc::new(Cell::new(None));
            if reenter {
                let out = cell.clone();
                books.on_next_grow(move |arena| out.set(Some(filled(arena, 64, 2))));
            }
            let stats = (arena.used_bytes(), arena.reserved_bytes());
            let new = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: `v` is live with its layout; `new` is larger.
            assert!(unsafe { arena.grow(v.0, v.1, new) }.is_err());
            let mut blocks = vec![v];
            if let Some(record) = cell.get() {
                blocks.push(record);
            } else {
                assert_eq!((arena.used_bytes(), arena.reserved_bytes()), stats);
            }
            check_blocks(&arena, &books, &blocks);
            // v is still the chunk's only block, at the cursor: it grows in place again.
            let v = grown(&arena, v, 120);
            blocks[0] = v;
            check_blocks(&arena, &books, &blocks);
            drop_and_check(arena, &books);
        }
    }
}

/// The hook allocates, then panics (a logging backing allocator whose formatting fails): the
/// chunk being grown leaks, with the caller's block still in it; the hook's block stays
/// valid; the arena goes on, and its drop frees every other chunk once.
#[test]
fn panic_inside_a_chunk_grow_after_a_reentrant_allocation_leaks_only_that_chunk() {
    quiet_scripted_panics();
    let (arena, books) = hooked_arena(256);
    let a = filled(&arena, 200, 1);
    let v = filled(&arena, 100, 2);
    let cell = Rc::new(Cell::new(None));
    let out = cell.clone();
    books.on_next_grow(move |arena| {
        out.set(Some(filled(arena, 64, 3)));
        std::panic::panic_any(ScriptedPanic {
            method: "grow",
            call: 0,
        });
    });
    let new = Layout::from_size_align(1000, 16).unwrap();
    assert!(chaos_panic_in(|| {
        // SAFETY: `v` is live with its layout; `new` is larger.
        let _ = unsafe { arena.grow(v.0, v.1, new) };
    }));
    let record = cell.get().expect("the hook ran");
    // v's chunk is no longer the arena's (leaked), but the backing allocator never freed it.
    let leaked = v.0.as_ptr() as usize - ChainAllocator::<System>::CHAIN_NODE_OVERHEAD;
    assert!(books.live.borrow().contains_key(&leaked));
    assert_eq!(arena.reserved_bytes() + 256, books.live_bytes());
    assert!(books.holds_live(v.0, 100));
    // SAFETY: still live backing memory (checked above).
    assert!(unsafe { holds(v.0, 100, 2) });
    let w = filled(&arena, 150, 4);
    for (ptr, layout, id) in [a, record, w] {
        assert!(books.holds_live(ptr, layout.size()));
        // SAFETY: as above.
        let intact = unsafe { holds(ptr, layout.size(), id) };
        assert!(intact, "block {id} changed");
    }
    drop(Rc::into_inner(arena).unwrap());
    assert_eq!(books.bad_frees.get(), 0, "a chunk was freed twice");
    let live: Vec<usize> = books.live.borrow().keys().copied().collect();
    assert_eq!(live, [leaked], "only the chunk being grown leaked");
}

// ---- SyncChainAllocator: re-entry from several threads at once ----

/// A `Sync` backing allocator that re-enters the lock-free arena it backs (through a `Weak`)
/// in every `allocate` and every `deallocate` it gets from `&self` paths (a lost race gives its
/// chunk back from inside `allocate`), from whichever thread is calling: it allocates a record,
/// fills it with a tag of its own, and keeps it.
struct SyncReenter {
    arena: std::sync::Weak<SyncChainAllocator<SyncReenter>>,
    counting: std::sync::Arc<common::counting::SyncCounting<System>>,
    records: std::sync::Mutex<Vec<common::blocks::Block>>,
    seq: std::sync::atomic::AtomicU64,
}

std::thread_local! {
    /// Set while this thread runs a re-entrant call (one level is enough here).
    static REENTERING: Cell<bool> = const { Cell::new(false) };
}

impl SyncReenter {
    fn reenter(&self) {
        if REENTERING.with(|r| r.replace(true)) {
            return;
        }
        if let Some(arena) = self.arena.upgrade() {
            let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let layout = common::blocks::mixed_layout(seq);
            if let Ok(block) = arena.allocate(layout) {
                // SAFETY: a fresh block of `layout.size()` bytes.
                let record = unsafe {
                    common::blocks::fill(block, layout.size(), common::blocks::tag(99, seq))
                };
                self.records.lock().unwrap().push(record);
            }
        }
        REENTERING.with(|r| r.set(false));
    }
}

// SAFETY: forwards to a counting `System`; the re-entrant calls use the arena's safe API only.
unsafe impl Allocator for SyncReenter {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.reenter();
        let block = self.counting.allocate(layout);
        self.reenter();
        block
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.reenter();
        // SAFETY: forwarded caller contract.
        unsafe { self.counting.deallocate(ptr, layout) };
    }
}

/// Four threads allocate from one `SyncChainAllocator` of small chunks (so they race to publish
/// chunks, and losers give theirs back), while the backing allocator re-enters the arena inside
/// each of those calls, on the calling thread. No block is handed out twice, none changes,
/// every chunk is given back once.
#[test]
fn sync_chain_backing_allocator_reentering_from_racing_threads_never_hands_out_a_byte_twice() {
    use common::blocks::{fill, mixed_layout, tag, verify};
    use std::sync::Arc;
    let counting = Arc::new(common::counting::SyncCounting::new(System));
    let arena = Arc::new_cyclic(|weak| {
        SyncChainAllocator::new_lazy_in(
            256,
            SyncReenter {
                arena: weak.clone(),
                counting: counting.clone(),
                records: std::sync::Mutex::new(Vec::new()),
                seq: std::sync::atomic::AtomicU64::new(0),
            },
        )
        .with_max_chunk_size(512)
    });
    let mut blocks: Vec<common::blocks::Block> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|owner| {
                let arena = &arena;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for seq in 0..3000u64 {
                        let layout = mixed_layout(seq * 4 + owner);
                        let block = arena.allocate(layout).unwrap();
                        // SAFETY: a fresh block of `layout.size()` bytes.
                        mine.push(unsafe { fill(block, layout.size(), tag(owner, seq)) });
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let records = arena.allocator().records.lock().unwrap().clone();
    let lost_races = counting.deallocations();
    eprintln!(
        "{} re-entrant records, {lost_races} chunks given back after a lost race",
        records.len()
    );
    assert!(
        records.len() > 100,
        "the backing allocator hardly re-entered"
    );
    blocks.extend(records);
    // SAFETY: every block is live (the arena is).
    unsafe { verify(&mut blocks) }.unwrap();
    drop(Arc::into_inner(arena).unwrap());
    assert_eq!(counting.live_blocks(), 0, "chunks leaked");
}

// ---- Scope over a backing allocator that panics at any call ----

/// A scope's workload: nested scopes, a `Vec` in the scope that grows (new chunks; for
/// `ChainAllocator`, the growth of a chunk's only block), a big typed slice, a string.
fn scope_workload<T: Rewind + common::Stats>(arena: &mut T) {
    arena.scope(|outer| {
        let mut v = allocator_api2::vec::Vec::new_in(&*outer);
        for i in 0..2000u64 {
            v.push(i);
        }
        assert!(v.iter().copied().eq(0..2000));
        drop(v);
        outer.scope(|inner| {
            let big = inner.try_alloc_slice_fill_with(5000, |i| i as u16).unwrap();
            assert_eq!(big[4999], 4999);
            let s = inner.try_alloc_str("a frame name").unwrap();
            assert_eq!(s, "a frame name");
        });
        let after = outer.try_alloc_slice_fill_with(3000, |i| i as u8).unwrap();
        assert_eq!(after[2999], (2999 % 256) as u8);
    });
}

/// For every call index: the backing allocator panics there, inside `Rewind::scope` (in an
/// allocation or chunk grow while the closure runs, so the scope rewinds while unwinding; or in
/// a deallocation of the scope's own rewind). Caught with `catch_unwind`, then: a block from
/// before the scope is intact; rewinding once more to the scope's start (finishing an
/// interrupted rewind) restores the statistics exactly; the arena serves again; drop frees
/// nothing twice, and at most the one chunk the panic was handling leaks.
fn scope_survives_a_backing_panic_at_every_call<T: Rewind + common::Stats>(
    name: &str,
    make: impl Fn(&'static Scripted) -> T,
) {
    quiet_scripted_panics();
    // The calls a clean run makes up to the end of the scope (the constructor's included, not
    // drop's: a panic there is the fault suite's business).
    let calls = {
        let clean = Scripted::new();
        // SAFETY: dropped before `clean`, the arena is all that borrows it; the `'static` is
        // only for `make`'s signature.
        let clean_ref: &'static Scripted = unsafe { &*(&clean as *const Scripted) };
        let mut arena = make(clean_ref);
        arena.allocate(Layout::new::<[u8; 64]>()).unwrap();
        scope_workload(&mut arena);
        let calls = clean.calls();
        drop(arena);
        calls
    };
    assert!(calls > 5, "{name}: {calls} backing calls");
    let mut unwound_scopes = 0;
    for at in 0..calls {
        let backing: &'static Scripted =
            Box::leak(Box::new(Scripted::at(at, ScriptedAction::Panic)));
        let mut built = None;
        if chaos_panic_in(|| built = Some(make(backing))) {
            // The constructor's own allocation panicked: nothing was taken.
            assert_eq!(
                backing.live_blocks(),
                0,
                "{name}: a panicking constructor leaked"
            );
            // SAFETY: leaked above, used by nothing any more.
            drop(unsafe { Box::from_raw(backing as *const Scripted as *mut Scripted) });
            continue;
        }
        let mut arena = built.unwrap();
        let kept = arena
            .allocate(Layout::new::<[u8; 64]>())
            .unwrap()
            .cast::<u8>();
        // SAFETY: a fresh 64-byte block.
        unsafe { fill(kept, 64, 7) };
        let start = arena.checkpoint();
        let before = (arena.used(), arena.reserved());
        let panicked = chaos_panic_in(|| scope_workload(&mut arena));
        let fired = backing.fired();
        assert!(!fired.is_empty(), "{name}: call {at} not reached");
        assert!(panicked, "{name}: call {at}");
        if fired.iter().any(|&(m, _)| m != "deallocate") {
            unwound_scopes += 1;
        }
        // SAFETY: a block from before the scope, which no rewind to after it frees.
        let intact = unsafe { holds(kept, 64, 7) };
        assert!(intact, "{name}: call {at}: kept block changed");
        arena.rewind(start);
        assert_eq!(
            (arena.used(), arena.reserved()),
            before,
            "{name}: call {at}: {fired:?}"
        );
        scope_workload(&mut arena);
        assert_eq!(
            (arena.used(), arena.reserved()),
            before,
            "{name}: call {at}"
        );
        drop(arena);
        assert_eq!(backing.bad_frees(), 0, "{name}: call {at}: freed twice");
        assert!(
            backing.live_blocks() <= 1,
            "{name}: call {at}: leaked {}",
            backing.live_blocks()
        );
        // SAFETY: leaked above, used by nothing any more; gives back what the arena leaked.
        drop(unsafe { Box::from_raw(backing as *const Scripted as *mut Scripted) });
    }
    eprintln!("{name}: {calls} call indices, {unwound_scopes} scopes rewound while unwinding");
    assert!(unwound_scopes > 0);
}

#[test]
fn chain_scope_survives_a_backing_panic_at_every_call() {
    scope_survives_a_backing_panic_at_every_call("ChainAllocator", |b| {
        ChainAllocator::new_in(1024, b)
            .unwrap()
            .with_max_chunk_size(1024)
    });
}

#[test]
fn sync_chain_scope_survives_a_backing_panic_at_every_call() {
    scope_survives_a_backing_panic_at_every_call("SyncChainAllocator", |b| {
        SyncChainAllocator::new_in(1024, b)
            .unwrap()
            .with_max_chunk_size(1024)
    });
}

// ---- A backing allocator that is a reference to another arena ----

/// A chain over a chain (the backing allocator is `&ChainAllocator`): growing the outer chunk's
/// only block asks the inner arena to grow that chunk, which the inner arena does in place (its
/// most recent block), by growing its own chunk through `System` (its only block), or by moving
/// it. Blocks of both arenas, allocated in between, keep their bytes; dropping the outer arena
/// gives its chunks back to the inner one, whose drop frees everything.
#[test]
fn chain_over_a_chain_grows_chunks_through_both_levels_and_keeps_every_block() {
    let inner = ChainAllocator::new_in(512, System)
        .unwrap()
        .with_max_chunk_size(2048);
    let outer = ChainAllocator::new_lazy_in(256, &inner).with_max_chunk_size(512);
    let mut blocks: Vec<(NonNull<u8>, usize, usize)> = Vec::new();
    for round in 0..6usize {
        let mut v = allocator_api2::vec::Vec::<u8, _>::new_in(&outer);
        for i in 0..(3000 << round) {
            v.push(pattern(round, i));
            if i % 997 == 0 {
                // Interleave blocks of both arenas with the growth.
                let id = 100 + blocks.len();
                let arena: &dyn Allocator = if i % 2 == 0 { &inner } else { &outer };
                let ptr = arena
                    .allocate(Layout::array::<u8>(40).unwrap())
                    .unwrap()
                    .cast();
                // SAFETY: a fresh 40-byte block.
                unsafe { fill(ptr, 40, id) };
                blocks.push((ptr, 40, id));
            }
        }
        assert!(v.iter().enumerate().all(|(i, &b)| b == pattern(round, i)));
        for &(ptr, len, id) in &blocks {
            // SAFETY: blocks of arenas that are alive, owned by the test.
            let intact = unsafe { holds(ptr, len, id) };
            assert!(intact, "round {round}: block {id} changed");
        }
        std::mem::forget(v); // keep its block allocated (and in the way) for the next round
    }
    assert_eq!(
        outer.used_bytes() + outer.remaining_capacity(),
        outer.reserved_bytes()
    );
    drop(outer);
    drop(inner);
}
