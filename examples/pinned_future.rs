//! A future pinned in an arena and polled to completion: `PinArena::try_alloc_pinned` hands out a
//! `Pin<&mut F>` with no `Box`, and the arena runs the future's destructor (here: of whatever it
//! still holds) before it reuses the memory.
//!
//! ```text
//! cargo run --example pinned_future
//! ```

use libdd_alloc::{PinArena, SyncVirtualArena};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// Ready after being polled `remaining` times (it wakes itself in between).
struct Countdown {
    remaining: u32,
}

impl Future for Countdown {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.remaining == 0 {
            return Poll::Ready(());
        }
        self.remaining -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Counts its drops, so the example can show the arena dropped what the future held.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A waker that does nothing: the loop below polls until ready anyway.
fn noop_waker() -> Waker {
    fn clone(_: *const ()) -> RawWaker {
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: every function of the vtable ignores the (null) data pointer.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

fn main() -> Result<(), libdd_alloc::AllocError> {
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut arena = SyncVirtualArena::new(1 << 20)?;
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    {
        let guard = Guard(Arc::clone(&dropped));
        // An `async` block is `!Unpin`: it may hold references into itself across an `.await`.
        let mut future = arena.try_alloc_pinned(async move {
            let guard = guard;
            let local = [1u64, 2, 3];
            let borrowed = &local; // lives across the await: a self-reference
            Countdown { remaining: 3 }.await;
            drop(guard);
            borrowed.iter().sum::<u64>()
        })?;
        let mut polls = 0;
        let sum = loop {
            polls += 1;
            if let Poll::Ready(sum) = future.as_mut().poll(&mut cx) {
                break sum;
            }
        };
        println!("ready after {polls} polls: {sum}");
        assert_eq!((sum, polls), (6, 4));
    }
    assert_eq!(dropped.load(Ordering::Relaxed), 1);
    // A future that never completes: the arena drops it (and the guard inside) before reuse.
    let guard = Guard(Arc::clone(&dropped));
    let mut pending = arena.try_alloc_pinned(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    })?;
    assert!(pending.as_mut().poll(&mut cx).is_pending());
    arena.reset();
    assert_eq!(dropped.load(Ordering::Relaxed), 2);
    println!("the pending future was dropped by reset");
    Ok(())
}
