//! A signal handler at every instruction boundary (x86_64 Linux): with the trap flag set the CPU
//! raises SIGTRAP after each instruction, and [`install`]'s handler runs a test's body there,
//! once per distinct instruction address per nesting level ([`VISITED`]). Used by
//! tests/review_fold.rs (the arenas' operations) and tests/review_fastpath.rs (the handle's,
//! with handlers that single-step themselves, so a second level nests).

use std::arch::asm;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// One single-step test at a time: they share SIGTRAP, the handler and the slots.
pub static LOCK: Mutex<()> = Mutex::new(());
/// The handler's body, a `fn(depth)`, or 0.
static BODY: AtomicUsize = AtomicUsize::new(0);
/// SIGTRAPs taken, at any depth.
pub static TRAPS: AtomicU64 = AtomicU64::new(0);
/// Handlers in progress now, and the most ever at once.
static DEPTH: AtomicUsize = AtomicUsize::new(0);
pub static DEEPEST: AtomicUsize = AtomicUsize::new(0);
/// Distinct instruction boundaries at which a handler ran.
pub static BOUNDARIES: AtomicU64 = AtomicU64::new(0);

/// The instruction addresses at which a handler already ran during the current operation
/// (one set per nesting level): a handler runs once per instruction boundary of the code,
/// not once per executed instruction. Without that, a handler at every iteration of a
/// compare-exchange loop (the arena's) would make it fail forever, which no real signal
/// rate does.
pub struct Visited([AtomicUsize; VISITED_SLOTS]);
const VISITED_BITS: u32 = 14;
const VISITED_SLOTS: usize = 1 << VISITED_BITS;
pub static VISITED: [Visited; 2] = [
    Visited([const { AtomicUsize::new(0) }; VISITED_SLOTS]),
    Visited([const { AtomicUsize::new(0) }; VISITED_SLOTS]),
];

impl Visited {
    pub fn clear(&self) {
        for slot in &self.0 {
            slot.store(0, Ordering::Relaxed);
        }
    }

    /// Records `rip`; `false` if it was already there (or the set is full).
    fn first_visit(&self, rip: usize) -> bool {
        let mut i = rip.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - VISITED_BITS);
        for _ in 0..VISITED_SLOTS {
            let seen = self.0[i].load(Ordering::Relaxed);
            if seen == rip {
                return false;
            }
            if seen == 0 {
                self.0[i].store(rip, Ordering::Relaxed);
                return true;
            }
            i = (i + 1) % VISITED_SLOTS;
        }
        false
    }
}

extern "C" fn on_trap(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is a thread-local int; the body may make syscalls (mmap, mprotect).
    let errno = unsafe { *libc::__errno_location() };
    TRAPS.fetch_add(1, Ordering::Relaxed);
    let depth = DEPTH.fetch_add(1, Ordering::Relaxed);
    DEEPEST.fetch_max(depth + 1, Ordering::Relaxed);
    // SAFETY: an SA_SIGINFO handler's third argument is the interrupted `ucontext_t`.
    let rip =
        unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] };
    let first = VISITED
        .get(depth)
        .is_some_and(|set| set.first_visit(rip as usize));
    let body = BODY.load(Ordering::Acquire);
    if first && body != 0 {
        BOUNDARIES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: only `fn(usize)` values are stored.
        let body: fn(usize) = unsafe { std::mem::transmute(body) };
        body(depth);
    }
    DEPTH.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Sets the trap flag: the CPU raises a debug exception (SIGTRAP) after each instruction.
#[inline(always)]
fn trap_flag_on() {
    // SAFETY: only EFLAGS.TF changes; the stack is used and left as it was.
    unsafe { asm!("pushfq", "or qword ptr [rsp], 0x100", "popfq") }
}

#[inline(always)]
fn trap_flag_off() {
    // SAFETY: as above.
    unsafe { asm!("pushfq", "and qword ptr [rsp], -257", "popfq") }
}

/// Runs `f` with a SIGTRAP, and so a handler run, after each of its instructions.
#[inline(never)]
pub fn stepped<R>(f: impl FnOnce() -> R) -> R {
    trap_flag_on();
    let r = f();
    trap_flag_off();
    r
}

/// Installs `on_trap` with `body` (SA_NODEFER, so that a handler can be trapped too).
pub fn install(body: fn(usize)) {
    BODY.store(body as usize, Ordering::Release);
    // SAFETY: a zeroed sigaction is valid; the handler uses atomics and the arena only.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction =
            on_trap as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGTRAP, &action, std::ptr::null_mut()),
            0
        );
    }
}

/// Restores SIGTRAP's default action; no body runs any more.
pub fn uninstall() {
    BODY.store(0, Ordering::Release);
    // SAFETY: restores the default action.
    unsafe { libc::signal(libc::SIGTRAP, libc::SIG_DFL) };
}
