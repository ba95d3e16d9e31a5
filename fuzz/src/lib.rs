//! The model every fuzz target checks an allocator against.
//!
//! A target builds one allocator from the fuzzer's [`Config`] and a [`Backing`] allocator, and
//! hands both to [`run`], which plays the input's [`Op`]s (allocate, deallocate, grow,
//! grow_zeroed, shrink, reset) and checks after each one:
//!
//! - every block is aligned, at least as long as asked, and overlaps no other live block
//!   (an interval map of live blocks);
//! - every block keeps the per-block fill pattern written into it: across grow and shrink (the
//!   first `min(old, new)` bytes), and across operations on *other* blocks (nothing the allocator
//!   writes, such as a chunk header or a zeroed tail, lands in a live block);
//! - `allocate_zeroed` and `grow_zeroed` give zeroed bytes;
//! - statistics hold: `used + remaining == reserved`, `used <= reserved`, and `reserved` equals
//!   the bytes the backing allocator has live;
//! - for bump arenas ([`FuzzArena::EXACT_BUMP`]), the exact bump model: a new block starts at
//!   the cursor plus less than one alignment of padding and `used` grows by exactly that much; the
//!   most recent block (and only it) is given back, grown and shrunk in place;
//! - a layout that `has_capacity_for` accepts is served without calling the backing allocator;
//!   a fixed-capacity arena ([`FuzzArena::FIXED_CAPACITY`]) fails exactly when it does not;
//! - sizes of 2^47 bytes and more always fail, with `Err`;
//! - a failed operation (out of room, or a fault injected into the backing allocator by
//!   [`Config::faults`]) changes no statistic and leaves the old block intact;
//! - the allocator gives the backing allocator back exactly the blocks it took, each with a layout
//!   that fits it, and after `reset` keeps only the largest; after drop nothing is live;
//! - for the virtual arenas, `used + remaining == reservation_bytes`, and `committed_bytes` is
//!   whole pages between `used` and the reservation and never shrinks; every other reset is a
//!   `reset_and_release` (after which `allocate_zeroed` must still give zeroes);
//! - an allocator that maps its own memory ([`FuzzArena::UNMAPS_BLOCKS`]) has unmapped a block's
//!   pages once it is deallocated (`PageAllocator`, `VirtualAllocator`) or the arena is dropped
//!   (`VirtualArena`, `SyncVirtualArena`), checked with `mincore`.
//!
//! # Adding a target for a new allocator
//! Implement [`FuzzArena`] for it (for an arena with the usual inherent `used_bytes`,
//! `reserved_bytes`, `remaining_capacity`, `has_capacity_for` and `reset(&mut self)`, one line of
//! [`bump_arena!`]), then add `fuzz_targets/<name>.rs` calling [`run`] and a `[[bin]]` entry in
//! `fuzz/Cargo.toml`.

use arbitrary::Arbitrary;
use libdd_alloc::{
    AllocError, Allocator, ChainAllocator, HugePages, Layout, LinearAllocator, PageAllocator,
    PageOptions, SyncChainAllocator, SyncLinearAllocator, SyncVirtualArena, System,
    VirtualAllocator, VirtualArena,
};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

pub use libdd_alloc;

/// Sizes at or above this cannot be served on x86_64 (the whole user address space is 2^47
/// bytes): every allocator must answer `Err`.
pub const HUGE: usize = 1 << 47;

/// The most the [`Backing`] allocator lets be live at once; past it, it fails like an OOM.
pub const BACKING_BUDGET: usize = 64 << 20;

/// The most bytes the model keeps in live blocks; operations that would pass it are skipped, so
/// that the fuzzer's memory stays bounded (the allocator itself is not limited by it).
pub const MODEL_BUDGET: usize = 32 << 20;

/// A snapshot of an arena's O(1) statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub used: usize,
    /// For an arena with a backing allocator, the bytes it holds from it; for a virtual arena,
    /// its reservation (`reservation_bytes`), the bound `used + remaining` adds up to.
    pub reserved: usize,
    pub remaining: usize,
    /// For a virtual arena, `committed_bytes`: whole pages, between `used` and the reservation,
    /// never shrinking (not even on `reset_and_release`, which keeps the commit on Linux).
    pub committed: Option<usize>,
}

/// What the model needs to know about an allocator beyond the [`Allocator`] trait.
pub trait FuzzArena: Allocator {
    /// The arena follows the exact bump model of `bump.rs`: blocks are bumped upwards from a
    /// cursor with minimal padding, have exactly the size asked, and only the most recent block
    /// (the one ending at the cursor) is given back, grown or shrunk in place.
    const EXACT_BUMP: bool;
    /// One fixed buffer: allocation fails exactly when `has_capacity_for` says no.
    const FIXED_CAPACITY: bool;
    /// `reserved_bytes` is the sum of the blocks live in the backing allocator, and `reset`
    /// keeps only the largest of them.
    const RESERVED_FROM_BACKING: bool;
    /// Dropping the allocator frees every block it handed out (an arena). When `false` (as for
    /// `VirtualAllocator`) the model deallocates the blocks still live at the end of a run.
    const OWNS_BLOCKS: bool;
    /// The allocator maps its blocks itself and unmaps them when they are freed: on
    /// `deallocate` when it does not own its blocks, on drop when it does. The model then checks
    /// that the pages are gone (a leaked mapping would grow the fuzzer's memory without bound).
    const UNMAPS_BLOCKS: bool = false;

    /// The arena's statistics, or `None` for an allocator without any.
    fn fuzz_stats(&self) -> Option<Stats>;
    /// `has_capacity_for(layout)`, or `None` for an allocator without it.
    fn fuzz_has_capacity_for(&self, layout: Layout) -> Option<bool>;
    /// Frees everything; with `release`, also gives the memory back to the OS where the arena
    /// can (`reset_and_release`). Returns `false` (having done nothing) if the allocator has no
    /// reset; the model then deallocates every block instead.
    fn fuzz_reset(&mut self, release: bool) -> bool;
    /// `used_bytes` right after a reset, if the arena promises a value.
    fn used_after_reset(&self) -> Option<usize>;
    /// The length of the block the allocator returns for `layout`, if it promises one.
    fn expected_len(&self, layout: Layout) -> Option<usize>;
}

/// Implements [`FuzzArena`] for an arena generic over its backing allocator that has the usual
/// inherent methods (`used_bytes`, `reserved_bytes`, `remaining_capacity`, `has_capacity_for`,
/// `reset(&mut self)`).
///
/// `exact_bump` (default `true`) says whether the arena follows [`FuzzArena::EXACT_BUMP`].
///
/// ```ignore
/// libdd_alloc_fuzz::bump_arena!(SyncLinearAllocator, fixed_capacity = true, used_after_reset = |_| 0);
/// libdd_alloc_fuzz::bump_arena!(
///     SyncChainAllocator,
///     fixed_capacity = false,
///     used_after_reset = |arena| arena.used_bytes(), // no promise: accept what it says
///     exact_bump = false
/// );
/// ```
#[macro_export]
macro_rules! bump_arena {
    ($arena:ident, fixed_capacity = $fixed:expr, used_after_reset = $used:expr) => {
        $crate::bump_arena!(
            $arena,
            fixed_capacity = $fixed,
            used_after_reset = $used,
            exact_bump = true
        );
    };
    ($arena:ident, fixed_capacity = $fixed:expr, used_after_reset = $used:expr, exact_bump = $exact:expr) => {
        impl<B: $crate::libdd_alloc::Allocator> $crate::FuzzArena for $arena<B> {
            const EXACT_BUMP: bool = $exact;
            const FIXED_CAPACITY: bool = $fixed;
            const RESERVED_FROM_BACKING: bool = true;
            const OWNS_BLOCKS: bool = true;

            fn fuzz_stats(&self) -> Option<$crate::Stats> {
                Some($crate::Stats {
                    used: <$arena<B>>::used_bytes(self),
                    reserved: <$arena<B>>::reserved_bytes(self),
                    remaining: <$arena<B>>::remaining_capacity(self),
                    committed: None,
                })
            }
            fn fuzz_has_capacity_for(&self, layout: $crate::libdd_alloc::Layout) -> Option<bool> {
                Some(<$arena<B>>::has_capacity_for(self, layout))
            }
            fn fuzz_reset(&mut self, _release: bool) -> bool {
                <$arena<B>>::reset(self);
                true
            }
            fn used_after_reset(&self) -> Option<usize> {
                let used: fn(&Self) -> usize = $used;
                Some(used(self))
            }
            fn expected_len(&self, layout: $crate::libdd_alloc::Layout) -> Option<usize> {
                Some(layout.size())
            }
        }
    };
}

bump_arena!(
    LinearAllocator,
    fixed_capacity = true,
    used_after_reset = |_| 0
);
bump_arena!(
    ChainAllocator,
    fixed_capacity = false,
    used_after_reset = |arena| {
        if arena.reserved_bytes() == 0 {
            0
        } else {
            ChainAllocator::<System>::CHAIN_NODE_OVERHEAD
        }
    }
);

// The lock-free twins, driven from one thread: the same model, the same statistics.
bump_arena!(
    SyncLinearAllocator,
    fixed_capacity = true,
    used_after_reset = |_| 0
);
// Unlike `ChainAllocator`, a sole block never grows its chunk through the backing allocator
// (another thread may be reading the chunk): it moves to a new chunk. The exact bump model holds
// either way, since it only expects in-place growth when the chunk has room.
bump_arena!(
    SyncChainAllocator,
    fixed_capacity = false,
    used_after_reset = |arena| {
        if arena.reserved_bytes() == 0 {
            0
        } else {
            SyncChainAllocator::<System>::CHAIN_NODE_OVERHEAD
        }
    }
);

/// Implements [`FuzzArena`] for a reserve-then-commit arena (`VirtualArena`,
/// `SyncVirtualArena`): no backing allocator, one reservation that bounds it exactly
/// (`used + remaining == reservation_bytes`, so allocation fails exactly when
/// `has_capacity_for` says no, the OS never refusing a commit of a few MiB here), committed
/// pages reported separately, and the reservation unmapped on drop.
macro_rules! virtual_arena {
    ($arena:ident) => {
        impl FuzzArena for $arena {
            const EXACT_BUMP: bool = true;
            const FIXED_CAPACITY: bool = true;
            const RESERVED_FROM_BACKING: bool = false;
            const OWNS_BLOCKS: bool = true;
            const UNMAPS_BLOCKS: bool = true;

            fn fuzz_stats(&self) -> Option<Stats> {
                Some(Stats {
                    used: self.used_bytes(),
                    reserved: self.reservation_bytes(),
                    remaining: self.remaining_capacity(),
                    committed: Some(self.committed_bytes()),
                })
            }
            fn fuzz_has_capacity_for(&self, layout: Layout) -> Option<bool> {
                Some(self.has_capacity_for(layout))
            }
            fn fuzz_reset(&mut self, release: bool) -> bool {
                if release {
                    self.reset_and_release();
                } else {
                    self.reset();
                }
                true
            }
            fn used_after_reset(&self) -> Option<usize> {
                Some(0)
            }
            fn expected_len(&self, layout: Layout) -> Option<usize> {
                Some(layout.size())
            }
        }
    };
}

virtual_arena!(VirtualArena);
virtual_arena!(SyncVirtualArena);

/// Whole pages (whole huge pages with explicit huge pages, fallback included), each block its
/// own mapping, unmapped on `deallocate`.
impl FuzzArena for PageAllocator {
    const EXACT_BUMP: bool = false;
    const FIXED_CAPACITY: bool = false;
    const RESERVED_FROM_BACKING: bool = false;
    const OWNS_BLOCKS: bool = false;
    const UNMAPS_BLOCKS: bool = true;

    fn fuzz_stats(&self) -> Option<Stats> {
        None
    }
    fn fuzz_has_capacity_for(&self, _: Layout) -> Option<bool> {
        None
    }
    fn fuzz_reset(&mut self, _release: bool) -> bool {
        false
    }
    fn used_after_reset(&self) -> Option<usize> {
        None
    }
    fn expected_len(&self, layout: Layout) -> Option<usize> {
        let page = libdd_alloc::os::page_size().ok()?;
        let options = self.options();
        // `PageOptions` has no getters; it is `Eq`, so ask whether setting the choice changes it.
        let explicit = options == options.huge_pages(HugePages::Explicit)
            || options == options.huge_pages(HugePages::ExplicitOnly);
        // A huge page on Linux: what one page-table page maps (eight-byte entries).
        let granule = if explicit { page / 8 * page } else { page };
        Some(layout.size().div_ceil(granule) * granule)
    }
}

impl FuzzArena for VirtualAllocator {
    const EXACT_BUMP: bool = false;
    const FIXED_CAPACITY: bool = false;
    const RESERVED_FROM_BACKING: bool = false;
    const OWNS_BLOCKS: bool = false;
    const UNMAPS_BLOCKS: bool = true;

    fn fuzz_stats(&self) -> Option<Stats> {
        None
    }
    fn fuzz_has_capacity_for(&self, _: Layout) -> Option<bool> {
        None
    }
    fn fuzz_reset(&mut self, _release: bool) -> bool {
        false
    }
    fn used_after_reset(&self) -> Option<usize> {
        None
    }
    fn expected_len(&self, layout: Layout) -> Option<usize> {
        let page = libdd_alloc::os::page_size().ok()?;
        Some(layout.size().div_ceil(page) * page)
    }
}

/// Where a [`Backing`] allocator gets its memory.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackingKind {
    System,
    Virtual,
}

#[derive(Default)]
struct Ledger {
    /// Live blocks: address -> (layout asked, length returned).
    live: BTreeMap<usize, (Layout, usize)>,
    live_bytes: usize,
    /// Fallible calls so far (allocate, grow, shrink).
    calls: u64,
    /// Call `k` fails if bit `k % 64` is set.
    faults: u64,
}

/// A backing allocator that checks how an arena uses it: it records every live block, panics if
/// the arena gives back a block it does not own or with a layout that does not fit, fails the
/// calls [`Config::faults`] selects, and refuses to hold more than [`BACKING_BUDGET`] bytes.
/// Clones share one ledger, so the model can look at it while the arena owns a clone.
#[derive(Clone)]
pub struct Backing {
    kind: BackingKind,
    ledger: Arc<Mutex<Ledger>>,
}

impl Backing {
    pub fn new(kind: BackingKind, faults: u64) -> Self {
        let ledger = Ledger {
            faults,
            ..Ledger::default()
        };
        Self {
            kind,
            ledger: Arc::new(Mutex::new(ledger)),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks live in this allocator.
    pub fn live_blocks(&self) -> usize {
        self.ledger().live.len()
    }

    /// Bytes live in this allocator (returned lengths).
    pub fn live_bytes(&self) -> usize {
        self.ledger().live_bytes
    }

    /// The longest live block.
    pub fn largest_block(&self) -> usize {
        self.ledger()
            .live
            .values()
            .map(|&(_, len)| len)
            .max()
            .unwrap_or(0)
    }

    /// Fallible calls made so far.
    pub fn calls(&self) -> u64 {
        self.ledger().calls
    }

    /// Counts a fallible call that would leave `extra` more bytes live; fails it if it is
    /// scheduled to fail or would break the budget.
    fn admit(ledger: &mut Ledger, extra: usize) -> Result<(), AllocError> {
        let call = ledger.calls;
        ledger.calls += 1;
        if ledger.faults & (1 << (call % 64)) != 0 {
            return Err(AllocError);
        }
        if extra > BACKING_BUDGET || ledger.live_bytes + extra > BACKING_BUDGET {
            return Err(AllocError);
        }
        Ok(())
    }

    /// Checks that `(ptr, layout)` is a live block as the `Allocator` contract requires, and
    /// forgets it.
    fn take(ledger: &mut Ledger, ptr: NonNull<u8>, layout: Layout, what: &str) {
        let Some((asked, len)) = ledger.live.remove(&ptr.as_ptr().addr()) else {
            panic!("{what}: {ptr:p} is not a live block of the backing allocator");
        };
        assert_eq!(
            layout.align(),
            asked.align(),
            "{what}: {ptr:p} given back with another alignment"
        );
        assert!(
            asked.size() <= layout.size() && layout.size() <= len,
            "{what}: {ptr:p} given back with size {} outside [{}, {len}]",
            layout.size(),
            asked.size()
        );
        ledger.live_bytes -= len;
    }

    fn record(ledger: &mut Ledger, block: NonNull<[u8]>, layout: Layout) {
        let addr = block.cast::<u8>().as_ptr().addr();
        assert!(
            ledger.live.insert(addr, (layout, block.len())).is_none(),
            "backing allocator returned a live block twice"
        );
        ledger.live_bytes += block.len();
    }
}

// SAFETY: every call is forwarded to `System` or `VirtualAllocator`, which uphold the contract;
// the ledger only observes.
unsafe impl Allocator for Backing {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let mut ledger = self.ledger();
        Self::admit(&mut ledger, layout.size())?;
        let block = match self.kind {
            BackingKind::System => System.allocate(layout),
            BackingKind::Virtual => VirtualAllocator {}.allocate(layout),
        }?;
        if layout.size() != 0 {
            Self::record(&mut ledger, block, layout);
        }
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        Self::take(&mut self.ledger(), ptr, layout, "deallocate");
        // SAFETY: the ledger confirmed the block is live and the layout fits it.
        unsafe {
            match self.kind {
                BackingKind::System => System.deallocate(ptr, layout),
                BackingKind::Virtual => VirtualAllocator {}.deallocate(ptr, layout),
            }
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded.
        unsafe { self.resize(ptr, old, new, true) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded.
        unsafe { self.resize(ptr, old, new, false) }
    }
}

impl Backing {
    /// grow or shrink, with the ledger kept exact whether the call succeeds or not.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        grow: bool,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let what = if grow { "grow" } else { "shrink" };
        assert!(old.size() != 0, "{what} of a zero-size backing block");
        let mut ledger = self.ledger();
        let Some(&(asked, len)) = ledger.live.get(&ptr.as_ptr().addr()) else {
            panic!("{what}: {ptr:p} is not a live block of the backing allocator");
        };
        Self::admit(&mut ledger, new.size().saturating_sub(len))?;
        Self::take(&mut ledger, ptr, old, what);
        // SAFETY: the ledger confirmed the block is live and `old` fits it.
        let result = unsafe {
            match (self.kind, grow) {
                (BackingKind::System, true) => System.grow(ptr, old, new),
                (BackingKind::System, false) => System.shrink(ptr, old, new),
                (BackingKind::Virtual, true) => VirtualAllocator {}.grow(ptr, old, new),
                (BackingKind::Virtual, false) => VirtualAllocator {}.shrink(ptr, old, new),
            }
        };
        match result {
            Ok(block) => Self::record(&mut ledger, block, new),
            Err(_) => {
                ledger.live.insert(ptr.as_ptr().addr(), (asked, len));
                ledger.live_bytes += len;
            }
        }
        result
    }
}

/// How the target builds its allocator, and the faults to inject into the backing allocator.
#[derive(Arbitrary, Clone, Debug)]
pub struct Config {
    pub backing: BackingKind,
    /// Buffer size of a linear arena (modulo 1 MiB), chunk size hint of a chain arena.
    pub capacity: u32,
    /// Buffer alignment of a linear arena: `1 << (align_log2 % 13)`.
    pub align_log2: u8,
    /// Bound on a chain's chunk size (modulo 16 MiB).
    pub max_chunk_size: Option<u32>,
    /// Build a chain with `new_lazy_in` instead of `new_in`.
    pub lazy: bool,
    /// The backing allocator's fallible call `k` fails if bit `k % 64` is set.
    pub faults: u64,
}

impl Config {
    /// The layout of a linear arena's buffer.
    pub fn buffer_layout(&self) -> Layout {
        let size = self.capacity as usize % (1 << 20);
        Layout::from_size_align(size, 1 << (self.align_log2 % 13)).unwrap_or(Layout::new::<u8>())
    }

    /// A chain's chunk size hint.
    pub fn chunk_size_hint(&self) -> usize {
        self.capacity as usize % (1 << 20)
    }

    /// A chain's bound on chunk size.
    pub fn max_chunk_size(&self) -> Option<usize> {
        self.max_chunk_size.map(|max| max as usize % (16 << 20))
    }

    /// A virtual arena's reservation: below 64 MiB, scaled down by up to 2^15 so that small
    /// reservations (down to the one-page minimum), which run out, are common too. Bounded so
    /// that the fuzzer's resident memory stays bounded however the arena behaves.
    pub fn reservation_bytes(&self) -> usize {
        (self.capacity as usize % (64 << 20)) >> (self.align_log2 % 16)
    }

    /// A virtual arena's bound on the commit step.
    pub fn max_commit_step(&self) -> Option<usize> {
        self.max_chunk_size()
    }

    /// A page allocator's options: 0-2 guard pages before and after, prefault, and normal,
    /// transparent or explicit huge pages (explicit with its fallback to normal pages, since
    /// the pool is usually empty). Never `lock`: `RLIMIT_MEMLOCK` would refuse most blocks.
    /// Explicit huge pages with guard pages are asked for now and then: `PageAllocator::new`
    /// must refuse them.
    pub fn page_options(&self) -> PageOptions {
        let bits = self.capacity as usize;
        let huge_pages = match self.align_log2 % 8 {
            0..=4 => HugePages::Normal,
            5 | 6 => HugePages::Transparent,
            _ => HugePages::Explicit,
        };
        let (before, after) = if huge_pages == HugePages::Explicit && !bits.is_multiple_of(16) {
            (0, 0)
        } else {
            ((bits / 16) % 3, (bits / 48) % 3)
        };
        PageOptions::new()
            .guard_pages_before(before)
            .guard_pages_after(after)
            .prefault(self.lazy)
            .huge_pages(huge_pages)
    }
}

/// Whether the page holding `addr` is unmapped (`mincore` fails with `ENOMEM` on pages that
/// are not mapped). Allocates nothing, so nothing can be mapped between a free and the check.
pub fn page_is_unmapped(addr: usize) -> bool {
    let Ok(page) = libdd_alloc::os::page_size() else {
        return false;
    };
    let start = addr - addr % page;
    let mut resident = [0u8; 1];
    // SAFETY: `mincore` only reads the page tables; `resident` holds one byte for one page.
    let status = unsafe { libc::mincore(start as *mut libc::c_void, page, resident.as_mut_ptr()) };
    status != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM)
}

/// A size, weighted towards small ones.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum SizeCode {
    Zero,
    Tiny(u8),
    Small(u16),
    /// Up to 1 MiB.
    Large(u32),
    /// 2^47 bytes or more: must fail.
    Huge(u8),
}

impl SizeCode {
    pub fn bytes(self) -> usize {
        match self {
            SizeCode::Zero => 0,
            SizeCode::Tiny(n) => n as usize,
            SizeCode::Small(n) => n as usize,
            SizeCode::Large(n) => n as usize % (1 << 20) + 1,
            SizeCode::Huge(n) => HUGE << (n % 14),
        }
    }
}

/// An alignment: usually up to a page, sometimes up to 2 MiB.
fn alignment(code: u8) -> usize {
    if code >= 240 {
        1 << (12 + code % 10)
    } else {
        1 << (code % 13)
    }
}

/// One step of a fuzz input. `pick` chooses a live block (modulo their number); `report_len`
/// hands the block back with the length the allocator returned instead of the size asked.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    Allocate {
        size: SizeCode,
        align: u8,
        zeroed: bool,
    },
    Deallocate {
        pick: u16,
        report_len: bool,
    },
    Grow {
        pick: u16,
        extra: SizeCode,
        align: u8,
        zeroed: bool,
        report_len: bool,
    },
    Shrink {
        pick: u16,
        less: SizeCode,
        align: u8,
        report_len: bool,
    },
    Reset,
    VerifyAll,
}

/// A whole fuzz input.
#[derive(Arbitrary, Clone, Debug)]
pub struct Input {
    pub config: Config,
    pub ops: Vec<Op>,
}

/// The byte at offset `i` of the block with identity `id`: differs between blocks, and along a
/// block, so a misplaced copy or a shifted block is seen.
fn pattern(id: u64, i: usize) -> u8 {
    (id as u8).wrapping_mul(0x9D) ^ (id >> 8) as u8 ^ (i as u8) ^ ((i >> 8) as u8).wrapping_mul(3)
}

/// A live block the model handed its pattern to.
struct Block {
    id: u64,
    ptr: NonNull<u8>,
    /// The layout last asked for.
    layout: Layout,
    /// The length the allocator returned.
    len: usize,
}

impl Block {
    fn start(&self) -> usize {
        self.ptr.as_ptr().addr()
    }

    /// The layout to hand back: with the size asked, or the length returned (both fit).
    fn fitting(&self, report_len: bool) -> Layout {
        if report_len {
            Layout::from_size_align(self.len, self.layout.align()).unwrap_or(self.layout)
        } else {
            self.layout
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the model only keeps blocks the allocator handed out and has not taken back:
        // `len` bytes at `ptr`, owned by the model (no overlap is checked on insertion).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn fill(&mut self, from: usize) {
        // SAFETY: as in `bytes`; `&mut self` makes this the only view of the block.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) };
        for (i, byte) in bytes.iter_mut().enumerate().skip(from) {
            *byte = pattern(self.id, i);
        }
    }

    fn verify(&self, upto: usize, what: &str) {
        let bytes = self.bytes();
        for (i, &byte) in bytes.iter().enumerate().take(upto) {
            assert_eq!(
                byte,
                pattern(self.id, i),
                "{what}: block {} ({:p}, {} bytes) corrupted at offset {i}",
                self.id,
                self.ptr,
                self.len
            );
        }
    }
}

/// The model state next to the allocator under test.
struct Model<T: FuzzArena> {
    arena: T,
    backing: Backing,
    blocks: Vec<Block>,
    /// Non-empty live blocks: start -> end.
    intervals: BTreeMap<usize, usize>,
    live_bytes: usize,
    next_id: u64,
    /// Where the arena's cursor is, when the model knows it (EXACT_BUMP arenas only).
    cursor: Option<usize>,
    /// Resets so far: every other one releases memory (`reset_and_release`).
    resets: usize,
    /// The largest `committed_bytes` seen: the commit never shrinks.
    committed: usize,
    /// An address inside the first non-empty block handed out: for an [`FuzzArena::OWNS_BLOCKS`]
    /// arena that maps its own memory, it must be unmapped once the arena is dropped.
    probe: Option<usize>,
}

/// Plays `input` against the allocator that `make` builds from the config and a [`Backing`]
/// allocator, checking the model after every step, then drops it and checks that every backing
/// block was given back.
pub fn run<T: FuzzArena>(
    input: Input,
    make: impl FnOnce(&Config, Backing) -> Result<T, AllocError>,
) {
    let backing = Backing::new(input.config.backing, input.config.faults);
    let arena = match make(&input.config, backing.clone()) {
        Ok(arena) => arena,
        Err(AllocError) => {
            assert_eq!(backing.live_blocks(), 0, "a failed constructor leaked");
            return;
        }
    };
    let mut model = Model {
        arena,
        backing: backing.clone(),
        blocks: Vec::new(),
        intervals: BTreeMap::new(),
        live_bytes: 0,
        next_id: 1,
        cursor: None,
        resets: 0,
        committed: 0,
        probe: None,
    };
    model.check_stats();
    let trace = std::env::var_os("LIBDD_ALLOC_FUZZ_TRACE").is_some();
    for op in input.ops {
        if trace {
            eprintln!(
                "{:?} backing: {} blocks, {} bytes\n  {op:?}",
                model.stats(),
                backing.live_blocks(),
                backing.live_bytes()
            );
        }
        model.step(op);
        model.check_stats();
        if model.live_bytes <= 1 << 16 {
            model.verify_all("after step");
        }
    }
    model.verify_all("at the end");
    if !T::OWNS_BLOCKS {
        while !model.blocks.is_empty() {
            model.deallocate(model.blocks.len() - 1, false);
        }
    }
    let probe = model.probe;
    if let (true, true, Some(probe)) = (T::OWNS_BLOCKS, T::UNMAPS_BLOCKS, probe) {
        // So that the check after drop means something.
        assert!(
            !page_is_unmapped(probe),
            "a live arena's page reads as unmapped"
        );
    }
    drop(model);
    if let (true, true, Some(probe)) = (T::OWNS_BLOCKS, T::UNMAPS_BLOCKS, probe) {
        assert!(
            page_is_unmapped(probe),
            "the arena's pages stayed mapped after drop"
        );
    }
    assert_eq!(backing.live_blocks(), 0, "blocks leaked after drop");
    assert_eq!(backing.live_bytes(), 0, "bytes leaked after drop");
}

impl<T: FuzzArena> Model<T> {
    fn stats(&self) -> Option<Stats> {
        self.arena.fuzz_stats()
    }

    fn check_stats(&mut self) {
        let Some(stats) = self.stats() else { return };
        assert!(stats.used <= stats.reserved, "{stats:?}");
        assert_eq!(stats.used + stats.remaining, stats.reserved, "{stats:?}");
        if let Some(committed) = stats.committed {
            let page = libdd_alloc::os::page_size().unwrap_or(1);
            assert_eq!(
                committed % page,
                0,
                "committed_bytes is not whole pages: {stats:?}"
            );
            assert!(stats.used <= committed, "used past the commit: {stats:?}");
            assert!(
                committed <= stats.reserved,
                "committed past the reservation: {stats:?}"
            );
            assert!(committed >= self.committed, "the commit shrank: {stats:?}");
            self.committed = committed;
        }
        if T::RESERVED_FROM_BACKING {
            assert_eq!(
                stats.reserved,
                self.backing.live_bytes(),
                "reserved_bytes is not what the backing allocator holds"
            );
        }
    }

    fn verify_all(&self, what: &str) {
        for block in &self.blocks {
            block.verify(block.len, what);
        }
    }

    /// Whether a new block of `size` bytes would take the model past [`MODEL_BUDGET`]. Sizes
    /// that cannot exist are always tried: they must fail.
    fn over_budget(&self, size: usize) -> bool {
        size < HUGE && self.live_bytes + size > MODEL_BUDGET
    }

    fn pick(&self, pick: u16) -> Option<usize> {
        if self.blocks.is_empty() {
            None
        } else {
            Some(pick as usize % self.blocks.len())
        }
    }

    fn insert_interval(&mut self, start: usize, len: usize) {
        if len == 0 {
            return;
        }
        let end = start.checked_add(len).expect("block wraps around");
        if let Some((&before, &before_end)) = self.intervals.range(..=start).next_back() {
            assert!(
                before_end <= start,
                "overlap: [{start:#x}, {end:#x}) with [{before:#x}, {before_end:#x})"
            );
        }
        if let Some((&after, &after_end)) = self.intervals.range(start..).next() {
            assert!(
                end <= after,
                "overlap: [{start:#x}, {end:#x}) with [{after:#x}, {after_end:#x})"
            );
        }
        self.intervals.insert(start, end);
        self.live_bytes += len;
    }

    fn remove_interval(&mut self, start: usize, len: usize) {
        if len != 0 {
            assert!(self.intervals.remove(&start).is_some());
            self.live_bytes -= len;
        }
    }

    /// Checks a block just returned for `layout` and adopts it.
    fn check_fresh_block(&self, block: NonNull<[u8]>, layout: Layout) {
        let addr = block.cast::<u8>().as_ptr().addr();
        assert_eq!(
            addr % layout.align(),
            0,
            "{layout:?} misaligned at {addr:#x}"
        );
        assert!(block.len() >= layout.size(), "{layout:?}: short block");
        if layout.size() == 0 {
            assert_eq!(block.len(), 0, "a zero-size block has bytes");
        }
        if let Some(len) = self.arena.expected_len(layout) {
            assert_eq!(block.len(), len, "{layout:?}: unexpected length");
        }
    }

    /// The exact bump model for a block that was bumped out fresh (not resized in place) while
    /// the statistics went from `before` to `after`.
    fn bumped(
        &mut self,
        before: Option<Stats>,
        after: Option<Stats>,
        start: usize,
        layout: Layout,
    ) {
        if !T::EXACT_BUMP || layout.size() == 0 {
            return;
        }
        let (Some(before), Some(after)) = (before, after) else {
            return;
        };
        let end = start + layout.size();
        if after.reserved == before.reserved {
            let grew = after.used - before.used;
            match self.cursor {
                Some(cursor) => {
                    assert!(start >= cursor, "block below the cursor");
                    assert!(start - cursor < layout.align(), "more padding than needed");
                    assert_eq!(grew, end - cursor, "used_bytes off");
                }
                None => assert!(
                    grew >= layout.size() && grew < layout.size() + layout.align(),
                    "used_bytes grew by {grew} for {layout:?}"
                ),
            }
        }
        self.cursor = Some(end);
    }

    /// The exact bump model for `[start, start + size)` shrinking to `new_size` bytes in place
    /// (0 for a deallocation).
    fn shrunk_in_place(
        &mut self,
        before: Option<Stats>,
        start: usize,
        size: usize,
        new_size: usize,
    ) {
        let (Some(before), Some(after)) = (before, self.stats()) else {
            return;
        };
        assert_eq!(
            after.reserved, before.reserved,
            "reserved changed on a shrink"
        );
        assert!(after.used <= before.used, "used grew on a shrink");
        if !T::EXACT_BUMP || size == 0 {
            return;
        }
        let released = before.used - after.used;
        let end = start + size;
        match self.cursor {
            Some(cursor) if cursor == end => {
                assert_eq!(
                    released,
                    size - new_size,
                    "most recent block not given back"
                );
                self.cursor = Some(start + new_size);
            }
            Some(_) => assert_eq!(released, 0, "a block that is not the most recent was freed"),
            None => {
                assert!(
                    released == 0 || released == size - new_size,
                    "released {released}"
                );
                if released != 0 {
                    self.cursor = Some(start + new_size);
                }
            }
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Allocate {
                size,
                align,
                zeroed,
            } => {
                let Ok(layout) = Layout::from_size_align(size.bytes(), alignment(align)) else {
                    return;
                };
                if self.over_budget(layout.size()) {
                    return;
                }
                self.allocate(layout, zeroed);
            }
            Op::Deallocate { pick, report_len } => {
                let Some(index) = self.pick(pick) else { return };
                self.deallocate(index, report_len);
            }
            Op::Grow {
                pick,
                extra,
                align,
                zeroed,
                report_len,
            } => {
                let Some(index) = self.pick(pick) else { return };
                let old = self.blocks[index].fitting(report_len);
                let Some(size) = old.size().checked_add(extra.bytes()) else {
                    return;
                };
                let Ok(new) = Layout::from_size_align(size, alignment(align)) else {
                    return;
                };
                if self.over_budget(new.size()) {
                    return;
                }
                self.grow(index, old, new, zeroed);
            }
            Op::Shrink {
                pick,
                less,
                align,
                report_len,
            } => {
                let Some(index) = self.pick(pick) else { return };
                let old = self.blocks[index].fitting(report_len);
                let size = old.size() - less.bytes().min(old.size());
                let Ok(new) = Layout::from_size_align(size, alignment(align)) else {
                    return;
                };
                self.shrink(index, old, new);
            }
            Op::Reset => self.reset(),
            Op::VerifyAll => self.verify_all("verify"),
        }
    }

    fn allocate(&mut self, layout: Layout, zeroed: bool) {
        let before = self.stats();
        let fits = self.arena.fuzz_has_capacity_for(layout);
        let calls = self.backing.calls();
        let result = if zeroed {
            self.arena.allocate_zeroed(layout)
        } else {
            self.arena.allocate(layout)
        };
        let after = self.stats();
        let block = match result {
            Err(AllocError) => {
                assert_ne!(layout.size(), 0, "a zero-size allocation failed");
                assert_ne!(fits, Some(true), "{layout:?} fits but allocation failed");
                assert_eq!(before, after, "a failed allocation changed the statistics");
                return;
            }
            Ok(block) => block,
        };
        assert!(
            layout.size() < HUGE,
            "{layout:?} cannot exist, yet was allocated"
        );
        self.check_fresh_block(block, layout);
        if layout.size() == 0 {
            assert_eq!(before, after, "a zero-size allocation used bytes");
        }
        if fits == Some(true) {
            assert_eq!(
                self.backing.calls(),
                calls,
                "a fitting layout called the backing allocator"
            );
        }
        if T::FIXED_CAPACITY && layout.size() != 0 {
            assert_eq!(
                fits,
                Some(true),
                "{layout:?} did not fit, yet was allocated"
            );
        }
        let start = block.cast::<u8>().as_ptr().addr();
        self.bumped(before, after, start, layout);
        let mut block = Block {
            id: self.next_id,
            ptr: block.cast(),
            layout,
            len: block.len(),
        };
        self.next_id += 1;
        if zeroed {
            assert!(
                block.bytes().iter().all(|&b| b == 0),
                "allocate_zeroed is not zero"
            );
        }
        if block.len != 0 && self.probe.is_none() {
            self.probe = Some(block.start());
        }
        self.insert_interval(block.start(), block.len);
        block.fill(0);
        self.blocks.push(block);
    }

    fn deallocate(&mut self, index: usize, report_len: bool) {
        let block = self.blocks.swap_remove(index);
        block.verify(block.len, "before deallocate");
        self.remove_interval(block.start(), block.len);
        let layout = block.fitting(report_len);
        let unmapped = T::UNMAPS_BLOCKS && !T::OWNS_BLOCKS && block.len != 0;
        if unmapped {
            assert!(
                !page_is_unmapped(block.start()),
                "a live block reads as unmapped"
            );
        }
        let before = self.stats();
        // SAFETY: the block is live, from this allocator, and `layout` fits it.
        unsafe { self.arena.deallocate(block.ptr, layout) };
        if unmapped {
            assert!(
                page_is_unmapped(block.start()),
                "a deallocated block stayed mapped"
            );
        }
        self.shrunk_in_place(before, block.start(), layout.size(), 0);
    }

    fn grow(&mut self, index: usize, old: Layout, new: Layout, zeroed: bool) {
        let block = &self.blocks[index];
        block.verify(block.len, "before grow");
        let (start, len, id) = (block.start(), block.len, block.id);
        let before = self.stats();
        let in_place_expected = T::EXACT_BUMP
            && old.size() != 0
            && self.cursor == Some(start + old.size())
            && start % new.align() == 0
            && before.is_some_and(|s| s.remaining >= new.size() - old.size());
        // SAFETY: the block is live, from this allocator, `old` fits it and `new` is larger.
        let result = unsafe {
            if zeroed {
                self.arena.grow_zeroed(block.ptr, old, new)
            } else {
                self.arena.grow(block.ptr, old, new)
            }
        };
        let after = self.stats();
        let grown = match result {
            Err(AllocError) => {
                assert!(
                    !in_place_expected,
                    "grow in place of the most recent block failed"
                );
                assert_eq!(before, after, "a failed grow changed the statistics");
                self.blocks[index].verify(len, "after a failed grow");
                return;
            }
            Ok(grown) => grown,
        };
        assert!(
            new.size() < HUGE,
            "{new:?} cannot exist, yet a block grew to it"
        );
        self.check_fresh_block(grown, new);
        let new_start = grown.cast::<u8>().as_ptr().addr();
        if in_place_expected {
            assert_eq!(new_start, start, "the most recent block moved to grow");
        }
        self.remove_interval(start, len);
        if new_start == start && old.size() != 0 {
            if let (Some(before), Some(after)) = (before, after) {
                assert_eq!(
                    after.used - before.used,
                    new.size() - old.size(),
                    "grow in place"
                );
            }
            if T::EXACT_BUMP {
                self.cursor = Some(start + new.size());
            }
        } else {
            self.bumped(before, after, new_start, new);
        }
        let block = &mut self.blocks[index];
        block.ptr = grown.cast();
        block.layout = new;
        block.len = grown.len();
        debug_assert_eq!(block.id, id);
        block.verify(old.size(), "contents after grow");
        if zeroed {
            // The `grow_zeroed` contract: bytes from the old block's real length on are zero;
            // those between the old size asked and that length may be kept or zeroed.
            let clean_from = len.min(block.len);
            assert!(
                block.bytes()[clean_from..].iter().all(|&b| b == 0),
                "grow_zeroed left a dirty tail"
            );
        }
        block.fill(old.size());
        self.insert_interval(new_start, grown.len());
    }

    fn shrink(&mut self, index: usize, old: Layout, new: Layout) {
        let block = &self.blocks[index];
        block.verify(block.len, "before shrink");
        let (start, len) = (block.start(), block.len);
        let before = self.stats();
        // SAFETY: the block is live, from this allocator, `old` fits it and `new` is smaller.
        let result = unsafe { self.arena.shrink(block.ptr, old, new) };
        let after = self.stats();
        let shrunk = match result {
            Err(AllocError) => {
                assert!(
                    !(T::EXACT_BUMP && start % new.align() == 0),
                    "shrink that needs no move failed"
                );
                assert_eq!(before, after, "a failed shrink changed the statistics");
                self.blocks[index].verify(len, "after a failed shrink");
                return;
            }
            Ok(shrunk) => shrunk,
        };
        self.check_fresh_block(shrunk, new);
        let new_start = shrunk.cast::<u8>().as_ptr().addr();
        self.remove_interval(start, len);
        if new.size() == 0 || new_start == start {
            self.shrunk_in_place(before, start, old.size(), new.size());
        } else {
            assert!(
                !(T::EXACT_BUMP && start % new.align() == 0),
                "an aligned block moved to shrink"
            );
            self.bumped(before, after, new_start, new);
        }
        let block = &mut self.blocks[index];
        block.ptr = shrunk.cast();
        block.layout = new;
        block.len = shrunk.len();
        block.verify(new.size(), "contents after shrink");
        block.fill(new.size());
        self.insert_interval(new_start, shrunk.len());
    }

    fn reset(&mut self) {
        self.verify_all("before reset");
        let before = self.stats();
        let largest = self.backing.largest_block();
        let release = self.resets % 2 == 1;
        self.resets += 1;
        if self.arena.fuzz_reset(release) {
            self.blocks.clear();
            self.intervals.clear();
            self.live_bytes = 0;
            self.cursor = None;
            let after = self.stats();
            if let (Some(before), Some(after)) = (before, after) {
                assert!(after.reserved <= before.reserved, "reset reserved more");
                if let Some(used) = self.arena.used_after_reset() {
                    assert_eq!(after.used, used, "used_bytes after reset");
                }
            }
            if T::RESERVED_FROM_BACKING {
                assert!(self.backing.live_blocks() <= 1, "reset kept several chunks");
                assert_eq!(
                    self.backing.largest_block(),
                    largest,
                    "reset kept a smaller chunk"
                );
            }
        } else {
            while !self.blocks.is_empty() {
                self.deallocate(self.blocks.len() - 1, false);
            }
        }
    }
}
