// A linear arena over a borrowed buffer cannot outlive the buffer.
use core::mem::MaybeUninit;
use libdd_alloc::{Borrowed, SyncLinearAllocator};

fn main() {
    let arena: SyncLinearAllocator<Borrowed<'_>>;
    {
        let mut buffer = [MaybeUninit::<u8>::uninit(); 64];
        arena = SyncLinearAllocator::from_buffer(&mut buffer);
    }
    println!("{}", arena.used_bytes());
}
