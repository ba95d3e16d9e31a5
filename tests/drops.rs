//! Values whose destructors the arena runs (`DropArena`), as a real client uses them: the
//! interning `Set<T>` of libdd-profiling (src/profiles/collections/set.rs), which keeps its
//! values in a `ChainAllocator` and has a hand-written `Drop` that walks them to run their
//! destructors. Here the arena runs them and `Set` has no `Drop` impl; a counting global
//! allocator (per thread, so that tests running in parallel do not mix) proves that every byte
//! the values owned on the heap is freed, and a drop counter that each is dropped exactly once.

use hashbrown::{DefaultHashBuilder, HashTable};
use libdd_alloc::{
    AllocError, ChainAllocator, DropArena, Layout, LinearAllocator, Rewind, SyncChainAllocator,
    SyncVirtualArena, System,
};
use std::alloc::GlobalAlloc;
use std::cell::Cell;
use std::hash::{BuildHasher, Hash};
use std::ptr::NonNull;

thread_local! {
    /// Heap bytes this thread has allocated and not freed.
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    /// `Function` values dropped on this thread.
    static DROPPED: Cell<usize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + delta));
}

fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

fn dropped() -> usize {
    DROPPED.with(Cell::get)
}

/// The system allocator, counting this thread's live bytes.
struct ThreadCounting;

// SAFETY: forwards to `System`, which upholds the `GlobalAlloc` contract; counting has no effect
// on the blocks.
unsafe impl GlobalAlloc for ThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded caller contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: forwarded caller contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded caller contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: ThreadCounting = ThreadCounting;

/// A profile's function: heap data (two strings and a vector), as in libdd-profiling.
#[derive(Debug, Hash, PartialEq, Eq)]
struct Function {
    name: String,
    filename: String,
    lines: Vec<u32>,
    _counted: Counted,
}

/// Counts its drops on this thread; equal to any other (it is not part of a value's identity).
#[derive(Debug)]
struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        DROPPED.with(|d| d.set(d.get() + 1));
    }
}

impl PartialEq for Counted {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Counted {}
impl Hash for Counted {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

fn function(i: u32) -> Function {
    Function {
        name: format!("function_{i}"),
        filename: format!("src/module_{}.rs", i % 7),
        lines: (0..i % 5).collect(),
        _counted: Counted,
    }
}

/// An interning set: each distinct value is stored once, in the arena, and found again by
/// value. No `Drop` impl: the arena drops the values with itself.
struct Set<T: 'static, A: DropArena> {
    /// Addresses of the values in `arena`; never dereferenced after `arena` is dropped (fields
    /// drop in order, and the table's drop does not read its elements).
    table: HashTable<NonNull<T>>,
    hasher: DefaultHashBuilder,
    arena: A,
}

impl<T: Hash + Eq + Send + 'static, A: DropArena> Set<T, A> {
    fn new(arena: A) -> Self {
        Self {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            arena,
        }
    }

    /// The stored value equal to `value`, storing `value` first if there is none (a duplicate
    /// is dropped at once).
    fn intern(&mut self, value: T) -> Result<&T, AllocError> {
        let hash = self.hasher.hash_one(&value);
        // SAFETY: every pointer in the table is a live value in `arena` (values are only
        // dropped with the arena, which `&mut self` keeps alive).
        let found = self.table.find(hash, |&p| unsafe { p.as_ref() } == &value);
        if let Some(&existing) = found {
            // SAFETY: as above.
            return Ok(unsafe { existing.as_ref() });
        }
        let stored = NonNull::from(self.arena.try_alloc_owned(value)?);
        let hasher = &self.hasher;
        // SAFETY: as above.
        self.table
            .insert_unique(hash, stored, |&p| hasher.hash_one(unsafe { p.as_ref() }));
        // SAFETY: just stored.
        Ok(unsafe { stored.as_ref() })
    }

    fn len(&self) -> usize {
        self.table.len()
    }
}

#[test]
fn an_interning_set_drops_each_distinct_value_once_without_a_drop_impl() {
    interning_set_drops_each_distinct_value_once(SyncVirtualArena::new(1 << 26).unwrap());
    // The real client's arena, with chunks small enough that the values span many.
    interning_set_drops_each_distinct_value_once(ChainAllocator::new_in(4096, System).unwrap());
    interning_set_drops_each_distinct_value_once(SyncChainAllocator::new_in(4096, System).unwrap());
}

fn interning_set_drops_each_distinct_value_once<A: DropArena>(arena: A) {
    let baseline = live_bytes();
    let dropped_before = dropped();
    let mut set = Set::new(arena);
    for round in 0..4 {
        for i in 0..500 {
            let name_len = set.intern(function(i)).unwrap().name.len();
            assert_eq!(name_len, format!("function_{i}").len(), "round {round}");
        }
    }
    assert_eq!(set.len(), 500);
    // The 1500 duplicates were dropped at once; the 500 stored values live in the arena.
    assert_eq!(dropped() - dropped_before, 1500);
    assert!(live_bytes() > baseline);
    drop(set);
    assert_eq!(
        dropped() - dropped_before,
        2000,
        "each stored value dropped once"
    );
    assert_eq!(
        live_bytes(),
        baseline,
        "every heap byte the values owned is freed"
    );
}

#[test]
fn rewinding_an_arena_frees_the_heap_data_of_the_values_it_drops() {
    rewinding_frees_the_heap_data_of_the_values_it_drops(
        LinearAllocator::new_in(Layout::from_size_align(1 << 20, 64).unwrap(), System).unwrap(),
    );
    // Chunks of 1 KiB: the rewind frees values in chunks it gives back and in the one it keeps.
    rewinding_frees_the_heap_data_of_the_values_it_drops(
        ChainAllocator::new_in(1024, System)
            .unwrap()
            .with_max_chunk_size(1024),
    );
    rewinding_frees_the_heap_data_of_the_values_it_drops(
        SyncChainAllocator::new_in(1024, System)
            .unwrap()
            .with_max_chunk_size(1024),
    );
}

fn rewinding_frees_the_heap_data_of_the_values_it_drops<A: DropArena + Rewind>(mut arena: A) {
    let baseline = live_bytes();
    let kept = arena.try_alloc_owned(function(1)).unwrap().name.clone();
    let after_kept = live_bytes();
    let checkpoint = arena.checkpoint();
    for i in 0..100 {
        arena.try_alloc_owned(function(i)).unwrap();
    }
    arena.rewind(checkpoint);
    assert_eq!(
        live_bytes(),
        after_kept,
        "the 100 values' heap data is freed"
    );
    arena.scope(|scope| {
        scope.try_alloc_owned(function(7)).unwrap();
    });
    assert_eq!(live_bytes(), after_kept, "and the scope's");
    drop(arena);
    drop(kept);
    assert_eq!(live_bytes(), baseline);
}
