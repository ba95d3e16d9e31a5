// `format_in!` refuses every width or precision taken from an argument: since Rust 1.87 the
// `format_args!` it expands to panics when such an argument is above 65,535, and the macro
// cannot see the value (here a captured variable, a positional and a named argument).
use libdd_alloc::{format_in, ChainAllocator, System};

fn main() {
    let arena = ChainAllocator::new_in(4096, System).unwrap();
    let w = 65_536;
    let _ = format_in!(&arena, "{:w$}", 1);
    let _ = format_in!(&arena, "{:>1$}", 1, w);
    let _ = format_in!(&arena, "{:.p$}", 1.5, p = w);
    let _ = format_in!(&arena, "{:.*}", w, 1.5);
}
