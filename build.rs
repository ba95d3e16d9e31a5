//! Asks the compiler whether it accepts `asm!` label operands (stable since Rust 1.87, above our
//! MSRV of 1.84): if it does, `cfg(asm_goto)` turns on the one-instruction x86_64 mark of
//! `LocalHandle` (src/sync/mark.rs); otherwise the portable mark is built. No dependency and no
//! table of versions: like `autocfg`'s probes, it compiles a tiny crate with `$RUSTC`
//! (`--crate-type lib --emit=metadata`, for `$TARGET`, with the build's `RUSTFLAGS`) into
//! `OUT_DIR`. Anything that goes wrong means the portable mark.

use std::env;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The mark's `enter` in miniature: an `asm!` block with a `label` operand.
pub(crate) const LABEL_PROBE: &str = r#"#![no_std]
pub fn probe(mark: &core::sync::atomic::AtomicU32) -> bool {
    unsafe {
        core::arch::asm!(
            "dec dword ptr [{mark}]",
            "jnz {nested}",
            mark = in(reg) mark.as_ptr(),
            nested = label { return false; },
            options(nostack),
        );
    }
    true
}
"#;

/// The same crate without the `label` operand: whether `$RUSTC` can build anything for the
/// target at all (it cannot when the target's `core` is not in its sysroot, as under
/// `-Zbuild-std`).
pub(crate) const CONTROL_PROBE: &str = r#"#![no_std]
pub fn probe(mark: &core::sync::atomic::AtomicU32) -> bool {
    unsafe {
        core::arch::asm!("dec dword ptr [{mark}]", mark = in(reg) mark.as_ptr(), options(nostack));
    }
    true
}
"#;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(asm_goto)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=RUSTC");
    // The mark's asm is x86_64 with 64-bit pointers only (src/sync/mark.rs also requires
    // not(loom), not(miri)): elsewhere there is nothing to ask.
    let x86_64 = env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "x86_64")
        && env::var("CARGO_CFG_TARGET_POINTER_WIDTH").is_ok_and(|width| width == "64");
    let accepted = x86_64
        && match (
            env::var_os("OUT_DIR"),
            env::var_os("TARGET"),
            env::var_os("HOST"),
        ) {
            (Some(out_dir), Some(target), Some(host)) => {
                let probe = Probe {
                    rustc: env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()),
                    rustflags: encoded_rustflags(),
                    out_dir: out_dir.into(),
                };
                probe.accepts_label_operands(&target, &host)
            }
            _ => false,
        };
    // Read by a unit test that pins the mark to what the probe found (src/sync/mark.rs).
    println!(
        "cargo::rustc-env=LIBDD_ALLOC_BUILD_ASM_LABEL_PROBE={}",
        if accepted { "accepted" } else { "refused" }
    );
    if accepted {
        println!("cargo::rustc-cfg=asm_goto");
    }
}

/// The flags cargo passes to every rustc of this build (`CARGO_ENCODED_RUSTFLAGS`, separated
/// by 0x1f), so the probe is compiled as the crate will be.
fn encoded_rustflags() -> Vec<OsString> {
    env::var("CARGO_ENCODED_RUSTFLAGS")
        .map(|flags| {
            flags
                .split('\x1f')
                .filter(|flag| !flag.is_empty())
                .map(OsString::from)
                .collect()
        })
        .unwrap_or_default()
}

/// How to compile a probe: the compiler, the build's flags, where its output goes.
pub(crate) struct Probe {
    pub(crate) rustc: OsString,
    pub(crate) rustflags: Vec<OsString>,
    pub(crate) out_dir: PathBuf,
}

impl Probe {
    /// Whether the compiler takes [`LABEL_PROBE`] for `target`. If it refuses even
    /// [`CONTROL_PROBE`] there (no `core` for `target` in its sysroot), the question is asked
    /// for `host` instead: whether rustc accepts label operands does not depend on which x86_64
    /// target it compiles for.
    pub(crate) fn accepts_label_operands(&self, target: &OsStr, host: &OsStr) -> bool {
        if self.compiles("label", LABEL_PROBE, target) {
            return true;
        }
        if target == host || self.compiles("control", CONTROL_PROBE, target) {
            return false;
        }
        self.compiles("label_host", LABEL_PROBE, host)
    }

    /// Whether `$RUSTC` compiles `source` for `target` without an error.
    pub(crate) fn compiles(&self, name: &str, source: &str, target: &OsStr) -> bool {
        let file = self.out_dir.join(format!("probe_asm_{name}.rs"));
        if std::fs::write(&file, source).is_err() {
            return false;
        }
        Command::new(&self.rustc)
            .args(["--crate-type", "lib", "--emit=metadata", "--edition=2021"])
            .arg("--crate-name")
            .arg(format!("libdd_alloc_probe_asm_{name}"))
            .arg("--target")
            .arg(target)
            .arg("--out-dir")
            .arg(&self.out_dir)
            .args(&self.rustflags)
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}
