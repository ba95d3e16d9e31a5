//! The compiler the tests run under, for compile-fail snapshots pinned to one stable release.

/// The release whose wording `tests/compile_fail/*.stderr` and `tests/migration/breaks/*.stderr`
/// pin; regenerate with `TRYBUILD=overwrite cargo +1.95 test --test <name>`.
pub const PINNED_RUSTC: &str = "rustc 1.95.";

/// `Ok(())` when `rustc` (or `$RUSTC`) is the pinned release, else `Err(its version line)`:
/// other compilers word errors differently, so the snapshots are compared only on that one.
pub fn is_pinned_release() -> Result<(), String> {
    let version = std::process::Command::new(std::env::var("RUSTC").unwrap_or("rustc".into()))
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    if version.starts_with(PINNED_RUSTC) {
        Ok(())
    } else {
        Err(version)
    }
}
