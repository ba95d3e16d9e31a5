//! Compile-fail proofs of the typed API's lifetimes: a reference from an arena cannot outlive
//! `reset`, `rewind` or the arena, and a scoped allocation cannot escape its scope; and of
//! `format_in!`'s refusal of widths and precisions taken from arguments.
//!
//! The expected compiler output (`tests/compile_fail/*.stderr`, `tests/compile_fail_format/`) is pinned for the stable toolchain
//! CI uses (1.95); regenerate with `TRYBUILD=overwrite cargo +1.95 test --test compile_fail`.
//! Other compilers word errors differently, so this test runs only when `rustc` is 1.95.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

#[test]
fn lifetimes_of_arena_references_are_enforced() {
    if let Err(version) = common::rustc::is_pinned_release() {
        eprintln!("skipped: stderr snapshots are for rustc 1.95, this is {version}");
        return;
    }
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}

#[test]
fn format_in_refuses_widths_and_precisions_taken_from_arguments() {
    if let Err(version) = common::rustc::is_pinned_release() {
        eprintln!("skipped: stderr snapshots are for rustc 1.95, this is {version}");
        return;
    }
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail_format/*.rs");
}
