//! Q3_K: 16 sub-blocks of 16 values, `x ≈ d·(sc - 32)·(q - 4)` with 3-bit
//! `q` (low 2 bits in `qs`, high bit in `hmask`) and 6-bit sub-block scales
//! (110 bytes per 256 values).

// Index loops mirror ggml's C so that the order of operations is evident.
#![allow(clippy::needless_range_loop)]

use super::{f16_bytes, f16_value, pack_2bit, Block, QK_K};
use crate::quant::search::{make_q3_quants, make_qx_quants, nearest_int};

/// ggml's `block_q3_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ3K {
    /// High bit of each quant: bit `j / 32` of byte `j % 32`.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits of the quants, packed as Q2_K's.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales (offset by 32), packed.
    pub scales: [u8; 12],
    /// Super-block scale (fp16).
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 2 + QK_K / 4 + QK_K / 8 + 12);
const _: () = assert!(std::mem::align_of::<BlockQ3K>() == 1);
// SAFETY: repr(C) of u8 arrays only.
unsafe impl Block for BlockQ3K {}

/// Put 6-bit scale `l` (0..=63) of sub-block `j` into the packed bytes, as
/// ggml does (OR-ing into a zeroed array).
#[inline(always)]
pub(crate) fn put_scale(s: &mut [u8; 12], j: usize, l: i32) {
    if j < 8 {
        s[j] = (l & 0xF) as u8;
    } else {
        s[j - 8] |= ((l & 0xF) << 4) as u8;
    }
    let l = l >> 4;
    s[j % 4 + 8] |= (l << (2 * (j / 4))) as u8;
}

/// Sub-block scale `j` (already minus 32) of the packed bytes.
#[inline(always)]
pub(crate) fn get_scale(s: &[u8; 12], j: usize) -> i32 {
    let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// Requantization with the stored scales, then the hmask/qs packing, shared
/// by both paths. `l` holds levels 0..=7 from the search.
#[inline(always)]
pub(crate) fn finish<const SIMD: bool>(
    x: &[f32; QK_K],
    l: &mut [u8; QK_K],
    y: &mut BlockQ3K,
    mut search_levels: impl FnMut(usize, &mut [u8]),
) {
    let dd = f16_value(y.d);
    for j in 0..16 {
        let d = dd * get_scale(&y.scales, j) as f32;
        let lj = &mut l[16 * j..16 * j + 16];
        if d == 0.0 {
            search_levels(j, lj);
            continue;
        }
        super::requantize_sub_block::<SIMD, false>(&x[16 * j..16 * j + 16], d, 0.0, -4, 3, 4, lj);
    }
    #[cfg(target_arch = "x86_64")]
    if SIMD && crate::quant::cpu::avx2() {
        // SAFETY: AVX2 is available.
        unsafe {
            super::simd::split_hmask(l, &mut y.hmask);
            super::simd::pack_2bit(l, &mut y.qs);
        }
        return;
    }
    y.hmask = [0; QK_K / 8];
    for j in 0..QK_K {
        // Branch-free: the test is unpredictable.
        let high = (l[j] > 3) as u8;
        y.hmask[j % 32] |= high << (j / 32);
        l[j] -= 4 * high;
    }
    pack_2bit(l, &mut y.qs);
}

/// Scale quantization of the reference path: 6-bit scales against the
/// largest-magnitude sub-block scale.
#[inline(always)]
pub(crate) fn quantize_scales_ref(scales: &[f32; 16], y: &mut BlockQ3K) {
    let mut max_scale = 0f32;
    let mut amax = 0f32;
    for &s in scales {
        let a = s.abs();
        if a > amax {
            amax = a;
            max_scale = s;
        }
    }
    y.scales = [0; 12];
    if max_scale != 0.0 {
        let iscale = -32.0f32 / max_scale;
        for j in 0..16 {
            let l = nearest_int(iscale * scales[j]) as i8 as i32;
            put_scale(&mut y.scales, j, l.clamp(-32, 31) + 32);
        }
        y.d = f16_bytes(1.0 / iscale);
    } else {
        y.d = f16_bytes(0.0);
    }
}

/// `quantize_row_q3_K_ref` on one super-block, scalar.
pub fn quantize_block_ref_scalar(x: &[f32; QK_K], y: &mut BlockQ3K) {
    let mut l = [0u8; QK_K];
    let mut li = [0i8; 16];
    let mut scales = [0f32; 16];
    for j in 0..16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut li, true);
        for k in 0..16 {
            l[16 * j + k] = li[k] as u8;
        }
    }
    quantize_scales_ref(&scales, y);
    finish::<false>(x, &mut l, y, |_, _| {});
}

/// `quantize_row_q3_K_impl` on one super-block with its 256 weights, scalar.
pub fn quantize_block_impl_scalar(x: &[f32; QK_K], qw: &[f32], y: &mut BlockQ3K) {
    let mut sumx2 = 0f32;
    for v in x {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / QK_K as f32;
    let mut l = [0u8; QK_K];
    let mut li = [0i8; 16];
    let mut scales = [0f32; 16];
    let mut sw = [0f32; 16];
    let mut weight = [0f32; 16];
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let q = &qw[16 * j..16 * j + 16];
        for k in 0..16 {
            weight[k] = q[k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        let mut sumw = 0f32;
        for w in &weight {
            sumw += w;
        }
        sw[j] = sumw;
        scales[j] = make_qx_quants(4, xs, &mut li, 1, Some(&weight));
        for k in 0..16 {
            l[16 * j + k] = li[k] as u8;
        }
    }
    finish_impl::<false>(x, &scales, &sw, &mut l, y, |_, _| {});
}

/// Scale quantization of the weighted path (`make_qx_quants` over the
/// scales, weighted by the sub-block weight sums), then [`finish`].
#[inline(always)]
pub(crate) fn finish_impl<const SIMD: bool>(
    x: &[f32; QK_K],
    scales: &[f32; 16],
    sw: &[f32; 16],
    l: &mut [u8; QK_K],
    y: &mut BlockQ3K,
    search_levels: impl FnMut(usize, &mut [u8]),
) {
    let mut ls = [0i8; 16];
    y.scales = [0; 12];
    let d_block = make_qx_quants(32, scales, &mut ls, 1, Some(sw));
    for j in 0..16 {
        put_scale(&mut y.scales, j, ls[j] as i32);
    }
    y.d = f16_bytes(d_block);
    finish::<SIMD>(x, l, y, search_levels);
}

/// Quantize one row (ggml's `quantize_q3_K` on a single row).
pub fn quantize_row(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    #[cfg(all(target_arch = "x86_64", ggml_qat_avx512))]
    if imatrix.is_none() && crate::quant::cpu::avx512() {
        let blocks = super::row_blocks::<BlockQ3K>(src, dst, imatrix);
        // SAFETY: AVX-512 F/BW/DQ/VL (and AVX2) are available.
        return unsafe { avx512::quantize_blocks_ref(src, blocks) };
    }
    quantize_row_avx2(src, dst, imatrix)
}

/// Quantize one row without the AVX-512 kernels: AVX2 when the CPU has it,
/// else scalar (for tests).
pub fn quantize_row_avx2(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu::avx2() {
        let blocks = super::row_blocks::<BlockQ3K>(src, dst, imatrix);
        // SAFETY: AVX2 is available.
        return unsafe { avx2::quantize_blocks(src, blocks, imatrix) };
    }
    quantize_row_scalar(src, dst, imatrix)
}

/// Quantize one row with the portable scalar code only (for tests).
pub fn quantize_row_scalar(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    super::quantize_row_blocks::<BlockQ3K>(
        src,
        dst,
        imatrix,
        quantize_block_ref_scalar,
        quantize_block_impl_scalar,
    );
}

crate::quant::dequant::dequantize_row_with_avx2!(
    dequantize_row,
    dequantize_row_streaming,
    BlockQ3K,
    QK_K,
    dequantize_blocks,
    "Dequantize one row (`dequantize_row_q3_K`)."
);

#[inline(always)]
fn dequantize_blocks<const STREAM: bool>(blocks: &[BlockQ3K], dst: &mut [f32]) {
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d_all = f16_value(b.d);
        let mut is = 0;
        let mut m = 1u8;
        for h in 0..2 {
            let q = &b.qs[32 * h..32 * h + 32];
            let mut shift = 0;
            for j in 0..4 {
                for half in 0..2 {
                    let dl = d_all * get_scale(&b.scales, is) as f32;
                    is += 1;
                    let levels: [i8; 16] = std::array::from_fn(|k| {
                        let idx = 16 * half + k;
                        let low = ((q[idx] >> shift) & 3) as i8;
                        low - 4 * (b.hmask[idx] & m == 0) as i8
                    });
                    let at = 128 * h + 32 * j + 16 * half;
                    crate::quant::dequant::scale_signed::<STREAM, 16>(
                        &levels,
                        dl,
                        &mut y[at..at + 16],
                    );
                }
                shift += 2;
                m <<= 1;
            }
        }
    }
}

/// AVX2 paths: the 16 sub-block searches run as 16 lanes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::scale_min::impl_sigma2;
    use super::super::simd::{self, Levels16, F8};
    use super::super::{block_at, QK_K};
    use super::{finish, finish_impl, quantize_scales_ref, BlockQ3K};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_blocks(src: &[f32], blocks: &mut [BlockQ3K], imatrix: Option<&[f32]>) {
        // One super-block per search (two at a time, `run::<2, 4>`, was
        // measured no faster: more lanes make the refinement run more passes).
        for i in 0..blocks.len() {
            run::<1, 2>(src, blocks, imatrix, i);
        }
    }

    /// Super-blocks `i0 .. i0 + P` (`G = 2P` lane groups).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn run<const P: usize, const G: usize>(
        src: &[f32],
        blocks: &mut [BlockQ3K],
        imatrix: Option<&[f32]>,
        i0: usize,
    ) {
        let xs: [&[f32; QK_K]; P] = std::array::from_fn(|p| block_at(src, i0 + p));
        let xt = simd::load_transposed_multi::<16, G, P>(xs);
        let mut l = [0u8; QK_K];
        match imatrix {
            None => {
                let r = simd::q3_search::<G>(&xt, 4);
                let levels = Levels16::new(&r.l);
                for p in 0..P {
                    let y = &mut blocks[i0 + p];
                    quantize_scales_ref(&simd::lanes16(&[r.scale[2 * p], r.scale[2 * p + 1]]), y);
                    finish::<true>(xs[p], &mut l, y, |j, lj| levels.fill(16 * p + j, lj));
                }
            }
            Some(qw) => {
                let qs: [&[f32; QK_K]; P] = std::array::from_fn(|p| block_at(qw, i0 + p));
                let qt = simd::load_transposed_multi::<16, G, P>(qs);
                let sigma2: [F8; P] = std::array::from_fn(|p| _mm256_set1_ps(impl_sigma2(xs[p])));
                let mut w = [[_mm256_setzero_ps(); G]; 16];
                let mut sw = [_mm256_setzero_ps(); G];
                for k in 0..16 {
                    for g in 0..G {
                        let x2 = _mm256_add_ps(sigma2[g / 2], _mm256_mul_ps(xt[k][g], xt[k][g]));
                        w[k][g] = _mm256_mul_ps(qt[k][g], _mm256_sqrt_ps(x2));
                        sw[g] = _mm256_add_ps(sw[g], w[k][g]);
                    }
                }
                let r = simd::qx_search::<G>(&xt, &w, 4);
                let levels = Levels16::new(&r.l);
                for p in 0..P {
                    let scales = simd::lanes16(&[r.scale[2 * p], r.scale[2 * p + 1]]);
                    let sws = simd::lanes16(&[sw[2 * p], sw[2 * p + 1]]);
                    finish_impl::<true>(
                        xs[p],
                        &scales,
                        &sws,
                        &mut l,
                        &mut blocks[i0 + p],
                        |j, lj| levels.fill(16 * p + j, lj),
                    );
                }
            }
        }
    }
}

/// AVX-512 path of the reference quantization: the 16 sub-block searches
/// run as the 16 lanes of one vector (Rust >= 1.89, see build.rs).
#[cfg(all(target_arch = "x86_64", ggml_qat_avx512))]
#[allow(clippy::incompatible_msrv)]
mod avx512 {
    use super::super::{block_at, simd, simd512, QK_K};
    use super::BlockQ3K;

    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    pub(super) fn quantize_blocks_ref(src: &[f32], blocks: &mut [BlockQ3K]) {
        use std::arch::x86_64::_mm512_setzero_ps;
        let mut groups = blocks.chunks_exact_mut(GROUP);
        let mut i = 0;
        let mut r: [simd512::SearchOut; GROUP] =
            std::array::from_fn(|_| simd512::SearchOut::zero());
        let mut xt = [[_mm512_setzero_ps(); 16]; GROUP];
        let mut state: [simd512::Q3Search; GROUP] =
            std::array::from_fn(|_| simd512::Q3Search::zero());
        for ys in &mut groups {
            let xs: [&[f32; QK_K]; GROUP] = std::array::from_fn(|g| block_at(src, i + g));
            for g in 0..GROUP {
                simd512::load_transposed16_into(xs[g], &mut xt[g]);
            }
            simd512::q3_search_group(xt.each_ref(), 4, &mut state, &mut r);
            for g in 0..GROUP {
                block(xs[g], &r[g], &mut ys[g]);
            }
            i += GROUP;
        }
        for y in groups.into_remainder() {
            let x = block_at(src, i);
            block(x, &simd512::q3_search(&simd512::load_transposed16(x), 4), y);
            i += 1;
        }
    }

    /// Super-blocks searched together by [`simd512::q3_search_group`].
    const GROUP: usize = 2;

    /// The scales, requantization and packing of a super-block from its
    /// search result.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    fn block(x: &[f32; QK_K], r: &simd512::SearchOut, y: &mut BlockQ3K) {
        use std::arch::x86_64::*;
        let dv = simd512::q3_scales(r.scale, &mut y.scales, &mut y.d);
        // 1/d once for all sub-blocks, for the requantization shortcut,
        // which needs 2^-100 <= |d| <= 2^100.
        let rd = simd512::lanes(_mm512_div_ps(_mm512_set1_ps(1.0), dv));
        let ad = _mm512_abs_ps(dv);
        let fast =
            _mm512_cmp_ps_mask::<_CMP_GE_OQ>(ad, _mm512_set1_ps(f32::from_bits(0x0d80_0000)))
                & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(ad, _mm512_set1_ps(f32::from_bits(0x7180_0000)));
        let zero = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(dv, _mm512_setzero_ps());
        let d = simd512::lanes(dv);
        let mut l = [0u8; QK_K];
        for j in 0..16 {
            let lj = &mut l[16 * j..16 * j + 16];
            if zero >> j & 1 != 0 {
                // Rare: C keeps the search's levels of sub-block j.
                for (i, o) in lj.iter_mut().enumerate() {
                    *o = simd512::lanes_i32(r.l[i])[j] as u8;
                }
                continue;
            }
            simd512::requantize_q3(&x[16 * j..], d[j], rd[j], fast >> j & 1 != 0, lj);
        }
        simd::split_hmask(&mut l, &mut y.hmask);
        simd::pack_2bit(&l, &mut y.qs);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_blocks::{make_block, Rng};
    use super::*;

    /// The dispatched (SIMD) row quantizer gives the scalar translation's
    /// bytes on many super-blocks of every class.
    #[test]
    fn simd_paths_match_scalar() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        for row in 0..2000u64 {
            // Odd lengths too: the AVX-512 path searches blocks in pairs.
            let bpr = if row % 4 == 3 { 3 } else { 16 };
            let row_bytes = bpr * std::mem::size_of::<BlockQ3K>();
            let mut src = Vec::with_capacity(bpr * QK_K);
            for b in 0..bpr as u64 {
                src.extend_from_slice(&make_block(&mut r, row * 7 + b));
            }
            let mut want = vec![0u8; row_bytes];
            quantize_row_scalar(&src, &mut want, None);
            let mut got = vec![0u8; row_bytes];
            quantize_row(&src, &mut got, None);
            assert!(
                got == want,
                "row {row}: dispatched path differs from scalar"
            );
            quantize_row_avx2(&src, &mut got, None);
            assert!(got == want, "row {row}: AVX2 path differs from scalar");
        }
    }
}
