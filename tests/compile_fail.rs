//! Compile-fail proofs: the typed API's lifetimes (a reference from an arena cannot outlive
//! `reset`, `rewind` or the arena, and a scoped allocation cannot escape its scope), and
//! `format_in!`'s refusal of widths and precisions taken from arguments.
//!
//! The expected compiler output (`tests/compile_fail/*.stderr`,
//! `tests/compile_fail_format/*.stderr`) is pinned for the stable toolchain CI uses (1.95);
//! regenerate with `TRYBUILD=overwrite cargo +1.95 test --test compile_fail`. Other compilers
//! word errors differently, so these tests run only when `rustc` is 1.95.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

/// Checks that every file matching `glob` fails to compile with its pinned `.stderr`.
fn each_fails_to_compile(glob: &str) {
    if let Err(version) = common::rustc::is_pinned_release() {
        eprintln!("skipped: stderr snapshots are for rustc 1.95, this is {version}");
        return;
    }
    trybuild::TestCases::new().compile_fail(glob);
}

#[test]
fn lifetimes_of_arena_references_are_enforced() {
    each_fails_to_compile("tests/compile_fail/*.rs");
}

#[test]
fn format_in_refuses_widths_and_precisions_taken_from_arguments() {
    each_fails_to_compile("tests/compile_fail_format/*.rs");
}
