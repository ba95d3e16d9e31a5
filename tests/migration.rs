//! The upgrade from libdd-alloc 1.0, as the README's "Migrating from libdd-alloc 1.0" tells it,
//! compiled for real: each 1.0 pattern compiles against 1.0.0 (the `upstream` dev-dependency,
//! `tests/migration/on_1_0/`), the same code fails against 2.x with the error the README names
//! (`tests/migration/breaks/`, stderr pinned for rustc 1.95), and the README's replacement
//! compiles and runs against 2.x (`tests/migration/replacement/`).

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

#[test]
fn code_for_1_0_compiles_there_breaks_on_2x_as_documented_and_the_replacements_run() {
    let t = trybuild::TestCases::new();
    t.pass("tests/migration/on_1_0/*.rs");
    t.pass("tests/migration/replacement/*.rs");
    match common::rustc::is_pinned_release() {
        Ok(()) => t.compile_fail("tests/migration/breaks/*.rs"),
        Err(version) => {
            eprintln!("skipped tests/migration/breaks: stderr is pinned for rustc 1.95, this is {version}")
        }
    }
}
