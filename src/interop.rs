//! The same allocators under other versions of the `Allocator` trait: allocator-api2 0.3 and 0.4
//! (features `allocator-api2-03`, `allocator-api2-04`) and, on nightly, `core::alloc::Allocator`
//! (feature `nightly`).
//!
//! There is one implementation per type, of allocator-api2 0.2's trait; `forward_allocator!`
//! generates the others from it. The traits have the same methods and contracts word for word,
//! and all use `core::alloc::Layout`; only the `AllocError` types differ.

/// Implements one foreign `Allocator` trait (`$api::Allocator`, error `$api::AllocError`) for a
/// type by forwarding every method to its allocator-api2 0.2 implementation: the methods that
/// differ only in their name are written once each, `@allocate` and `@resize`.
/// `$feature` names the feature that enables it, for the docs.rs badge.
macro_rules! forward_one {
    ($feature:literal, $($api:ident)::+; impl[$($generics:tt)*] $ty:ty) => {
        // SAFETY: every method forwards to the type's allocator-api2 0.2 `Allocator`
        // implementation, whose contract is this trait's, word for word; the blocks are the same.
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        unsafe impl<$($generics)*> $($api)::+::Allocator for $ty {
            forward_one!(@allocate $ty, $($api)::+::AllocError; allocate allocate_zeroed);

            #[inline]
            unsafe fn deallocate(&self, ptr: core::ptr::NonNull<u8>, layout: core::alloc::Layout) {
                // SAFETY: forwarded caller contract (identical in both traits).
                unsafe { <$ty as crate::Allocator>::deallocate(self, ptr, layout) }
            }

            forward_one!(@resize $ty, $($api)::+::AllocError; grow grow_zeroed shrink);
        }
    };
    (@allocate $ty:ty, $error:path; $($method:ident)*) => {$(
        #[inline(always)]
        fn $method(
            &self,
            layout: core::alloc::Layout,
        ) -> Result<core::ptr::NonNull<[u8]>, $error> {
            <$ty as crate::Allocator>::$method(self, layout).map_err(|crate::AllocError| $error)
        }
    )*};
    (@resize $ty:ty, $error:path; $($method:ident)*) => {$(
        #[inline]
        unsafe fn $method(
            &self,
            ptr: core::ptr::NonNull<u8>,
            old: core::alloc::Layout,
            new: core::alloc::Layout,
        ) -> Result<core::ptr::NonNull<[u8]>, $error> {
            // SAFETY: forwarded caller contract (identical in both traits).
            unsafe { <$ty as crate::Allocator>::$method(self, ptr, old, new) }
                .map_err(|crate::AllocError| $error)
        }
    )*};
}

/// Implements every enabled foreign `Allocator` trait for a type that implements
/// allocator-api2 0.2's: `forward_allocator!(impl[A: crate::Allocator] MyArena<A>);`, or
/// `forward_allocator!(impl[] MyAllocator);` for a type without generics.
macro_rules! forward_allocator {
    (impl[$($generics:tt)*] $ty:ty) => {
        #[cfg(feature = "allocator-api2-03")]
        forward_one!("allocator-api2-03", allocator_api2_03::alloc; impl[$($generics)*] $ty);
        #[cfg(feature = "allocator-api2-04")]
        forward_one!("allocator-api2-04", allocator_api2_04::alloc; impl[$($generics)*] $ty);
        #[cfg(feature = "nightly")]
        forward_one!("nightly", core::alloc; impl[$($generics)*] $ty);
    };
}

// Every allocator of the crate: add a line here for each new one.
#[cfg(any(unix, windows))]
forward_allocator!(impl[] crate::VirtualAllocator);
forward_allocator!(impl[C: crate::arena::Cursor, A: crate::Allocator] crate::arena::Linear<C, A>);
forward_allocator!(impl['a] crate::Borrowed<'a>);
forward_allocator!(impl[A: crate::Allocator] crate::ChainAllocator<A>);
forward_allocator!(impl['a, A: crate::Rewind] crate::Scope<'a, A>);
#[cfg(any(unix, windows))]
forward_allocator!(impl[] crate::PageAllocator);
#[cfg(all(any(unix, windows), target_has_atomic = "ptr"))]
forward_allocator!(impl[C: crate::arena::Cursor] crate::arena::Virtual<C>);
#[cfg(target_has_atomic = "ptr")]
forward_allocator!(impl[A: crate::Allocator] crate::SyncChainAllocator<A>);
#[cfg(target_has_atomic = "ptr")]
forward_allocator!(impl['a, A: crate::LocalSource] crate::LocalHandle<'a, A>);
