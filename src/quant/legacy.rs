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

use super::block::{as_blocks, as_blocks_mut, Block};
use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::search::{make_qkx3_quants, make_qx_quants, IMPL_GRID};
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
///
/// When a NaN is involved, which NaN survives depends on the operand order
/// of each addition; ggml's build (GCC, SSE2) sums four squares at a time as
/// `((e1 + (s + e0)) ... )`: `s + e0`, `e1 + s`, `e2 + s`, `s + e3`
/// (first operand's NaN wins on x86). That order is replayed here.
fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    if sum_x2.is_nan() {
        sum_x2 = 0.0;
        for (i, &v) in x.iter().enumerate() {
            let e = x86_mul(v, v);
            sum_x2 = match i % 4 {
                0 | 3 => x86_add(sum_x2, e),
                _ => x86_add(e, sum_x2),
            };
        }
    }
    sum_x2 / x.len() as f32
}

/// ggml's importance weights of one block: `qw[j] * sqrt(sigma2 + x[j]^2)`,
/// computed as ggml's build does, `sqrt(x^2 + sigma2) * qw` (which matters
/// only for which NaN comes out).
fn block_weights(x: &[f32; QK], qw: &[f32], sigma2: f32) -> [f32; QK] {
    let mut w = [0.0f32; QK];
    for j in 0..QK {
        w[j] = qw[j] * (sigma2 + x[j] * x[j]).sqrt();
        if w[j].is_nan() {
            w[j] = x86_mul(x86_add(x86_mul(x[j], x[j]), sigma2).sqrt(), qw[j]);
        }
    }
    w
}

/// An AVX2 row kernel (`simd::quantize_row_*`), as the skeleton below takes
/// it: `None` off x86-64.
type FastRow<B> = Option<unsafe fn(&[f32], &mut [B])>;

/// The [`FastRow`] of `simd::$kernel` (`None` off x86-64).
macro_rules! fast_row {
    ($kernel:ident) => {{
        #[cfg(target_arch = "x86_64")]
        let f: FastRow<_> = Some(simd::$kernel);
        #[cfg(not(target_arch = "x86_64"))]
        let f: FastRow<_> = None;
        f
    }};
}

/// The row quantizer of a 32-element format with importance weights
/// (ggml's `quantize_qX_Y` on one row): without an imatrix, the AVX2 row
/// kernel `fast` when the CPU has it, else `reference` block by block; with
/// one, `weighted` on each block and ggml's weights of that block.
fn quantize_row_blocks<B: Block>(
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
    fast: FastRow<B>,
    reference: fn(&[f32; QK], &mut B),
    weighted: fn(&[f32; QK], &[f32; QK], &mut B),
) {
    let ys = as_blocks_mut::<B>(dst);
    assert_eq!(src.len(), ys.len() * QK);
    let Some(qw) = imatrix else {
        #[cfg(target_arch = "x86_64")]
        if let Some(fast) = fast.filter(|_| simd::available()) {
            // SAFETY: AVX2 and F16C are available (checked just above).
            unsafe { fast(src, ys) };
            return;
        }
        let _ = fast;
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            reference(block_slice(x), y);
        }
        return;
    };
    assert_eq!(qw.len(), src.len());
    let sigma2 = row_sigma2(src);
    for ((x, qw), y) in src.chunks_exact(QK).zip(qw.chunks_exact(QK)).zip(ys) {
        let x = block_slice(x);
        weighted(x, &block_weights(x, qw, sigma2), y);
    }
}

/// Quantize a row to Q4_0 (`quantize_q4_0` on one row).
pub fn quantize_row_q4_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_row_blocks::<BlockQ4_0>(
        src,
        dst,
        imatrix,
        fast_row!(quantize_row_q4_0),
        quantize_block_q4_0_ref,
        |x, w, y| {
            let mut l = [0i8; QK];
            y.d = f16_bytes(make_qx_quants(8, x, &mut l, 1, Some(w)));
            for j in 0..QK / 2 {
                y.qs[j] = (l[j] as u8) | ((l[j + QK / 2] as u8) << 4);
            }
        },
    );
}

/// Quantize a row to Q4_1 (`quantize_q4_1` on one row).
pub fn quantize_row_q4_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_row_blocks::<BlockQ4_1>(
        src,
        dst,
        imatrix,
        fast_row!(quantize_row_q4_1),
        quantize_block_q4_1_ref,
        |x, w, y| {
            let mut l = [0u8; QK];
            let (rmin, rdelta, nstep) = IMPL_GRID;
            let (d, min) = make_qkx3_quants(15, x, Some(w), &mut l, rmin, rdelta, nstep, false);
            y.d = f16_bytes(d);
            y.m = f16_bytes(-min);
            for j in 0..QK / 2 {
                y.qs[j] = l[j] | (l[j + QK / 2] << 4);
            }
        },
    );
}

/// Quantize a row to Q5_0 (`quantize_q5_0` on one row).
pub fn quantize_row_q5_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_row_blocks::<BlockQ5_0>(
        src,
        dst,
        imatrix,
        fast_row!(quantize_row_q5_0),
        quantize_block_q5_0_ref,
        |x, w, y| {
            let mut l = [0i8; QK];
            y.d = f16_bytes(make_qx_quants(16, x, &mut l, 1, Some(w)));
            y.qh = pack_q5(&l.map(|v| v as u8), &mut y.qs);
        },
    );
}

/// Quantize a row to Q5_1 (`quantize_q5_1` on one row).
pub fn quantize_row_q5_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_row_blocks::<BlockQ5_1>(
        src,
        dst,
        imatrix,
        fast_row!(quantize_row_q5_1),
        quantize_block_q5_1_ref,
        |x, w, y| {
            let mut l = [0u8; QK];
            let (rmin, rdelta, nstep) = IMPL_GRID;
            let (d, min) = make_qkx3_quants(31, x, Some(w), &mut l, rmin, rdelta, nstep, false);
            y.d = f16_bytes(d);
            y.m = f16_bytes(-min);
            y.qh = pack_q5(&l, &mut y.qs);
        },
    );
}

/// Quantize a row to Q8_0 (`quantize_q8_0`: the importance matrix is unused).
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    let ys = as_blocks_mut::<BlockQ8_0>(dst);
    assert_eq!(src.len(), ys.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 and F16C are available (checked just above).
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
fn x86_mul(a: f32, b: f32) -> f32 {
    let r = a * b;
    if r.is_nan() {
        x86_nan(a, b)
    } else {
        r
    }
}

/// `a + b` with x86's NaN rule.
#[inline]
fn x86_add(a: f32, b: f32) -> f32 {
    let r = a + b;
    if r.is_nan() {
        x86_nan(a, b)
    } else {
        r
    }
}

/// A Q4_1/Q5_1 block whose scale or minimum is NaN, computed as ggml's
/// compiled `(float(q) * d) + m`, operands in that order (`qh` is 0 for
/// Q4_1).
fn dequantize_nan_block(qs: [u8; QK / 2], qh: u32, d: f32, m: f32, y: &mut [f32]) {
    for j in 0..QK / 2 {
        let xh0 = ((qh >> j) << 4) & 0x10;
        let xh1 = (qh >> (j + 12)) & 0x10;
        let q0 = (qs[j] & 0x0F) as u32 | xh0;
        let q1 = (qs[j] >> 4) as u32 | xh1;
        y[j] = x86_add(x86_mul(q0 as f32, d), m);
        y[j + QK / 2] = x86_add(x86_mul(q1 as f32, d), m);
    }
}

/// Defines the two dequantizers of a 32-element format: `$plain(src, dst)`
/// and `$streaming(src, dst)`, which writes the same values with
/// non-temporal stores (for outputs larger than the caches; it falls back
/// to the plain stores when `dst` is not 16-byte aligned). Both run the
/// AVX2 kernel `simd::$plain` when the CPU has it, else `$scalar`.
macro_rules! dequantize_entries {
    ($plain:ident, $streaming:ident, $block:ty, $scalar:ident, $name:literal) => {
        #[doc = concat!("Dequantize a ", $name, " row.")]
        pub fn $plain(src: &[u8], dst: &mut [f32]) {
            let xs = as_blocks::<$block>(src);
            assert_eq!(dst.len(), xs.len() * QK);
            #[cfg(target_arch = "x86_64")]
            if simd::available() {
                // SAFETY: AVX2 and F16C are available (checked just above).
                unsafe { simd::$plain::<false>(xs, dst) };
                return;
            }
            $scalar(xs, dst);
        }

        #[doc = concat!("Dequantize a ", $name, " row with non-temporal stores (same values).")]
        pub fn $streaming(src: &[u8], dst: &mut [f32]) {
            let xs = as_blocks::<$block>(src);
            assert_eq!(dst.len(), xs.len() * QK);
            #[cfg(target_arch = "x86_64")]
            if simd::available() && dst.as_ptr().align_offset(16) == 0 {
                // SAFETY: AVX2 and F16C are available and dst is 16-byte
                // aligned (checked just above); blocks are 128 bytes. The
                // fence orders the streamed stores before whatever follows.
                unsafe {
                    simd::$plain::<true>(xs, dst);
                    std::arch::x86_64::_mm_sfence();
                }
                return;
            }
            $plain(src, dst);
        }
    };
}

dequantize_entries!(
    dequantize_row_q4_0,
    dequantize_row_q4_0_streaming,
    BlockQ4_0,
    dequantize_blocks_q4_0,
    "Q4_0"
);

fn dequantize_blocks_q4_0(xs: &[BlockQ4_0], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_value(b.d);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            lo[j] = ((b.qs[j] & 0x0F) as i32 - 8) as f32 * d;
            hi[j] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

dequantize_entries!(
    dequantize_row_q4_1,
    dequantize_row_q4_1_streaming,
    BlockQ4_1,
    dequantize_blocks_q4_1,
    "Q4_1"
);

fn dequantize_blocks_q4_1(xs: &[BlockQ4_1], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_value(b.d);
        let m = f16_value(b.m);
        if d.is_nan() || m.is_nan() {
            dequantize_nan_block(b.qs, 0, d, m, y);
            continue;
        }
        let (lo, hi) = y.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            lo[j] = (b.qs[j] & 0x0F) as f32 * d + m;
            hi[j] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

dequantize_entries!(
    dequantize_row_q5_0,
    dequantize_row_q5_0_streaming,
    BlockQ5_0,
    dequantize_blocks_q5_0,
    "Q5_0"
);

fn dequantize_blocks_q5_0(xs: &[BlockQ5_0], dst: &mut [f32]) {
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

dequantize_entries!(
    dequantize_row_q5_1,
    dequantize_row_q5_1_streaming,
    BlockQ5_1,
    dequantize_blocks_q5_1,
    "Q5_1"
);

fn dequantize_blocks_q5_1(xs: &[BlockQ5_1], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_value(b.d);
        let m = f16_value(b.m);
        if d.is_nan() || m.is_nan() {
            dequantize_nan_block(b.qs, u32::from_le_bytes(b.qh), d, m, y);
            continue;
        }
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

dequantize_entries!(
    dequantize_row_q8_0,
    dequantize_row_q8_0_streaming,
    BlockQ8_0,
    dequantize_blocks_q8_0,
    "Q8_0"
);

fn dequantize_blocks_q8_0(xs: &[BlockQ8_0], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = f16_value(b.d);
        for (yj, &q) in y.iter_mut().zip(&b.qs) {
            *yj = q as i8 as f32 * d;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! AVX2 + F16C block kernels. Each computes, lane by lane, the same
    //! float operations as the scalar reference (no FMA, same rounding,
    //! `cvttps` truncation as C's conversions); blocks holding a NaN or an
    //! infinity go to the scalar code, where C's NaN-ordering subtleties are
    //! reproduced one element at a time.
    use super::*;
    use std::arch::x86_64::*;

    /// Whether the AVX2 + F16C paths can run.
    #[inline]
    pub fn available() -> bool {
        crate::quant::simd_allowed()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("f16c")
    }

    /// The block's 32 floats as four vectors.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load(x: &[f32]) -> [__m256; 4] {
        assert!(x.len() >= QK);
        let p = x.as_ptr();
        [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ]
    }

    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn abs(v: __m256) -> __m256 {
        _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF)))
    }

    /// All 32 values are finite (no NaN, no infinity).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn all_finite(a: &[__m256; 4]) -> bool {
        let inf = _mm256_set1_ps(f32::INFINITY);
        let ok = _mm256_and_ps(
            _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_LT_OQ>(a[0], inf),
                _mm256_cmp_ps::<_CMP_LT_OQ>(a[1], inf),
            ),
            _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_LT_OQ>(a[2], inf),
                _mm256_cmp_ps::<_CMP_LT_OQ>(a[3], inf),
            ),
        );
        _mm256_movemask_ps(ok) == 0xFF
    }

    /// Horizontal maximum (values are not NaN).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
        _mm_cvtss_f32(m)
    }

    /// Horizontal minimum (values are not NaN).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn hmin(v: __m256) -> f32 {
        let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_min_ss(m, _mm_shuffle_ps::<1>(m, m));
        _mm_cvtss_f32(m)
    }

    /// Bit j set when lane j of the block compares equal to `t`.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn eq_mask(v: &[__m256; 4], t: f32) -> u32 {
        let t = _mm256_set1_ps(t);
        let mut m = 0u32;
        for (k, vk) in v.iter().enumerate() {
            m |= (_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(*vk, t)) as u32) << (8 * k);
        }
        m
    }

    /// The first element equal to `value` (which must occur), to recover
    /// the sign of a zero extreme the way C's sequential scan keeps it.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn first_equal(x: &[f32], v: &[__m256; 4], value: f32) -> f32 {
        x[eq_mask(v, value).trailing_zeros() as usize]
    }

    /// ggml's F16 bits of a value that is not NaN (hardware rounding is
    /// ggml's there; NaN would need ggml's canonical 0x7E00).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn f16(x: f32) -> [u8; 2] {
        if x.is_nan() {
            return f16_bytes(x);
        }
        let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x));
        (_mm_extract_epi16::<0>(h) as u16).to_le_bytes()
    }

    /// The scalar F16 → F32 of a block scale (F16C is exact, NaNs quieted
    /// like ggml's).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn f32_of(h: [u8; 2]) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(
            _mm_cvtsi32_si128(u16::from_le_bytes(h) as i32),
        ))
    }

    /// Signed value of largest magnitude, first on ties (as `signed_absmax`),
    /// for a block with no NaN.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn signed_absmax_v(x: &[f32], a: &[__m256; 4]) -> f32 {
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let amax = hmax(m);
        if amax == 0.0 {
            return 0.0;
        }
        x[eq_mask(a, amax).trailing_zeros() as usize]
    }

    /// `(min, max)` as the scalar `min_max`, for a block with no NaN.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn min_max_v(x: &[f32], v: &[__m256; 4]) -> (f32, f32) {
        let mn = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
        let mx = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
        let (mut min, mut max) = (hmin(mn), hmax(mx));
        if min == 0.0 {
            min = first_equal(x, v, 0.0);
        }
        if max == 0.0 {
            max = first_equal(x, v, 0.0);
        }
        (min, max)
    }

    /// `cvtt(v * id + bias)` on four vectors, or `cvtt((v - min) * id + bias)`
    /// when `min` is given (each operation rounded separately, as in C).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn scale_round(v: &[__m256; 4], min: Option<f32>, id: f32, bias: f32) -> [__m256i; 4] {
        let idv = _mm256_set1_ps(id);
        let b = _mm256_set1_ps(bias);
        let mut q = [_mm256_setzero_si256(); 4];
        for k in 0..4 {
            let t = match min {
                Some(m) => _mm256_sub_ps(v[k], _mm256_set1_ps(m)),
                None => v[k],
            };
            q[k] = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(t, idv), b));
        }
        q
    }

    /// `qs[j] = q[j] | q[j+16] << 4` for values already in 0..=15 (or
    /// `i32::MIN`, which saturates to 0 like C's low byte of it).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn pack_nibbles(q: &[__m256i; 4], qs: &mut [u8; QK / 2]) {
        let lo = _mm256_or_si256(q[0], _mm256_slli_epi32::<4>(q[2]));
        let hi = _mm256_or_si256(q[1], _mm256_slli_epi32::<4>(q[3]));
        let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(lo, hi));
        let b = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
        _mm_storeu_si128(qs.as_mut_ptr() as *mut __m128i, b);
    }

    /// Low nibbles into `qs`, fifth bits into the returned `qh`.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn pack_q5_v(q: &[__m256i; 4], qs: &mut [u8; QK / 2]) -> [u8; 4] {
        let nib = _mm256_set1_epi32(0x0F);
        let low = [
            _mm256_and_si256(q[0], nib),
            _mm256_and_si256(q[1], nib),
            _mm256_and_si256(q[2], nib),
            _mm256_and_si256(q[3], nib),
        ];
        pack_nibbles(&low, qs);
        let mut qh = 0u32;
        for (k, qk) in q.iter().enumerate() {
            let bit4 = _mm256_castsi256_ps(_mm256_slli_epi32::<27>(*qk));
            qh |= (_mm256_movemask_ps(bit4) as u32) << (8 * k);
        }
        qh.to_le_bytes()
    }

    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn min_epi32(q: [__m256i; 4], hi: i32) -> [__m256i; 4] {
        let h = _mm256_set1_epi32(hi);
        q.map(|v| _mm256_min_epi32(v, h))
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn quantize_row_q4_0(src: &[f32], ys: &mut [BlockQ4_0]) {
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            let v = load(x);
            let a = v.map(|t| abs(t));
            if !all_finite(&a) {
                quantize_block_q4_0_ref(block_slice(x), y);
                continue;
            }
            let max = signed_absmax_v(x, &a);
            let d = max / -8.0;
            let id = inverse_or_zero(d);
            y.d = f16(d);
            let q = min_epi32(scale_round(&v, None, id, 8.5), 15);
            pack_nibbles(&q, &mut y.qs);
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn quantize_row_q4_1(src: &[f32], ys: &mut [BlockQ4_1]) {
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            let v = load(x);
            if !all_finite(&v.map(|t| abs(t))) {
                quantize_block_q4_1_ref(block_slice(x), y);
                continue;
            }
            let (min, max) = min_max_v(x, &v);
            let d = (max - min) / 15.0;
            let id = inverse_or_zero(d);
            y.d = f16(d);
            y.m = f16(min);
            let q = min_epi32(scale_round(&v, Some(min), id, 0.5), 15);
            pack_nibbles(&q, &mut y.qs);
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn quantize_row_q5_0(src: &[f32], ys: &mut [BlockQ5_0]) {
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            let v = load(x);
            let a = v.map(|t| abs(t));
            if !all_finite(&a) {
                quantize_block_q5_0_ref(block_slice(x), y);
                continue;
            }
            let max = signed_absmax_v(x, &a);
            let d = max / -16.0;
            let id = inverse_or_zero(d);
            y.d = f16(d);
            let q = min_epi32(scale_round(&v, None, id, 16.5), 31);
            y.qh = pack_q5_v(&q, &mut y.qs);
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn quantize_row_q5_1(src: &[f32], ys: &mut [BlockQ5_1]) {
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            let v = load(x);
            if !all_finite(&v.map(|t| abs(t))) {
                quantize_block_q5_1_ref(block_slice(x), y);
                continue;
            }
            let (min, max) = min_max_v(x, &v);
            let d = (max - min) / 31.0;
            let id = inverse_or_zero(d);
            y.d = f16(d);
            y.m = f16(min);
            let q = scale_round(&v, Some(min), id, 0.5);
            y.qh = pack_q5_v(&q, &mut y.qs);
        }
    }

    /// C's `roundf` (half away from zero) on a vector, exactly: truncate,
    /// then step away from zero when the (exact) remainder is at least 1/2.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn round_half_away(x: __m256) -> __m256 {
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
        let rem = abs(_mm256_sub_ps(x, t));
        let step = _mm256_or_ps(_mm256_and_ps(x, _mm256_set1_ps(-0.0)), _mm256_set1_ps(1.0));
        let away = _mm256_cmp_ps::<_CMP_GE_OQ>(rem, _mm256_set1_ps(0.5));
        _mm256_add_ps(t, _mm256_and_ps(away, step))
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn quantize_row_q8_0(src: &[f32], ys: &mut [BlockQ8_0]) {
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            let v = load(x);
            let a = v.map(|t| abs(t));
            if !all_finite(&a) {
                quantize_block_q8_0_ref(block_slice(x), y);
                continue;
            }
            let amax = hmax(_mm256_max_ps(
                _mm256_max_ps(a[0], a[1]),
                _mm256_max_ps(a[2], a[3]),
            ));
            let d = amax / 127.0;
            let id = inverse_or_zero(d);
            y.d = f16(d);
            let idv = _mm256_set1_ps(id);
            // Keep the low byte of each i32 (C's narrowing; `i32::MIN` from
            // an infinite `x * id` becomes 0), then pack without saturating.
            let low = _mm256_set1_epi32(0xFF);
            let q = v.map(|t| {
                let r = _mm256_cvttps_epi32(round_half_away(_mm256_mul_ps(t, idv)));
                _mm256_and_si256(r, low)
            });
            let a16 = _mm256_packus_epi32(q[0], q[1]);
            let b16 = _mm256_packus_epi32(q[2], q[3]);
            let c8 = _mm256_packus_epi16(a16, b16);
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            let out = _mm256_permutevar8x32_epi32(c8, order);
            _mm256_storeu_si256(y.qs.as_mut_ptr() as *mut __m256i, out);
        }
    }

    // -- dequantization ------------------------------------------------------

    /// The 32 nibbles of `qs` as i32 vectors: elements 0..8, 8..16 (low
    /// nibbles) and 16..24, 24..32 (high nibbles).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn nibbles(qs: &[u8; QK / 2]) -> [__m256i; 4] {
        let b = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
        let m = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(b, m);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
        [
            _mm256_cvtepu8_epi32(lo),
            _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(lo, lo)),
            _mm256_cvtepu8_epi32(hi),
            _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(hi, hi)),
        ]
    }

    /// The fifth bits of Q5 blocks as 0 or 16 per element, same layout.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn fifth_bits(qh: [u8; 4]) -> [__m256i; 4] {
        let qh = u32::from_le_bytes(qh) as i32;
        let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let sixteen = _mm256_set1_epi32(16);
        let mut out = [_mm256_setzero_si256(); 4];
        for (k, o) in out.iter_mut().enumerate() {
            let h = _mm256_set1_epi32(qh >> (8 * k));
            let set = _mm256_cmpeq_epi32(_mm256_and_si256(h, bits), bits);
            *o = _mm256_and_si256(set, sixteen);
        }
        out
    }

    /// `y = float(q - offset) * d (+ m)`, each step rounded as in C; with
    /// `NT`, non-temporal stores (`y` must then be 16-byte aligned).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn store_scaled<const NT: bool>(
        q: [__m256i; 4],
        offset: i32,
        d: f32,
        m: Option<f32>,
        y: &mut [f32],
    ) {
        assert!(y.len() >= QK);
        let off = _mm256_set1_epi32(offset);
        let dv = _mm256_set1_ps(d);
        for (k, qk) in q.iter().enumerate() {
            let f = _mm256_cvtepi32_ps(_mm256_sub_epi32(*qk, off));
            let mut r = _mm256_mul_ps(f, dv);
            if let Some(m) = m {
                r = _mm256_add_ps(r, _mm256_set1_ps(m));
            }
            // Two 16-byte stores: when the output streams to memory they
            // measured ~5-10% faster here than one 32-byte store.
            let (lo, hi) = (_mm256_castps256_ps128(r), _mm256_extractf128_ps::<1>(r));
            if NT {
                _mm_stream_ps(y.as_mut_ptr().add(8 * k), lo);
                _mm_stream_ps(y.as_mut_ptr().add(8 * k + 4), hi);
            } else {
                _mm_storeu_ps(y.as_mut_ptr().add(8 * k), lo);
                _mm_storeu_ps(y.as_mut_ptr().add(8 * k + 4), hi);
            }
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dequantize_row_q4_0<const NT: bool>(xs: &[BlockQ4_0], dst: &mut [f32]) {
        for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
            store_scaled::<NT>(nibbles(&b.qs), 8, f32_of(b.d), None, y);
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dequantize_row_q4_1<const NT: bool>(xs: &[BlockQ4_1], dst: &mut [f32]) {
        for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
            let (d, m) = (f32_of(b.d), f32_of(b.m));
            if d.is_nan() || m.is_nan() {
                dequantize_nan_block(b.qs, 0, d, m, y);
                continue;
            }
            store_scaled::<NT>(nibbles(&b.qs), 0, d, Some(m), y);
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dequantize_row_q5_0<const NT: bool>(xs: &[BlockQ5_0], dst: &mut [f32]) {
        for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
            let n = nibbles(&b.qs);
            let h = fifth_bits(b.qh);
            let q = [0, 1, 2, 3].map(|k| _mm256_or_si256(n[k], h[k]));
            store_scaled::<NT>(q, 16, f32_of(b.d), None, y);
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dequantize_row_q5_1<const NT: bool>(xs: &[BlockQ5_1], dst: &mut [f32]) {
        for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
            let n = nibbles(&b.qs);
            let h = fifth_bits(b.qh);
            let q = [0, 1, 2, 3].map(|k| _mm256_or_si256(n[k], h[k]));
            let (d, m) = (f32_of(b.d), f32_of(b.m));
            if d.is_nan() || m.is_nan() {
                dequantize_nan_block(b.qs, u32::from_le_bytes(b.qh), d, m, y);
                continue;
            }
            store_scaled::<NT>(q, 0, d, Some(m), y);
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dequantize_row_q8_0<const NT: bool>(xs: &[BlockQ8_0], dst: &mut [f32]) {
        for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
            let p = b.qs.as_ptr();
            let q = [0, 1, 2, 3]
                .map(|k| _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(8 * k) as *const __m128i)));
            store_scaled::<NT>(q, 0, f32_of(b.d), None, y);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The AVX2 paths against the scalar reference on awkward blocks
    //! (the differential tests against ggml cover ordinary data).
    use super::*;

    type RowQuantizer = fn(&[f32], &mut [u8], Option<&[f32]>);

    fn scalar_q4_0(src: &[f32], dst: &mut [u8], _: Option<&[f32]>) {
        for (x, y) in src.chunks_exact(QK).zip(as_blocks_mut::<BlockQ4_0>(dst)) {
            quantize_block_q4_0_ref(block_slice(x), y);
        }
    }
    fn scalar_q4_1(src: &[f32], dst: &mut [u8], _: Option<&[f32]>) {
        for (x, y) in src.chunks_exact(QK).zip(as_blocks_mut::<BlockQ4_1>(dst)) {
            quantize_block_q4_1_ref(block_slice(x), y);
        }
    }
    fn scalar_q5_0(src: &[f32], dst: &mut [u8], _: Option<&[f32]>) {
        for (x, y) in src.chunks_exact(QK).zip(as_blocks_mut::<BlockQ5_0>(dst)) {
            quantize_block_q5_0_ref(block_slice(x), y);
        }
    }
    fn scalar_q5_1(src: &[f32], dst: &mut [u8], _: Option<&[f32]>) {
        for (x, y) in src.chunks_exact(QK).zip(as_blocks_mut::<BlockQ5_1>(dst)) {
            quantize_block_q5_1_ref(block_slice(x), y);
        }
    }
    fn scalar_q8_0(src: &[f32], dst: &mut [u8], _: Option<&[f32]>) {
        for (x, y) in src.chunks_exact(QK).zip(as_blocks_mut::<BlockQ8_0>(dst)) {
            quantize_block_q8_0_ref(block_slice(x), y);
        }
    }

    /// Blocks mixing signed zeros, ties of ±x, ranges that overflow,
    /// subnormals and scales at the F16 edges.
    fn awkward_blocks() -> Vec<f32> {
        let mut out = Vec::new();
        let mut r = crate::rng::TestRng(0x1234_5678);
        let mut next = move || r.next();
        let pool = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.5,
            -2.5,
            1e-41,
            -1e-41,
            3e38,
            -3e38,
            65504.0,
            6e-8,
            -6e-8,
            0.49999997,
            -0.49999997,
            7.5,
            -8.0,
            1e-30,
            12345.678,
        ];
        for _ in 0..4000 {
            let scale = f32::from_bits(((next() % 254 + 1) << 23) as u32);
            for _ in 0..QK {
                let r = next();
                let v = if r % 3 == 0 {
                    pool[(r >> 8) as usize % pool.len()]
                } else {
                    ((r >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * scale
                };
                out.push(v);
            }
        }
        out
    }

    #[test]
    fn simd_paths_equal_scalar() {
        let kernels: [(&str, RowQuantizer, RowQuantizer, usize); 5] = [
            ("q4_0", quantize_row_q4_0, scalar_q4_0, 18),
            ("q4_1", quantize_row_q4_1, scalar_q4_1, 20),
            ("q5_0", quantize_row_q5_0, scalar_q5_0, 22),
            ("q5_1", quantize_row_q5_1, scalar_q5_1, 24),
            ("q8_0", quantize_row_q8_0, scalar_q8_0, 34),
        ];
        let src = awkward_blocks();
        for (name, quant, scalar, bytes) in kernels {
            let nb = src.len() / QK;
            let mut fast = vec![0u8; nb * bytes];
            let mut slow = vec![0u8; nb * bytes];
            quant(&src, &mut fast, None);
            scalar(&src, &mut slow, None);
            for b in 0..nb {
                assert_eq!(
                    fast[b * bytes..(b + 1) * bytes],
                    slow[b * bytes..(b + 1) * bytes],
                    "{name} block {b}: {:?}",
                    &src[b * QK..(b + 1) * QK]
                );
            }
        }
    }
}

#[cfg(test)]
mod dequant_tests {
    use super::*;

    /// Row dequantizers (SIMD where available) equal the scalar ones bit for
    /// bit on random bytes, NaN/∞/subnormal scales included.
    #[test]
    fn row_dequantizers_equal_scalar() {
        let mut r = crate::rng::TestRng(0x9E37_79B9_7F4A_7C15);
        let bytes: Vec<u8> = (0..34 * 20000).map(|_| r.next() as u8).collect();
        fn check<B: Block>(
            name: &str,
            bytes: &[u8],
            row: fn(&[u8], &mut [f32]),
            scalar: fn(&[B], &mut [f32]),
        ) {
            let size = std::mem::size_of::<B>();
            let src = &bytes[..bytes.len() / size * size];
            let n = src.len() / size * QK;
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            row(src, &mut a);
            scalar(as_blocks::<B>(src), &mut b);
            for i in 0..n {
                assert_eq!(a[i].to_bits(), b[i].to_bits(), "{name} element {i}");
            }
        }
        check::<BlockQ4_0>("q4_0", &bytes, dequantize_row_q4_0, dequantize_blocks_q4_0);
        check::<BlockQ4_1>("q4_1", &bytes, dequantize_row_q4_1, dequantize_blocks_q4_1);
        check::<BlockQ5_0>("q5_0", &bytes, dequantize_row_q5_0, dequantize_blocks_q5_0);
        check::<BlockQ5_1>("q5_1", &bytes, dequantize_row_q5_1, dequantize_blocks_q5_1);
        check::<BlockQ8_0>("q8_0", &bytes, dequantize_row_q8_0, dequantize_blocks_q8_0);
    }
}
