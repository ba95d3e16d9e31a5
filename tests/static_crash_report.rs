//! Runs `examples/crash_report_static.rs` (the report arena is a `static_arena!`, nothing is
//! mapped) as a crashing child process and checks its report.
//!
//! As tests/sync_crash_report.rs: the test binary re-runs itself as the child, which calls the
//! example's `run` compiled into this binary.
#![cfg(unix)] // POSIX only: the example's SIGSEGV handler on an alternate signal stack.

#[path = "../examples/crash_report_static.rs"]
#[allow(dead_code)]
mod crash_report_static;

use std::process::Command;

const CHILD_MODE: &str = "STATIC_CRASH_CHILD";

fn report_line<'a>(stderr: &'a str, key: &str) -> &'a str {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .unwrap_or_else(|| panic!("no `{key}` in the report:\n{stderr}"))
}

#[test]
fn segv_handler_formats_its_report_in_a_static_arena() {
    const NAME: &str = "segv_handler_formats_its_report_in_a_static_arena";
    if std::env::var_os(CHILD_MODE).is_some() {
        crash_report_static::run();
    }
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
    let output = command
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(crash_report_static::REPORT_EXIT_STATUS),
        "stderr:\n{stderr}\nstdout:\n{stdout}"
    );
    let target = stdout
        .lines()
        .find_map(|line| line.strip_prefix("about to write to "))
        .unwrap_or_else(|| panic!("no target address in stdout:\n{stdout}"));
    assert!(
        ["11 (SIGSEGV)", "10 (SIGBUS)"].contains(&report_line(&stderr, "signal: ")),
        "{stderr}"
    );
    assert_eq!(report_line(&stderr, "fault address: "), target);
    assert_eq!(report_line(&stderr, "handler on alternate stack: "), "true");
    // The program's 16 words were in the arena before the crash (plus at most 7 bytes of
    // padding), and the report went into the same static buffer.
    let before = report_line(&stderr, "arena before the report: ");
    let used: usize = before.split(' ').next().unwrap().parse().unwrap();
    assert!((128..=135).contains(&used), "{before}");
    assert!(before.ends_with(&format!(
        "of {} bytes used",
        crash_report_static::ARENA_SIZE
    )));
    assert!(
        report_line(&stderr, "report text in the static arena: ").starts_with("true "),
        "{stderr}"
    );
    assert!(stderr.contains("=== end of crash report ==="), "{stderr}");
}
