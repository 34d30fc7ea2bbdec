//! x86's NaN rule, spelled out: ggml's compiled loops (which we match) return
//! the first NaN operand of an SSE operation, quieted, and make the negative
//! "indefinite" NaN from numbers; Rust leaves NaN payloads unspecified. Used
//! where two NaNs can meet: ggml's importance weights and row mean square,
//! and a Q4_1/Q5_1 block whose scale or minimum is NaN.

/// `r`, the result of an SSE operation on `first` and `second`, with its
/// NaN as x86 returns it: the first NaN operand, quieted; a NaN made from
/// numbers (0 × ∞, ∞ − ∞) is the negative "indefinite" `0xFFC00000`.
#[inline]
fn x86_result(first: f32, second: f32, r: f32) -> f32 {
    let quiet = |v: f32| f32::from_bits(v.to_bits() | 0x0040_0000);
    if !r.is_nan() {
        r
    } else if first.is_nan() {
        quiet(first)
    } else if second.is_nan() {
        quiet(second)
    } else {
        f32::from_bits(0xFFC0_0000)
    }
}

/// `a * b` with x86's NaN rule.
#[inline]
pub(super) fn x86_mul(a: f32, b: f32) -> f32 {
    x86_result(a, b, a * b)
}

/// `a + b` with x86's NaN rule.
#[inline]
pub(super) fn x86_add(a: f32, b: f32) -> f32 {
    x86_result(a, b, a + b)
}
