//! `PageAllocator` with options drawn from the input (0-2 guard pages on each side, prefault,
//! normal, transparent or explicit huge pages with fallback) against the model. Every block is
//! unmapped when deallocated; the model deallocates what is left at the end of each input.
#![no_main]

use libdd_alloc::{HugePages, PageAllocator};
use libdd_alloc_fuzz::{run, Input};

libfuzzer_sys::fuzz_target!(|input: Input| {
    run(input, |config, _| {
        let options = config.page_options();
        let explicit = options == options.huge_pages(HugePages::Explicit);
        let guarded = options != options.guard_pages_before(0).guard_pages_after(0);
        let pages = PageAllocator::new(options);
        assert_eq!(
            pages.is_err(),
            explicit && guarded,
            "PageAllocator::new({options:?}): guard pages are refused exactly with explicit huge pages"
        );
        pages
    });
});
