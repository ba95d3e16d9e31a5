// `format_in!` refuses the exponent form with the largest precision: `core::fmt` panics on a
// float there (`assertion failed: ndigits > 0`: the `u16` precision plus one wraps to 0), and
// the macro cannot see the argument's type. 65,534 and other forms with 65,535 compile.
use libdd_alloc::{format_in, ChainAllocator, System};

fn main() {
    let arena = ChainAllocator::new_in(1 << 20, System).unwrap();
    let _ = format_in!(&arena, "{:.65535e}", 1.5);
    let _ = format_in!(&arena, "{:+.65535E}", 1.5f32);
    let _ = format_in!(&arena, "{:.65534e} {:.65535} {:>65535e}", 1.5, 1.5, 1.5);
}
