//! The 4-bit non-linear formats IQ4_NL (blocks of 32) and IQ4_XS
//! (super-blocks of 256 with a 6-bit scale per 32), both on ggml's 16-entry
//! grid [`KVALUES_IQ4NL`].
//!
//! Both go through one search, ggml's `quantize_row_iq4_nl_impl` as
//! `quantize_iq4_nl` / `quantize_iq4_xs` call it (`ntry = 7`, with or
//! without importance matrix): for each block of 32, a first scale from the
//! extreme value, then 15 more candidate scales, keeping the one that
//! maximises the weighted correlation; IQ4_XS then quantizes the eight block
//! scales to 6 bits against a super-block scale and re-picks every element.
//! The weights are `x^2` without importance matrix and
//! `imatrix[j] * sqrt(sigma2 + x^2)` with one (`sigma2` = twice the
//! super-block's mean square).
//!
//! The scale candidates are independent, so the AVX2 path evaluates them in
//! parallel, one per lane; within a lane, sums run in ggml's element order,
//! so the arithmetic is the same operation for operation.

use super::block::{as_blocks_mut, Block};
use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::search::{nearest_int, GROUP_MAX_EPS};
use super::{Format, QuantType};
use std::sync::OnceLock;

/// ggml's non-linear 4-bit grid (`kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Elements per IQ4_NL block, and per sub-block of IQ4_XS.
pub const QK4_NL: usize = 32;
/// Elements per IQ4_XS super-block.
pub const QK_K: usize = 256;

/// Scale candidates tried on each side of the first one (ggml's `ntry`).
const NTRY: i32 = 7;

/// IQ4_NL block: `d * KVALUES_IQ4NL[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockIq4Nl {
    /// Scale, IEEE half, little-endian.
    pub d: [u8; 2],
    /// Element j in the low nibble of byte j, element j+16 in the high one.
    pub qs: [u8; QK4_NL / 2],
}

/// IQ4_XS super-block: `d * (ls - 32) * KVALUES_IQ4NL[q]`, `ls` a 6-bit
/// scale per 32 elements.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockIq4Xs {
    pub d: [u8; 2],
    /// High 2 bits of the eight scales (u16, little-endian), 2 bits each.
    pub scales_h: [u8; 2],
    /// Low 4 bits of the eight scales, two per byte.
    pub scales_l: [u8; QK_K / 64],
    /// Nibbles, laid out per 32 elements as in IQ4_NL.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == 18);
const _: () = assert!(std::mem::size_of::<BlockIq4Xs>() == 136);

// SAFETY: both are #[repr(C)] structs of u8 arrays.
unsafe impl Block for BlockIq4Nl {}
unsafe impl Block for BlockIq4Xs {}

/// Formats registered by this module.
pub static FORMATS: &[Format] = &[
    Format {
        ty: QuantType::IQ4_NL,
        name: "iq4_nl",
        block_size: QK4_NL,
        block_bytes: std::mem::size_of::<BlockIq4Nl>(),
        quantize_row: quantize_row_iq4_nl,
        quantize_row_streaming: None,
        quantize_row_checked: None,
        dequantize_row: dequantize_row_iq4_nl,
        dequantize_row_streaming: Some(dequantize_row_iq4_nl_streaming),
    },
    Format {
        ty: QuantType::IQ4_XS,
        name: "iq4_xs",
        block_size: QK_K,
        block_bytes: std::mem::size_of::<BlockIq4Xs>(),
        quantize_row: quantize_row_iq4_xs,
        quantize_row_streaming: None,
        quantize_row_checked: None,
        dequantize_row: dequantize_row_iq4_xs,
        dequantize_row_streaming: Some(dequantize_row_iq4_xs_streaming),
    },
];

/// Index of the grid value nearest to `x` (ggml's `best_index_int8`):
/// clamps to the ends, binary search, then ties go to the upper value.
/// A NaN gives 15, as in C.
#[inline]
pub fn best_index_int8(val: &[i8; 16], x: f32) -> usize {
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < (val[mu] as f32) - x {
        mu - 1
    } else {
        mu
    }
}

/// Signed value of largest magnitude (first on ties, NaNs skipped) and its
/// magnitude, as ggml's `if (ax > amax) { amax = ax; max = xb[j]; }`.
#[inline]
fn signed_absmax(xb: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in xb {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (amax, max)
}

/// The 16 inverse scales ggml tries for a block whose signed extreme is
/// `max`: first `1/d` with `d = -max/values[0]`, then `(itry + values[0]) /
/// max` for `itry = -7..=7`.
#[inline]
fn candidate_inverse_scales(max: f32) -> [f32; 16] {
    let values = &KVALUES_IQ4NL;
    let mut ids = [0.0f32; 16];
    let d = -max / values[0] as f32;
    ids[0] = 1.0 / d;
    for (k, itry) in (-NTRY..=NTRY).enumerate() {
        ids[k + 1] = (itry + values[0] as i32) as f32 / max;
    }
    ids
}

/// ggml's choice among the candidates, given each one's `(Σ w·q·x, Σ w·q²)`:
/// the first candidate's least-squares scale, replaced by a later one's
/// whenever that correlates better.
#[inline]
fn select_scale(sumqx: &[f32; 16], sumq2: &[f32; 16]) -> f32 {
    let mut d = if sumq2[0] > 0.0 {
        sumqx[0] / sumq2[0]
    } else {
        0.0
    };
    let mut best = d * sumqx[0];
    for t in 1..16 {
        if sumq2[t] > 0.0 && sumqx[t] * sumqx[t] > best * sumq2[t] {
            d = sumqx[t] / sumq2[t];
            best = d * sumqx[t];
        }
    }
    d
}

/// The best scale of one block of 32 (the first half of ggml's
/// `quantize_row_iq4_nl_impl` loop body, `ntry > 0`), or 0 for a block of
/// (near) zeros.
fn block_scale_scalar(xb: &[f32], weight: &[f32; QK4_NL]) -> f32 {
    let (amax, max) = signed_absmax(xb);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let ids = candidate_inverse_scales(max);
    let (mut sumqx, mut sumq2) = ([0.0f32; 16], [0.0f32; 16]);
    for t in 0..16 {
        (sumqx[t], sumq2[t]) = correlation(xb, weight, ids[t]);
    }
    select_scale(&sumqx, &sumq2)
}

/// `(Σ w·q·x, Σ w·q²)` in element order, `q` the grid value nearest `id·x`.
#[inline]
fn correlation(xb: &[f32], weight: &[f32; QK4_NL], id: f32) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (&x, &w) in xb.iter().zip(weight) {
        let q = KVALUES_IQ4NL[best_index_int8(&KVALUES_IQ4NL, id * x)] as f32;
        sumqx += w * q * x;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// `grid_thresholds()[k-1]` is the smallest float `x` for which
/// [`best_index_int8`] prefers grid value `k` over `k-1` (ggml's
/// `!(x - val[k-1] < val[k] - x)`, rounding included). That test is monotone
/// in `x`, so the index of any non-NaN `x` is the number of thresholds it
/// reaches, and a NaN (which never compares less) reaches all 15, as in C.
pub(crate) fn grid_thresholds() -> &'static [f32; 15] {
    static THRESHOLDS: OnceLock<[f32; 15]> = OnceLock::new();
    THRESHOLDS.get_or_init(|| {
        // C's test, NaN-aware on purpose: "not less than".
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        fn prefers_upper(x: f32, a: f32, b: f32) -> bool {
            !(x - a < b - x)
        }
        // Neighbouring floats of a nonzero finite x.
        let up = |x: f32| {
            f32::from_bits(if x > 0.0 {
                x.to_bits() + 1
            } else {
                x.to_bits() - 1
            })
        };
        let down = |x: f32| {
            f32::from_bits(if x > 0.0 {
                x.to_bits() - 1
            } else {
                x.to_bits() + 1
            })
        };
        std::array::from_fn(|i| {
            let a = KVALUES_IQ4NL[i] as f32;
            let b = KVALUES_IQ4NL[i + 1] as f32;
            // The midpoint is exact and nonzero; walk to the first float
            // that prefers the upper value.
            let mut x = (a + b) * 0.5;
            if prefers_upper(x, a, b) {
                while prefers_upper(down(x), a, b) {
                    x = down(x);
                }
            } else {
                while !prefers_upper(x, a, b) {
                    x = up(x);
                }
            }
            x
        })
    })
}

/// The weights of one block: `x^2`, or `qw * sqrt(sigma2 + x^2)`.
#[inline]
fn block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32) -> [f32; QK4_NL] {
    let mut w = [0.0f32; QK4_NL];
    match qw {
        Some(qw) => {
            for j in 0..QK4_NL {
                w[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
            }
        }
        None => {
            for j in 0..QK4_NL {
                w[j] = xb[j] * xb[j];
            }
        }
    }
    w
}

/// ggml's `sigma2` of a super-block: `Σ x² · (2 / size)`, summed in order.
fn super_block_sigma2(x: &[f32]) -> f32 {
    let mut sigma2 = 0.0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 * (2.0 / x.len() as f32)
}

/// Packs 32 grid indices per 16 bytes (element j low, j+16 high).
fn pack_nibbles(l: &[u8], q4: &mut [u8]) {
    for (lb, qb) in l.chunks_exact(32).zip(q4.chunks_exact_mut(16)) {
        for j in 0..16 {
            qb[j] = lb[j] | (lb[16 + j] << 4);
        }
    }
}

/// Grid indices of `x` at inverse scale `id` (ggml's final re-pick).
fn pick_indices(x: &[f32], id: f32, l: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu::avx2() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { simd::pick_indices(x, id, l) };
        return;
    }
    for (lj, &xj) in l.iter_mut().zip(x) {
        *lj = best_index_int8(&KVALUES_IQ4NL, id * xj) as u8;
    }
}

fn block_scale(xb: &[f32], weight: &[f32; QK4_NL]) -> f32 {
    #[cfg(all(target_arch = "x86_64", ggml_qat_avx512))]
    if crate::quant::cpu::avx512() {
        // SAFETY: AVX2, AVX-512F and AVX-512VL are available (checked just
        // above).
        return unsafe { simd::block_scale_avx512(xb, weight) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu::avx2() {
        // SAFETY: AVX2 is available (checked just above).
        return unsafe { simd::block_scale(xb, weight) };
    }
    block_scale_scalar(xb, weight)
}

/// One IQ4_NL block (`quantize_row_iq4_nl_impl(32, 32, …, ntry = 7)`).
fn quantize_block_iq4_nl(x: &[f32], qw: Option<&[f32]>, y: &mut BlockIq4Nl) {
    let sigma2 = if qw.is_some() {
        super_block_sigma2(x)
    } else {
        0.0
    };
    let weight = block_weights(x, qw, sigma2);
    let scale = block_scale(x, &weight);
    y.d = fp32_to_fp16(scale).to_le_bytes();
    let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let mut l = [0u8; QK4_NL];
    pick_indices(x, id, &mut l);
    pack_nibbles(&l, &mut y.qs);
}

/// One IQ4_XS super-block (`quantize_row_iq4_nl_impl(256, 32, …, ntry = 7)`).
fn quantize_block_iq4_xs(x: &[f32], qw: Option<&[f32]>, y: &mut BlockIq4Xs) {
    const NB: usize = QK_K / QK4_NL;
    let sigma2 = if qw.is_some() {
        super_block_sigma2(x)
    } else {
        0.0
    };
    let mut scales = [0.0f32; NB];
    let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
    for ib in 0..NB {
        let xb = &x[ib * QK4_NL..(ib + 1) * QK4_NL];
        let weight = block_weights(xb, qw.map(|w| &w[ib * QK4_NL..(ib + 1) * QK4_NL]), sigma2);
        let d = block_scale(xb, &weight);
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }

    let d = -max_scale / 32.0;
    y.d = fp32_to_fp16(d).to_le_bytes();
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut scales_h = 0u16;
    let mut l = [0u8; QK_K];
    for ib in 0..NB {
        let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
        let dl = d * ls as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        pick_indices(
            &x[ib * QK4_NL..(ib + 1) * QK4_NL],
            idl,
            &mut l[ib * QK4_NL..(ib + 1) * QK4_NL],
        );
        let ls = (ls + 32) as u8;
        if ib % 2 == 0 {
            y.scales_l[ib / 2] = ls & 0x0F;
        } else {
            y.scales_l[ib / 2] |= (ls & 0x0F) << 4;
        }
        scales_h |= ((ls >> 4) as u16) << (2 * (ib % 8));
    }
    y.scales_h = scales_h.to_le_bytes();
    pack_nibbles(&l, &mut y.qs);
}

/// Quantize a row to IQ4_NL (`quantize_iq4_nl` on one row).
pub fn quantize_row_iq4_nl(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let ys = as_blocks_mut::<BlockIq4Nl>(dst);
    assert_eq!(src.len(), ys.len() * QK4_NL);
    if let Some(w) = imatrix {
        assert_eq!(w.len(), src.len());
    }
    for (ib, (x, y)) in src.chunks_exact(QK4_NL).zip(ys).enumerate() {
        let qw = imatrix.map(|w| &w[ib * QK4_NL..(ib + 1) * QK4_NL]);
        quantize_block_iq4_nl(x, qw, y);
    }
}

/// Quantize a row to IQ4_XS (`quantize_iq4_xs` on one row).
pub fn quantize_row_iq4_xs(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let ys = as_blocks_mut::<BlockIq4Xs>(dst);
    assert_eq!(src.len(), ys.len() * QK_K);
    if let Some(w) = imatrix {
        assert_eq!(w.len(), src.len());
    }
    for (ib, (x, y)) in src.chunks_exact(QK_K).zip(ys).enumerate() {
        let qw = imatrix.map(|w| &w[ib * QK_K..(ib + 1) * QK_K]);
        quantize_block_iq4_xs(x, qw, y);
    }
}

crate::quant::dequant::dequantize_row_with_avx2!(
    dequantize_row_iq4_nl,
    dequantize_row_iq4_nl_streaming,
    BlockIq4Nl,
    QK4_NL,
    dequantize_nl_blocks,
    "Dequantize an IQ4_NL row (`dequantize_row_iq4_nl`)."
);

#[inline(always)]
fn dequantize_nl_blocks<const STREAM: bool>(xs: &[BlockIq4Nl], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK4_NL)) {
        let d = fp16_to_fp32(u16::from_le_bytes(b.d));
        let (lo, hi) = grid_levels(&b.qs);
        crate::quant::dequant::scale_signed::<STREAM, 16>(&lo, d, &mut y[..16]);
        crate::quant::dequant::scale_signed::<STREAM, 16>(&hi, d, &mut y[16..]);
    }
}

crate::quant::dequant::dequantize_row_with_avx2!(
    dequantize_row_iq4_xs,
    dequantize_row_iq4_xs_streaming,
    BlockIq4Xs,
    QK_K,
    dequantize_xs_blocks,
    "Dequantize an IQ4_XS row (`dequantize_row_iq4_xs`)."
);

#[inline(always)]
fn dequantize_xs_blocks<const STREAM: bool>(xs: &[BlockIq4Xs], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(u16::from_le_bytes(b.d));
        let scales_h = u16::from_le_bytes(b.scales_h) as i32;
        for ib in 0..QK_K / 32 {
            let ls = ((b.scales_l[ib / 2] as i32 >> (4 * (ib % 2))) & 0xF)
                | (((scales_h >> (2 * ib)) & 3) << 4);
            let dl = d * (ls - 32) as f32;
            let (lo, hi) = grid_levels(b.qs[16 * ib..16 * ib + 16].try_into().unwrap());
            let y = &mut y[32 * ib..32 * ib + 32];
            crate::quant::dequant::scale_signed::<STREAM, 16>(&lo, dl, &mut y[..16]);
            crate::quant::dequant::scale_signed::<STREAM, 16>(&hi, dl, &mut y[16..]);
        }
    }
}

/// The grid values of 16 packed bytes: low nibbles, then high nibbles.
#[inline(always)]
fn grid_levels(qs: &[u8; 16]) -> ([i8; 16], [i8; 16]) {
    (
        std::array::from_fn(|j| KVALUES_IQ4NL[(qs[j] & 0x0F) as usize]),
        std::array::from_fn(|j| KVALUES_IQ4NL[(qs[j] >> 4) as usize]),
    )
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! AVX2 kernels. Grid indices are counted against [`grid_thresholds`]
    //! (exactly ggml's `best_index_int8`); the 16 scale candidates of a block
    //! run in 16 lanes, each lane summing its products in ggml's element
    //! order, so every sum is bit-identical to the scalar one. Blocks whose
    //! inputs or sums are not all finite are redone by the scalar code.
    use super::*;
    use std::arch::x86_64::*;

    /// Grid index of each lane (as i32) and the lanes whose index is ≥ 8.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn grid_index(al: __m256, t: &[f32; 15]) -> (__m256i, __m256) {
        let mut idx = _mm256_setzero_si256();
        let mut upper = _mm256_setzero_ps();
        for (k, tk) in t.iter().enumerate() {
            // "not less than": true for NaN too, which then counts 15.
            let m = _mm256_cmp_ps::<_CMP_NLT_UQ>(al, _mm256_set1_ps(*tk));
            if k == 7 {
                upper = m;
            }
            idx = _mm256_sub_epi32(idx, _mm256_castps_si256(m));
        }
        (idx, upper)
    }

    /// Grid values (as floats) of indices `idx`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn grid_value(idx: __m256i, upper: __m256) -> __m256 {
        let v = &KVALUES_IQ4NL;
        let lo = _mm256_setr_ps(
            v[0] as f32,
            v[1] as f32,
            v[2] as f32,
            v[3] as f32,
            v[4] as f32,
            v[5] as f32,
            v[6] as f32,
            v[7] as f32,
        );
        let hi = _mm256_setr_ps(
            v[8] as f32,
            v[9] as f32,
            v[10] as f32,
            v[11] as f32,
            v[12] as f32,
            v[13] as f32,
            v[14] as f32,
            v[15] as f32,
        );
        _mm256_blendv_ps(
            _mm256_permutevar8x32_ps(lo, idx),
            _mm256_permutevar8x32_ps(hi, idx),
            upper,
        )
    }

    /// `l[j] = best_index_int8(id * x[j])` for a multiple of 8 elements.
    #[target_feature(enable = "avx2")]
    pub unsafe fn pick_indices(x: &[f32], id: f32, l: &mut [u8]) {
        assert!(x.len() % 8 == 0 && l.len() >= x.len());
        let idv = _mm256_set1_ps(id);
        let t = grid_thresholds();
        for (xc, lc) in x.chunks_exact(8).zip(l.chunks_exact_mut(8)) {
            let al = _mm256_mul_ps(idv, _mm256_loadu_ps(xc.as_ptr()));
            let (idx, _) = grid_index(al, t);
            let b16 = _mm_packus_epi32(
                _mm256_castsi256_si128(idx),
                _mm256_extracti128_si256::<1>(idx),
            );
            let b8 = _mm_packus_epi16(b16, b16);
            _mm_storel_epi64(lc.as_mut_ptr() as *mut __m128i, b8);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn all_finite(v: &[f32]) -> bool {
        let inf = _mm256_set1_ps(f32::INFINITY);
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
        let mut ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        for c in v.chunks_exact(8) {
            let a = _mm256_and_ps(_mm256_loadu_ps(c.as_ptr()), abs);
            ok = _mm256_and_ps(ok, _mm256_cmp_ps::<_CMP_LT_OQ>(a, inf));
        }
        _mm256_movemask_ps(ok) == 0xFF
    }

    /// [`block_scale_scalar`] with the 16 candidates in parallel.
    #[target_feature(enable = "avx2")]
    pub unsafe fn block_scale(xb: &[f32], weight: &[f32; QK4_NL]) -> f32 {
        block_scale_body(xb, weight)
    }

    /// [`block_scale`] compiled for AVX-512VL: the same operations on the
    /// same 8-lane vectors, but 32 vector registers hold the 15 grid
    /// thresholds and every accumulator, so the loop keeps nothing on the
    /// stack (with 16 registers it spills, and those stack stores can
    /// falsely alias the weights' loads, costing up to 2x).
    #[cfg(ggml_qat_avx512)]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    pub unsafe fn block_scale_avx512(xb: &[f32], weight: &[f32; QK4_NL]) -> f32 {
        block_scale_body(xb, weight)
    }

    #[inline(always)]
    unsafe fn block_scale_body(xb: &[f32], weight: &[f32; QK4_NL]) -> f32 {
        assert_eq!(xb.len(), QK4_NL);
        if !all_finite(xb) || !all_finite(weight) {
            return block_scale_scalar(xb, weight);
        }
        let (amax, max) = signed_absmax(xb);
        if amax < GROUP_MAX_EPS {
            return 0.0;
        }
        let ids = candidate_inverse_scales(max);
        let t = grid_thresholds();
        let id_a = _mm256_loadu_ps(ids.as_ptr());
        let id_b = _mm256_loadu_ps(ids.as_ptr().add(8));
        let (mut sqx_a, mut sq2_a) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut sqx_b, mut sq2_b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for j in 0..QK4_NL {
            let xj = _mm256_set1_ps(xb[j]);
            let wj = _mm256_set1_ps(weight[j]);
            let (ia, ua) = grid_index(_mm256_mul_ps(id_a, xj), t);
            let (ib, ub) = grid_index(_mm256_mul_ps(id_b, xj), t);
            let qa = grid_value(ia, ua);
            let qb = grid_value(ib, ub);
            // (w * q) * x and (w * q) * q, added in element order.
            let wqa = _mm256_mul_ps(wj, qa);
            let wqb = _mm256_mul_ps(wj, qb);
            sqx_a = _mm256_add_ps(sqx_a, _mm256_mul_ps(wqa, xj));
            sqx_b = _mm256_add_ps(sqx_b, _mm256_mul_ps(wqb, xj));
            sq2_a = _mm256_add_ps(sq2_a, _mm256_mul_ps(wqa, qa));
            sq2_b = _mm256_add_ps(sq2_b, _mm256_mul_ps(wqb, qb));
        }
        let (mut sumqx, mut sumq2) = ([0.0f32; 16], [0.0f32; 16]);
        _mm256_storeu_ps(sumqx.as_mut_ptr(), sqx_a);
        _mm256_storeu_ps(sumqx.as_mut_ptr().add(8), sqx_b);
        _mm256_storeu_ps(sumq2.as_mut_ptr(), sq2_a);
        _mm256_storeu_ps(sumq2.as_mut_ptr().add(8), sq2_b);
        if !all_finite(&sumqx) || !all_finite(&sumq2) {
            // An overflow somewhere: NaN payloads could then depend on
            // operand order; the scalar code follows ggml's.
            return block_scale_scalar(xb, weight);
        }
        select_scale(&sumqx, &sumq2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thresholds reproduce `best_index_int8` on a dense sweep around
    /// each of them and on a wide range of values.
    #[test]
    fn thresholds_match_best_index() {
        let count = |x: f32| {
            grid_thresholds()
                .iter()
                .filter(|&&t| t <= x || x.is_nan())
                .count()
        };
        for &t in grid_thresholds() {
            let mut x = t;
            for _ in 0..100_000 {
                x = f32::from_bits(if x > 0.0 {
                    x.to_bits() - 1
                } else {
                    x.to_bits() + 1
                });
            }
            for _ in 0..200_000 {
                assert_eq!(count(x), best_index_int8(&KVALUES_IQ4NL, x), "x = {x:e}");
                x = f32::from_bits(if x > 0.0 {
                    x.to_bits() + 1
                } else {
                    x.to_bits() - 1
                });
            }
        }
        for i in -300_000..300_000 {
            let x = i as f32 * 0.0005;
            assert_eq!(count(x), best_index_int8(&KVALUES_IQ4NL, x), "x = {x:e}");
        }
        for x in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            0.0,
            -0.0,
        ] {
            assert_eq!(count(x), best_index_int8(&KVALUES_IQ4NL, x), "x = {x:e}");
        }
    }

    /// The SIMD block searches (AVX2 and AVX-512VL) equal the scalar one on
    /// many random blocks, with and without importance weights, including
    /// extreme scales.
    #[test]
    fn block_scale_simd_equals_scalar() {
        if !crate::quant::cpu::avx2() {
            return;
        }
        let mut r = crate::rng::TestRng(0x2545_F491_4F6C_DD1D);
        let mut next = move || r.next();
        for b in 0..20_000 {
            let scale = f32::from_bits(((next() % 200 + 27) << 23) as u32);
            let mut x = [0.0f32; QK4_NL];
            for v in x.iter_mut() {
                let r = next();
                *v = match r % 11 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => ((r >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * scale,
                };
            }
            let qw: Vec<f32> = (0..QK4_NL)
                .map(|_| (next() % 1000) as f32 / 100.0)
                .collect();
            for weights in [None, Some(qw.as_slice())] {
                let w = block_weights(&x, weights, super_block_sigma2(&x));
                let fast = unsafe { simd::block_scale(&x, &w) };
                let slow = block_scale_scalar(&x, &w);
                assert_eq!(fast.to_bits(), slow.to_bits(), "block {b}: {x:?}");
                #[cfg(ggml_qat_avx512)]
                if crate::quant::cpu::avx512() {
                    let wide = unsafe { simd::block_scale_avx512(&x, &w) };
                    assert_eq!(wide.to_bits(), slow.to_bits(), "AVX-512, block {b}: {x:?}");
                }
                let id = if slow != 0.0 { 1.0 / slow } else { 0.0 };
                let (mut l1, mut l2) = ([0u8; QK4_NL], [0u8; QK4_NL]);
                unsafe { simd::pick_indices(&x, id, &mut l1) };
                for (l, &v) in l2.iter_mut().zip(&x) {
                    *l = best_index_int8(&KVALUES_IQ4NL, id * v) as u8;
                }
                assert_eq!(l1, l2, "block {b}");
            }
        }
    }
}
