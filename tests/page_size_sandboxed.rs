//! The page size is never wrong in a sandbox. A seccomp filter that answers `mprotect` with
//! `EPERM` or `ENOSYS` (as container runtimes and browser sandboxes may) once made the page-size
//! probe take 1 for the page size; `VirtualAllocator` then believed a block ended at its size,
//! and `grow_zeroed` after a `shrink` handed back bytes that were not zero.
//!
//! Each test runs in a fresh process (this binary, run again for that one test), so that the
//! page size is not yet cached when the filter goes in: there, a thread installs a seccomp BPF
//! filter that refuses the chosen syscalls with the chosen errno, then makes the process's first
//! page-size query, and checks `os::page_size()` and a `VirtualAllocator` shrink 3000 -> 100 B
//! then `grow_zeroed` 100 -> 3000 B.
//!
//! Linux on x86_64, x86 and aarch64 only (the filter checks the syscall ABI it was written for).
//! Not under qemu-user (`--cfg qemu_user`, `scripts/test-aarch64.sh`): qemu-user refuses a
//! guest's `PR_SET_SECCOMP` with `EINVAL`, since the filter would apply to qemu's own host
//! syscalls, so no filter can be installed there.
#![cfg(all(
    target_os = "linux",
    not(qemu_user),
    any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")
))]

use libdd_alloc::{
    os, AllocError, Allocator, Layout, PageAllocator, PageOptions, VirtualAllocator,
};
use std::process::Command;

/// The environment variable that makes a test run as the sandboxed child: its value is the
/// name of the test to run.
const CHILD: &str = "LIBDD_ALLOC_PAGE_SIZE_SANDBOX_CHILD";

/// What the child must find under its filter.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// `os::page_size()` is the page size libc reports, and `grow_zeroed` zeroes.
    RealPageSize,
    /// `os::page_size()` is `Err`, and so is every allocator that needs it.
    Refused,
}

/// Runs `test` (this test's name) in a fresh process whose test thread refuses `syscalls` with
/// `errno`, and checks what it finds there (see [`child`]).
fn sandboxed(test: &str, syscalls: &[libc::c_long], errno: i32, expect: Expect) {
    let syscalls = syscalls.to_vec();
    in_child_process(test, move || child(&syscalls, errno, expect));
}

/// In the child process made for `test` (its `CHILD` variable names it): runs `body` on its own
/// thread, so that a filter it installs binds the test and nothing the harness does after. In
/// the parent: runs `test` alone in a fresh child process and asserts that it passed.
fn in_child_process(test: &str, body: impl FnOnce() + Send + 'static) {
    if std::env::var(CHILD).as_deref() == Ok(test) {
        std::thread::spawn(body).join().unwrap();
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, test)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "sandboxed child of {test}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `AUDIT_ARCH_*` of the syscall ABI this test is built for (linux/audit.h).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
#[cfg(target_arch = "x86")]
const AUDIT_ARCH: u32 = 0x4000_0003; // EM_386 | __AUDIT_ARCH_LE
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE

fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if_equal(k: u32, jt: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf: 0,
        k,
    }
}

/// A load of the 32-bit word at `offset` of `struct seccomp_data` (`nr` at 0, `arch` at 4,
/// `args[i]` at 16 + 8 i).
fn load(offset: u32) -> libc::sock_filter {
    statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

/// Installs, for the calling thread and the threads it creates, the seccomp filter `program`,
/// run with the syscall number loaded, behind a check that kills the process on a syscall of
/// another ABI than [`AUDIT_ARCH`] (x32, `int 0x80` from x86_64): the numbers would not match.
fn install_filter(program: Vec<libc::sock_filter>) {
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let mut program = [
        load(ARCH),
        jump_if_equal(AUDIT_ARCH, 1),
        statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
        load(NR),
    ]
    .into_iter()
    .chain(program)
    .collect::<Vec<_>>();
    let filter = libc::sock_fprog {
        len: u16::try_from(program.len()).unwrap(),
        filter: program.as_mut_ptr(),
    };
    // SAFETY: prctl with valid arguments; the kernel copies the program before returning.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &filter),
            0,
            "PR_SET_SECCOMP: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Installs, for the calling thread and the threads it creates, a seccomp filter that answers
/// each of `syscalls` with `-errno` and allows everything else (see [`install_filter`]).
fn refuse(syscalls: &[libc::c_long], errno: i32) {
    let count = u8::try_from(syscalls.len()).unwrap();
    let mut program = Vec::new();
    // The i-th comparison jumps over the rest and the ALLOW to the ERRNO return.
    for (i, &nr) in (0u8..).zip(syscalls) {
        program.push(jump_if_equal(u32::try_from(nr).unwrap(), count - i));
    }
    program.push(statement(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ALLOW,
    ));
    program.push(statement(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ERRNO | u32::try_from(errno).unwrap(),
    ));
    install_filter(program);
}

/// The answer to a zero-length `syscall(addr, 0, 0)` (`mprotect`, `madvise` or `msync`): 0, or
/// the errno.
fn zero_length_call(syscall: libc::c_long, addr: usize) -> i32 {
    // SAFETY: a zero-length range covers no byte: nothing changes.
    if unsafe { libc::syscall(syscall, addr, 0usize, 0usize) } == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

/// In the sandboxed child: refuse `syscalls`, check the filter is in force, then make the
/// process's first page-size query and check its result and what `VirtualAllocator` does.
fn child(syscalls: &[libc::c_long], errno: i32, expect: Expect) {
    // SAFETY: sysconf with a valid name has no preconditions (glibc reads the aux vector).
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
    refuse(syscalls, errno);
    for &syscall in syscalls {
        assert_eq!(
            zero_length_call(syscall, page),
            errno,
            "filter not in force"
        );
    }
    let pages = VirtualAllocator::default();
    match expect {
        Expect::RealPageSize => {
            let big = Layout::from_size_align(3000, 1).unwrap();
            let small = Layout::from_size_align(100, 1).unwrap();
            let block = pages.allocate(big).unwrap().cast::<u8>();
            // SAFETY: the block has at least 3000 bytes; shrink and grow_zeroed get the layouts
            // it was allocated and shrunk with; the grown block has at least 3000 bytes.
            let bytes = unsafe {
                block.as_ptr().write_bytes(0xA5, 3000);
                let shrunk = pages.shrink(block, big, small).unwrap().cast::<u8>();
                let grown = pages.grow_zeroed(shrunk, small, big).unwrap().cast::<u8>();
                std::slice::from_raw_parts(grown.as_ptr(), 3000)
            };
            let kept = bytes[..100].iter().all(|&b| b == 0xA5);
            let not_zero = bytes[100..].iter().filter(|&&b| b != 0).count();
            assert_eq!(
                (os::page_size(), kept, not_zero),
                (Ok(page), true, 0),
                "(page size, first 100 bytes kept, grown bytes not zero)"
            );
            // SAFETY: the block came from `pages` with layout `big` (after grow_zeroed).
            unsafe { pages.deallocate(std::ptr::NonNull::from(bytes).cast(), big) };
        }
        Expect::Refused => {
            assert_eq!(os::page_size(), Err(AllocError));
            let layout = Layout::from_size_align(3000, 1).unwrap();
            assert_eq!(pages.allocate(layout), Err(AllocError));
            assert!(PageAllocator::new(PageOptions::new()).is_err());
        }
    }
}

#[test]
fn page_size_is_real_when_mprotect_answers_eperm() {
    sandboxed(
        "page_size_is_real_when_mprotect_answers_eperm",
        &[libc::SYS_mprotect],
        libc::EPERM,
        Expect::RealPageSize,
    );
}

#[test]
fn page_size_is_real_when_mprotect_answers_enosys() {
    sandboxed(
        "page_size_is_real_when_mprotect_answers_enosys",
        &[libc::SYS_mprotect],
        libc::ENOSYS,
        Expect::RealPageSize,
    );
}

#[test]
fn page_size_is_real_when_mprotect_answers_einval_for_every_address() {
    sandboxed(
        "page_size_is_real_when_mprotect_answers_einval_for_every_address",
        &[libc::SYS_mprotect],
        libc::EINVAL,
        Expect::RealPageSize,
    );
}

#[test]
fn page_size_is_real_when_only_msync_answers() {
    sandboxed(
        "page_size_is_real_when_only_msync_answers",
        &[libc::SYS_mprotect, libc::SYS_madvise],
        libc::EPERM,
        Expect::RealPageSize,
    );
}

#[test]
fn page_size_is_an_error_when_mprotect_madvise_and_msync_are_refused() {
    sandboxed(
        "page_size_is_an_error_when_mprotect_madvise_and_msync_are_refused",
        &[libc::SYS_mprotect, libc::SYS_madvise, libc::SYS_msync],
        libc::ENOSYS,
        Expect::Refused,
    );
}

/// Installs, for the calling thread and the threads it creates, a seccomp filter that answers
/// `syscall` with `-errno` (0: a faked success, the syscall not run) when its first argument
/// has none of the bits of `mask` set (`aligned`) or some of them (`!aligned`) and its length is
/// zero, and lets every other call through to the kernel: a sandbox whose answers depend on the
/// address.
fn answer_by_alignment(syscall: libc::c_long, mask: u32, aligned: bool, errno: u32) {
    // The low 32 bits of args[0] and args[1] of struct seccomp_data on a little-endian target.
    const ARG0_LOW: u32 = 16;
    const ARG1_LOW: u32 = 24;
    let allow = statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW);
    let program = vec![
        jump_if_equal(u32::try_from(syscall).unwrap(), 1),
        allow,
        load(ARG0_LOW),
        statement(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, mask),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: if aligned { 0 } else { 4 },
            jf: if aligned { 4 } else { 0 },
            k: 0,
        },
        // Only a zero-length call (the probe's): the process's real calls go to the kernel.
        load(ARG1_LOW),
        jump_if_equal(0, 1),
        allow,
        statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | errno),
        allow,
    ];
    install_filter(program);
}

/// Runs `test` in a fresh process whose test thread installs `install(page)` (`page` as libc
/// reports it), then checks that the first page-size query is never wrong: the real page size
/// or `Err`, never another power of two.
fn sandboxed_never_wrong(test: &str, install: fn(usize)) {
    in_child_process(test, move || {
        // SAFETY: sysconf with a valid name has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        install(page);
        match os::page_size() {
            Ok(found) => assert_eq!(found, page, "a wrong page size"),
            Err(AllocError) => {
                let layout = Layout::from_size_align(3000, 1).unwrap();
                assert_eq!(
                    VirtualAllocator::default().allocate(layout),
                    Err(AllocError)
                );
            }
        }
    });
}

/// A filter that fakes success for a zero-length `mprotect` at every multiple of half a page
/// (and lets the kernel answer the rest): the kernel rejects 1 .. page/4 as misaligned, the
/// filter "accepts" page/2. The probe took page/2 for the page size (and
/// `VirtualAllocator::grow_zeroed` after a shrink then skips half a page of old bytes); now
/// `madvise` and `msync` prove another size, so it is `Err`.
#[test]
fn page_size_is_never_wrong_when_mprotect_fakes_success_at_half_pages() {
    sandboxed_never_wrong(
        "page_size_is_never_wrong_when_mprotect_fakes_success_at_half_pages",
        |page| {
            let half_page = u32::try_from(page / 2 - 1).unwrap();
            answer_by_alignment(libc::SYS_mprotect, half_page, true, 0);
        },
    );
}

/// A filter that answers `EINVAL` for a zero-length `mprotect` at an address that is not a
/// multiple of twice the page (the kernel answers the rest): the probe took twice the page for
/// the page size (and `VirtualAllocator` then trusts `mmap` to align a block to it); now it is
/// `Err`, as `madvise` and `msync` prove another size.
#[test]
fn page_size_is_never_wrong_when_mprotect_fakes_einval_below_two_pages() {
    sandboxed_never_wrong(
        "page_size_is_never_wrong_when_mprotect_fakes_einval_below_two_pages",
        |page| {
            let two_pages = u32::try_from(2 * page - 1).unwrap();
            answer_by_alignment(libc::SYS_mprotect, two_pages, false, libc::EINVAL as u32);
        },
    );
}
