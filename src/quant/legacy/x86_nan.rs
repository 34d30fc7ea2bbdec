//! x86's NaN rule, spelled out: ggml's compiled loops (which we match) return
//! the first NaN operand of an SSE operation, quieted, and make the negative
//! "indefinite" NaN from numbers; Rust leaves NaN payloads unspecified. Used
//! where two NaNs can meet: ggml's importance weights and row mean square,
//! and a Q4_1/Q5_1 block whose scale or minimum is NaN.

/// A NaN as x86's SSE arithmetic returns it: the first NaN operand,
/// quieted; a NaN made from numbers (0 × ∞, ∞ − ∞) is the negative
/// "indefinite" `0xFFC00000`. ggml's compiled loops (which we match) work
/// that way; Rust leaves NaN payloads unspecified, so where two NaNs can
/// meet we spell the rule out.
#[inline]
fn x86_nan(first: f32, second: f32) -> f32 {
    let quiet = |v: f32| f32::from_bits(v.to_bits() | 0x0040_0000);
    if first.is_nan() {
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
    let r = a * b;
    if r.is_nan() {
        x86_nan(a, b)
    } else {
        r
    }
}

/// `a + b` with x86's NaN rule.
#[inline]
pub(super) fn x86_add(a: f32, b: f32) -> f32 {
    let r = a + b;
    if r.is_nan() {
        x86_nan(a, b)
    } else {
        r
    }
}
