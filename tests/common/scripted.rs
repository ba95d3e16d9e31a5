//! A scripted backing allocator: [`Scripted`] numbers *every* call an arena makes to it
//! (`allocate`, `allocate_zeroed`, `grow`, `grow_zeroed`, `shrink`, `deallocate`), and at one
//! chosen call index it fails, panics, or calls back into the arena it backs. It keeps the exact
//! set of blocks it handed out, so a double free or a free of a block it never gave is caught
//! (and not forwarded), and whatever an arena leaked is reported and given back when the
//! `Scripted` is dropped (so LeakSanitizer sees no leak of ours).
//!
//! Memory given back is not returned to the inner allocator until the `Scripted` is dropped:
//! it is scribbled over and kept in a graveyard, so [`Scripted::is_freed`] tells a test whether
//! a block the arena handed out lies in memory the arena already gave back (a dangling cursor),
//! whatever the sanitizer sees. For the same reason `grow` and `shrink` always move the block.
//!
//! Single-threaded (`Cell`s): for the fault-injection suite and the regression tests of
//! re-entrant and panicking backing allocators. Counting is [`SyncCounting`]'s, which it wraps.

use super::counting::SyncCounting;
use super::fill::{fill, holds};
use libdd_alloc::{AllocError, Allocator, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ptr::NonNull;

/// What [`Scripted`] does at its scripted call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Returns `Err(AllocError)` (at a `deallocate`, which cannot fail, nothing happens).
    Fail,
    /// Panics, before doing anything (the block of a `deallocate` stays allocated: a leak).
    Panic,
    /// Does the call's work, then panics: what it allocated leaks, and what it freed or moved
    /// is gone, so an arena that still refers to it reads freed memory (ASan reports it) or
    /// frees it again (counted in [`Scripted::bad_frees`]).
    PanicAfter,
    /// Calls the re-entry hook (which allocates from the arena this allocator backs), then
    /// carries on as usual. The block the hook got is filled and remembered (see
    /// [`Scripted::reentered`]).
    Reenter,
}

/// The payload of a scripted panic.
#[derive(Debug)]
pub struct ScriptedPanic {
    pub method: &'static str,
    pub call: usize,
}

/// Keeps scripted panics off stderr (thousands of them are expected); every other panic is
/// reported as usual. Process-wide; idempotent.
pub fn quiet_scripted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<ScriptedPanic>() {
                default(info);
            }
        }));
    });
}

/// The byte-pattern seed of the blocks the re-entry hook gets.
pub const REENTERED_SEED: usize = 0xEE;

/// The hook [`Action::Reenter`] calls, `(function, context)`: `function(context)` allocates
/// from the arena, or returns `None` if it cannot. Type-erased (a plain function pointer and an
/// address), since the arena borrows the allocator whose hook points back at it.
pub type Hook = (unsafe fn(*const ()) -> Option<NonNull<[u8]>>, *const ());

/// A backing allocator over `A` (through [`SyncCounting`]) that runs a script: see the module.
pub struct Scripted<A: Allocator = System> {
    counting: SyncCounting<A>,
    /// Every call so far, numbered from 0.
    calls: Cell<usize>,
    /// `(call number, action)` pairs.
    script: Vec<(usize, Action)>,
    /// The script's actions that ran, with the method they ran in, in order.
    fired: RefCell<Vec<(&'static str, Action)>>,
    hook: Cell<Option<Hook>>,
    /// Blocks handed out and not given back: address → layout they were given back with.
    live: RefCell<BTreeMap<usize, Layout>>,
    reentered: RefCell<Vec<(NonNull<u8>, usize)>>,
    reentered_total: Cell<usize>,
    /// Blocks given back, kept (scribbled over) until drop: address → layout.
    freed: RefCell<BTreeMap<usize, Layout>>,
    bad_frees: Cell<usize>,
    panics: Cell<usize>,
    /// The most bytes live at once.
    peak_bytes: Cell<usize>,
}

impl Scripted<System> {
    /// No script: counts and checks only.
    pub fn new() -> Self {
        Self::over(System, &[])
    }

    /// `action` at call number `at` (0-based, every method counted).
    pub fn at(at: usize, action: Action) -> Self {
        Self::over(System, &[(at, action)])
    }
}

impl<A: Allocator> Scripted<A> {
    /// Over `inner`, running each `(call number, action)` of `script`.
    pub fn over(inner: A, script: &[(usize, Action)]) -> Self {
        Self {
            counting: SyncCounting::new(inner),
            calls: Cell::new(0),
            script: script.to_vec(),
            fired: RefCell::new(Vec::new()),
            peak_bytes: Cell::new(0),
            hook: Cell::new(None),
            live: RefCell::new(BTreeMap::new()),
            reentered: RefCell::new(Vec::new()),
            reentered_total: Cell::new(0),
            freed: RefCell::new(BTreeMap::new()),
            bad_frees: Cell::new(0),
            panics: Cell::new(0),
        }
    }

    /// Installs the re-entry hook (none: `Reenter` does nothing, like a `Weak` that no longer
    /// upgrades).
    ///
    /// # Safety
    /// While it is installed, calling the hook's function with its context is sound.
    pub unsafe fn set_hook(&self, hook: Option<Hook>) {
        self.hook.set(hook);
    }

    /// Calls made so far, of every method.
    pub fn calls(&self) -> usize {
        self.calls.get()
    }
    /// The script's actions that ran, with the method they ran in, in order.
    pub fn fired(&self) -> Vec<(&'static str, Action)> {
        self.fired.borrow().clone()
    }
    /// Whether a re-entry ran.
    pub fn reentered_yet(&self) -> bool {
        self.fired
            .borrow()
            .iter()
            .any(|&(_, a)| a == Action::Reenter)
    }
    /// The most bytes that were live at once.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes.get()
    }
    /// Panics the script raised.
    pub fn panics(&self) -> usize {
        self.panics.get()
    }
    /// `deallocate`/`grow`/`shrink` of a block that was not live: double frees and the like.
    /// They are counted and not forwarded.
    pub fn bad_frees(&self) -> usize {
        self.bad_frees.get()
    }
    /// Blocks handed out and not given back.
    pub fn live_blocks(&self) -> usize {
        self.live.borrow().len()
    }
    /// Bytes handed out and not given back (lengths the inner allocator returned).
    pub fn live_bytes(&self) -> usize {
        self.live.borrow().values().map(|l| l.size()).sum()
    }
    /// The counting layer underneath (allocations, deallocations, grows, shrinks).
    pub fn counting(&self) -> &SyncCounting<A> {
        &self.counting
    }

    /// The blocks the re-entry hook got and that are still live, each `len` bytes filled with
    /// [`REENTERED_SEED`]'s pattern.
    pub fn reentered(&self) -> Vec<(NonNull<u8>, usize)> {
        self.reentered.borrow().clone()
    }

    /// Whether any byte of `[addr, addr + len)` lies in a block given back to this allocator.
    pub fn is_freed(&self, addr: usize, len: usize) -> bool {
        let freed = self.freed.borrow();
        // Given-back blocks are disjoint: only the last one starting before the range's end can
        // reach into it.
        freed
            .range(..addr + len.max(1))
            .next_back()
            .is_some_and(|(&start, layout)| start + layout.size() > addr)
    }

    /// Blocks the re-entry hook got, in all (forgotten ones included).
    pub fn reentered_total(&self) -> usize {
        self.reentered_total.get()
    }

    /// Forgets the re-entrant blocks: call it before the arena is reset, rewound or dropped.
    pub fn forget_reentered(&self) {
        self.reentered.borrow_mut().clear();
    }

    /// Checks that every re-entrant block still holds its pattern.
    pub fn check_reentered(&self) {
        for &(ptr, len) in self.reentered.borrow().iter() {
            // SAFETY: the hook's blocks are arena blocks, live until the arena is reset,
            // rewound or dropped, before which the test forgets them.
            let intact = unsafe { holds(ptr, len, REENTERED_SEED) };
            assert!(intact, "a block handed out inside a backing call changed");
        }
    }

    /// Numbers a call of `method` and runs the script if it is due. `Err` for `Fail`;
    /// `Ok(Some(n))` when the call must panic once its work is done (see [`Self::finish`]).
    fn step(&self, method: &'static str) -> Result<Option<usize>, AllocError> {
        let n = self.calls.get();
        self.calls.set(n + 1);
        let Some(&(_, action)) = self.script.iter().find(|(at, _)| *at == n) else {
            return Ok(None);
        };
        self.fired.borrow_mut().push((method, action));
        match action {
            Action::Fail => Err(AllocError),
            Action::Panic => self.panic(method, n),
            Action::PanicAfter => Ok(Some(n)),
            Action::Reenter => {
                // SAFETY: `set_hook`'s contract.
                let block = self
                    .hook
                    .get()
                    .and_then(|(hook, context)| unsafe { hook(context) });
                if let Some(block) = block {
                    let (ptr, len) = (block.cast::<u8>(), block.len());
                    // SAFETY: a fresh block of `len` bytes from the arena.
                    unsafe { fill(ptr, len, REENTERED_SEED) };
                    self.reentered.borrow_mut().push((ptr, len));
                    self.reentered_total.set(self.reentered_total.get() + 1);
                }
                Ok(None)
            }
        }
    }

    fn panic(&self, method: &'static str, call: usize) -> ! {
        self.panics.set(self.panics.get() + 1);
        std::panic::panic_any(ScriptedPanic { method, call });
    }

    /// Ends a call whose [`step`](Self::step) said `after`: panics now if it is `Some`, else
    /// returns `result`.
    fn finish<T>(&self, method: &'static str, after: Option<usize>, result: T) -> T {
        match after {
            Some(call) => self.panic(method, call),
            None => result,
        }
    }

    fn took(&self, block: NonNull<[u8]>, align: usize) -> NonNull<[u8]> {
        let layout = Layout::from_size_align(block.len(), align).unwrap();
        let previous = self
            .live
            .borrow_mut()
            .insert(block.cast::<u8>().as_ptr() as usize, layout);
        assert!(
            previous.is_none(),
            "the inner allocator handed out a live block"
        );
        let bytes = self.live_bytes();
        self.peak_bytes.set(self.peak_bytes.get().max(bytes));
        block
    }

    /// Whether `ptr` is live with the size in `layout`; forgets it if so.
    fn gave_back(&self, ptr: NonNull<u8>, layout: Layout) -> bool {
        let mut live = self.live.borrow_mut();
        match live.get(&(ptr.as_ptr() as usize)) {
            Some(l) if l.size() == layout.size() => {
                live.remove(&(ptr.as_ptr() as usize));
                true
            }
            _ => {
                self.bad_frees.set(self.bad_frees.get() + 1);
                false
            }
        }
    }
}

impl Default for Scripted<System> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Allocator> Drop for Scripted<A> {
    /// Gives back what the arena leaked (the arena is gone by now) and the graveyard, so the
    /// process leaks nothing.
    fn drop(&mut self) {
        let mut blocks = std::mem::take(&mut *self.live.borrow_mut());
        blocks.append(&mut self.freed.borrow_mut());
        for (addr, layout) in blocks {
            // SAFETY: a block the inner allocator handed out with this length and alignment,
            // never given back; its arena no longer exists.
            unsafe {
                self.counting
                    .deallocate(NonNull::new(addr as *mut u8).unwrap(), layout)
            };
        }
    }
}

// SAFETY: forwards every call to the counting layer (and so to `A`); a block is given back to
// it only if it is live, with the length it was handed out with.
unsafe impl<A: Allocator> Allocator for Scripted<A> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let after = self.step("allocate")?;
        let block = self
            .counting
            .allocate(layout)
            .map(|b| self.took(b, layout.align()));
        self.finish("allocate", after, block)
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let after = self.step("allocate_zeroed")?;
        let block = self
            .counting
            .allocate_zeroed(layout)
            .map(|b| self.took(b, layout.align()));
        self.finish("allocate_zeroed", after, block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // `Fail` cannot apply: a deallocation has no error to return.
        let after = self.step("deallocate").unwrap_or(None);
        if self.gave_back(ptr, layout) {
            // SAFETY: the block was live with this layout: ours again now.
            unsafe { self.bury(ptr, layout) };
        }
        self.finish("deallocate", after, ())
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        assert!(new.size() >= old.size(), "grow to a smaller size");
        let after = self.step("grow")?;
        // SAFETY: forwarded caller contract.
        let block = unsafe { self.moved(ptr, old, new, false) };
        self.finish("grow", after, block)
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        assert!(new.size() >= old.size(), "grow to a smaller size");
        let after = self.step("grow_zeroed")?;
        // SAFETY: forwarded caller contract.
        let block = unsafe { self.moved(ptr, old, new, true) };
        self.finish("grow_zeroed", after, block)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        assert!(new.size() <= old.size(), "shrink to a larger size");
        let after = self.step("shrink")?;
        // SAFETY: forwarded caller contract.
        let block = unsafe { self.moved(ptr, old, new, false) };
        self.finish("shrink", after, block)
    }
}

impl<A: Allocator> Scripted<A> {
    /// Scribbles over a block given back and keeps it in the graveyard.
    ///
    /// # Safety
    /// The block was live with `layout` and is no longer used by anyone.
    unsafe fn bury(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: per the caller, the block is ours, `layout.size()` bytes long.
        unsafe { ptr.as_ptr().write_bytes(0xDD, layout.size()) };
        self.freed
            .borrow_mut()
            .insert(ptr.as_ptr() as usize, layout);
    }

    /// A grow or shrink of the block `ptr` of `old`, always by moving it: refused (`Err`,
    /// counted as a bad free) if the block is not live; otherwise a new block of `new` (zeroed
    /// if `zeroed`), the bytes both hold copied, and the old block buried.
    ///
    /// # Safety
    /// The caller's `grow`/`shrink` contract.
    unsafe fn moved(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zeroed: bool,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if !self.gave_back(ptr, old) {
            return Err(AllocError);
        }
        let block = if zeroed {
            self.counting.allocate_zeroed(new)
        } else {
            self.counting.allocate(new)
        };
        let Ok(block) = block else {
            // Unchanged: still live as it was.
            self.took(NonNull::slice_from_raw_parts(ptr, old.size()), old.align());
            return Err(AllocError);
        };
        // SAFETY: distinct blocks, each holding at least `min(old, new)` bytes; the old one is
        // ours to bury once copied.
        unsafe {
            let keep = old.size().min(new.size());
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), block.cast::<u8>().as_ptr(), keep);
            self.bury(ptr, old);
        }
        Ok(self.took(block, new.align()))
    }
}
