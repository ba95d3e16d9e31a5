//! Every allocation entry point of libdd-alloc, exported from a `no_std` cdylib, so that the
//! linker keeps exactly the code these functions can reach.
//!
//! The panic handler calls `libdd_alloc_panic_is_reachable`, a function defined nowhere. With
//! fat LTO, code no export can reach is dropped; if any panic path (an `unwrap`, an index, an
//! overflow check, `panic!`) is reachable from an export, the panic handler is kept and the
//! library ends up with that symbol undefined. `scripts/no_panic.sh` builds this crate and fails
//! if the symbol is there.
//!
//! None of these functions is ever called: they only have to be linked.
#![no_std]
#![allow(clippy::missing_safety_doc)]

use core::mem::MaybeUninit;
use core::ptr::{null_mut, NonNull};
use libdd_alloc::{
    format_in, Allocator, ArenaString, Budget, Budgeted, ChainAllocator, HugePages, Layout, LinearAllocator, PageAllocator, PageOptions,
    Rewind, SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena, VirtualAllocator,
    VirtualArena,
};

type Linear = LinearAllocator<VirtualAllocator>;
type Chain = ChainAllocator<VirtualAllocator>;
type SyncLinear = SyncLinearAllocator<VirtualAllocator>;
type SyncChain = SyncChainAllocator<VirtualAllocator>;

#[panic_handler]
fn on_panic(_: &core::panic::PanicInfo<'_>) -> ! {
    extern "C" {
        fn libdd_alloc_panic_is_reachable() -> !;
    }
    // SAFETY: never defined, so never called: a reference to it is the finding.
    unsafe { libdd_alloc_panic_is_reachable() }
}

fn layout(size: usize, align: usize) -> Option<Layout> {
    Layout::from_size_align(size, align).ok()
}

fn to_ptr(block: Result<NonNull<[u8]>, libdd_alloc::AllocError>) -> *mut u8 {
    block.map_or(null_mut(), |block| block.cast::<u8>().as_ptr())
}

/// The `Allocator` methods, for any allocator.
unsafe fn allocate<A: Allocator>(a: &A, size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let Some(layout) = layout(size, align) else {
        return null_mut();
    };
    to_ptr(if zeroed {
        a.allocate_zeroed(layout)
    } else {
        a.allocate(layout)
    })
}

unsafe fn deallocate<A: Allocator>(a: &A, ptr: *mut u8, size: usize, align: usize) {
    if let (Some(ptr), Some(layout)) = (NonNull::new(ptr), layout(size, align)) {
        // SAFETY: the caller's contract (never called).
        unsafe { a.deallocate(ptr, layout) }
    }
}

/// `kind`: 0 grow, 1 grow_zeroed, other shrink.
unsafe fn resize<A: Allocator>(
    a: &A,
    ptr: *mut u8,
    old: [usize; 2],
    new: [usize; 2],
    kind: u8,
) -> *mut u8 {
    let (Some(ptr), Some(old), Some(new)) = (
        NonNull::new(ptr),
        layout(old[0], old[1]),
        layout(new[0], new[1]),
    ) else {
        return null_mut();
    };
    // SAFETY: the caller's contract (never called).
    to_ptr(unsafe {
        match kind {
            0 => a.grow(ptr, old, new),
            1 => a.grow_zeroed(ptr, old, new),
            _ => a.shrink(ptr, old, new),
        }
    })
}

macro_rules! exports {
    ($ty:ty, $allocate:ident, $deallocate:ident, $resize:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $allocate(
            a: &$ty,
            size: usize,
            align: usize,
            zeroed: bool,
        ) -> *mut u8 {
            // SAFETY: forwarded.
            unsafe { allocate(a, size, align, zeroed) }
        }
        #[no_mangle]
        pub unsafe extern "C" fn $deallocate(a: &$ty, ptr: *mut u8, size: usize, align: usize) {
            // SAFETY: forwarded.
            unsafe { deallocate(a, ptr, size, align) }
        }
        #[no_mangle]
        pub unsafe extern "C" fn $resize(
            a: &$ty,
            ptr: *mut u8,
            old: &[usize; 2],
            new: &[usize; 2],
            kind: u8,
        ) -> *mut u8 {
            // SAFETY: forwarded.
            unsafe { resize(a, ptr, *old, *new, kind) }
        }
    };
}

exports!(
    VirtualAllocator,
    virtual_allocate,
    virtual_deallocate,
    virtual_resize
);
exports!(Linear, linear_allocate, linear_deallocate, linear_resize);
exports!(Chain, chain_allocate, chain_deallocate, chain_resize);

exports!(
    SyncLinear,
    sync_linear_allocate,
    sync_linear_deallocate,
    sync_linear_resize
);
exports!(
    SyncChain,
    sync_chain_allocate,
    sync_chain_deallocate,
    sync_chain_resize
);
exports!(
    VirtualArena,
    virtual_arena_allocate,
    virtual_arena_deallocate,
    virtual_arena_resize
);
exports!(
    SyncVirtualArena,
    sync_virtual_arena_allocate,
    sync_virtual_arena_deallocate,
    sync_virtual_arena_resize
);
exports!(PageAllocator, page_allocate, page_deallocate, page_resize);

#[no_mangle]
pub extern "C" fn page_size() -> usize {
    libdd_alloc::os::page_size().unwrap_or(0)
}

#[no_mangle]
pub extern "C" fn linear_new(size: usize, align: usize, out: &mut MaybeUninit<Linear>) -> bool {
    let Some(layout) = layout(size, align) else {
        return false;
    };
    match LinearAllocator::new_in(layout, VirtualAllocator {}) {
        Ok(arena) => {
            out.write(arena);
            true
        }
        Err(_) => false,
    }
}

#[no_mangle]
pub extern "C" fn linear_stats(a: &Linear, out: &mut [usize; 4], size: usize, align: usize) {
    let fits = layout(size, align).is_some_and(|layout| a.has_capacity_for(layout));
    *out = [
        a.used_bytes(),
        a.reserved_bytes(),
        a.remaining_capacity(),
        usize::from(fits),
    ];
}

#[no_mangle]
pub extern "C" fn linear_reset(a: &mut Linear) {
    a.reset();
}

#[no_mangle]
pub unsafe extern "C" fn linear_drop(a: *mut Linear) {
    // SAFETY: the caller's contract (never called).
    unsafe { a.drop_in_place() }
}

#[no_mangle]
pub extern "C" fn chain_new(
    hint: usize,
    max: usize,
    lazy: bool,
    out: &mut MaybeUninit<Chain>,
) -> bool {
    let arena = if lazy {
        ChainAllocator::new_lazy_in(hint, VirtualAllocator {})
    } else {
        match ChainAllocator::new_in(hint, VirtualAllocator {}) {
            Ok(arena) => arena,
            Err(_) => return false,
        }
    };
    out.write(arena.with_max_chunk_size(max));
    true
}

#[no_mangle]
pub extern "C" fn chain_stats(a: &Chain, out: &mut [usize; 5], size: usize, align: usize) {
    let fits = layout(size, align).is_some_and(|layout| a.has_capacity_for(layout));
    *out = [
        a.used_bytes(),
        a.reserved_bytes(),
        a.remaining_capacity(),
        a.chunk_size_hint(),
        usize::from(fits),
    ];
}

#[no_mangle]
pub extern "C" fn chain_reset(a: &mut Chain) {
    a.reset();
}

#[no_mangle]
pub unsafe extern "C" fn chain_drop(a: *mut Chain) {
    // SAFETY: the caller's contract (never called).
    unsafe { a.drop_in_place() }
}

#[no_mangle]
pub extern "C" fn sync_linear_new(
    size: usize,
    align: usize,
    out: &mut MaybeUninit<SyncLinear>,
) -> bool {
    let Some(layout) = layout(size, align) else {
        return false;
    };
    match SyncLinearAllocator::new_in(layout, VirtualAllocator {}) {
        Ok(arena) => {
            out.write(arena);
            true
        }
        Err(_) => false,
    }
}

#[no_mangle]
pub extern "C" fn sync_linear_stats(
    a: &SyncLinear,
    out: &mut [usize; 4],
    size: usize,
    align: usize,
) {
    let fits = layout(size, align).is_some_and(|layout| a.has_capacity_for(layout));
    *out = [
        a.used_bytes(),
        a.reserved_bytes(),
        a.remaining_capacity(),
        usize::from(fits),
    ];
}

/// `how`: 0 reset, other checkpoint and rewind.
#[no_mangle]
pub extern "C" fn sync_linear_reset(a: &mut SyncLinear, how: u8, scratch: &mut usize) {
    if how == 0 {
        a.reset();
    } else {
        let checkpoint = a.checkpoint();
        *scratch = a.used_bytes();
        a.rewind(checkpoint);
    }
}

#[no_mangle]
pub unsafe extern "C" fn sync_linear_drop(a: *mut SyncLinear) {
    // SAFETY: the caller's contract (never called).
    unsafe { a.drop_in_place() }
}

#[no_mangle]
pub extern "C" fn sync_chain_new(
    hint: usize,
    max: usize,
    lazy: bool,
    out: &mut MaybeUninit<SyncChain>,
) -> bool {
    let arena = if lazy {
        SyncChainAllocator::new_lazy_in(hint, VirtualAllocator {})
    } else {
        match SyncChainAllocator::new_in(hint, VirtualAllocator {}) {
            Ok(arena) => arena,
            Err(_) => return false,
        }
    };
    out.write(arena.with_max_chunk_size(max));
    true
}

#[no_mangle]
pub extern "C" fn sync_chain_stats(a: &SyncChain, out: &mut [usize; 5], size: usize, align: usize) {
    let fits = layout(size, align).is_some_and(|layout| a.has_capacity_for(layout));
    *out = [
        a.used_bytes(),
        a.reserved_bytes(),
        a.remaining_capacity(),
        a.chunk_size_hint(),
        usize::from(fits),
    ];
}

/// `how`: 0 reset, other checkpoint and rewind.
#[no_mangle]
pub extern "C" fn sync_chain_reset(a: &mut SyncChain, how: u8, scratch: &mut usize) {
    if how == 0 {
        a.reset();
    } else {
        let checkpoint = a.checkpoint();
        *scratch = a.used_bytes();
        a.rewind(checkpoint);
    }
}

#[no_mangle]
pub unsafe extern "C" fn sync_chain_drop(a: *mut SyncChain) {
    // SAFETY: the caller's contract (never called).
    unsafe { a.drop_in_place() }
}

/// The constructors, statistics, resets and rewinds of the two virtual arenas, which share
/// their API.
macro_rules! virtual_arena_exports {
    ($ty:ident, $new:ident, $stats:ident, $reset:ident, $drop:ident) => {
        /// With `budget`, through `new_with_budget`: every commit path then charges it.
        #[no_mangle]
        pub extern "C" fn $new(
            reservation: usize,
            step: usize,
            budget: Option<&'static Budget>,
            out: &mut MaybeUninit<$ty>,
        ) -> bool {
            let arena = match budget {
                Some(budget) => $ty::new_with_budget(reservation, budget),
                None => $ty::new(reservation),
            };
            match arena {
                Ok(arena) => {
                    out.write(arena.with_max_commit_step(step));
                    true
                }
                Err(_) => false,
            }
        }

        #[no_mangle]
        pub extern "C" fn $stats(a: &$ty, out: &mut [usize; 7], size: usize, align: usize) {
            let fits = layout(size, align).is_some_and(|layout| a.has_capacity_for(layout));
            *out = [
                a.used_bytes(),
                a.committed_bytes(),
                a.reservation_bytes(),
                a.reserved_bytes(),
                a.remaining_capacity(),
                usize::from(fits),
                a.budget().map_or(0, Budget::used),
            ];
        }

        /// `release`: `reset_and_release` instead of `reset`.
        #[no_mangle]
        pub extern "C" fn $reset(a: &mut $ty, release: bool) {
            if release {
                a.reset_and_release();
            } else {
                a.reset();
            }
        }

        #[no_mangle]
        pub unsafe extern "C" fn $drop(a: *mut $ty) {
            // SAFETY: the caller's contract (never called).
            unsafe { a.drop_in_place() }
        }
    };
}

virtual_arena_exports!(
    VirtualArena,
    virtual_arena_new,
    virtual_arena_stats,
    virtual_arena_reset,
    virtual_arena_drop
);
virtual_arena_exports!(
    SyncVirtualArena,
    sync_virtual_arena_new,
    sync_virtual_arena_stats,
    sync_virtual_arena_reset,
    sync_virtual_arena_drop
);

#[no_mangle]
pub extern "C" fn virtual_arena_rewind(a: &mut VirtualArena, scratch: &mut usize) {
    let checkpoint = a.checkpoint();
    *scratch = a.used_bytes();
    a.rewind(checkpoint);
}

#[no_mangle]
pub extern "C" fn sync_virtual_arena_rewind(a: &mut SyncVirtualArena, scratch: &mut usize) {
    let checkpoint = a.checkpoint();
    *scratch = a.used_bytes();
    a.rewind(checkpoint);
}

/// Builds a `PageAllocator` from options given as plain values (`huge`: 0 normal, 1
/// transparent, 2 explicit, other explicit only).
#[no_mangle]
pub extern "C" fn page_new(
    guard_before: usize,
    guard_after: usize,
    flags: u8,
    huge: u8,
    out: &mut MaybeUninit<PageAllocator>,
) -> bool {
    let huge_pages = match huge {
        0 => HugePages::Normal,
        1 => HugePages::Transparent,
        2 => HugePages::Explicit,
        _ => HugePages::ExplicitOnly,
    };
    let options = PageOptions::new()
        .guard_pages_before(guard_before)
        .guard_pages_after(guard_after)
        .prefault(flags & 1 != 0)
        .lock(flags & 2 != 0)
        .no_reserve(flags & 4 != 0)
        .huge_pages(huge_pages);
    match PageAllocator::new(options) {
        Ok(pages) => {
            out.write(pages);
            true
        }
        Err(_) => false,
    }
}

// ---- Budgets: `Budget` and `Budgeted<VirtualAllocator>` ----

type BudgetedVirtual = Budgeted<'static, VirtualAllocator>;
exports!(
    BudgetedVirtual,
    budgeted_allocate,
    budgeted_deallocate,
    budgeted_resize
);

/// `Budget`'s methods: `how` 0 charges `bytes`, 1 credits them, other sets the limit; `out`
/// gets used, limit, remaining and peak.
#[no_mangle]
pub extern "C" fn budget_update(budget: &Budget, how: u8, bytes: usize, out: &mut [usize; 4]) -> bool {
    let ok = match how {
        0 => budget.try_charge(bytes).is_ok(),
        1 => {
            budget.credit(bytes);
            true
        }
        _ => {
            budget.set_limit(bytes);
            true
        }
    };
    *out = [budget.used(), budget.limit(), budget.remaining(), budget.peak()];
    ok
}

/// A `Budgeted` backing allocator for a chain arena, built from a budget.
#[no_mangle]
pub extern "C" fn budgeted_sync_chain_new(
    budget: &'static Budget,
    hint: usize,
    out: &mut MaybeUninit<SyncChainAllocator<BudgetedVirtual>>,
) -> bool {
    match SyncChainAllocator::new_in(hint, Budgeted::new(budget, VirtualAllocator {})) {
        Ok(arena) => {
            out.write(arena);
            true
        }
        Err(_) => false,
    }
}

// ---- Strings: `ArenaString` and `format_in!` on a SyncChainAllocator ----

/// `ArenaString`'s fallible methods on one string: `how` 0 push_str, 1 push, 2 reserve,
/// 3 reserve_exact, 4 pop, 5 shrink_to_fit, other clear.
#[no_mangle]
pub unsafe extern "C" fn string_update(
    s: &mut ArenaString<&'static SyncChain>,
    how: u8,
    text: *const u8,
    len: usize,
) -> bool {
    if text.is_null() {
        return false;
    }
    // SAFETY: the caller's contract (never called).
    let bytes = unsafe { core::slice::from_raw_parts(text, len) };
    let Ok(text) = core::str::from_utf8(bytes) else {
        return false;
    };
    match how {
        0 => s.try_push_str(text).is_ok(),
        1 => s.try_push(text.chars().next().unwrap_or('?')).is_ok(),
        2 => s.try_reserve(len).is_ok(),
        3 => s.try_reserve_exact(len).is_ok(),
        4 => s.pop().is_some(),
        5 => {
            s.shrink_to_fit();
            true
        }
        _ => {
            s.clear();
            true
        }
    }
}

/// A new string (with capacity), frozen into a `&str`, or dropped.
#[no_mangle]
pub extern "C" fn string_new_freeze_drop(
    arena: &'static SyncChain,
    capacity: usize,
    freeze: bool,
    out: &mut [usize; 2],
) -> bool {
    let Ok(s) = ArenaString::try_with_capacity_in(capacity, arena) else {
        return false;
    };
    if freeze {
        let frozen = s.into_str();
        *out = [frozen.as_ptr() as usize, frozen.len()];
    } else {
        drop(s);
    }
    true
}

/// `format_in!` with integers, a hex address, a `&str` and a `char`: the crash-report shape.
#[no_mangle]
pub unsafe extern "C" fn format_report(
    arena: &SyncChain,
    pid: u32,
    signal: i32,
    address: usize,
    name: *const u8,
    name_len: usize,
    out: &mut [usize; 2],
) -> bool {
    if name.is_null() {
        return false;
    }
    // SAFETY: the caller's contract (never called).
    let name = core::str::from_utf8(unsafe { core::slice::from_raw_parts(name, name_len) }).unwrap_or("?");
    match format_in!(arena, "pid {pid} signal {signal} at {address:#x} in {name} {}", '!') {
        Ok(report) => {
            *out = [report.as_ptr() as usize, report.len()];
            true
        }
        Err(_) => false,
    }
}

/// A panic path on purpose: the script builds with this once to show the check sees it.
#[cfg(feature = "control-panic")]
#[no_mangle]
pub extern "C" fn control_index(bytes: &[u8; 4], i: usize) -> u8 {
    #[allow(clippy::indexing_slicing)]
    bytes[i]
}

// ---- LocalHandle on each lock-free arena: constructor, Allocator methods, statistics, drop ----

type LocalOnSyncChain = libdd_alloc::LocalHandle<'static, SyncChain>;
type LocalOnSyncLinear = libdd_alloc::LocalHandle<'static, SyncLinear>;
type LocalOnSyncVirtual = libdd_alloc::LocalHandle<'static, SyncVirtualArena>;

exports!(
    LocalOnSyncChain,
    local_sync_chain_allocate,
    local_sync_chain_deallocate,
    local_sync_chain_resize
);
exports!(
    LocalOnSyncLinear,
    local_sync_linear_allocate,
    local_sync_linear_deallocate,
    local_sync_linear_resize
);
exports!(
    LocalOnSyncVirtual,
    local_sync_virtual_arena_allocate,
    local_sync_virtual_arena_deallocate,
    local_sync_virtual_arena_resize
);

/// `local()`, the statistics and drop of a handle on each arena.
macro_rules! local_exports {
    ($arena:ty, $ty:ty, $new:ident, $stats:ident, $drop:ident) => {
        #[no_mangle]
        pub extern "C" fn $new(arena: &'static $arena, out: &mut MaybeUninit<$ty>) {
            out.write(arena.local());
        }

        #[no_mangle]
        pub extern "C" fn $stats(a: &$ty, out: &mut [usize; 3]) {
            *out = [
                a.used_bytes(),
                a.remaining_capacity(),
                a.interrupted_allocations(),
            ];
        }

        #[no_mangle]
        pub unsafe extern "C" fn $drop(a: *mut $ty) {
            // SAFETY: the caller's contract (never called).
            unsafe { a.drop_in_place() }
        }
    };
}

local_exports!(SyncChain, LocalOnSyncChain, local_sync_chain_new, local_sync_chain_stats, local_sync_chain_drop);
local_exports!(SyncLinear, LocalOnSyncLinear, local_sync_linear_new, local_sync_linear_stats, local_sync_linear_drop);
local_exports!(
    SyncVirtualArena,
    LocalOnSyncVirtual,
    local_sync_virtual_arena_new,
    local_sync_virtual_arena_stats,
    local_sync_virtual_arena_drop
);
