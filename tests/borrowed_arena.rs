//! The linear arenas over memory the caller owns (`from_buffer`, `static_arena!`): the typed
//! API, `ArenaString`, `format_in!`, checkpoints and scopes, and collections, unchanged from the
//! arenas over a backing allocator; for both cursors.

use allocator_api2::vec::Vec as ApiVec;
use libdd_alloc::arena::Linear;
use libdd_alloc::{
    format_in, static_arena, Allocator, Arena, ArenaString, Borrowed, Layout, LinearAllocator,
    Rewind, SyncLinearAllocator,
};
use std::mem::MaybeUninit;

static_arena! {
    /// For the tests below that use a `static`.
    static STATIC_ARENA: [u8; 4096];
    pub(crate) static SECOND_STATIC_ARENA: [u8; 64];
}

fn buffer<const N: usize>() -> [MaybeUninit<u8>; N] {
    [MaybeUninit::uninit(); N]
}

/// Strings, typed values and formatting on one arena over a borrowed buffer.
fn strings_and_typed_values<A: Arena>(arena: &A) {
    let mut text = ArenaString::new_in(arena);
    text.try_push_str("pid ").unwrap();
    text.try_push('4').unwrap();
    assert_eq!(text.as_str(), "pid 4");
    let frozen = text.into_str();
    let line = format_in!(arena, "{frozen}2 got {} at {:#x}", "SIGSEGV", 0xdead_u32).unwrap();
    assert_eq!(line, "pid 42 got SIGSEGV at 0xdead");
    let words = arena.try_alloc_slice_copy(&[1u64, 2, 3]).unwrap();
    assert_eq!(words, &[1, 2, 3]);
    assert_eq!(*arena.try_alloc(7u16).unwrap(), 7);
    assert_eq!(frozen, "pid 4"); // still intact
}

#[test]
fn arena_string_format_in_and_the_arena_trait_work_on_borrowed_buffers() {
    let mut cell = buffer::<512>();
    strings_and_typed_values(&LinearAllocator::from_buffer(&mut cell));
    let mut sync = buffer::<512>();
    strings_and_typed_values(&SyncLinearAllocator::from_buffer(&mut sync));
    strings_and_typed_values(&STATIC_ARENA);
}

#[test]
fn a_full_borrowed_buffer_is_an_err_for_strings_and_formatting() {
    let mut bytes = buffer::<16>();
    let arena = LinearAllocator::from_buffer(&mut bytes);
    assert!(format_in!(&arena, "{}", "seventeen bytes!!").is_err());
    assert_eq!(
        arena.used_bytes(),
        0,
        "a refused format leaves nothing allocated"
    );
    assert_eq!(
        format_in!(&arena, "{}", "sixteen bytes!!!").unwrap().len(),
        16
    );
    let mut more = ArenaString::new_in(&arena);
    assert!(more.try_push('x').is_err());
    // The static arenas are as bounded: 64 bytes.
    assert!(SECOND_STATIC_ARENA.try_alloc([0u8; 65]).is_err());
    assert!(SECOND_STATIC_ARENA.try_alloc([0u8; 64]).is_ok());
    assert_eq!(SECOND_STATIC_ARENA.remaining_capacity(), 0);
}

fn checkpoints_and_scopes<C: libdd_alloc::arena::Cursor>() {
    let mut bytes = buffer::<256>();
    let mut arena = Linear::<C, Borrowed<'_>>::from_buffer(&mut bytes);
    arena.try_alloc_str("kept").unwrap();
    let checkpoint = arena.checkpoint();
    arena.try_alloc_str("scratch").unwrap();
    arena.rewind(checkpoint);
    assert_eq!(arena.used_bytes(), 4);
    let inside = arena.scope(|scope| {
        let text = format_in!(&*scope, "{}-{}", "in", "scope").unwrap();
        assert_eq!(text, "in-scope");
        text.len()
    });
    assert_eq!(inside, 8);
    assert_eq!(arena.used_bytes(), 4, "the scope's blocks were given back");
    arena.reset();
    assert_eq!(arena.used_bytes(), 0);
}

#[test]
fn checkpoints_scopes_and_reset_work_on_borrowed_buffers() {
    checkpoints_and_scopes::<libdd_alloc::arena::CellCursor>();
    checkpoints_and_scopes::<libdd_alloc::arena::AtomicCursor>();
}

#[test]
fn collections_grow_in_place_in_a_borrowed_buffer() {
    let mut bytes = buffer::<4096>();
    let arena = SyncLinearAllocator::from_buffer(&mut bytes);
    let mut numbers: ApiVec<u32, _> = ApiVec::new_in(&arena);
    for i in 0..500 {
        numbers.push(i);
    }
    assert_eq!(numbers.iter().sum::<u32>(), 124_750);
    // The vector was always the last block, so each doubling grew it in place: no copy left
    // behind, the arena holds exactly its capacity.
    assert_eq!(arena.used_bytes(), numbers.capacity() * 4);
    let mut map = hashbrown::HashMap::new_in(&arena);
    map.insert(1u8, "one");
    assert_eq!(map.get(&1), Some(&"one"));
    // A collection over a buffer that runs out reports it as an error.
    let mut small = buffer::<64>();
    let arena = LinearAllocator::from_buffer(&mut small);
    let mut vec: ApiVec<u64, _> = ApiVec::new_in(&arena);
    assert!(vec.try_reserve(9).is_err());
    assert!(vec.try_reserve(8).is_ok());
}

#[test]
fn a_borrowed_arena_can_live_in_another_thread_s_stack_buffer() {
    let mut bytes = buffer::<1024>();
    let arena = SyncLinearAllocator::from_buffer(&mut bytes);
    let texts: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let arena = &arena;
                s.spawn(move || format_in!(arena, "thread {i}").unwrap().to_owned())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(texts, ["thread 0", "thread 1", "thread 2", "thread 3"]);
    assert!(arena.used_bytes() >= 32);
    let _ = arena.allocator().allocate(Layout::new::<u8>()).unwrap_err();
}
