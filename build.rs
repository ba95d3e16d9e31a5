//! Detects whether the compiler accepts `asm!` label operands (stable since Rust 1.87, above our
//! MSRV of 1.84): if it does, `cfg(asm_goto)` turns on the one-instruction x86_64 mark of
//! `LocalHandle` (src/sync/mark.rs); otherwise the portable mark is built. No dependency: it
//! reads `$RUSTC -vV`. Anything it cannot read means the portable mark.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(asm_goto)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=RUSTC");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let verbose_version = Command::new(rustc)
        .arg("-vV")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .unwrap_or_default();
    let minor = rustc_minor(&verbose_version);
    // Read by a unit test that pins which mark this build uses.
    println!(
        "cargo::rustc-env=LIBDD_ALLOC_BUILD_RUSTC_MINOR={}",
        minor.unwrap_or(0)
    );
    if supports_asm_goto(minor) {
        println!("cargo::rustc-cfg=asm_goto");
    }
}

/// The minor version of a Rust 1.x compiler, from the `release: 1.87.0` line of `rustc -vV`,
/// counted one lower for a nightly or dev build (`release: 1.97.0-nightly` is 96): a feature
/// stabilized during the 1.N cycle (asm label operands, in 1.87's) is missing from the 1.N
/// nightlies built before it landed, but every 1.N nightly has what 1.(N-1) released. A beta
/// (`1.87.0-beta.3`) counts as its release.
pub(crate) fn rustc_minor(verbose_version: &str) -> Option<u32> {
    let release = verbose_version
        .lines()
        .find_map(|line| line.strip_prefix("release: "))?
        .trim();
    let (version, pre_release) = release.split_once('-').unwrap_or((release, ""));
    let mut parts = version.split('.');
    if parts.next()? != "1" {
        return None;
    }
    let minor: u32 = parts.next()?.parse().ok()?;
    if pre_release.starts_with("nightly") || pre_release.starts_with("dev") {
        minor.checked_sub(1)
    } else {
        Some(minor)
    }
}

/// Whether `asm!` takes `label` operands: Rust 1.87 or later.
pub(crate) fn supports_asm_goto(minor: Option<u32>) -> bool {
    minor.is_some_and(|minor| minor >= 87)
}
