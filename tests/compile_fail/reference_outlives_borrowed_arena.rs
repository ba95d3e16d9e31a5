// A reference from the `Arena` methods of an arena over a borrowed buffer borrows the arena: it
// cannot outlive it, even though the buffer itself lives on.
use core::mem::MaybeUninit;
use libdd_alloc::{Arena, LinearAllocator};

fn main() {
    let mut buffer = [MaybeUninit::<u8>::uninit(); 64];
    let text;
    {
        let arena = LinearAllocator::from_buffer(&mut buffer);
        text = arena.try_alloc_str("block").unwrap();
    }
    println!("{text}");
}
