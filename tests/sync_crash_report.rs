//! Runs `examples/crash_report.rs` as a crashing child process and checks its report, which the
//! handler formats with std's `format!` on the arena its `Divert` global allocator diverts to
//! (the example's `#[global_allocator]` is this binary's).
//!
//! The test binary re-runs itself as the child (with `CRASH_CHILD_MODE` set, filtered to the one
//! test), and that test then calls the example's `run`: the child runs the example's own code,
//! compiled into this binary, so no separate example build has to be found.
#![cfg(unix)] // POSIX only: the example's SIGSEGV handler on an alternate signal stack.

#[path = "../examples/crash_report.rs"]
#[allow(dead_code)]
mod crash_report;

use std::process::{Command, Output};

const CHILD_MODE: &str = "CRASH_CHILD_MODE";

/// In the child, crashes (never returns); in the parent, runs the child for `test` and returns
/// its output.
fn crash_child(test: &str, mode: &str) -> Output {
    if let Ok(mode) = std::env::var(CHILD_MODE) {
        crash_report::run(&mode);
    }
    // Under qemu-user the x86 host cannot exec this aarch64 binary by itself (no binfmt_misc
    // here): scripts/test-aarch64.sh names its emulator command in CROSS_TEST_RUNNER.
    let runner = std::env::var("CROSS_TEST_RUNNER").unwrap_or_default();
    let mut runner = runner.split_whitespace();
    let exe = std::env::current_exe().unwrap();
    let mut command = match runner.next() {
        Some(emulator) => {
            let mut command = Command::new(emulator);
            command.args(runner).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .output()
        .unwrap()
}

fn report_line<'a>(stderr: &'a str, key: &str) -> &'a str {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .unwrap_or_else(|| panic!("no `{key}` in the report:\n{stderr}"))
}

#[test]
fn segv_handler_writes_a_report_from_arena_memory_and_exits() {
    let output = crash_child(
        "segv_handler_writes_a_report_from_arena_memory_and_exits",
        "segv",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(crash_report::REPORT_EXIT_STATUS),
        "stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("=== crash report ===") && stderr.contains("=== end of crash report ===")
    );
    assert_eq!(report_line(&stderr, "signal: "), "11 (SIGSEGV)");
    let target = stdout
        .lines()
        .find_map(|line| line.split("about to write to ").nth(1))
        .expect("the child printed its target");
    assert_eq!(report_line(&stderr, "fault address: "), target);
    assert_eq!(report_line(&stderr, "handler on alternate stack: "), "true");
    // The program's 128 bytes of state were in the arena before the crash.
    assert!(
        report_line(&stderr, "arena before the report: ").starts_with("128 of 65536 bytes used")
    );
    // The report was formatted into the arena, right after the program's state.
    let (len, at) = report_line(&stderr, "report text in the arena: ")
        .split_once(" bytes at ")
        .unwrap();
    let report_start = stderr.find("=== crash report ===").unwrap();
    let report_end = stderr.find("report text in the arena: ").unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), report_end - report_start);
    assert!(at.starts_with("0x"));
    // Formatted with std's `format!`: the handler's thread was diverted to the arena.
    assert_eq!(
        report_line(&stderr, "report allocated from the arena: "),
        "true"
    );
}

#[test]
fn stack_overflow_is_reported_from_the_alternate_stack() {
    let output = crash_child(
        "stack_overflow_is_reported_from_the_alternate_stack",
        "overflow",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(crash_report::REPORT_EXIT_STATUS),
        "stderr:\n{stderr}"
    );
    assert_eq!(report_line(&stderr, "signal: "), "11 (SIGSEGV)");
    assert_eq!(report_line(&stderr, "handler on alternate stack: "), "true");
}
