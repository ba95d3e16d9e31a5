//! Process-level helpers: forked children, resource limits, `/proc/self/statm`, and whether
//! the test runs under valgrind. Everything a forked child may call here is allocation-free.

#[cfg(unix)]
use super::vm::page;
#[cfg(unix)]
use std::time::{Duration, Instant};

/// Whether the test runs under valgrind. Its `memalign` aborts on alignments above 2^24 (tests
/// cap the alignments they ask of `System` there), and its own mappings (shadow memory, its
/// address-space manager) show in `/proc/self/statm`, so page-exact address-space checks cannot
/// hold there.
pub fn under_valgrind() -> bool {
    std::env::var("LD_PRELOAD").is_ok_and(|preload| preload.contains("vgpreload"))
}

/// How a child process ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

#[cfg(unix)]
/// Forks; the child runs `body` (which must not allocate, lock or panic: the parent may be
/// multi-threaded) and exits with its return value. Waits at most 300 s, then kills the child.
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
    // A hang detector, not a performance check: generous, so that a child slowed by a loaded
    // machine (or a sanitizer) is not taken for a hung one.
    let deadline = Instant::now() + Duration::from_secs(300);
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
            panic!("child did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(unix)]
/// The fields of `/proc/self/statm`, in pages: size, resident, shared, text, lib, data, dt, or
/// `None` if the file cannot be read or a field overflows. Reads with raw `open`/`read` into a
/// stack buffer, so a forked child may call it.
fn read_statm() -> Option<[usize; 7]> {
    let mut buf = [0u8; 256];
    // SAFETY: a NUL-terminated path; `buf` is a valid writable buffer of its length.
    let len = unsafe {
        let fd = libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return None;
        }
        let len = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        len
    };
    let text = buf.get(..usize::try_from(len).ok()?)?;
    let mut fields = [0usize; 7];
    let mut index = 0;
    for &byte in text {
        match byte {
            b'0'..=b'9' if index < 7 => {
                fields[index] = fields[index]
                    .checked_mul(10)?
                    .checked_add(usize::from(byte - b'0'))?;
            }
            b' ' => index += 1,
            _ => {}
        }
    }
    Some(fields)
}

#[cfg(unix)]
/// The fields of `/proc/self/statm` (see [`read_statm`]), all 0 if it cannot be read.
/// Allocation-free.
pub fn statm() -> [usize; 7] {
    read_statm().unwrap_or([0; 7])
}

#[cfg(unix)]
/// Pages of address space the process has mapped (the first field of `/proc/self/statm`), or
/// `None` if it cannot be read. Allocation-free.
pub fn mapped_pages() -> Option<usize> {
    read_statm().map(|fields| fields[0])
}

#[cfg(unix)]
/// Resident set size in bytes.
pub fn rss_bytes() -> usize {
    statm()[1] * page()
}

#[cfg(unix)]
/// Address space size (VmSize) in bytes.
pub fn vm_size_bytes() -> usize {
    statm()[0] * page()
}

/// Resident set size in bytes: the working set (`K32GetProcessMemoryInfo`).
#[cfg(windows)]
pub fn rss_bytes() -> usize {
    use windows_sys::Win32::System::ProcessStatus::{
        K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS,
    };
    use windows_sys::Win32::System::Threading::GetCurrentProcess;
    // SAFETY: a zeroed counters struct is valid; the call fills at most `cb` bytes of it.
    unsafe {
        let mut counters: PROCESS_MEMORY_COUNTERS = std::mem::zeroed();
        let cb = std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
        assert_ne!(
            K32GetProcessMemoryInfo(GetCurrentProcess(), &mut counters, cb),
            0
        );
        counters.WorkingSetSize
    }
}

/// Address space size in bytes: every region `VirtualQuery` reports reserved or committed.
#[cfg(windows)]
pub fn vm_size_bytes() -> usize {
    use windows_sys::Win32::System::Memory::{VirtualQuery, MEMORY_BASIC_INFORMATION, MEM_FREE};
    let mut total = 0;
    let mut addr = 0usize;
    loop {
        // SAFETY: a zeroed struct is valid; VirtualQuery reads no memory at `addr`.
        let (written, info) = unsafe {
            let mut info: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
            let size = std::mem::size_of::<MEMORY_BASIC_INFORMATION>();
            (VirtualQuery(addr as *const _, &mut info, size), info)
        };
        if written == 0 {
            return total;
        }
        if info.State != MEM_FREE {
            total += info.RegionSize;
        }
        match (info.BaseAddress as usize).checked_add(info.RegionSize) {
            Some(next) if next > addr => addr = next,
            _ => return total,
        }
    }
}

#[cfg(target_os = "linux")]
/// The type of `setrlimit`'s resource argument, which differs between C libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub type Resource = libc::__rlimit_resource_t;
#[cfg(all(unix, not(all(target_os = "linux", target_env = "gnu"))))]
pub type Resource = libc::c_int;

/// Sets both the soft and hard limit of `resource` (lowering is allowed unprivileged).
/// Allocation-free, for use in a child.
#[cfg(unix)]
pub fn set_limit(resource: Resource, bytes: u64) -> bool {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: a plain syscall with a valid struct.
    unsafe { libc::setrlimit(resource, &limit) == 0 }
}

/// Sets only the soft limit of `resource` (capped at the hard limit), so that it can be raised
/// again. Allocation-free.
#[cfg(unix)]
pub fn set_soft_limit(resource: Resource, bytes: u64) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid structs.
    unsafe {
        if libc::getrlimit(resource, &mut limit) != 0 {
            return false;
        }
        limit.rlim_cur = (bytes as libc::rlim_t).min(limit.rlim_max);
        libc::setrlimit(resource, &limit) == 0
    }
}

/// Exit code of a child that could not give up root (see [`drop_root`]).
pub const CANNOT_DROP_ROOT: i32 = 77;

#[cfg(unix)]
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
