//! A crash handler whose report memory is a `static`: no `mmap`, no set-up at run time.
//!
//! The variant of `examples/crash_report.rs` for a program that maps nothing before a crash:
//! the report arena is declared with [`static_arena!`] (a lock-free `SyncLinearAllocator` over a
//! buffer in `.bss`, ready before `main` runs) and the alternate signal stack is a static array
//! too. The program keeps some state in the arena, then writes to a read-only `static`: a real
//! `SIGSEGV`. The handler formats the report into the same arena with `format_in!` (no heap, no
//! panic, no lock, no system call but `write` and `_exit`), writes it to stderr and leaves with
//! `_exit`.
//!
//! ```text
//! cargo run --example crash_report_static
//! ```
//! The process prints the report on stderr and exits with status 42.
//!
//! POSIX only (`sigaction`, `sigaltstack`): on Windows the example says so and exits with 2.

#![cfg_attr(not(unix), allow(dead_code, unused_imports))]

use libdd_alloc::{format_in, static_arena, Arena};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The exit status of a process that reported its crash.
pub const REPORT_EXIT_STATUS: i32 = 42;
/// Size of the report arena, in bytes.
pub const ARENA_SIZE: usize = 16 << 10;
/// The alternate signal stack's size; the handler's frames and formatting fit easily.
const ALTERNATE_STACK_SIZE: usize = 64 << 10;

static_arena! {
    /// The report's memory: in `.bss`, usable from the first instruction of `main`.
    pub static REPORT_ARENA: [u8; ARENA_SIZE];
}

/// The start of the arena's buffer, found from its first block (the program's state) and the
/// padding before it.
static ARENA_START: AtomicUsize = AtomicUsize::new(0);

/// The byte the program writes to: in read-only memory, so the write faults.
static READ_ONLY: u8 = 0;

/// The alternate signal stack, a static array (16-byte aligned, as every ABI asks).
#[cfg(unix)]
#[repr(C, align(16))]
struct AlternateStack([u8; ALTERNATE_STACK_SIZE]);
#[cfg(unix)]
static mut ALTERNATE_STACK: AlternateStack = AlternateStack([0; ALTERNATE_STACK_SIZE]);

#[cfg(unix)]
fn write_stderr(bytes: &[u8]) {
    // SAFETY: writing a valid buffer to fd 2; a short or failed write is all we can accept here.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// The `SIGSEGV`/`SIGBUS` handler. Async-signal-safe: the static arena, `write`, `_exit`.
#[cfg(unix)]
extern "C" fn report_crash(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    let arena = &REPORT_ARENA;
    let used_before = arena.used_bytes();
    // SAFETY: the kernel passes valid siginfo to an SA_SIGINFO handler.
    let fault_address = unsafe { (*info).si_addr() } as usize;
    let here = &signal as *const libc::c_int as usize;
    let stack = (&raw const ALTERNATE_STACK).addr();
    let on_alternate_stack = (stack..stack + ALTERNATE_STACK_SIZE).contains(&here);
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        _ => "?",
    };
    let report = format_in!(
        arena,
        "=== crash report (static arena) ===\n\
         signal: {signal} ({name})\n\
         fault address: {fault_address:#x}\n\
         handler on alternate stack: {on_alternate_stack}\n\
         arena before the report: {used_before} of {reserved} bytes used\n",
        reserved = arena.reserved_bytes(),
    );
    let Ok(report) = report else {
        write_stderr(b"crash report: no room in the arena\n");
        // SAFETY: leave at once.
        unsafe { libc::_exit(REPORT_EXIT_STATUS + 1) };
    };
    write_stderr(report.as_bytes());
    let start = report.as_ptr().addr();
    let in_static_arena = is_in_arena(start, report.len());
    let trailer = format_in!(
        arena,
        "report text in the static arena: {in_static_arena} ({} bytes at {start:#x})\n\
         === end of crash report ===\n",
        report.len(),
    );
    write_stderr(trailer.map_or(b"=== end of crash report ===\n".as_slice(), str::as_bytes));
    // SAFETY: leave without running exit handlers or unwinding through the faulting frame.
    unsafe { libc::_exit(REPORT_EXIT_STATUS) };
}

/// Whether `[start, start + len)` lies in the report arena's buffer, which starts where the
/// arena's first block went ([`ARENA_START`]).
fn is_in_arena(start: usize, len: usize) -> bool {
    let base = ARENA_START.load(Ordering::Relaxed);
    base != 0 && start >= base && start + len <= base + REPORT_ARENA.reserved_bytes()
}

/// Installs the handler for `SIGSEGV` and `SIGBUS` on the static alternate stack of the calling
/// thread. Nothing is mapped or allocated for it.
#[cfg(unix)]
pub fn prepare() {
    let alternate = libc::stack_t {
        ss_sp: (&raw mut ALTERNATE_STACK).cast::<libc::c_void>(),
        ss_flags: 0,
        ss_size: ALTERNATE_STACK_SIZE,
    };
    // SAFETY: the stack is a static that nothing else uses; the action's handler is
    // async-signal-safe; a zeroed sigaction is valid.
    unsafe {
        assert_eq!(libc::sigaltstack(&alternate, std::ptr::null_mut()), 0);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = report_crash
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut()),
            0
        );
        assert_eq!(
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()),
            0
        );
    }
}

/// Keeps some state in the arena, then writes to [`READ_ONLY`]; prints the address first, for
/// checking the report.
#[cfg(unix)]
pub fn run() -> ! {
    prepare();
    let state = REPORT_ARENA
        .try_alloc_slice_copy(&[7u64; 16])
        .expect("state in the static arena");
    // The first block of an empty arena: at most 7 bytes of padding past the buffer's start.
    let padding = REPORT_ARENA.used_bytes() - size_of_val(state);
    ARENA_START.store(state.as_ptr().addr() - padding, Ordering::Relaxed);
    println!("state: {} words in the static arena", state.len());
    let target = (&raw const READ_ONLY).cast_mut();
    println!("about to write to {:#x}", target.addr());
    // SAFETY: not safe at all, on purpose: the byte is in read-only memory, so the write faults
    // and the handler ends the process before this function could go on.
    unsafe { target.write_volatile(1) };
    unreachable!("the write to read-only memory did not fault");
}

#[cfg(unix)]
#[allow(dead_code)]
fn main() {
    run();
}

#[cfg(not(unix))]
fn main() {
    eprintln!("crash_report_static: needs POSIX signals (sigaction, sigaltstack)");
    std::process::exit(2);
}
