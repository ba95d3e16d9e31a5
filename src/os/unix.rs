//! Unix pages through rustix: raw syscalls on Linux (its `linux_raw` backend), libc elsewhere,
//! with `errno` saved and restored around each libc call.

use super::MapOptions;
use crate::AllocError;
use core::ffi::c_void;
use core::ptr::NonNull;
use rustix::mm::{MapFlags, ProtFlags};

/// Runs an OS call without letting it change `errno`, which the interrupted code may be about
/// to read.
///
/// Where rustix makes raw syscalls (its `linux_raw` backend: Linux on x86, x86_64, arm, aarch64
/// and riscv64, unless built with `--cfg rustix_use_libc`; the condition mirrors rustix's build
/// script), the call never touches `errno` and this is free. Everywhere else (Android, the BSDs,
/// macOS, Linux on other architectures) rustix goes through libc, which writes `errno` on
/// failure, so it is saved before the call and restored after it. Not seen from here: rustix's
/// own `use-libc` feature, which another crate in the build could turn on; `errno` would then
/// not be saved on Linux.
#[inline(always)]
pub(crate) fn keep_errno<T>(call: impl FnOnce() -> T) -> T {
    #[cfg(not(all(
        target_os = "linux",
        not(rustix_use_libc),
        any(
            all(target_arch = "x86_64", target_pointer_width = "64"),
            target_arch = "x86",
            all(target_arch = "aarch64", target_pointer_width = "64"),
            target_arch = "arm",
            target_arch = "riscv64"
        )
    )))]
    {
        let saved = errno::errno();
        let result = call();
        errno::set_errno(saved);
        result
    }
    #[cfg(all(
        target_os = "linux",
        not(rustix_use_libc),
        any(
            all(target_arch = "x86_64", target_pointer_width = "64"),
            target_arch = "x86",
            all(target_arch = "aarch64", target_pointer_width = "64"),
            target_arch = "arm",
            target_arch = "riscv64"
        )
    ))]
    {
        call()
    }
}

/// The largest page size [`query_page_size`] looks for on Linux (no Linux port has pages this
/// large; huge pages are a separate mechanism).
#[cfg(target_os = "linux")]
const MAX_PAGE_SIZE: usize = 1 << 30;

/// The page size on Linux, found without libc, without allocating and without a panic path.
///
/// Three syscalls reject an address that is not page-aligned with `EINVAL` before they look at
/// the length, and do nothing for a zero length: `mprotect(addr, 0, PROT_NONE)`,
/// `madvise(addr, 0, MADV_NORMAL)` and `msync(addr, 0, MS_ASYNC)` (their man pages; the kernel
/// returns 0 for an aligned empty range, qemu-user's `mprotect` `ENOMEM`). So the page size is the
/// smallest power of two that one of them does not reject with `EINVAL`. A sandbox can answer
/// for the kernel, though: a seccomp filter that refuses `mprotect` with `EPERM` or `ENOSYS`
/// refuses address 1 just as it refuses 4096. An answer is therefore taken only when it proves
/// the alignment ([`page_size_by`]). A filter can also lie only about some addresses (fake
/// success at every multiple of 2 KiB, or `EINVAL` below 8 KiB), which one probe cannot tell
/// from the truth: so all three are asked, and the page size is taken only when every probe
/// that proves one proves the same. At most 31 raw syscalls per probe (13 with 4 KiB pages,
/// 39 for the three), once per process; 0 (which [`super::page_size`] turns into `Err`) when no
/// probe proves a page size, or two prove different ones.
///
/// Why not rustix's `param::page_size`: with `use-libc-auxv` it calls libc `sysconf`; without,
/// it reads the auxiliary vector through `prctl(PR_GET_AUXV)` or `/proc/self/auxv` and panics
/// when neither is available (a sandbox, no `/proc`).
#[cfg(target_os = "linux")]
pub(super) fn query_page_size() -> usize {
    let probes: [fn(*mut c_void) -> rustix::io::Result<()>; 3] =
        [mprotect_nothing, madvise_nothing, msync_nothing];
    let mut proven = 0;
    for probe in probes {
        match page_size_by(probe) {
            Some(page) if proven != 0 && page != proven => return 0,
            Some(page) => proven = page,
            None => {}
        }
    }
    proven
}

/// `mprotect(addr, 0, PROT_NONE)`: `EINVAL` if `addr` is not page-aligned, else nothing.
#[cfg(target_os = "linux")]
fn mprotect_nothing(addr: *mut c_void) -> rustix::io::Result<()> {
    // SAFETY: a zero-length range covers no byte: no protection changes; `addr` is not read.
    unsafe { rustix::mm::mprotect(addr, 0, rustix::mm::MprotectFlags::empty()) }
}

/// `madvise(addr, 0, MADV_NORMAL)`: `EINVAL` if `addr` is not page-aligned, else nothing.
#[cfg(target_os = "linux")]
fn madvise_nothing(addr: *mut c_void) -> rustix::io::Result<()> {
    // SAFETY: a zero-length range covers no byte: no advice is applied; `addr` is not read.
    unsafe { rustix::mm::madvise(addr, 0, rustix::mm::Advice::Normal) }
}

/// `msync(addr, 0, MS_ASYNC)`: `EINVAL` if `addr` is not page-aligned, else nothing.
#[cfg(target_os = "linux")]
fn msync_nothing(addr: *mut c_void) -> rustix::io::Result<()> {
    // SAFETY: a zero-length range covers no byte: nothing is written back; `addr` is not read.
    unsafe { rustix::mm::msync(addr, 0, rustix::mm::MsyncFlags::ASYNC) }
}

/// The page size as `probe` (a zero-length syscall that checks its address's alignment first)
/// proves it, or `None` when its answers prove nothing.
///
/// Asks for the powers of two from 1 up, and takes the first candidate that is not rejected with
/// `EINVAL` only if that answer is one the alignment check lets through (success, or `ENOMEM`:
/// an unmapped range) and the candidate is not 1, so that the one below it was rejected as
/// misaligned. Any other answer (`EPERM`, `ENOSYS`, ... from a sandbox), success for address 1
/// (a filter that fakes success), or `EINVAL` for every candidate means the call is not the
/// kernel's alignment check: `None`.
#[cfg(target_os = "linux")]
fn page_size_by(probe: fn(*mut c_void) -> rustix::io::Result<()>) -> Option<usize> {
    let mut candidate: usize = 1;
    while candidate <= MAX_PAGE_SIZE {
        let addr = core::ptr::without_provenance_mut::<c_void>(candidate);
        match keep_errno(|| probe(addr)) {
            Err(rustix::io::Errno::INVAL) => candidate <<= 1,
            Ok(()) | Err(rustix::io::Errno::NOMEM) if candidate > 1 => return Some(candidate),
            _ => return None,
        }
    }
    None
}

/// The page size off Linux: rustix's `param::page_size`, which is libc `sysconf(_SC_PAGESIZE)`
/// (`getpagesize` on some systems), with `errno` kept.
#[cfg(not(target_os = "linux"))]
pub(super) fn query_page_size() -> usize {
    keep_errno(rustix::param::page_size)
}

/// Maps `len` bytes of private anonymous memory with the given protection and flags.
pub(crate) fn map_with(
    len: usize,
    prot: ProtFlags,
    flags: MapFlags,
) -> Result<NonNull<u8>, AllocError> {
    // SAFETY: a null hint without MAP_FIXED creates a new mapping and cannot disturb any
    // existing memory.
    let result = keep_errno(|| unsafe {
        rustix::mm::mmap_anonymous(core::ptr::null_mut(), len, prot, flags)
    });
    match result {
        Ok(addr) => NonNull::new(addr.cast::<u8>()).ok_or(AllocError),
        Err(_) => Err(AllocError),
    }
}

/// Unmaps `[ptr, ptr + len)`. Failure is ignored: it can only mean the range was not mapped,
/// and there is nothing better to do in a deallocation path than to leak it.
///
/// # Safety
/// The range must be a page-aligned part of a mapping made here, with no live references to it.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller hands over the range.
    let _ = keep_errno(|| unsafe { rustix::mm::munmap(ptr.as_ptr().cast::<c_void>(), len) });
}

/// Resizes the mapping `[ptr, ptr + old_len)` to `new_len` bytes with `mremap`, moving it if
/// `may_move`. Grown bytes are zero. Linux only (rustix offers no `mremap` on Android, whose
/// libc backend it uses); elsewhere always `Err`, and the caller copies.
///
/// # Safety
/// The range must be a whole mapping made here; if it moves, the old addresses are dead.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn remap(
    ptr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    may_move: bool,
) -> Result<NonNull<u8>, AllocError> {
    let flags = if may_move {
        rustix::mm::MremapFlags::MAYMOVE
    } else {
        rustix::mm::MremapFlags::empty()
    };
    // SAFETY: the caller owns the whole mapping; mremap either resizes it or fails untouched.
    let result =
        keep_errno(|| unsafe { rustix::mm::mremap(ptr.as_ptr().cast(), old_len, new_len, flags) });
    match result {
        Ok(addr) => NonNull::new(addr.cast::<u8>()).ok_or(AllocError),
        Err(_) => Err(AllocError),
    }
}

/// `MAP_NORESERVE` where the platform has it; elsewhere nothing (the mapping is then accounted
/// as usual, which only makes the OS stricter).
#[cfg(not(any(
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "aix",
    target_os = "hurd",
    target_os = "nto",
    target_os = "redox"
)))]
const NO_RESERVE: MapFlags = MapFlags::NORESERVE;
#[cfg(any(
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "aix",
    target_os = "hurd",
    target_os = "nto",
    target_os = "redox"
))]
const NO_RESERVE: MapFlags = MapFlags::empty();

/// The `mmap` flags for `options`, or `Err` for a request this platform cannot serve.
fn map_flags(options: MapOptions) -> Result<MapFlags, AllocError> {
    let mut flags = MapFlags::PRIVATE;
    if options.no_reserve {
        flags |= NO_RESERVE;
    }
    if options.huge_tlb {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            flags |= MapFlags::HUGETLB;
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        return Err(AllocError);
    }
    Ok(flags)
}

/// Whether the kernel has transparent huge pages, which `madvise(MADV_HUGEPAGE)` asks for and
/// which need a huge-page-aligned range to be used.
pub(crate) const TRANSPARENT_HUGE_PAGES: bool =
    cfg!(any(target_os = "linux", target_os = "android"));

pub(super) fn query_huge_page_size(page: usize) -> usize {
    (page / 8).saturating_mul(page)
}

/// Maps `len` bytes (a non-zero multiple of the page size, or of the huge page size with
/// `huge_tlb`) of fresh, zeroed, read-write memory.
///
/// # Errors
/// `Err(AllocError)` when the OS refuses: out of memory or address space, `vm.max_map_count`,
/// an empty huge page pool.
pub(crate) fn map_pages(len: usize, options: MapOptions) -> Result<NonNull<u8>, AllocError> {
    map_with(len, ProtFlags::READ | ProtFlags::WRITE, map_flags(options)?)
}

/// Maps `len` read-write bytes such that `base + offset` is aligned to `align` (a power of two;
/// `offset` a multiple of the page size), and returns `base`. Over-maps by `align - page` and
/// unmaps the misaligned head and the unused tail, as LLVM's sanitizer runtime does.
pub(crate) fn map_pages_aligned(
    len: usize,
    align: usize,
    offset: usize,
    page: usize,
    options: MapOptions,
) -> Result<NonNull<u8>, AllocError> {
    if align <= page {
        return map_pages(len, options);
    }
    let slack = align - page;
    let total = len.checked_add(slack).ok_or(AllocError)?;
    if total > isize::MAX as usize {
        return Err(AllocError);
    }
    let mapped = map_pages(total, options)?;
    let head = mapped.as_ptr().addr().wrapping_add(offset).wrapping_neg() & (align - 1);
    let tail = slack - head;
    // SAFETY: head and tail are page multiples (`mapped`, `offset` and `align` are page aligned)
    // inside the mapping just made; nothing refers to them.
    unsafe {
        if head != 0 {
            unmap(mapped, head);
        }
        let base = mapped.add(head);
        if tail != 0 {
            unmap(base.add(len), tail);
        }
        Ok(base)
    }
}

/// Reserves `len` bytes of address space: mapped `PROT_NONE` and `MAP_NORESERVE`, so it costs
/// neither memory nor commit charge until parts of it are [`commit`]ted. Touching an
/// uncommitted byte is a SIGSEGV.
///
/// # Errors
/// `Err(AllocError)` when the address space (or `RLIMIT_AS`) is exhausted.
pub(crate) fn reserve(len: usize) -> Result<NonNull<u8>, AllocError> {
    map_with(len, ProtFlags::empty(), MapFlags::PRIVATE | NO_RESERVE)
}

/// Makes `[ptr, ptr + len)` of a reservation read-write (`mprotect`). This is where the kernel
/// charges the pages against the commit limit when overcommit mode 2 is on, and against
/// `RLIMIT_DATA` always: a refusal is `ENOMEM` here instead of a SIGSEGV on first touch.
///
/// # Errors
/// `Err(AllocError)` when the OS refuses the commit (out of memory under strict accounting,
/// `RLIMIT_DATA`, `vm.max_map_count`).
///
/// # Safety
/// The range must be a page-aligned part of a mapping made here.
pub(crate) unsafe fn commit(ptr: NonNull<u8>, len: usize) -> Result<(), AllocError> {
    let flags = rustix::mm::MprotectFlags::READ | rustix::mm::MprotectFlags::WRITE;
    // SAFETY: the caller owns the range; widening the protection cannot invalidate references.
    keep_errno(|| unsafe { rustix::mm::mprotect(ptr.as_ptr().cast(), len, flags) })
        .map_err(|_| AllocError)
}

/// Makes `[ptr, ptr + len)` inaccessible (`PROT_NONE`), for guard pages: any access faults.
///
/// # Errors
/// `Err(AllocError)` when the OS refuses (splitting the mapping would pass `vm.max_map_count`).
///
/// # Safety
/// The range must be a page-aligned part of a mapping made here, with no live references to it.
pub(crate) unsafe fn protect_none(ptr: NonNull<u8>, len: usize) -> Result<(), AllocError> {
    let flags = rustix::mm::MprotectFlags::empty();
    // SAFETY: the caller owns the range and nothing refers to it.
    keep_errno(|| unsafe { rustix::mm::mprotect(ptr.as_ptr().cast(), len, flags) })
        .map_err(|_| AllocError)
}

/// Locks `[ptr, ptr + len)` into RAM (`mlock`), faulting every page in. Unmapping unlocks.
///
/// # Errors
/// `Err(AllocError)` past `RLIMIT_MEMLOCK` (for unprivileged processes) or when memory is short.
///
/// # Safety
/// The range must be part of a readable mapping made here.
pub(crate) unsafe fn lock(ptr: NonNull<u8>, len: usize) -> Result<(), AllocError> {
    // SAFETY: the caller owns the readable range; locking does not change its contents.
    keep_errno(|| unsafe { rustix::mm::mlock(ptr.as_ptr().cast(), len) }).map_err(|_| AllocError)
}

/// Asks for transparent huge pages over `[ptr, ptr + len)` (`madvise(MADV_HUGEPAGE)`). A hint:
/// kernels without THP, or with it set to `never`, refuse or ignore it, and the range keeps
/// normal pages. Nothing to do off Linux.
///
/// # Safety
/// The range must be a page-aligned part of a mapping made here.
pub(crate) unsafe fn advise_huge_pages(ptr: NonNull<u8>, len: usize) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let advice = rustix::mm::Advice::LinuxHugepage;
        // SAFETY: advice about page size does not change the contents of the caller's range.
        let _ = keep_errno(|| unsafe { rustix::mm::madvise(ptr.as_ptr().cast(), len, advice) });
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (ptr, len);
}

/// Faults in every page of `[ptr, ptr + len)` now, for writing. On Linux 5.14+ one
/// `madvise(MADV_POPULATE_WRITE)`, which (unlike `MAP_POPULATE`) reports failure; on older
/// kernels and elsewhere, one touch per page.
///
/// # Errors
/// `Err(AllocError)` when Linux reports that it could not populate (out of memory).
///
/// # Safety
/// The range must be mapped readable and writable; `page` must be the page size.
pub(crate) unsafe fn populate(ptr: NonNull<u8>, len: usize, page: usize) -> Result<(), AllocError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let advice = rustix::mm::Advice::LinuxPopulateWrite;
        // SAFETY: populating maps zero pages where none are yet; contents are unchanged.
        match keep_errno(|| unsafe { rustix::mm::madvise(ptr.as_ptr().cast(), len, advice) }) {
            Ok(()) => return Ok(()),
            // EINVAL: a kernel older than 5.14 that does not know the advice.
            Err(rustix::io::Errno::INVAL) => {}
            Err(_) => return Err(AllocError),
        }
    }
    // SAFETY: forwarded caller contract.
    unsafe { super::touch_pages(ptr, len, page) };
    Ok(())
}

/// Gives the pages of `[ptr, ptr + len)` back to the OS but keeps the range committed and
/// read-write: the resident set shrinks now, and the pages read back as zero when next touched.
///
/// Linux uses `MADV_DONTNEED`, which guarantees the zeros. `MADV_FREE` would be cheaper but
/// leaves the contents undefined until the kernel gets round to reclaiming them (a later read may
/// see old data), which would break zeroed allocation. Other Unix systems map fresh anonymous
/// pages over the range (`MAP_FIXED`), which has the same effect.
///
/// # Errors
/// `Err(AllocError)` if the OS refuses (the range is locked, or not ours); the contents are then
/// unspecified, and off Linux (a failed `MAP_FIXED` may unmap part of the range) the pages may
/// be inaccessible: commit them again before use.
///
/// # Safety
/// The range must be a page-aligned, read-write part of a mapping made here, with no live
/// references to it.
pub(crate) unsafe fn release_pages(ptr: NonNull<u8>, len: usize) -> Result<(), AllocError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let advice = rustix::mm::Advice::LinuxDontNeed;
        // SAFETY: the caller hands over the contents of the range; the mapping stays.
        keep_errno(|| unsafe { rustix::mm::madvise(ptr.as_ptr().cast(), len, advice) })
            .map_err(|_| AllocError)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        let flags = MapFlags::PRIVATE | MapFlags::FIXED;
        // SAFETY: MAP_FIXED replaces exactly the caller's range, which it hands over, with fresh
        // zero pages; nothing else is touched.
        let result = keep_errno(|| unsafe {
            rustix::mm::mmap_anonymous(ptr.as_ptr().cast(), len, prot, flags)
        });
        result.map(|_| ()).map_err(|_| AllocError)
    }
}

/// An identity of the calling thread, never 0, distinct from every other live thread's: how
/// [`Divert`](crate::Divert) finds the current thread without thread-local storage (a
/// `thread_local!` may call `malloc` on its first use in a thread of a `dlopen`ed library).
///
/// On x86_64 and aarch64 it is the thread pointer, read from its register: one instruction, no
/// syscall, no lock, no memory but the thread's own control block (mimalloc's
/// `_mi_prim_thread_id` does the same). The C runtime sets it for every thread it creates, to a
/// thread control block of its own: on x86_64 the ABI puts a pointer to that block in its first
/// word, read through `%fs` (it is what `pthread_self` returns on glibc and musl); on aarch64 it
/// is `tpidr_el0`. Elsewhere it is the kernel's thread id from `gettid`: a raw syscall where
/// rustix makes them, else libc's `gettid`, found on rustix's first call by a weak-symbol lookup
/// (`Divert::prepare` makes that first call outside any handler); `errno` is kept.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    target_arch = "x86_64",
    target_pointer_width = "64"
))]
#[inline(always)]
pub(crate) fn thread_id() -> usize {
    let thread: usize;
    // SAFETY: a load of the first word of this thread's control block through `%fs`, which the
    // x86_64 TLS ABI makes a pointer to the block itself; it writes nothing and cannot fault in
    // a thread the C runtime created.
    unsafe {
        core::arch::asm!(
            "mov {}, qword ptr fs:[0]",
            out(reg) thread,
            options(nostack, readonly, preserves_flags)
        )
    };
    thread
}

/// See the x86_64 version.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    target_arch = "aarch64"
))]
#[inline(always)]
pub(crate) fn thread_id() -> usize {
    let thread: usize;
    // SAFETY: reads the thread pointer register, which the C runtime sets per thread; no memory
    // access, no side effect.
    unsafe {
        core::arch::asm!(
            "mrs {}, tpidr_el0",
            out(reg) thread,
            options(nomem, nostack, preserves_flags)
        )
    };
    thread
}

/// See the x86_64 version.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(any(
        all(target_arch = "x86_64", target_pointer_width = "64"),
        target_arch = "aarch64"
    ))
))]
#[inline]
pub(crate) fn thread_id() -> usize {
    keep_errno(rustix::thread::gettid).as_raw_nonzero().get() as usize
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use rustix::io::{Errno, Result};

    /// The page size libc read from the auxiliary vector at startup.
    fn libc_page_size() -> usize {
        // SAFETY: sysconf with a valid name has no preconditions.
        usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap()
    }

    #[test]
    fn each_probe_alone_finds_the_page_size_libc_reports() {
        let page = libc_page_size();
        assert_eq!(page_size_by(mprotect_nothing), Some(page), "mprotect");
        assert_eq!(page_size_by(madvise_nothing), Some(page), "madvise");
        assert_eq!(page_size_by(msync_nothing), Some(page), "msync");
    }

    /// A kernel with 16 KiB pages, answering as Linux does (0 when aligned) or as qemu-user's
    /// `mprotect` does (`ENOMEM` when aligned).
    fn aligned_16k(addr: *mut c_void) -> Result<()> {
        if addr.addr() % 16384 == 0 {
            Ok(())
        } else {
            Err(Errno::INVAL)
        }
    }
    fn aligned_16k_qemu(addr: *mut c_void) -> Result<()> {
        match aligned_16k(addr) {
            Ok(()) => Err(Errno::NOMEM),
            misaligned => misaligned,
        }
    }

    #[test]
    fn answers_of_an_alignment_check_prove_the_page_size() {
        assert_eq!(page_size_by(aligned_16k), Some(16384));
        assert_eq!(page_size_by(aligned_16k_qemu), Some(16384));
    }

    #[test]
    fn refusals_and_uniform_answers_prove_no_page_size() {
        // A seccomp filter (or a sandbox) that answers every call the same way, whatever the
        // address: nothing shows where misaligned ends.
        assert_eq!(page_size_by(|_| Err(Errno::PERM)), None);
        assert_eq!(page_size_by(|_| Err(Errno::NOSYS)), None);
        assert_eq!(page_size_by(|_| Err(Errno::ACCESS)), None);
        assert_eq!(page_size_by(|_| Ok(())), None);
        assert_eq!(page_size_by(|_| Err(Errno::NOMEM)), None);
        assert_eq!(page_size_by(|_| Err(Errno::INVAL)), None);
        // An alignment check that a filter overrides from some address on.
        assert_eq!(
            page_size_by(|addr| if addr.addr() < 64 {
                Err(Errno::INVAL)
            } else {
                Err(Errno::PERM)
            }),
            None
        );
    }
}
