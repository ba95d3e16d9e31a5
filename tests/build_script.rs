//! The build script's compiler detection (`build.rs`): which rustc versions get the x86_64
//! one-instruction mark of `LocalHandle` (`cfg(asm_goto)`), and that anything unreadable falls
//! back to the portable mark. No 1.84 toolchain is installed here, so this is where the MSRV
//! fallback is shown.

#[allow(dead_code)] // `main` is the build script's
#[path = "../build.rs"]
mod build_script;

use build_script::{rustc_minor, supports_asm_goto};

fn verbose(release: &str) -> String {
    format!("rustc {release} (59807616e 2026-04-14)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: {release}\nLLVM version: 20.1.0\n")
}

#[test]
fn rustc_1_87_and_later_get_the_asm_mark() {
    for release in [
        "1.87.0",
        "1.87.0-beta.2",
        "1.88.0-nightly",
        "1.95.0",
        "1.97.0-nightly",
        "1.100.1",
    ] {
        let minor = rustc_minor(&verbose(release));
        assert!(supports_asm_goto(minor), "{release}: {minor:?}");
    }
}

#[test]
fn the_msrv_and_other_older_compilers_get_the_portable_mark() {
    // Label operands were stabilized during 1.87's nightly cycle (rust-lang/rust#133870): a
    // 1.87 nightly or dev build may predate them (review finding F2).
    for release in [
        "1.84.0",
        "1.84.1",
        "1.86.0",
        "1.86.0-beta.3",
        "1.87.0-nightly",
        "1.87.0-dev",
    ] {
        let minor = rustc_minor(&verbose(release));
        assert!(minor.is_some(), "{release}");
        assert!(!supports_asm_goto(minor), "{release}");
    }
}

#[test]
fn an_unreadable_version_gets_the_portable_mark() {
    for output in [
        "",
        "rustc 1.95.0\n",
        "release: 2.0.0\n",
        "release: 1.x.0\n",
        "release:1.95.0\n",
    ] {
        assert!(!supports_asm_goto(rustc_minor(output)), "{output:?}");
    }
}
