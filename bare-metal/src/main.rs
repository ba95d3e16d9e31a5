//! libdd-alloc with no OS at all, on a Cortex-M3 (QEMU's lm3s6965evb): a linear arena over a
//! static buffer and one over a stack array, a chain arena over a user's allocator (a bump
//! allocator over a static array), and strings formatted into arenas with `format_in!`, each
//! asserting contents and statistics. Output and exit status go through semihosting: every
//! failed check (and any panic) prints where it failed and exits with status 1, so
//! scripts/bare-metal.sh fails.
#![no_std]
#![no_main]

use core::cell::{Cell, UnsafeCell};
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use libdd_alloc::{
    format_in, static_arena, AllocError, Allocator, Arena, ArenaString, ChainAllocator, Layout,
    LinearAllocator, Rewind,
};

/// Checks a condition; on failure prints it with its line and exits QEMU with status 1.
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            hprintln!(
                "FAILED at bare-metal/src/main.rs:{}: {}",
                line!(),
                stringify!($cond)
            );
            debug::exit(debug::EXIT_FAILURE);
        }
    };
}

static_arena! {
    /// The handler-style arena: a `static`, no set-up at run time, no OS.
    static STATIC_ARENA: [u8; 1024];
}

/// A user's allocator: bumps through its own array, counts calls, frees nothing but counts it.
struct UserBump {
    memory: UnsafeCell<[MaybeUninit<u8>; 8192]>,
    next: Cell<usize>,
    allocations: Cell<usize>,
    deallocations: Cell<usize>,
}

impl UserBump {
    const fn new() -> Self {
        Self {
            memory: UnsafeCell::new([MaybeUninit::uninit(); 8192]),
            next: Cell::new(0),
            allocations: Cell::new(0),
            deallocations: Cell::new(0),
        }
    }
}

// SAFETY: blocks are disjoint ranges of `memory` (the offset only grows), aligned as asked, and
// stay valid as long as the allocator: it never reuses a byte.
unsafe impl Allocator for UserBump {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let base = self.memory.get().cast::<u8>();
        let start =
            (base as usize + self.next.get()).next_multiple_of(layout.align()) - base as usize;
        let end = start.checked_add(layout.size()).ok_or(AllocError)?;
        if end > 8192 {
            return Err(AllocError);
        }
        self.next.set(end);
        self.allocations.set(self.allocations.get() + 1);
        // SAFETY: `start <= end <= 8192`: inside `memory`.
        let ptr = unsafe { NonNull::new_unchecked(base.add(start)) };
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    unsafe fn deallocate(&self, _ptr: NonNull<u8>, _layout: Layout) {
        self.deallocations.set(self.deallocations.get() + 1);
    }
}

fn static_linear_arena() {
    // Nothing was set up: the first call finds the whole buffer free.
    check!(STATIC_ARENA.used_bytes() == 0);
    check!(STATIC_ARENA.reserved_bytes() == 1024);
    let line = format_in!(&STATIC_ARENA, "signal {} at {:#x}", 11, 0xdead_beef_u32);
    check!(line == Ok("signal 11 at 0xdeadbeef"));
    check!(STATIC_ARENA.used_bytes() == "signal 11 at 0xdeadbeef".len());
    let words = STATIC_ARENA.try_alloc_slice_copy(&[1u32, 2, 3]);
    check!(matches!(words, Ok(&mut [1, 2, 3])));
    check!(STATIC_ARENA.used_bytes() == 24 + 12); // 23 bytes, 1 of padding, 3 words
    check!(STATIC_ARENA.remaining_capacity() == 1024 - 36);
    check!(STATIC_ARENA.allocate(Layout::new::<[u8; 1024]>()).is_err());
    hprintln!(
        "static arena: {} of {} bytes used, a full arena refuses",
        STATIC_ARENA.used_bytes(),
        1024
    );
}

fn stack_linear_arena() {
    let mut buffer = [MaybeUninit::<u8>::uninit(); 256];
    let mut arena = LinearAllocator::from_buffer(&mut buffer);
    check!(arena.reserved_bytes() == 256);
    let checkpoint = arena.checkpoint();
    let mut text = ArenaString::new_in(&arena);
    for word in ["no", "heap", "no", "OS"] {
        check!(text.try_push_str(word).is_ok());
        check!(text.try_push(' ').is_ok());
    }
    check!(text.as_str() == "no heap no OS ");
    // The string was the last block each time, so it grew in place: no copies were left behind.
    check!(arena.used_bytes() == text.capacity());
    drop(text);
    arena.rewind(checkpoint);
    check!(arena.used_bytes() == 0);
    check!(arena.allocate(Layout::new::<[u8; 256]>()).is_ok());
    check!(arena.allocate(Layout::new::<u8>()).is_err());
    arena.reset();
    check!(arena.remaining_capacity() == 256);
    hprintln!("stack arena: rewind and reset give back all 256 bytes");
}

fn chain_arena_over_a_user_allocator() {
    let user = UserBump::new();
    {
        let arena = ChainAllocator::new_in(256, &user).ok();
        check!(arena.is_some());
        let Some(arena) = arena else { return };
        check!(user.allocations.get() == 1);
        check!(arena.reserved_bytes() == 256);
        let mut total = 0;
        for i in 0..40u32 {
            let line = format_in!(&arena, "line {i:>3}: {:08x}", i * 0x1111);
            check!(line.is_ok());
            let Ok(line) = line else { return };
            check!(line.len() == 18);
            check!(line.starts_with("line "));
            total += line.len();
        }
        // 720 bytes of text cannot fit in a first chunk of 256: the arena took more from `user`.
        check!(user.allocations.get() >= 2);
        check!(arena.used_bytes() >= total);
        check!(arena.reserved_bytes() <= user.next.get());
        let first = format_in!(&arena, "{}", "kept");
        check!(first == Ok("kept"));
        hprintln!(
            "chain arena: {} bytes used in {} chunks ({} bytes) from the user's allocator",
            arena.used_bytes(),
            user.allocations.get(),
            arena.reserved_bytes()
        );
    }
    // Dropping the arena gave every chunk back.
    check!(user.deallocations.get() == user.allocations.get());
}

#[entry]
fn main() -> ! {
    static_linear_arena();
    stack_linear_arena();
    chain_arena_over_a_user_allocator();
    hprintln!("bare-metal: every check passed");
    debug::exit(debug::EXIT_SUCCESS);
    #[allow(clippy::empty_loop)]
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("PANIC: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
