//! The build script's probe (`build.rs`): `cfg(asm_goto)`, the x86_64 one-instruction mark of
//! `LocalHandle`, is set exactly when the compiler compiles a crate with an `asm!` label
//! operand. Run against the real compiler (which must accept it: every compiler that builds
//! these tests is 1.88 or later) and against fake ones: one that refuses label operands as 1.86
//! and older do (tests/common/rustc-without-asm-labels.sh, also what scripts/mark-variants.sh
//! builds the portable mark with), one that does not exist, a target without `core`. No 1.84
//! toolchain is installed here, so this is where the MSRV fallback is shown.
//!
//! Runs rustc, so only where one runs natively (not under Wine or qemu-user).
#![cfg(all(unix, any(target_arch = "x86_64", target_arch = "x86")))]

#[allow(dead_code)] // `main` is the build script's
#[path = "../build.rs"]
mod build_script;

use build_script::{Probe, CONTROL_PROBE, LABEL_PROBE};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

const X86_64: &str = "x86_64-unknown-linux-gnu";
/// A target no rustc knows: no `core` for it, as for a target built with `-Zbuild-std`.
const NO_CORE: &str = "x86_64-unknown-libdd-alloc-no-core";

fn out_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "libdd-alloc-build-probe-{}-{test}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn real_rustc() -> OsString {
    std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

fn probe(rustc: impl Into<OsString>, test: &str) -> Probe {
    Probe {
        rustc: rustc.into(),
        rustflags: Vec::new(),
        out_dir: out_dir(test),
    }
}

/// The fake compiler from before label operands, over the real one (`rustc` on `PATH`, or
/// `$LIBDD_ALLOC_REAL_RUSTC`).
fn rustc_without_label_operands() -> OsString {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/common/rustc-without-asm-labels.sh"
    )
    .into()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[test]
fn the_compiler_that_builds_the_tests_accepts_the_label_probe() {
    let probe = probe(real_rustc(), "real");
    assert!(probe.compiles("label", LABEL_PROBE, os(X86_64)));
    assert!(probe.accepts_label_operands(os(X86_64), os(X86_64)));
}

#[test]
fn a_compiler_without_label_operands_refuses_the_probe_but_not_the_control() {
    let probe = probe(rustc_without_label_operands(), "old");
    assert!(probe.compiles("control", CONTROL_PROBE, os(X86_64)));
    assert!(!probe.compiles("label", LABEL_PROBE, os(X86_64)));
    assert!(!probe.accepts_label_operands(os(X86_64), os(X86_64)));
    // Asking the host as well, for a target it has no `core` for, does not change the answer.
    assert!(!probe.accepts_label_operands(os(NO_CORE), os(X86_64)));
}

#[test]
fn a_target_without_core_is_asked_for_the_host() {
    let probe = probe(real_rustc(), "no-core");
    assert!(!probe.compiles("control", CONTROL_PROBE, os(NO_CORE)));
    assert!(probe.accepts_label_operands(os(NO_CORE), os(X86_64)));
}

#[test]
fn a_compiler_that_cannot_run_or_flags_it_refuses_get_the_portable_mark() {
    let missing = probe("/nonexistent/libdd-alloc/rustc", "missing");
    assert!(!missing.accepts_label_operands(os(X86_64), os(X86_64)));
    // The build's RUSTFLAGS reach the probe: a flag rustc refuses fails it.
    let mut flagged = probe(real_rustc(), "flags");
    flagged.rustflags = vec!["--no-such-rustc-flag".into()];
    assert!(!flagged.accepts_label_operands(os(X86_64), os(X86_64)));
    flagged.rustflags = vec!["--cfg".into(), "libdd_alloc_probe".into()];
    assert!(flagged.accepts_label_operands(os(X86_64), os(X86_64)));
}
