//! Q2_K: 16 sub-blocks of 16 values, `x ≈ d·sc·q - dmin·m` with 2-bit `q`
//! and 4-bit sub-block scales `sc` and mins `m` (84 bytes per 256 values).

// Index loops mirror ggml's C so that the order of operations is evident.
#![allow(clippy::needless_range_loop)]

use super::{f16_bytes, f16_value, pack_2bit, Block, QK_K};
use crate::quant::search::{
    make_qkx2_quants, make_qkx3_quants, make_qp_quants, nearest_int, IMPL_GRID,
};

/// ggml's `block_q2_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ2K {
    /// Per sub-block: scale in the low nibble, min in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the scales (fp16).
    pub d: [u8; 2],
    /// Super-block scale of the mins (fp16).
    pub dmin: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 2 * 2 + QK_K / 16 + QK_K / 4);
const _: () = assert!(std::mem::align_of::<BlockQ2K>() == 1);
// SAFETY: repr(C) of u8 arrays only.
unsafe impl Block for BlockQ2K {}

/// Requantize every sub-block with its stored scale and min (`dm`, `mm` are
/// the fp16 super-block scales as f32), then pack.
#[inline(always)]
fn requantize_and_pack<const SIMD: bool>(
    x: &[f32; QK_K],
    dm: f32,
    mm: f32,
    l: &mut [u8; QK_K],
    y: &mut BlockQ2K,
    mut search_levels: impl FnMut(usize, &mut [u8]),
) {
    for j in 0..16 {
        let d = dm * (y.scales[j] & 0xF) as f32;
        let lj = &mut l[16 * j..16 * j + 16];
        if d == 0.0 {
            search_levels(j, lj);
            continue;
        }
        let m = mm * (y.scales[j] >> 4) as f32;
        super::requantize_sub_block::<SIMD, true>(&x[16 * j..16 * j + 16], d, m, 0, 3, 0, lj);
    }
    #[cfg(target_arch = "x86_64")]
    if SIMD && crate::quant::cpu::avx2() {
        // SAFETY: AVX2 is available.
        unsafe { super::simd::pack_2bit(l, &mut y.qs) };
        return;
    }
    pack_2bit(l, &mut y.qs);
}

/// Reference path after the search: 4-bit scales and mins against their
/// maxima, requantization, packing.
#[inline(always)]
pub(crate) fn finish_ref<const SIMD: bool>(
    x: &[f32; QK_K],
    scales: &[f32; 16],
    mins: &[f32; 16],
    l: &mut [u8; QK_K],
    y: &mut BlockQ2K,
    search_levels: impl FnMut(usize, &mut [u8]),
) {
    const Q4SCALE: f32 = 15.0;
    let (max_scale, max_min) = (super::largest(scales), super::largest(mins));
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for j in 0..16 {
            y.scales[j] = nearest_int(iscale * scales[j]) as u8;
        }
        y.d = f16_bytes(max_scale / Q4SCALE);
    } else {
        y.scales = [0; 16];
        y.d = f16_bytes(0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for j in 0..16 {
            let q = nearest_int(iscale * mins[j]);
            y.scales[j] |= (q << 4) as u8;
        }
        y.dmin = f16_bytes(max_min / Q4SCALE);
    } else {
        y.dmin = f16_bytes(0.0);
    }
    requantize_and_pack::<SIMD>(x, f16_value(y.d), f16_value(y.dmin), l, y, search_levels);
}

/// `quantize_row_q2_K_ref` on one super-block, scalar.
pub fn quantize_block_ref_scalar(x: &[f32; QK_K], y: &mut BlockQ2K) {
    let mut l = [0u8; QK_K];
    let mut weights = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for k in 0..16 {
            weights[k] = xs[k].abs();
        }
        let (s, m) = make_qkx2_quants(
            3,
            xs,
            &weights,
            &mut l[16 * j..16 * j + 16],
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = s;
        mins[j] = m;
    }
    finish_ref::<false>(x, &scales, &mins, &mut l, y, |_, _| {});
}

/// Weighted path after the search: `make_qp_quants` over the scales and the
/// mins, then requantization and packing.
#[inline(always)]
pub(crate) fn finish_impl<const SIMD: bool>(
    x: &[f32; QK_K],
    scales: &[f32; 16],
    mins: &[f32; 16],
    sw: &[f32; 16],
    l: &mut [u8; QK_K],
    y: &mut BlockQ2K,
    search_levels: impl FnMut(usize, &mut [u8]),
) {
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let dm = make_qp_quants(15, scales, &mut ls, sw);
    let mm = make_qp_quants(15, mins, &mut lm, sw);
    y.d = f16_bytes(dm);
    y.dmin = f16_bytes(mm);
    for j in 0..16 {
        y.scales[j] = ls[j] | (lm[j] << 4);
    }
    requantize_and_pack::<SIMD>(x, f16_value(y.d), f16_value(y.dmin), l, y, search_levels);
}

/// `quantize_row_q2_K_impl` on one super-block with its 256 weights, scalar.
pub fn quantize_block_impl_scalar(x: &[f32; QK_K], qw: &[f32], y: &mut BlockQ2K) {
    let mut sumx2 = 0f32;
    for v in x {
        sumx2 += v * v;
    }
    let sigma2 = sumx2 / QK_K as f32;
    let mut l = [0u8; QK_K];
    let mut weight = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut sw = [0f32; 16];
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let q = &qw[16 * j..16 * j + 16];
        for k in 0..16 {
            weight[k] = q[k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        for k in 0..16 {
            sw[j] += weight[k];
        }
        let (rmin, rdelta, nstep) = IMPL_GRID;
        let (s, m) = make_qkx3_quants(
            3,
            xs,
            Some(&weight),
            &mut l[16 * j..16 * j + 16],
            rmin,
            rdelta,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
    }
    finish_impl::<false>(x, &scales, &mins, &sw, &mut l, y, |_, _| {});
}

/// Quantize one row (ggml's `quantize_q2_K` on a single row).
pub fn quantize_row(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu::avx2() {
        let blocks = super::row_blocks::<BlockQ2K>(src, dst, imatrix);
        // SAFETY: AVX2 is available.
        return unsafe { avx2::quantize_blocks(src, blocks, imatrix) };
    }
    quantize_row_scalar(src, dst, imatrix)
}

/// Quantize one row with the portable scalar code only (for tests).
pub fn quantize_row_scalar(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    super::quantize_row_blocks::<BlockQ2K>(
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
    BlockQ2K,
    QK_K,
    dequantize_blocks,
    "Dequantize one row (`dequantize_row_q2_K`)."
);

#[inline(always)]
fn dequantize_blocks<const STREAM: bool>(blocks: &[BlockQ2K], dst: &mut [f32]) {
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_value(b.d);
        let min = f16_value(b.dmin);
        let mut is = 0;
        for h in 0..2 {
            let q = &b.qs[32 * h..32 * h + 32];
            let mut shift = 0;
            for j in 0..4 {
                for half in 0..2 {
                    let sc = b.scales[is];
                    is += 1;
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    let levels: [u8; 16] = std::array::from_fn(|k| (q[16 * half + k] >> shift) & 3);
                    let at = 128 * h + 32 * j + 16 * half;
                    crate::quant::dequant::scale_levels::<STREAM, 16>(
                        &levels,
                        dl,
                        ml,
                        &mut y[at..at + 16],
                    );
                }
                shift += 2;
            }
        }
    }
}

/// AVX2 paths: the 16 sub-block searches run as 16 lanes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::simd::{self, QkxLevels};
    use super::super::{super_blocks, QK_K};
    use super::{finish_impl, finish_ref, BlockQ2K};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_blocks(src: &[f32], blocks: &mut [BlockQ2K], imatrix: Option<&[f32]>) {
        let mut l = [0u8; QK_K];
        for (i, (x, y)) in super_blocks(src).zip(blocks).enumerate() {
            let xt = simd::load_transposed::<16, 2>(x);
            let mut w = [[_mm256_setzero_ps(); 2]; 16];
            match imatrix {
                None => {
                    for k in 0..16 {
                        for g in 0..2 {
                            w[k][g] = simd::abs(xt[k][g]);
                        }
                    }
                    let r = simd::qkx_search::<16, 2, true, false>(&xt, &w, 3, -0.5, 0.1, 15);
                    let levels = QkxLevels::new(&r);
                    let (scales, mins) = (simd::lanes16(&r.scale), simd::lanes16(&r.the_min));
                    finish_ref::<true>(x, &scales, &mins, &mut l, y, |j, lj| {
                        levels.fill(j, &x[16 * j..16 * j + 16], 3, lj)
                    });
                }
                Some(qw) => {
                    let mut sumx2 = 0f32;
                    for v in x {
                        sumx2 += v * v;
                    }
                    let sigma2 = _mm256_set1_ps(sumx2 / QK_K as f32);
                    let qt = simd::load_transposed::<16, 2>(
                        qw[QK_K * i..QK_K * (i + 1)].try_into().unwrap(),
                    );
                    let mut sw = [_mm256_setzero_ps(); 2];
                    for k in 0..16 {
                        for g in 0..2 {
                            let x2 = _mm256_add_ps(sigma2, _mm256_mul_ps(xt[k][g], xt[k][g]));
                            w[k][g] = _mm256_mul_ps(qt[k][g], _mm256_sqrt_ps(x2));
                            sw[g] = _mm256_add_ps(sw[g], w[k][g]);
                        }
                    }
                    let (rmin, rdelta, nstep) = crate::quant::search::IMPL_GRID;
                    let r = simd::qkx_search::<16, 2, false, true>(&xt, &w, 3, rmin, rdelta, nstep);
                    let levels = QkxLevels::new(&r);
                    let (scales, mins) = (simd::lanes16(&r.scale), simd::lanes16(&r.the_min));
                    finish_impl::<true>(
                        x,
                        &scales,
                        &mins,
                        &simd::lanes16(&sw),
                        &mut l,
                        y,
                        |j, lj| levels.fill(j, &x[16 * j..16 * j + 16], 3, lj),
                    );
                }
            }
        }
    }
}
