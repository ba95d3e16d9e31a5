//! Tagged blocks for the tests of the lock-free arenas: deterministic mixed layouts, and blocks
//! filled with a pattern unique to their owner so that overlap or corruption shows up on
//! verification. Nothing here allocates from the global heap, so it is usable in signal handlers
//! and forked children.

use core::alloc::Layout;
use core::ptr::NonNull;

/// A block handed out by an arena, and the tag its bytes were filled with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Block {
    pub addr: usize,
    pub len: usize,
    pub tag: u64,
}

/// A tag unique to (owner, sequence number).
pub const fn tag(owner: u64, seq: u64) -> u64 {
    (owner << 40) | seq
}

/// The byte at offset `i` of a block tagged `tag`.
#[inline]
pub fn pattern(tag: u64, i: usize) -> u8 {
    let mixed = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 56) as u8) ^ (i as u8).wrapping_mul(31) ^ ((mixed >> 24) as u8)
}

/// A layout from a small deterministic mix of sizes (1 B .. 2 KiB) and alignments (1 .. 64).
pub fn mixed_layout(seq: u64) -> Layout {
    let h = seq.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
    let align = 1usize << (h % 7);
    let size = match h % 97 {
        0 => 512 + (h as usize >> 8) % 1536,
        1..=10 => 64 + (h as usize >> 8) % 192,
        _ => 1 + (h as usize >> 8) % 48,
    };
    Layout::from_size_align(size, align).unwrap()
}

/// Fills `block` with the pattern of `tag` and returns its record.
///
/// # Safety
/// `block` is valid for writes and owned by the caller.
pub unsafe fn fill(block: NonNull<[u8]>, size: usize, tag: u64) -> Block {
    let ptr = block.cast::<u8>().as_ptr();
    for i in 0..size {
        // SAFETY: `i < size <= block.len()`, per the caller.
        unsafe { ptr.add(i).write_volatile(pattern(tag, i)) };
    }
    Block {
        addr: ptr as usize,
        len: size,
        tag,
    }
}

/// Whether the bytes of `block` still hold its pattern.
///
/// # Safety
/// The block is live and readable.
pub unsafe fn intact(block: &Block) -> bool {
    let ptr = block.addr as *const u8;
    // SAFETY: per the caller.
    (0..block.len).all(|i| unsafe { ptr.add(i).read_volatile() } == pattern(block.tag, i))
}

/// What is wrong with a set of blocks, if anything.
#[derive(Debug, PartialEq, Eq)]
pub enum Fault {
    Overlap(Block, Block),
    Corrupt(Block),
    Misaligned(Block),
}

/// Sorts `blocks` by address (in place: no heap) and checks that no two of them overlap and that
/// each still holds its pattern.
///
/// # Safety
/// Every block is live and readable.
pub unsafe fn verify(blocks: &mut [Block]) -> Result<(), Fault> {
    blocks.sort_unstable_by_key(|b| b.addr);
    for pair in blocks.windows(2) {
        if pair[0].addr + pair[0].len > pair[1].addr {
            return Err(Fault::Overlap(pair[0], pair[1]));
        }
    }
    for block in blocks.iter() {
        // SAFETY: per the caller.
        if !unsafe { intact(block) } {
            return Err(Fault::Corrupt(*block));
        }
    }
    Ok(())
}
