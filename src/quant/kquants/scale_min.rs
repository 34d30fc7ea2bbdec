//! What Q4_K and Q5_K share: 8 sub-blocks of 32 values, `x ≈ d·sc·q -
//! dmin·m` with 6-bit sub-block scales `sc` and mins `m` packed in 12 bytes.
//! The searches (reference and importance-weighted), the scale
//! quantization, the requantization and the row drivers live here, generic
//! over [`ScaleMinBlock`]; the two formats differ only in the quant width
//! and its packing.

// Index loops mirror ggml's C so that the order of operations is evident.
#![allow(clippy::needless_range_loop)]

use super::{f16_bytes, f16_value, super_blocks, Block, K_SCALE_SIZE, QK_K};
use crate::quant::search::{
    make_qkx2_quants, make_qkx3_quants, make_qp_quants, nearest_int, IMPL_GRID,
};

/// A block of the Q4_K family: what sets Q4_K and Q5_K apart.
pub(crate) trait ScaleMinBlock: Block {
    /// Largest level: 15 (4 bits) or 31 (5 bits).
    const NMAX: i32;
    /// The reference path's `make_qkx2_quants` grid: `(rmin, rdelta, nstep)`.
    const REF_GRID: (f32, f32, i32);
    /// Whether the weighted path clamps the 6-bit scales and mins to 63
    /// (ggml's Q5_K does, its Q4_K does not).
    const CLAMP_SCALES: bool;
    /// Stores the packed scales and mins and the two super-block scales.
    fn set_header(&mut self, scales: [u8; K_SCALE_SIZE], d: [u8; 2], dmin: [u8; 2]);
    /// Packs the levels (`0..=NMAX`) into the quants.
    fn pack<const SIMD: bool>(&mut self, l: &[u8; QK_K]);
}

/// Scale `j` and min `j` (6 bits each) of the packed 12 bytes
/// (`get_scale_min_k4`).
#[inline(always)]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Pack 8 scales and 8 mins into 12 bytes as ggml does (bits above 6 of the
/// inputs spill over exactly as in C).
#[inline(always)]
pub(crate) fn pack_scales_mins(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut s = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        let (ls, lm) = (ls[j], lm[j]);
        if j < 4 {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            s[j - 4] |= (ls >> 4) << 6;
            s[j] |= (lm >> 4) << 6;
        }
    }
    s
}

/// Reference path, first half: each sub-block's best (scale, min) by
/// `make_qkx2_quants` with weights `av_x + |x|`; fills `l`, `scales`, `mins`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn search_ref(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
    scales: &mut [f32; 8],
    mins: &mut [f32; 8],
) {
    let mut weights = [0f32; 32];
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            rmin,
            rdelta,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
    }
}

/// Reference path, second half: quantize the sub-block scales and mins to 6
/// bits against their maxima; returns (packed scales, d, dmin) as stored.
#[inline(always)]
pub(crate) fn finish_scales_common(
    scales: &[f32; 8],
    mins: &[f32; 8],
) -> ([u8; K_SCALE_SIZE], [u8; 2], [u8; 2]) {
    let (max_scale, max_min) = (super::largest(scales), super::largest(mins));
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    (
        pack_scales_mins(&ls, &lm),
        f16_bytes(max_scale / 63.0),
        f16_bytes(max_min / 63.0),
    )
}

/// Importance-weighted path, first half (`quantize_row_qN_K_impl`): weights
/// `qw·sqrt(σ² + x²)`, `make_qkx3_quants` per sub-block. Returns the
/// sub-block scales, mins and weight sums.
#[inline(always)]
pub(crate) fn search_impl(
    x: &[f32; QK_K],
    qw: &[f32],
    nmax: i32,
    l: &mut [u8; QK_K],
) -> ([f32; 8], [f32; 8], [f32; 8]) {
    let sigma2 = impl_sigma2(x);
    let mut weights = [0f32; 32];
    let mut sw = [0f32; 8];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let q = &qw[32 * j..32 * j + 32];
        for i in 0..32 {
            weights[i] = q[i] * (sigma2 + xs[i] * xs[i]).sqrt();
        }
        let mut sumw = 0f32;
        for w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let (rmin, rdelta, nstep) = IMPL_GRID;
        let (s, m) = make_qkx3_quants(
            nmax,
            xs,
            Some(&weights),
            &mut l[32 * j..32 * j + 32],
            rmin,
            rdelta,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
    }
    (scales, mins, sw)
}

/// `σ² = 2·Σx²/256` of the weighted Q3_K/Q4_K/Q5_K paths (sum in order).
#[inline(always)]
pub(crate) fn impl_sigma2(x: &[f32; QK_K]) -> f32 {
    let mut sum_x2 = 0f32;
    for v in x {
        sum_x2 += v * v;
    }
    2.0 * sum_x2 / QK_K as f32
}

/// Importance-weighted path, second half: the 6-bit scales and mins by
/// `make_qp_quants`, weighted by the sub-block weight sums. Returns
/// `(ls, lm, d_block, m_block)`.
#[inline(always)]
pub(crate) fn quantize_scales_impl(
    scales: &[f32; 8],
    mins: &[f32; 8],
    sw: &[f32; 8],
) -> ([u8; 8], [u8; 8], f32, f32) {
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, scales, &mut ls, sw);
    let m_block = make_qp_quants(63, mins, &mut lm, sw);
    (ls, lm, d_block, m_block)
}

/// Final pass shared by both paths: requantize every sub-block with its
/// stored (fp16 · 6-bit) scale and min. Sub-blocks whose scale is zero keep
/// the levels of the search: `search_levels(j, l_j)` must leave them in
/// `l_j` (a no-op when `l` already holds them).
#[inline(always)]
pub(crate) fn requantize<const SIMD: bool>(
    x: &[f32; QK_K],
    packed: &[u8; K_SCALE_SIZE],
    d: [u8; 2],
    dmin: [u8; 2],
    nmax: i32,
    l: &mut [u8; QK_K],
    mut search_levels: impl FnMut(usize, &mut [u8]),
) {
    let dd = f16_value(d);
    let dm = f16_value(dmin);
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, packed);
        let d = dd * sc as f32;
        let lj = &mut l[32 * j..32 * j + 32];
        if d == 0.0 {
            search_levels(j, lj);
            continue;
        }
        let dm = dm * m as f32;
        super::requantize_sub_block::<SIMD, true>(&x[32 * j..32 * j + 32], d, dm, 0, nmax, 0, lj);
    }
}

/// `quantize_row_qN_K_ref` on one super-block, scalar.
pub(crate) fn quantize_block_ref_scalar<B: ScaleMinBlock>(x: &[f32; QK_K], y: &mut B) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (rmin, rdelta, nstep) = B::REF_GRID;
    search_ref(
        x,
        B::NMAX,
        rmin,
        rdelta,
        nstep,
        &mut l,
        &mut scales,
        &mut mins,
    );
    finish_ref::<B, false>(x, &scales, &mins, &mut l, y, |_, _| {});
}

/// Scale quantization, requantization and packing after the search.
#[inline(always)]
pub(crate) fn finish_ref<B: ScaleMinBlock, const SIMD: bool>(
    x: &[f32; QK_K],
    scales: &[f32; 8],
    mins: &[f32; 8],
    l: &mut [u8; QK_K],
    y: &mut B,
    search_levels: impl FnMut(usize, &mut [u8]),
) {
    let (packed, d, dmin) = finish_scales_common(scales, mins);
    y.set_header(packed, d, dmin);
    requantize::<SIMD>(x, &packed, d, dmin, B::NMAX, l, search_levels);
    y.pack::<SIMD>(l);
}

/// `quantize_row_qN_K_impl` on one super-block with its 256 weights, scalar.
pub(crate) fn quantize_block_impl_scalar<B: ScaleMinBlock>(x: &[f32; QK_K], qw: &[f32], y: &mut B) {
    let mut l = [0u8; QK_K];
    let (scales, mins, sw) = search_impl(x, qw, B::NMAX, &mut l);
    finish_impl::<B, false>(x, &scales, &mins, &sw, &mut l, y, |_, _| {});
}

/// The weighted path after the search.
#[inline(always)]
pub(crate) fn finish_impl<B: ScaleMinBlock, const SIMD: bool>(
    x: &[f32; QK_K],
    scales: &[f32; 8],
    mins: &[f32; 8],
    sw: &[f32; 8],
    l: &mut [u8; QK_K],
    y: &mut B,
    search_levels: impl FnMut(usize, &mut [u8]),
) {
    let (mut ls, mut lm, d_block, m_block) = quantize_scales_impl(scales, mins, sw);
    if B::CLAMP_SCALES {
        for j in 0..8 {
            ls[j] = ls[j].min(63);
            lm[j] = lm[j].min(63);
        }
    }
    let packed = pack_scales_mins(&ls, &lm);
    let (d, dmin) = (f16_bytes(d_block), f16_bytes(m_block));
    y.set_header(packed, d, dmin);
    requantize::<SIMD>(x, &packed, d, dmin, B::NMAX, l, search_levels);
    y.pack::<SIMD>(l);
}

/// Quantize one row with the portable scalar code only (for tests).
pub(crate) fn quantize_row_scalar<B: ScaleMinBlock>(
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) {
    super::quantize_row_blocks::<B>(
        src,
        dst,
        imatrix,
        quantize_block_ref_scalar::<B>,
        quantize_block_impl_scalar::<B>,
    );
}

/// Quantize one row (ggml's `quantize_qN_K` on a single row): AVX2 when the
/// CPU has it, else scalar.
pub(crate) fn quantize_row<B: ScaleMinBlock>(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let blocks = super::row_blocks::<B>(src, dst, imatrix);
    match imatrix {
        None => {
            #[cfg(target_arch = "x86_64")]
            if crate::quant::cpu::avx2() {
                // SAFETY: AVX2 is available.
                return unsafe { avx2::quantize_blocks_ref(src, blocks) };
            }
            for (x, y) in super_blocks(src).zip(blocks) {
                quantize_block_ref_scalar(x, y);
            }
        }
        Some(qw) => {
            #[cfg(target_arch = "x86_64")]
            if crate::quant::cpu::avx2() {
                // SAFETY: AVX2 is available.
                return unsafe { avx2::quantize_blocks_impl(src, blocks, qw) };
            }
            for ((x, y), w) in super_blocks(src).zip(blocks).zip(qw.chunks_exact(QK_K)) {
                quantize_block_impl_scalar(x, w, y);
            }
        }
    }
}

/// AVX2 paths of Q4_K and Q5_K.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::simd::{self, QkxLevels};
    use super::super::{super_blocks, QK_K};
    use super::{finish_impl, finish_ref, ScaleMinBlock};
    use std::arch::x86_64::*;

    /// The reference-path search of one super-block: per sub-block weights
    /// `sqrt(mean x²) + |x|`, then `make_qkx2_quants` with these parameters.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn search_ref(
        x: &[f32; QK_K],
        nmax: i32,
        (rmin, rdelta, nstep): (f32, f32, i32),
    ) -> ([f32; 8], [f32; 8], QkxLevels<1>) {
        let xt = simd::load_transposed::<32, 1>(x);
        let mut sum_x2 = _mm256_setzero_ps();
        for v in &xt {
            sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(v[0], v[0]));
        }
        let av_x = _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps(32.0)));
        let mut w = [[_mm256_setzero_ps(); 1]; 32];
        for i in 0..32 {
            w[i][0] = _mm256_add_ps(av_x, simd::abs(xt[i][0]));
        }
        let r = simd::qkx_search::<32, 1, false, false>(&xt, &w, nmax, rmin, rdelta, nstep);
        (
            simd::lanes(r.scale[0]),
            simd::lanes(r.the_min[0]),
            QkxLevels::new(&r),
        )
    }

    /// Reference path over a row.
    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_blocks_ref<B: ScaleMinBlock>(src: &[f32], blocks: &mut [B]) {
        let mut l = [0u8; QK_K];
        for (x, y) in super_blocks(src).zip(blocks) {
            let (scales, mins, levels) = search_ref(x, B::NMAX, B::REF_GRID);
            finish_ref::<B, true>(x, &scales, &mins, &mut l, y, |j, lj| {
                levels.fill(j, &x[32 * j..32 * j + 32], B::NMAX, lj)
            });
        }
    }

    /// Importance-weighted path over a row.
    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_blocks_impl<B: ScaleMinBlock>(
        src: &[f32],
        blocks: &mut [B],
        qw: &[f32],
    ) {
        let mut l = [0u8; QK_K];
        for ((x, y), q) in super_blocks(src).zip(blocks).zip(qw.chunks_exact(QK_K)) {
            let sigma2 = _mm256_set1_ps(super::impl_sigma2(x));
            let xt = simd::load_transposed::<32, 1>(x);
            let qt = simd::load_transposed::<32, 1>(q.try_into().unwrap());
            let mut w = [[_mm256_setzero_ps(); 1]; 32];
            let mut sw = _mm256_setzero_ps();
            for i in 0..32 {
                let x2 = _mm256_add_ps(sigma2, _mm256_mul_ps(xt[i][0], xt[i][0]));
                w[i][0] = _mm256_mul_ps(qt[i][0], _mm256_sqrt_ps(x2));
                sw = _mm256_add_ps(sw, w[i][0]);
            }
            let (rmin, rdelta, nstep) = crate::quant::search::IMPL_GRID;
            let r = simd::qkx_search::<32, 1, false, true>(&xt, &w, B::NMAX, rmin, rdelta, nstep);
            let levels = QkxLevels::new(&r);
            finish_impl::<B, true>(
                x,
                &simd::lanes(r.scale[0]),
                &simd::lanes(r.the_min[0]),
                &simd::lanes(sw),
                &mut l,
                y,
                |j, lj| levels.fill(j, &x[32 * j..32 * j + 32], B::NMAX, lj),
            );
        }
    }
}
