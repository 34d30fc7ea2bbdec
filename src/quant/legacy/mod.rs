//! The original ggml block formats: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0, all
//! with 32 elements per block.
//!
//! Without an importance matrix each block is quantized by ggml's reference
//! rule (`quantize_row_q4_0_ref` …): one scale from the block's extreme
//! value(s), round to nearest. With an importance matrix, Q4_0/Q5_0 search
//! the scale with `make_qx_quants` and Q4_1/Q5_1 scale and minimum with
//! `make_qkx3_quants`, weighting each element by `imatrix[j] *
//! sqrt(sigma2 + x[j]^2)` where `sigma2` is the row's mean square (ggml's
//! `quantize_row_q4_0_impl` …). Q8_0 ignores the importance matrix, as ggml
//! does.
//!
//! Every float operation follows ggml's order so the bytes are identical;
//! the x86_64 fast paths (AVX2, picked at run time) compute the same
//! operations lane by lane and hand any block holding a NaN or an infinity
//! to the scalar code.

//!
//! The folder: the block layouts and the registry here; `quantize` (the
//! reference and importance-weighted row quantizers), `dequantize` (the row
//! dequantizers), `simd` (their AVX2 + F16C kernels, x86-64 only) and
//! `x86_nan` (x86's NaN rule, which the scalar code reproduces where
//! two NaNs can meet).

mod dequantize;
mod quantize;
#[cfg(target_arch = "x86_64")]
mod simd;
mod x86_nan;

pub use dequantize::{
    dequantize_row_q4_0, dequantize_row_q4_0_streaming, dequantize_row_q4_1,
    dequantize_row_q4_1_streaming, dequantize_row_q5_0, dequantize_row_q5_0_streaming,
    dequantize_row_q5_1, dequantize_row_q5_1_streaming, dequantize_row_q8_0,
    dequantize_row_q8_0_streaming,
};
pub use quantize::{
    quantize_row_q4_0, quantize_row_q4_0_checked, quantize_row_q4_1, quantize_row_q4_1_checked,
    quantize_row_q5_0, quantize_row_q5_0_checked, quantize_row_q5_1, quantize_row_q5_1_checked,
    quantize_row_q8_0, quantize_row_q8_0_checked,
};

use super::block::Block;
use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::{Format, QuantType};

/// Elements per block of every format of this module.
pub const QK: usize = 32;

/// C's conversion of a float to a narrow integer as x86 compilers emit it:
/// truncate toward zero to 32 bits (`cvttss2si`), where NaN and values out
/// of the `i32` range give `i32::MIN`; the caller then keeps the low byte.
#[inline]
pub(crate) fn c_trunc_i32(x: f32) -> i32 {
    if x > -2_147_483_649.0 && x < 2_147_483_648.0 {
        x as i32
    } else {
        i32::MIN
    }
}

/// Q4_0: `d * (q - 8)`, 4-bit q.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ4_0 {
    /// Scale, IEEE half, little-endian.
    pub d: [u8; 2],
    /// Element j in the low nibble of byte j, element j+16 in the high one.
    pub qs: [u8; QK / 2],
}

/// Q4_1: `d * q + m`, 4-bit q.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    /// Minimum (offset), IEEE half.
    pub m: [u8; 2],
    pub qs: [u8; QK / 2],
}

/// Q5_0: `d * (q - 16)`, 5-bit q: low nibbles as Q4_0, fifth bits in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    /// Bit j (little-endian u32) is the fifth bit of element j.
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// Q5_1: `d * q + m`, 5-bit q.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// Q8_0: `d * q`, q a signed byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [u8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

// SAFETY: all five are #[repr(C)] structs of u8 arrays.
unsafe impl Block for BlockQ4_0 {}
unsafe impl Block for BlockQ4_1 {}
unsafe impl Block for BlockQ5_0 {}
unsafe impl Block for BlockQ5_1 {}
unsafe impl Block for BlockQ8_0 {}

/// Formats registered by this module.
pub static FORMATS: &[Format] = &[
    Format {
        ty: QuantType::Q4_0,
        name: "q4_0",
        block_size: QK,
        block_bytes: std::mem::size_of::<BlockQ4_0>(),
        quantize_row: quantize_row_q4_0,
        quantize_row_streaming: None,
        quantize_row_checked: Some(quantize_row_q4_0_checked),
        dequantize_row: dequantize_row_q4_0,
        dequantize_row_streaming: Some(dequantize_row_q4_0_streaming),
    },
    Format {
        ty: QuantType::Q4_1,
        name: "q4_1",
        block_size: QK,
        block_bytes: std::mem::size_of::<BlockQ4_1>(),
        quantize_row: quantize_row_q4_1,
        quantize_row_streaming: None,
        quantize_row_checked: Some(quantize_row_q4_1_checked),
        dequantize_row: dequantize_row_q4_1,
        dequantize_row_streaming: Some(dequantize_row_q4_1_streaming),
    },
    Format {
        ty: QuantType::Q5_0,
        name: "q5_0",
        block_size: QK,
        block_bytes: std::mem::size_of::<BlockQ5_0>(),
        quantize_row: quantize_row_q5_0,
        quantize_row_streaming: None,
        quantize_row_checked: Some(quantize_row_q5_0_checked),
        dequantize_row: dequantize_row_q5_0,
        dequantize_row_streaming: Some(dequantize_row_q5_0_streaming),
    },
    Format {
        ty: QuantType::Q5_1,
        name: "q5_1",
        block_size: QK,
        block_bytes: std::mem::size_of::<BlockQ5_1>(),
        quantize_row: quantize_row_q5_1,
        quantize_row_streaming: None,
        quantize_row_checked: Some(quantize_row_q5_1_checked),
        dequantize_row: dequantize_row_q5_1,
        dequantize_row_streaming: Some(dequantize_row_q5_1_streaming),
    },
    Format {
        ty: QuantType::Q8_0,
        name: "q8_0",
        block_size: QK,
        block_bytes: std::mem::size_of::<BlockQ8_0>(),
        quantize_row: quantize_row_q8_0,
        quantize_row_streaming: None,
        quantize_row_checked: Some(quantize_row_q8_0_checked),
        dequantize_row: dequantize_row_q8_0,
        dequantize_row_streaming: Some(dequantize_row_q8_0_streaming),
    },
];

fn f16_bytes(x: f32) -> [u8; 2] {
    fp32_to_fp16(x).to_le_bytes()
}

fn f16_value(b: [u8; 2]) -> f32 {
    fp16_to_fp32(u16::from_le_bytes(b))
}

fn block_slice(x: &[f32]) -> &[f32; QK] {
    x.try_into().expect("a block is 32 floats")
}
