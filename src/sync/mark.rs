//! The in-progress mark of a [`LocalHandle`](super::LocalHandle): a counter that one thread and
//! the signal handlers that interrupt it take and give back without a locked instruction.
//!
//! Values (an `AtomicU32`, read as wrapping): [`FREE`] (1) when no call on the handle is in
//! progress; [`HELD`] (0) while the outermost call (the *holder*) reads or writes the slab state;
//! below 0 (`0 - k`, wrapping) while `k` calls that interrupted the holder (signal handlers,
//! nested LIFO) are in progress on top of it. Each nested call takes one step down when it
//! enters and gives it back when it leaves, so that a call's slow path can tell, from the value
//! alone, whether it is the holder (it reads `HELD`: every handler that ran since it entered has
//! given its step back) or nested (it reads its own step, below `HELD`). That lets the fast path
//! of `allocate` reach one slow function through one call site, without passing a flag.
//!
//! Taking the mark must be atomic with respect to a signal handler on the same thread, not with
//! respect to other threads (the handle is `!Sync`). Two implementations, same values:
//! - **x86_64 with 64-bit pointers (not x32), a compiler with `asm!` label operands (rustc
//!   1.87 or later)** (`cfg(asm_goto)`, set by `build.rs` when a probe crate using one
//!   compiles; never under loom or Miri): one non-`lock` `dec dword ptr [mark]` and a `jnz`
//!   to the nested path, through an `asm!` label operand. A signal is delivered between
//!   instructions, so a handler runs either wholly before the `dec` (and gives back every step
//!   it took, so the `dec` sees what it would have seen without it) or wholly after it (and
//!   sees the mark taken). The `asm!` block may
//!   read and write any memory (no `nomem`), so the compiler moves no load or store of the slab
//!   state across it: it is the compiler fence after taking the mark.
//! - **every other target or compiler**: a relaxed load, then a relaxed store of the value one
//!   step down, then a compiler fence. A handler that lands between the load and the store gives
//!   back every step it took before the interrupted code resumes, so the store writes what it
//!   would have written without the handler.
//!
//! Giving the mark back is a compiler fence then a relaxed store of [`FREE`] (the holder) or a
//! relaxed load and store of the value one step up (a nested call; a handler landing between the
//! two is net zero, as above).

use core::sync::atomic::{compiler_fence, AtomicU32, Ordering};

/// No call on the handle is in progress.
const FREE: u32 = 1;
/// The outermost call holds the mark; below it (wrapping), nested calls are in progress.
const HELD: u32 = 0;

/// See the module docs.
pub(super) struct Mark(AtomicU32);

impl Mark {
    /// A free mark.
    pub(super) const fn new() -> Self {
        Self(AtomicU32::new(FREE))
    }

    /// Takes the mark (one step down). `true`: it was free, this call is the holder and may read
    /// and write the slab state until [`exit`](Self::exit). `false`: another call on this thread
    /// holds it (this one interrupted it); this call must not touch the slab state and must call
    /// [`leave_nested`](Self::leave_nested) when done.
    #[inline(always)]
    #[cfg(all(
        target_arch = "x86_64",
        target_pointer_width = "64",
        asm_goto,
        not(loom),
        not(miri)
    ))]
    pub(super) fn enter(&self) -> bool {
        // SAFETY: `dec` of the handle's own `AtomicU32` (a valid, aligned 4-byte location that
        // lives as long as `self`). No `lock` prefix: the handle is `!Sync`, so only this thread
        // and its signal handlers touch the mark, and an instruction cannot be split by a signal
        // (see the module docs). `jnz` jumps when the value before was not `FREE`. The asm uses
        // no stack and clobbers only the flags (the default); without `nomem` it is a compiler
        // barrier for memory, the fence after taking the mark. In the memory model the block
        // stands for what the portable `enter` does, a relaxed load and a relaxed store of the
        // same `AtomicU32`, made in one step: an atomic access like every other one of the mark,
        // so a handler's later atomic read of it is no data race.
        unsafe {
            core::arch::asm!(
                "dec dword ptr [{mark}]",
                "jnz {nested}",
                mark = in(reg) self.0.as_ptr(),
                nested = label { return false; },
                options(nostack),
            );
        }
        // Emits nothing (the asm block already is a compiler barrier); it states, in the
        // memory model's terms, the fence after the read of the mark that orders what follows
        // after what the mark's last holder did before giving it back.
        compiler_fence(Ordering::SeqCst);
        true
    }

    /// Takes the mark (one step down): see the x86_64 version above.
    #[inline(always)]
    #[cfg(not(all(
        target_arch = "x86_64",
        target_pointer_width = "64",
        asm_goto,
        not(loom),
        not(miri)
    )))]
    pub(super) fn enter(&self) -> bool {
        let value = self.0.load(Ordering::Relaxed);
        if value != FREE {
            self.0.store(value.wrapping_sub(1), Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            return false;
        }
        self.0.store(HELD, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        true
    }

    /// Gives back the mark the holder took: every access to the slab state before this stays
    /// before it.
    #[inline(always)]
    pub(super) fn exit(&self) {
        compiler_fence(Ordering::SeqCst);
        self.0.store(FREE, Ordering::Relaxed);
    }

    /// Gives back the step a nested call took.
    #[inline]
    pub(super) fn leave_nested(&self) {
        compiler_fence(Ordering::SeqCst);
        let value = self.0.load(Ordering::Relaxed);
        self.0.store(value.wrapping_add(1), Ordering::Relaxed);
    }

    /// Whether the calling call, which has entered, holds the mark (rather than being nested).
    #[inline]
    pub(super) fn held_by_caller(&self) -> bool {
        self.0.load(Ordering::Relaxed) == HELD
    }

    /// Takes the mark for good, as a holder that never exits: every later call is nested. For
    /// `drop`, which owns the handle (`&mut`), so no call on it is in progress except, at most,
    /// a signal handler's that interrupts the drop itself (and then finds the mark held).
    #[inline]
    pub(super) fn hold_for_good(&self) {
        self.0.store(HELD, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_first_enter_holds_the_mark_and_exit_frees_it() {
        let mark = Mark::new();
        assert!(mark.enter());
        assert!(mark.held_by_caller());
        mark.exit();
        assert!(mark.enter(), "free again after exit");
        mark.exit();
        assert_eq!(mark.0.load(Ordering::Relaxed), FREE);
    }

    #[test]
    fn nested_enters_see_the_mark_held_and_give_back_only_their_own_step() {
        let mark = Mark::new();
        assert!(mark.enter());
        // A handler interrupting the holder, and one interrupting that handler.
        assert!(!mark.enter());
        assert!(!mark.held_by_caller());
        assert!(!mark.enter());
        assert!(!mark.held_by_caller());
        mark.leave_nested();
        assert!(
            !mark.held_by_caller(),
            "the first handler is still in progress"
        );
        mark.leave_nested();
        // Back in the holder: it still holds the mark; no nested call freed it.
        assert!(mark.held_by_caller());
        assert!(!mark.enter());
        mark.leave_nested();
        mark.exit();
        assert_eq!(mark.0.load(Ordering::Relaxed), FREE);
    }

    #[test]
    fn a_mark_held_for_good_makes_every_later_call_nested() {
        let mark = Mark::new();
        mark.hold_for_good();
        for _ in 0..3 {
            assert!(!mark.enter());
            assert!(!mark.held_by_caller());
            mark.leave_nested();
        }
        assert!(mark.held_by_caller());
    }

    #[test]
    fn an_x86_64_build_whose_compiler_takes_label_operands_uses_the_one_instruction_mark() {
        // Pins which implementation this build runs to what build.rs's probe found; that the
        // probe is accepted by every compiler that can build the tests (1.88 or later) is
        // pinned by tests/build_script.rs, so a probe that stops working cannot silently fall
        // back to the portable mark on x86_64.
        let probe = env!("LIBDD_ALLOC_BUILD_ASM_LABEL_PROBE");
        let asm = cfg!(all(
            target_arch = "x86_64",
            target_pointer_width = "64",
            asm_goto,
            not(miri)
        ));
        assert_eq!(
            asm,
            cfg!(all(
                target_arch = "x86_64",
                target_pointer_width = "64",
                not(miri)
            )) && probe == "accepted",
            "probe {probe}"
        );
    }
}
