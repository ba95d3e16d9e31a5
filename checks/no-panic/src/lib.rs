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
use libdd_alloc::{Allocator, ChainAllocator, Layout, LinearAllocator, VirtualAllocator};

type Linear = LinearAllocator<VirtualAllocator>;
type Chain = ChainAllocator<VirtualAllocator>;

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

/// A panic path on purpose: the script builds with this once to show the check sees it.
#[cfg(feature = "control-panic")]
#[no_mangle]
pub extern "C" fn control_index(bytes: &[u8; 4], i: usize) -> u8 {
    #[allow(clippy::indexing_slicing)]
    bytes[i]
}
