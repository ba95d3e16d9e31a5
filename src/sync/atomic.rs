//! The atomics of the lock-free arenas, behind one name so that the same code runs under the
//! [loom](https://docs.rs/loom) model checker, which replaces them with instrumented versions
//! that explore every interleaving. Only the crate's own unit tests see loom (`cfg(all(test,
//! loom))`, see `loom_tests.rs` and `scripts/loom.sh`): it is a dev-dependency, so users never
//! resolve it, whatever `--cfg` they build with.

#[cfg(not(all(test, loom)))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicUsize};
#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicUsize};

pub(crate) use core::sync::atomic::Ordering;

/// Declares a `const fn`, except under loom, whose atomics cannot be built in a `const`
/// context (the model must see every atomic created).
macro_rules! const_fn_unless_loom {
    ($(#[$attr:meta])* $vis:vis const fn $($rest:tt)*) => {
        #[cfg(not(all(test, loom)))]
        $(#[$attr])* $vis const fn $($rest)*
        #[cfg(all(test, loom))]
        $(#[$attr])* $vis fn $($rest)*
    };
}
pub(crate) use const_fn_unless_loom;
