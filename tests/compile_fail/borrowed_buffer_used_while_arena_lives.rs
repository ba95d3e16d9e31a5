// The buffer under a linear arena stays borrowed while the arena lives: the caller cannot write
// to it (and so cannot clobber blocks the arena handed out) until the arena is dropped.
use core::mem::MaybeUninit;
use libdd_alloc::{Arena, LinearAllocator};

fn main() {
    let mut buffer = [MaybeUninit::<u8>::uninit(); 64];
    let arena = LinearAllocator::from_buffer(&mut buffer);
    let text = arena.try_alloc_str("block").unwrap();
    buffer[0] = MaybeUninit::new(b'X');
    println!("{text}");
}
