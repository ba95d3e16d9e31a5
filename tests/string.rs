//! `ArenaString` and `format_in!` on every arena of the crate: growth in place while the string
//! is the most recent block (same address, exact `used_bytes`), freezing into `&str`, and a
//! property test against `std::string::String`.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::layout;
use common::Stats;
use core::fmt::Write;
use libdd_alloc::{
    format_in, AllocError, Arena, ArenaString, ChainAllocator, LinearAllocator, Rewind,
    SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena, System, VirtualAllocator,
    VirtualArena,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// Grows a string from 1 to 5000 bytes in `arena` and checks that it never moves and that the
/// arena's `used_bytes` is exactly its capacity; then freezes it and checks the slack went back.
fn grows_in_place_with_exact_accounting<A: Arena + Stats>(arena: &A) {
    let base = arena.used();
    let mut s = ArenaString::new_in(arena);
    s.try_push('#').unwrap();
    let start = s.as_ptr();
    let mut i = 0u32;
    while s.len() < 5000 {
        write!(s, "{i};").unwrap();
        assert_eq!(s.as_ptr(), start, "moved at {} bytes", s.len());
        assert_eq!(arena.used() - base, s.capacity());
        i += 1;
    }
    let len = s.len();
    let frozen = s.into_str();
    assert_eq!(frozen.as_ptr(), start);
    assert_eq!(arena.used() - base, len);
    assert!(frozen.starts_with("#0;1;2;") && frozen.ends_with(&format!("{};", i - 1)));
    // A formatted line after it starts right behind it.
    let line = format_in!(arena, "pid {} sig {}", 4242, "SIGPROF").unwrap();
    assert_eq!(line, "pid 4242 sig SIGPROF");
    assert_eq!(line.as_ptr() as usize, frozen.as_ptr() as usize + len);
    assert_eq!(arena.used() - base, len + line.len());
}

#[test]
fn string_grows_in_place_in_every_arena() {
    grows_in_place_with_exact_accounting(
        &LinearAllocator::new_in(layout(1 << 16, 8), System).unwrap(),
    );
    grows_in_place_with_exact_accounting(&ChainAllocator::new_in(1 << 16, System).unwrap());
    grows_in_place_with_exact_accounting(
        &SyncLinearAllocator::new_in(layout(1 << 16, 4096), VirtualAllocator {}).unwrap(),
    );
    grows_in_place_with_exact_accounting(
        &SyncChainAllocator::new_in(1 << 16, VirtualAllocator {}).unwrap(),
    );
    grows_in_place_with_exact_accounting(&VirtualArena::new(1 << 20).unwrap());
    grows_in_place_with_exact_accounting(&SyncVirtualArena::new(1 << 20).unwrap());
}

#[test]
fn dropping_the_most_recent_string_gives_its_bytes_back_and_an_older_one_does_not() {
    let arena = LinearAllocator::new_in(layout(256, 8), System).unwrap();
    let older = ArenaString::try_from_str_in("older", &arena).unwrap();
    let newer = ArenaString::try_from_str_in("newer", &arena).unwrap();
    drop(newer);
    assert_eq!(arena.used_bytes(), 5);
    drop(older);
    assert_eq!(arena.used_bytes(), 0);
    let first = ArenaString::try_from_str_in("first", &arena).unwrap();
    let _second = ArenaString::try_from_str_in("second", &arena).unwrap();
    drop(first);
    assert_eq!(
        arena.used_bytes(),
        11,
        "an older block cannot be given back to a bump arena"
    );
}

#[test]
fn frozen_strings_live_as_long_as_the_arena_borrow_and_rewind_needs_them_gone() {
    let mut arena = ChainAllocator::new_in(4096, System).unwrap();
    let checkpoint = arena.checkpoint();
    let names: Vec<&str> = (0..100)
        .map(|i| format_in!(&arena, "thread-{i}").unwrap())
        .collect();
    assert!(names
        .iter()
        .enumerate()
        .all(|(i, n)| *n == format!("thread-{i}")));
    drop(names); // the borrow checker refuses `rewind` while `names` lives
    arena.rewind(checkpoint);
    assert_eq!(format_in!(&arena, "{}", 1).unwrap(), "1");
}

#[test]
fn format_in_a_scope_is_rolled_back_with_the_scope() {
    let mut arena = ChainAllocator::new_in(4096, System).unwrap();
    let before = arena.used_bytes();
    arena.scope(|scope| {
        let s = format_in!(&*scope, "scratch {:?}", [1, 2, 3]).unwrap();
        assert_eq!(s, "scratch [1, 2, 3]");
    });
    assert_eq!(arena.used_bytes(), before);
}

#[test]
fn format_in_an_arena_that_is_full_is_an_error_and_uses_nothing() {
    let arena = LinearAllocator::new_in(layout(8, 1), System).unwrap();
    assert_eq!(format_in!(&arena, "{}", 123_456_789), Err(AllocError));
    assert_eq!(arena.used_bytes(), 0);
    assert_eq!(format_in!(&arena, "{}", 12_345_678).unwrap(), "12345678");
}

/// A `Display` that writes `bytes` bytes (in pieces of 64) and then fails.
struct FailsAfter {
    bytes: usize,
}

impl std::fmt::Display for FailsAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for _ in 0..self.bytes / 64 {
            f.write_str("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")?;
        }
        Err(std::fmt::Error)
    }
}

/// Rounds of small strings (107 bytes each, so that the failed format starts at many offsets
/// of a slab or chunk), each followed by a `format_in!` whose argument fails after 6.4 KB:
/// the failure gives back every byte it took, as `used()` (read after each) shows.
fn a_failed_format_leaves_nothing_allocated<A: Arena>(arena: &A, used: &dyn Fn() -> usize) {
    for round in 0..40 {
        for _ in 0..round {
            arena.try_alloc_str(&"s".repeat(107)).unwrap();
        }
        let before = used();
        assert_eq!(
            format_in!(arena, "{}", FailsAfter { bytes: 6400 }),
            Err(AllocError)
        );
        assert_eq!(used(), before, "round {round}");
    }
}

#[test]
fn a_failed_format_in_gives_back_everything_it_allocated_on_every_arena() {
    let linear = LinearAllocator::new_in(layout(1 << 20, 8), System).unwrap();
    a_failed_format_leaves_nothing_allocated(&linear, &|| linear.used_bytes());
    // One chunk holds every round (past a chunk's end, the bytes left in the old chunk stay).
    let chain = ChainAllocator::new_in(1 << 20, System).unwrap();
    a_failed_format_leaves_nothing_allocated(&chain, &|| chain.used_bytes());
    let pages = VirtualArena::new(16 << 20).unwrap();
    a_failed_format_leaves_nothing_allocated(&pages, &|| pages.used_bytes());
}

/// A failed `format_in!` on a lone handle, and on a twin arena allocated from directly: nothing
/// stays allocated on either, and once the handle is dropped both arenas count the same bytes.
macro_rules! on_the_arena_and_on_a_handle {
    ($make:expr) => {{
        let (arena, direct) = ($make, $make);
        a_failed_format_leaves_nothing_allocated(&direct, &|| direct.used_bytes());
        {
            let local = arena.local();
            a_failed_format_leaves_nothing_allocated(&local, &|| local.used_bytes());
        }
        assert_eq!(arena.used_bytes(), direct.used_bytes());
    }};
}

#[test]
fn a_failed_format_in_on_a_local_handle_gives_back_everything_it_allocated() {
    on_the_arena_and_on_a_handle!(SyncChainAllocator::new_in(1 << 20, VirtualAllocator {}).unwrap());
    on_the_arena_and_on_a_handle!(SyncLinearAllocator::new_in(
        layout(1 << 20, 4096),
        VirtualAllocator {}
    )
    .unwrap());
    on_the_arena_and_on_a_handle!(SyncVirtualArena::new(16 << 20).unwrap());
}

#[test]
fn an_arena_string_is_send_and_sync_when_its_allocator_is() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let arena = SyncChainAllocator::new_in(4096, VirtualAllocator {}).unwrap();
    let s = ArenaString::try_from_str_in("shared", &arena).unwrap();
    send_sync(&s);
    std::thread::scope(|t| {
        t.spawn(|| assert_eq!(s, "shared"));
    });
}

#[test]
fn display_debug_and_comparisons_see_the_text() {
    let arena = ChainAllocator::new_in(4096, System).unwrap();
    let s = ArenaString::try_from_str_in("a\"b", &arena).unwrap();
    assert_eq!(format!("{s}|{s:?}"), "a\"b|\"a\\\"b\"");
    let t = ArenaString::try_from_str_in("a\"b", System).unwrap();
    assert!(s == t && s == "a\"b" && *s == *"a\"b");
    let r: &str = s.as_ref();
    assert_eq!(r.len(), 3);
}

// ---- Property test: ArenaString against String ----

#[derive(Clone, Debug)]
enum Op {
    PushStr(String),
    Push(char),
    Pop,
    Clear,
    Reserve(usize),
    ReserveExact(usize),
    ShrinkToFit,
    Write(u64, String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => ".{0,40}".prop_map(Op::PushStr),
        3 => any::<char>().prop_map(Op::Push),
        2 => Just(Op::Pop),
        1 => Just(Op::Clear),
        1 => (0usize..600).prop_map(Op::Reserve),
        1 => (0usize..600).prop_map(Op::ReserveExact),
        1 => Just(Op::ShrinkToFit),
        2 => (any::<u64>(), ".{0,10}").prop_map(|(n, s)| Op::Write(n, s)),
    ]
}

fn config() -> Config {
    Config {
        rng_seed: RngSeed::Fixed(0x0057_914e),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arena_string_matches_string_and_fails_only_when_the_arena_is_full(
        capacity in 0usize..2048,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let arena = LinearAllocator::new_in(layout(capacity, 1), System).unwrap();
        let mut s = ArenaString::new_in(&arena);
        let mut model = String::new();
        for op in ops {
            let before = model.clone();
            let (result, needed): (Result<(), AllocError>, usize) = match &op {
                Op::PushStr(t) => { model.push_str(t); (s.try_push_str(t), model.len()) }
                Op::Push(c) => { model.push(*c); (s.try_push(*c), model.len()) }
                Op::Pop => { prop_assert_eq!(s.pop(), model.pop()); (Ok(()), 0) }
                Op::Clear => { s.clear(); model.clear(); (Ok(()), 0) }
                Op::Reserve(n) => (s.try_reserve(*n), model.len() + n),
                Op::ReserveExact(n) => (s.try_reserve_exact(*n), model.len() + n),
                Op::ShrinkToFit => { s.shrink_to_fit(); prop_assert_eq!(s.capacity(), s.len()); (Ok(()), 0) }
                Op::Write(n, t) => {
                    write!(model, "{n}{t}").unwrap();
                    (write!(s, "{n}{t}").map_err(|_| AllocError), model.len())
                }
            };
            if result.is_err() {
                // The string is the arena's only block, so growth is in place: it fails only
                // when the arena cannot hold what is needed.
                prop_assert!(needed > capacity, "{:?} failed with room: {} of {}", op, needed, capacity);
                if !matches!(op, Op::Write(..)) {
                    model = before; // a refused push leaves the string as it was
                }
                model.truncate(s.len()); // a refused write keeps what was written before it
            }
            prop_assert_eq!(s.as_str(), model.as_str());
            prop_assert!(s.capacity() >= s.len());
            prop_assert_eq!(arena.used_bytes(), s.capacity());
        }
    }
}

/// The neighbours of the one refused float form (`{:.65535e}`, a compile error: see
/// `tests/compile_fail_format/exponent_precision_65535.rs`) format without a panic.
#[test]
fn format_in_formats_floats_at_precision_65534_in_exponent_form_and_65535_otherwise() {
    let arena = ChainAllocator::new_in(1 << 20, System).unwrap();
    let exponent = format_in!(&arena, "{:.65534e}", 1.5f64).unwrap();
    assert_eq!((exponent.len(), &exponent[..4]), (65_538, "1.50"));
    assert!(exponent.ends_with("0e0"));
    let fixed = format_in!(&arena, "{:.65535}", f32::NAN).unwrap();
    assert_eq!(fixed, "NaN");
    let debug = format_in!(&arena, "{:.65535?}", 0.25f64).unwrap();
    assert_eq!(debug.len(), 65_537);
}
