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

use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::search::{make_qkx3_quants, make_qx_quants};
use super::{Format, QuantType};

/// Elements per block of every format of this module.
pub const QK: usize = 32;

/// Marker for block structs made only of bytes: alignment 1, no padding, so
/// a byte buffer of whole blocks can be viewed as a slice of them.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs whose fields are all `u8` arrays.
pub(crate) unsafe trait ByteBlock: Sized {}

/// Views `bytes` (a whole number of blocks) as blocks.
pub(crate) fn blocks<B: ByteBlock>(bytes: &[u8]) -> &[B] {
    let size = std::mem::size_of::<B>();
    assert!(std::mem::align_of::<B>() == 1 && bytes.len() % size == 0);
    // SAFETY: B is made of bytes only (ByteBlock), so any bit pattern is
    // valid and alignment 1 is always satisfied; the length divides evenly.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const B, bytes.len() / size) }
}

/// Views `bytes` (a whole number of blocks) as mutable blocks.
pub(crate) fn blocks_mut<B: ByteBlock>(bytes: &mut [u8]) -> &mut [B] {
    let size = std::mem::size_of::<B>();
    assert!(std::mem::align_of::<B>() == 1 && bytes.len() % size == 0);
    // SAFETY: as in `blocks`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut B, bytes.len() / size) }
}

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
unsafe impl ByteBlock for BlockQ4_0 {}
unsafe impl ByteBlock for BlockQ4_1 {}
unsafe impl ByteBlock for BlockQ5_0 {}
unsafe impl ByteBlock for BlockQ5_1 {}
unsafe impl ByteBlock for BlockQ8_0 {}

/// Formats registered by this module.
pub static FORMATS: &[Format] = &[
    Format {
        ty: QuantType::Q4_0,
        name: "q4_0",
        block_size: QK,
        block_bytes: std::mem::size_of::<BlockQ4_0>(),
        quantize_row: quantize_row_q4_0,
        dequantize_row: dequantize_row_q4_0,
    },
    Format {
        ty: QuantType::Q4_1,
        name: "q4_1",
        block_size: QK,
        block_bytes: std::mem::size_of::<BlockQ4_1>(),
        quantize_row: quantize_row_q4_1,
        dequantize_row: dequantize_row_q4_1,
    },
    Format {
        ty: QuantType::Q5_0,
        name: "q5_0",
        block_size: QK,
        block_bytes: std::mem::size_of::<BlockQ5_0>(),
        quantize_row: quantize_row_q5_0,
        dequantize_row: dequantize_row_q5_0,
    },
    Format {
        ty: QuantType::Q5_1,
        name: "q5_1",
        block_size: QK,
        block_bytes: std::mem::size_of::<BlockQ5_1>(),
        quantize_row: quantize_row_q5_1,
        dequantize_row: dequantize_row_q5_1,
    },
    Format {
        ty: QuantType::Q8_0,
        name: "q8_0",
        block_size: QK,
        block_bytes: std::mem::size_of::<BlockQ8_0>(),
        quantize_row: quantize_row_q8_0,
        dequantize_row: dequantize_row_q8_0,
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

// ---------------------------------------------------------------------------
// Reference (no importance matrix) block quantizers, scalar.

/// The signed value of largest magnitude, first one on ties (0 when all are
/// zero); NaNs are skipped.
#[inline]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// Minimum and maximum as ggml's `for (...) { if (v < min) …; if (v > max) … }`
/// from `(FLT_MAX, -FLT_MAX)`.
#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `1/d`, or 0 when `d` is zero (C's `d ? 1.0f/d : 0.0f`).
#[inline]
fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

fn quantize_block_q4_0_ref(x: &[f32; QK], y: &mut BlockQ4_0) {
    let max = signed_absmax(x);
    let d = max / -8.0;
    let id = inverse_or_zero(d);
    y.d = f16_bytes(d);
    for j in 0..QK / 2 {
        let xi0 = 15.min(c_trunc_i32(x[j] * id + 8.5) as i8 as i32) as u8;
        let xi1 = 15.min(c_trunc_i32(x[QK / 2 + j] * id + 8.5) as i8 as i32) as u8;
        y.qs[j] = xi0 | (xi1 << 4);
    }
}

fn quantize_block_q4_1_ref(x: &[f32; QK], y: &mut BlockQ4_1) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse_or_zero(d);
    y.d = f16_bytes(d);
    y.m = f16_bytes(min);
    for j in 0..QK / 2 {
        let xi0 = 15.min(c_trunc_i32((x[j] - min) * id + 0.5) as i8 as i32) as u8;
        let xi1 = 15.min(c_trunc_i32((x[QK / 2 + j] - min) * id + 0.5) as i8 as i32) as u8;
        y.qs[j] = xi0 | (xi1 << 4);
    }
}

/// Packs 32 five-bit values: low nibbles in `qs`, fifth bits in `qh`.
#[inline]
fn pack_q5(l: &[u8; QK], qs: &mut [u8; QK / 2]) -> [u8; 4] {
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let (xi0, xi1) = (l[j], l[QK / 2 + j]);
        qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) >> 4) as u32) << j;
        qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    qh.to_le_bytes()
}

fn quantize_block_q5_0_ref(x: &[f32; QK], y: &mut BlockQ5_0) {
    let max = signed_absmax(x);
    let d = max / -16.0;
    let id = inverse_or_zero(d);
    y.d = f16_bytes(d);
    let mut l = [0u8; QK];
    for (lj, &xj) in l.iter_mut().zip(x) {
        *lj = 31.min(c_trunc_i32(xj * id + 16.5) as i8 as i32) as u8;
    }
    y.qh = pack_q5(&l, &mut y.qs);
}

fn quantize_block_q5_1_ref(x: &[f32; QK], y: &mut BlockQ5_1) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse_or_zero(d);
    y.d = f16_bytes(d);
    y.m = f16_bytes(min);
    let mut l = [0u8; QK];
    for (lj, &xj) in l.iter_mut().zip(x) {
        *lj = c_trunc_i32((xj - min) * id + 0.5) as u8;
    }
    y.qh = pack_q5(&l, &mut y.qs);
}

fn quantize_block_q8_0_ref(x: &[f32; QK], y: &mut BlockQ8_0) {
    let mut amax = 0.0f32;
    for &v in x {
        // C's MAX(amax, fabsf(v)): `a > b ? a : b`, NaN-order included.
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    let d = amax / 127.0;
    let id = inverse_or_zero(d);
    y.d = f16_bytes(d);
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = c_trunc_i32((v * id).round()) as u8;
    }
}

// ---------------------------------------------------------------------------
// Row entry points.

/// Mean square of the row, accumulated in order as ggml does.
fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// ggml's importance weights of one block: `qw[j] * sqrt(sigma2 + x[j]^2)`.
fn block_weights(x: &[f32; QK], qw: &[f32], sigma2: f32) -> [f32; QK] {
    let mut w = [0.0f32; QK];
    for j in 0..QK {
        w[j] = qw[j] * (sigma2 + x[j] * x[j]).sqrt();
    }
    w
}

/// Quantize a row to Q4_0 (`quantize_q4_0` on one row).
pub fn quantize_row_q4_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let ys = blocks_mut::<BlockQ4_0>(dst);
    assert_eq!(src.len(), ys.len() * QK);
    match imatrix {
        None => {
            #[cfg(target_arch = "x86_64")]
            if simd::available() {
                // SAFETY: AVX2 is available (checked just above).
                unsafe { simd::quantize_row_q4_0(src, ys) };
                return;
            }
            for (x, y) in src.chunks_exact(QK).zip(ys) {
                quantize_block_q4_0_ref(block_slice(x), y);
            }
        }
        Some(qw) => {
            assert_eq!(qw.len(), src.len());
            let sigma2 = row_sigma2(src);
            for ((x, qw), y) in src.chunks_exact(QK).zip(qw.chunks_exact(QK)).zip(ys) {
                let x = block_slice(x);
                let w = block_weights(x, qw, sigma2);
                let mut l = [0i8; QK];
                let d = make_qx_quants(8, x, &mut l, 1, Some(&w));
                y.d = f16_bytes(d);
                for j in 0..QK / 2 {
                    y.qs[j] = (l[j] as u8) | ((l[j + QK / 2] as u8) << 4);
                }
            }
        }
    }
}

/// Quantize a row to Q4_1 (`quantize_q4_1` on one row).
pub fn quantize_row_q4_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let ys = blocks_mut::<BlockQ4_1>(dst);
    assert_eq!(src.len(), ys.len() * QK);
    match imatrix {
        None => {
            #[cfg(target_arch = "x86_64")]
            if simd::available() {
                // SAFETY: AVX2 is available (checked just above).
                unsafe { simd::quantize_row_q4_1(src, ys) };
                return;
            }
            for (x, y) in src.chunks_exact(QK).zip(ys) {
                quantize_block_q4_1_ref(block_slice(x), y);
            }
        }
        Some(qw) => {
            assert_eq!(qw.len(), src.len());
            let sigma2 = row_sigma2(src);
            for ((x, qw), y) in src.chunks_exact(QK).zip(qw.chunks_exact(QK)).zip(ys) {
                let x = block_slice(x);
                let w = block_weights(x, qw, sigma2);
                let mut l = [0u8; QK];
                let (d, min) = make_qkx3_quants(15, x, Some(&w), &mut l, -0.9, 0.05, 36, false);
                y.d = f16_bytes(d);
                y.m = f16_bytes(-min);
                for j in 0..QK / 2 {
                    y.qs[j] = l[j] | (l[j + QK / 2] << 4);
                }
            }
        }
    }
}

/// Quantize a row to Q5_0 (`quantize_q5_0` on one row).
pub fn quantize_row_q5_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let ys = blocks_mut::<BlockQ5_0>(dst);
    assert_eq!(src.len(), ys.len() * QK);
    match imatrix {
        None => {
            #[cfg(target_arch = "x86_64")]
            if simd::available() {
                // SAFETY: AVX2 is available (checked just above).
                unsafe { simd::quantize_row_q5_0(src, ys) };
                return;
            }
            for (x, y) in src.chunks_exact(QK).zip(ys) {
                quantize_block_q5_0_ref(block_slice(x), y);
            }
        }
        Some(qw) => {
            assert_eq!(qw.len(), src.len());
            let sigma2 = row_sigma2(src);
            for ((x, qw), y) in src.chunks_exact(QK).zip(qw.chunks_exact(QK)).zip(ys) {
                let x = block_slice(x);
                let w = block_weights(x, qw, sigma2);
                let mut l = [0i8; QK];
                let d = make_qx_quants(16, x, &mut l, 1, Some(&w));
                y.d = f16_bytes(d);
                let l = l.map(|v| v as u8);
                y.qh = pack_q5(&l, &mut y.qs);
            }
        }
    }
}

/// Quantize a row to Q5_1 (`quantize_q5_1` on one row).
pub fn quantize_row_q5_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let ys = blocks_mut::<BlockQ5_1>(dst);
    assert_eq!(src.len(), ys.len() * QK);
    match imatrix {
        None => {
            #[cfg(target_arch = "x86_64")]
            if simd::available() {
                // SAFETY: AVX2 is available (checked just above).
                unsafe { simd::quantize_row_q5_1(src, ys) };
                return;
            }
            for (x, y) in src.chunks_exact(QK).zip(ys) {
                quantize_block_q5_1_ref(block_slice(x), y);
            }
        }
        Some(qw) => {
            assert_eq!(qw.len(), src.len());
            let sigma2 = row_sigma2(src);
            for ((x, qw), y) in src.chunks_exact(QK).zip(qw.chunks_exact(QK)).zip(ys) {
                let x = block_slice(x);
                let w = block_weights(x, qw, sigma2);
                let mut l = [0u8; QK];
                let (d, min) = make_qkx3_quants(31, x, Some(&w), &mut l, -0.9, 0.05, 36, false);
                y.d = f16_bytes(d);
                y.m = f16_bytes(-min);
                y.qh = pack_q5(&l, &mut y.qs);
            }
        }
    }
}

/// Quantize a row to Q8_0 (`quantize_q8_0`: the importance matrix is unused).
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    let ys = blocks_mut::<BlockQ8_0>(dst);
    assert_eq!(src.len(), ys.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { simd::quantize_row_q8_0(src, ys) };
        return;
    }
    for (x, y) in src.chunks_exact(QK).zip(ys) {
        quantize_block_q8_0_ref(block_slice(x), y);
    }
}

// ---------------------------------------------------------------------------
// Dequantization (ggml's `dequantize_row_q4_0` …): an int times a float
// scale, plus the minimum for the _1 formats.

/// Dequantize a Q4_0 row.
pub fn dequantize_row_q4_0(src: &[u8], dst: &mut [f32]) {
    let xs = blocks::<BlockQ4_0>(src);
    assert_eq!(dst.len(), xs.len() * QK);
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_value(b.d);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            lo[j] = ((b.qs[j] & 0x0F) as i32 - 8) as f32 * d;
            hi[j] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Dequantize a Q4_1 row.
pub fn dequantize_row_q4_1(src: &[u8], dst: &mut [f32]) {
    let xs = blocks::<BlockQ4_1>(src);
    assert_eq!(dst.len(), xs.len() * QK);
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_value(b.d);
        let m = f16_value(b.m);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            lo[j] = (b.qs[j] & 0x0F) as f32 * d + m;
            hi[j] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// Dequantize a Q5_0 row.
pub fn dequantize_row_q5_0(src: &[u8], dst: &mut [f32]) {
    let xs = blocks::<BlockQ5_0>(src);
    assert_eq!(dst.len(), xs.len() * QK);
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_value(b.d);
        let qh = u32::from_le_bytes(b.qh);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            lo[j] = (((b.qs[j] & 0x0F) as u32 | xh0) as i32 - 16) as f32 * d;
            hi[j] = (((b.qs[j] >> 4) as u32 | xh1) as i32 - 16) as f32 * d;
        }
    }
}

/// Dequantize a Q5_1 row.
pub fn dequantize_row_q5_1(src: &[u8], dst: &mut [f32]) {
    let xs = blocks::<BlockQ5_1>(src);
    assert_eq!(dst.len(), xs.len() * QK);
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_value(b.d);
        let m = f16_value(b.m);
        let qh = u32::from_le_bytes(b.qh);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            lo[j] = ((b.qs[j] & 0x0F) as u32 | xh0) as f32 * d + m;
            hi[j] = ((b.qs[j] >> 4) as u32 | xh1) as f32 * d + m;
        }
    }
}

/// Dequantize a Q8_0 row.
pub fn dequantize_row_q8_0(src: &[u8], dst: &mut [f32]) {
    let xs = blocks::<BlockQ8_0>(src);
    assert_eq!(dst.len(), xs.len() * QK);
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_value(b.d);
        for (yj, &q) in y.iter_mut().zip(&b.qs) {
            *yj = q as i8 as f32 * d;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;

    /// Whether the AVX2 paths can run.
    #[inline]
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2")
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_row_q4_0(src: &[f32], ys: &mut [BlockQ4_0]) {
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            quantize_block_q4_0_ref(block_slice(x), y);
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_row_q4_1(src: &[f32], ys: &mut [BlockQ4_1]) {
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            quantize_block_q4_1_ref(block_slice(x), y);
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_row_q5_0(src: &[f32], ys: &mut [BlockQ5_0]) {
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            quantize_block_q5_0_ref(block_slice(x), y);
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_row_q5_1(src: &[f32], ys: &mut [BlockQ5_1]) {
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            quantize_block_q5_1_ref(block_slice(x), y);
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_row_q8_0(src: &[f32], ys: &mut [BlockQ8_0]) {
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            quantize_block_q8_0_ref(block_slice(x), y);
        }
    }
}
