//! Compile-fail proofs of the typed API's lifetimes: a reference from an arena cannot outlive
//! `reset`, `rewind` or the arena, and a scoped allocation cannot escape its scope.
//!
//! The expected compiler output (`tests/compile_fail/*.stderr`) is pinned for the stable toolchain
//! CI uses (1.95); regenerate with `TRYBUILD=overwrite cargo +1.95 test --test compile_fail`.
//! Other compilers word errors differently, so this test runs only when `rustc` is 1.95.

#[test]
fn lifetimes_of_arena_references_are_enforced() {
    let version = std::process::Command::new(std::env::var("RUSTC").unwrap_or("rustc".into()))
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    if !version.starts_with("rustc 1.95.") {
        eprintln!("skipped: stderr snapshots are for rustc 1.95, this is {version}");
        return;
    }
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
