//! Helpers for the virtual memory tests: child processes, residency and `/proc/self/statm`.
//! Linux only. Everything a forked child may call here is allocation-free.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Serialises the tests of one binary that measure the process (RSS, address space) or check
/// that freed addresses are unmapped, so a neighbouring test's mappings cannot interfere.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn page() -> usize {
    libdd_alloc::os::page_size().unwrap()
}

/// How a child process ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

/// Forks; the child runs `body` (which must not allocate, lock or panic: the parent may be
/// multi-threaded) and exits with its return value. Waits at most 30 s, then kills the child.
pub fn in_child(body: impl FnOnce() -> i32) -> Ended {
    // SAFETY: the child only runs `body`, which per the contract above uses only
    // async-signal-safe operations, then `_exit`s without running destructors or atexit hooks.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // No core files from the crashes we provoke.
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls in the child.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::_exit(body());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            return if libc::WIFSIGNALED(status) {
                Ended::Signaled(libc::WTERMSIG(status))
            } else {
                Ended::Exited(libc::WEXITSTATUS(status))
            };
        }
        assert_eq!(done, 0, "waitpid failed");
        if Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("child did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The fields of `/proc/self/statm`, in pages: size, resident, shared, text, lib, data, dt.
/// Reads with raw `open`/`read` into a stack buffer, so a forked child may call it.
pub fn statm() -> [usize; 7] {
    let mut buf = [0u8; 256];
    // SAFETY: a NUL-terminated path; `buf` is a valid writable buffer of its length.
    let len = unsafe {
        let fd = libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return [0; 7];
        }
        let len = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        len
    };
    let mut fields = [0usize; 7];
    let mut index = 0;
    for &byte in buf.iter().take(len.max(0) as usize) {
        match byte {
            b'0'..=b'9' if index < 7 => fields[index] = fields[index] * 10 + (byte - b'0') as usize,
            b' ' => index += 1,
            _ => {}
        }
    }
    fields
}

/// Resident set size in bytes.
pub fn rss_bytes() -> usize {
    statm()[1] * page()
}

/// Address space size (VmSize) in bytes.
pub fn vm_size_bytes() -> usize {
    statm()[0] * page()
}

/// How many pages of `[addr, addr + len)` are resident, per `mincore`.
pub fn resident_pages(addr: *const u8, len: usize) -> usize {
    let pages = len.div_ceil(page());
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the range, which must be mapped.
    let rc = unsafe { libc::mincore(addr as *mut _, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore failed: range not mapped");
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

/// Whether no page of `[addr, addr + len)` is mapped (`mincore` says `ENOMEM` for each).
pub fn all_unmapped(addr: *const u8, len: usize) -> bool {
    let page = page();
    (0..len.div_ceil(page)).all(|i| {
        let mut vec = 0u8;
        // SAFETY: mincore only inspects the page table; `vec` holds one page's byte.
        let rc = unsafe { libc::mincore(addr.wrapping_add(i * page) as *mut _, page, &mut vec) };
        rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM)
    })
}

/// Sets both the soft and hard limit of `resource` (lowering is allowed unprivileged).
/// Allocation-free, for use in a child.
pub fn set_limit(resource: libc::__rlimit_resource_t, bytes: u64) -> bool {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: a plain syscall with a valid struct.
    unsafe { libc::setrlimit(resource, &limit) == 0 }
}

/// Exit code of a child that could not give up root (see [`drop_root`]).
pub const CANNOT_DROP_ROOT: i32 = 77;

/// Makes a root child an ordinary user (`nobody`), so that resource limits such as
/// `RLIMIT_MEMLOCK` apply to it (root's `CAP_IPC_LOCK` ignores them). Allocation-free.
pub fn drop_root() -> bool {
    // SAFETY: plain syscalls in a single-threaded child.
    unsafe {
        if libc::geteuid() != 0 {
            return true;
        }
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(65534) == 0
            && libc::setuid(65534) == 0
    }
}

pub fn read_proc_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
