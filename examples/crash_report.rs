//! A crash handler that formats its report with std's `format!`, `Vec` and `String`, on memory
//! prepared before the crash.
//!
//! After a `SIGSEGV` the heap may be corrupt or its lock held, so the handler must not call
//! `malloc`. The program's global allocator is a `Divert` over `System`: until a diversion, every
//! allocation goes to `System` (one relaxed load and a branch on top). Everything the handler
//! needs is made ready up front: a `SyncLinearAllocator` backed by `VirtualAllocator` (pages
//! straight from the kernel), prepared as the diversion's arena, and an alternate signal stack, so
//! that the handler can run even when the crash is a stack overflow. The handler diverts its
//! thread's allocation to the arena (a guard), so `format!` and `Vec<String>` allocate there with
//! no lock and no libc call, writes the report to stderr with `write(2)` and leaves with `_exit`.
//! The report is a few hundred bytes; a full arena would be `handle_alloc_error` (an abort), never
//! a call to `malloc`. Where no global allocator may be replaced, `format_in!` formats into an
//! arena by hand (see the README).
//!
//! ```text
//! cargo run --example crash_report -- segv       # write to a PROT_NONE page
//! cargo run --example crash_report -- overflow   # overflow the stack
//! ```
//! Either way the process prints the report on stderr and exits with status 42.
//!
//! POSIX only (`sigaction`, `sigaltstack`): on Windows the example says so and exits with 2.

#![cfg_attr(not(unix), allow(dead_code, unused_imports))]

use libdd_alloc::{Allocator, Divert, Layout, SyncLinearAllocator, System, VirtualAllocator};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The exit status of a process that reported its crash.
pub const REPORT_EXIT_STATUS: i32 = 42;
/// The alternate signal stack; the handler's frames and formatting fit easily.
const ALTERNATE_STACK_SIZE: usize = 64 << 10;

type Arena = SyncLinearAllocator<VirtualAllocator>;

/// `System`, until the handler diverts its thread to the arena prepared for the report.
#[global_allocator]
static GLOBAL: Divert<System, Arena> = Divert::new(System);

/// Where the alternate stack lives, to tell in the report whether the handler runs on it.
static ALTERNATE_STACK: AtomicUsize = AtomicUsize::new(0);

#[cfg(unix)]
fn write_stderr(bytes: &[u8]) {
    // SAFETY: writing a valid buffer to fd 2; a short or failed write is all we can accept here.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// The `SIGSEGV`/`SIGBUS` handler. Async-signal-safe: atomics, the diverted allocator (the
/// arena), `write`, `_exit`.
#[cfg(unix)]
extern "C" fn report_crash(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // From here on this thread allocates from the arena. Only this thread where threads are
    // told apart (Linux, Android); elsewhere the whole process, which is going down anyway.
    let thread = GLOBAL.divert_thread().ok();
    let process = thread
        .is_none()
        .then(|| GLOBAL.divert_process().ok())
        .flatten();
    let (true, Some(arena)) = (thread.is_some() || process.is_some(), GLOBAL.arena()) else {
        write_stderr(b"crash report: no arena prepared\n");
        // SAFETY: leave at once.
        unsafe { libc::_exit(REPORT_EXIT_STATUS + 1) };
    };
    let used_before = arena.used_bytes();
    // SAFETY: the kernel passes valid siginfo to an SA_SIGINFO handler.
    let fault_address = unsafe { (*info).si_addr() } as usize;
    let here = &signal as *const libc::c_int as usize;
    let stack = ALTERNATE_STACK.load(Ordering::Relaxed);
    let on_alternate_stack = (stack..stack + ALTERNATE_STACK_SIZE).contains(&here);
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        _ => "?",
    };
    // Plain std formatting: the allocations come from the arena.
    let signal = format!("{signal} ({name})");
    let arena_use = format!("{used_before} of {} bytes used", arena.reserved_bytes());
    let facts: [(&str, &dyn std::fmt::Display); 4] = [
        ("signal", &signal),
        ("fault address", &format_args!("{fault_address:#x}")),
        ("handler on alternate stack", &on_alternate_stack),
        ("arena before the report", &arena_use),
    ];
    let lines: Vec<String> = facts
        .iter()
        .map(|(key, value)| format!("{key}: {value}"))
        .collect();
    let report = format!("=== crash report ===\n{}\n", lines.join("\n"));
    write_stderr(report.as_bytes());
    let trailer = format!(
        "report text in the arena: {} bytes at {:#x}\n\
         report allocated from the arena: {}\n\
         === end of crash report ===\n",
        report.len(),
        report.as_ptr() as usize,
        GLOBAL.arena_contains(report.as_ptr()),
    );
    write_stderr(trailer.as_bytes());
    // SAFETY: leave without running exit handlers or unwinding through the faulting frame.
    unsafe { libc::_exit(REPORT_EXIT_STATUS) };
}

/// Prepares everything the handler needs, then installs it for `SIGSEGV` and `SIGBUS` on an
/// alternate stack for the calling thread.
#[cfg(unix)]
pub fn prepare() {
    libdd_alloc::os::page_size().expect("page size");
    let arena = Arena::new_in(
        Layout::from_size_align(64 << 10, 4096).unwrap(),
        VirtualAllocator {},
    )
    .expect("crash arena");
    // Some state the program keeps in the arena before the crash.
    arena.allocate(Layout::new::<[u64; 16]>()).expect("state");
    GLOBAL
        .prepare(Box::leak(Box::new(arena)))
        .expect("the one crash arena");

    let stack = VirtualAllocator {}
        .allocate(Layout::from_size_align(ALTERNATE_STACK_SIZE, 4096).unwrap())
        .expect("alternate stack");
    ALTERNATE_STACK.store(stack.cast::<u8>().as_ptr() as usize, Ordering::Relaxed);
    let alternate = libc::stack_t {
        ss_sp: stack.cast::<libc::c_void>().as_ptr(),
        ss_flags: 0,
        ss_size: ALTERNATE_STACK_SIZE,
    };
    // SAFETY: the stack is a fresh mapping that is never freed; the action's handler is
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

/// Writes to a page mapped without access; prints its address first, for checking the report.
#[cfg(unix)]
fn crash_on_protected_page() -> ! {
    // SAFETY: a fresh anonymous PROT_NONE mapping.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    let target = page.cast::<u8>().wrapping_add(16);
    println!("about to write to {:#x}", target as usize);
    // SAFETY: not safe at all, on purpose: the page has no access, so the write faults and the
    // handler ends the process before this function could go on.
    unsafe { target.write_volatile(1) };
    unreachable!("the write to a PROT_NONE page did not fault");
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 512]);
    recurse(depth + 1).wrapping_add(frame[0] as u64)
}

/// Prepares the handler and crashes in the chosen way (`segv` or `overflow`).
#[cfg(unix)]
pub fn run(mode: &str) -> ! {
    prepare();
    match mode {
        "overflow" => {
            std::hint::black_box(recurse(0));
            unreachable!("the stack did not overflow");
        }
        _ => crash_on_protected_page(),
    }
}

#[cfg(unix)]
#[allow(dead_code)]
fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "segv".into());
    run(&mode);
}

#[cfg(not(unix))]
fn main() {
    eprintln!("crash_report: needs POSIX signals (sigaction, sigaltstack)");
    std::process::exit(2);
}
