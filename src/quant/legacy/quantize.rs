//! The row quantizers of the five formats (ggml's `quantize_q4_0` … on one
//! row): the reference block rules (no importance matrix), ggml's weights of
//! a block from the importance matrix, and the skeleton that picks the AVX2
//! row kernel, the reference or the weighted search.

use super::x86_nan::{x86_add, x86_mul};
use super::*;
use crate::quant::block::as_blocks_mut;
use crate::quant::search::{make_qkx3_quants, make_qx_quants, IMPL_GRID};

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
pub(super) fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

pub(super) fn quantize_block_q4_0_ref(x: &[f32; QK], y: &mut BlockQ4_0) {
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

pub(super) fn quantize_block_q4_1_ref(x: &[f32; QK], y: &mut BlockQ4_1) {
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

pub(super) fn quantize_block_q5_0_ref(x: &[f32; QK], y: &mut BlockQ5_0) {
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

pub(super) fn quantize_block_q5_1_ref(x: &[f32; QK], y: &mut BlockQ5_1) {
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

pub(super) fn quantize_block_q8_0_ref(x: &[f32; QK], y: &mut BlockQ8_0) {
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

/// An AVX2 row kernel (`simd::quantize_row_*`, telling whether every value
/// was finite), as the skeleton below takes it: `None` off x86-64.
type FastRow<B> = Option<unsafe fn(&[f32], &mut [B]) -> bool>;

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
/// one, `weighted` on each block and ggml's weights of that block. Returns
/// whether every value was finite (the AVX2 kernel knows it from its own
/// loads; the other paths check afterwards).
fn quantize_row_blocks<B: Block>(
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
    fast: FastRow<B>,
    reference: fn(&[f32; QK], &mut B),
    weighted: fn(&[f32; QK], &[f32; QK], &mut B),
) -> bool {
    let ys = as_blocks_mut::<B>(dst);
    assert_eq!(src.len(), ys.len() * QK);
    let Some(qw) = imatrix else {
        #[cfg(target_arch = "x86_64")]
        if let Some(fast) = fast.filter(|_| crate::quant::cpu::avx2_f16c()) {
            // SAFETY: AVX2 and F16C are available (checked just above).
            return unsafe { fast(src, ys) };
        }
        let _ = fast;
        for (x, y) in src.chunks_exact(QK).zip(ys) {
            reference(block_slice(x), y);
        }
        return src.iter().all(|v| v.is_finite());
    };
    assert_eq!(qw.len(), src.len());
    let sigma2 = row_sigma2(src);
    for ((x, qw), y) in src.chunks_exact(QK).zip(qw.chunks_exact(QK)).zip(ys) {
        let x = block_slice(x);
        weighted(x, &block_weights(x, qw, sigma2), y);
    }
    src.iter().all(|v| v.is_finite())
}

/// Quantize a row to Q4_0 (`quantize_q4_0` on one row).
pub fn quantize_row_q4_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    row_q4_0(src, dst, imatrix);
}

/// [`quantize_row_q4_0`] without imatrix, telling whether every value was
/// finite (the streaming flag is unused: no streaming variant).
pub fn quantize_row_q4_0_checked(src: &[f32], dst: &mut [u8], _streaming: bool) -> bool {
    row_q4_0(src, dst, None)
}

fn row_q4_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) -> bool {
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
    )
}

/// Quantize a row to Q4_1 (`quantize_q4_1` on one row).
pub fn quantize_row_q4_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    row_q4_1(src, dst, imatrix);
}

/// [`quantize_row_q4_1`] without imatrix, telling whether every value was
/// finite (the streaming flag is unused: no streaming variant).
pub fn quantize_row_q4_1_checked(src: &[f32], dst: &mut [u8], _streaming: bool) -> bool {
    row_q4_1(src, dst, None)
}

fn row_q4_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) -> bool {
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
    )
}

/// Quantize a row to Q5_0 (`quantize_q5_0` on one row).
pub fn quantize_row_q5_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    row_q5_0(src, dst, imatrix);
}

/// [`quantize_row_q5_0`] without imatrix, telling whether every value was
/// finite (the streaming flag is unused: no streaming variant).
pub fn quantize_row_q5_0_checked(src: &[f32], dst: &mut [u8], _streaming: bool) -> bool {
    row_q5_0(src, dst, None)
}

fn row_q5_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) -> bool {
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
    )
}

/// Quantize a row to Q5_1 (`quantize_q5_1` on one row).
pub fn quantize_row_q5_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    row_q5_1(src, dst, imatrix);
}

/// [`quantize_row_q5_1`] without imatrix, telling whether every value was
/// finite (the streaming flag is unused: no streaming variant).
pub fn quantize_row_q5_1_checked(src: &[f32], dst: &mut [u8], _streaming: bool) -> bool {
    row_q5_1(src, dst, None)
}

fn row_q5_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) -> bool {
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
    )
}

/// Quantize a row to Q8_0 (`quantize_q8_0`: the importance matrix is unused).
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    quantize_row_q8_0_checked(src, dst, false);
}

/// [`quantize_row_q8_0`], telling whether every value was finite (the
/// streaming flag is unused: no streaming variant).
pub fn quantize_row_q8_0_checked(src: &[f32], dst: &mut [u8], _streaming: bool) -> bool {
    let ys = as_blocks_mut::<BlockQ8_0>(dst);
    assert_eq!(src.len(), ys.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu::avx2_f16c() {
        // SAFETY: AVX2 and F16C are available (checked just above).
        return unsafe { simd::quantize_row_q8_0(src, ys) };
    }
    for (x, y) in src.chunks_exact(QK).zip(ys) {
        quantize_block_q8_0_ref(block_slice(x), y);
    }
    src.iter().all(|v| v.is_finite())
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
