//! Q6_K: 16 sub-blocks of 16 values, `x ≈ d·sc·(q - 32)` with 6-bit `q`
//! (low 4 bits in `ql`, high 2 in `qh`) and signed 8-bit sub-block scales
//! (210 bytes per 256 values).

// Index loops mirror ggml's C so that the order of operations is evident.
#![allow(clippy::needless_range_loop)]

use super::{f16_bytes, f16_value, super_blocks, Block, QK_K};
use crate::quant::search::{make_qx_quants, nearest_int, GROUP_MAX_EPS};

/// ggml's `block_q6_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ6K {
    /// Low 4 bits of the quants.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of the quants.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales (two's complement i8).
    pub scales: [u8; QK_K / 16],
    /// Super-block scale (fp16).
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 2 + QK_K / 16 + 3 * QK_K / 4);
const _: () = assert!(std::mem::align_of::<BlockQ6K>() == 1);
// SAFETY: repr(C) of u8 arrays only.
unsafe impl Block for BlockQ6K {}

/// Everything after the sub-block search: scale quantization,
/// requantization and packing. `scales` are the 16 sub-block scales, `l`
/// their levels (offset by 32).
#[inline(always)]
pub(crate) fn finish<const SIMD: bool>(
    x: &[f32; QK_K],
    scales: &[f32; 16],
    l: &mut [u8; QK_K],
    y: &mut BlockQ6K,
    mut search_levels: impl FnMut(usize, &mut [u8]),
) {
    let mut max_scale = 0f32;
    let mut max_abs_scale = 0f32;
    for &s in scales {
        let a = s.abs();
        if a > max_abs_scale {
            max_abs_scale = a;
            max_scale = s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        *y = BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: f16_bytes(0.0),
        };
        return;
    }
    let iscale = -128.0f32 / max_scale;
    y.d = f16_bytes(1.0 / iscale);
    for ib in 0..16 {
        y.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let dd = f16_value(y.d);
    for j in 0..16 {
        let d = dd * (y.scales[j] as i8) as f32;
        let lj = &mut l[16 * j..16 * j + 16];
        if d == 0.0 {
            search_levels(j, lj);
            continue;
        }
        super::requantize_sub_block::<SIMD, false>(
            &x[16 * j..16 * j + 16],
            d,
            0.0,
            -32,
            31,
            32,
            lj,
        );
    }
    pack_q6::<SIMD>(l, &mut y.ql, &mut y.qh);
}

/// Packs 256 six-bit levels into `ql` (low 4 bits) and `qh` (high 2 bits)
/// as `quantize_row_q6_K_ref` does; with `SIMD`, by the AVX2 packer when
/// the CPU has it (the same bytes).
#[inline(always)]
pub(crate) fn pack_q6<const SIMD: bool>(
    l: &[u8; QK_K],
    ql: &mut [u8; QK_K / 2],
    qh: &mut [u8; QK_K / 4],
) {
    for (h, j) in (0..QK_K).step_by(128).enumerate() {
        let ql = &mut ql[64 * h..64 * h + 64];
        let qh = &mut qh[32 * h..32 * h + 32];
        #[cfg(target_arch = "x86_64")]
        if SIMD && crate::quant::cpu::avx2() {
            // SAFETY: AVX2 is available.
            unsafe { super::simd::pack_q6_half(&l[j..j + 128], ql, qh) };
            continue;
        }
        for k in 0..32 {
            let q1 = l[j + k] & 0xF;
            let q2 = l[j + k + 32] & 0xF;
            let q3 = l[j + k + 64] & 0xF;
            let q4 = l[j + k + 96] & 0xF;
            ql[k] = q1 | (q3 << 4);
            ql[k + 32] = q2 | (q4 << 4);
            qh[k] = (l[j + k] >> 4)
                | ((l[j + k + 32] >> 4) << 2)
                | ((l[j + k + 64] >> 4) << 4)
                | ((l[j + k + 96] >> 4) << 6);
        }
    }
}

/// `quantize_row_q6_K_ref` (`qw = None`) or `quantize_row_q6_K_impl`
/// (`qw` = the block's 256 weights) on one super-block, scalar.
pub fn quantize_block_scalar(x: &[f32; QK_K], qw: Option<&[f32]>, y: &mut BlockQ6K) {
    let mut l = [0u8; QK_K];
    let mut li = [0i8; 16];
    let mut scales = [0f32; 16];
    for ib in 0..16 {
        let w = qw.map(|q| &q[16 * ib..16 * ib + 16]);
        scales[ib] = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut li, 1, w);
        for k in 0..16 {
            l[16 * ib + k] = li[k] as u8;
        }
    }
    finish::<false>(x, &scales, &mut l, y, |_, _| {});
}

/// Quantize one row (ggml's `quantize_q6_K` on a single row).
pub fn quantize_row(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    #[cfg(all(target_arch = "x86_64", ggml_qat_avx512))]
    if crate::quant::cpu::avx512() {
        let blocks = super::row_blocks::<BlockQ6K>(src, dst, imatrix);
        // SAFETY: AVX-512 F/BW/DQ/VL (and AVX2) are available.
        return unsafe { avx512::quantize_blocks(src, blocks, imatrix) };
    }
    quantize_row_avx2(src, dst, imatrix)
}

/// Quantize one row without the AVX-512 kernels: AVX2 when the CPU has it,
/// else scalar (for tests).
pub fn quantize_row_avx2(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu::avx2() {
        let blocks = super::row_blocks::<BlockQ6K>(src, dst, imatrix);
        // SAFETY: AVX2 is available.
        return unsafe { avx2::quantize_blocks(src, blocks, imatrix) };
    }
    quantize_row_scalar(src, dst, imatrix)
}

/// Quantize one row with the portable scalar code only (for tests).
pub fn quantize_row_scalar(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let blocks = super::row_blocks::<BlockQ6K>(src, dst, imatrix);
    for (i, (x, y)) in super_blocks(src).zip(blocks).enumerate() {
        quantize_block_scalar(x, imatrix.map(|q| &q[QK_K * i..QK_K * (i + 1)]), y);
    }
}

crate::quant::dequant::dequantize_row_with_avx2!(
    dequantize_row,
    dequantize_row_streaming,
    BlockQ6K,
    QK_K,
    dequantize_blocks,
    "Dequantize one row (`dequantize_row_q6_K`)."
);

#[inline(always)]
fn dequantize_blocks<const STREAM: bool>(blocks: &[BlockQ6K], dst: &mut [f32]) {
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_value(b.d);
        for h in 0..2 {
            let ql = &b.ql[64 * h..64 * h + 64];
            let qh = &b.qh[32 * h..32 * h + 32];
            let sc = &b.scales[8 * h..8 * h + 8];
            // Quarter `p` of the 128 values: its low 4 bits are nibble
            // `p / 2` of `ql[k + 32 * (p % 2)]`, its high 2 bits bits `2p`
            // of `qh[k]`; 16 values share scale `sc[2p + k / 16]`.
            for p in 0..4 {
                for half in 0..2 {
                    let levels: [i8; 16] = std::array::from_fn(|i| {
                        let k = 16 * half + i;
                        let low = (ql[k + 32 * (p % 2)] >> (4 * (p / 2))) & 0xF;
                        let high = (qh[k] >> (2 * p)) & 3;
                        (low | (high << 4)) as i8 - 32
                    });
                    // ggml's `d * sc * q`: the scale product first.
                    let ds = d * (sc[2 * p + half] as i8) as f32;
                    let at = 128 * h + 32 * p + 16 * half;
                    crate::quant::dequant::scale_signed::<STREAM, 16>(
                        &levels,
                        ds,
                        &mut y[at..at + 16],
                    );
                }
            }
        }
    }
}

/// AVX2 path: the 16 sub-block searches run as 16 lanes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::simd::{self, Levels16};
    use super::super::{super_blocks, QK_K};
    use super::{finish, BlockQ6K};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_blocks(src: &[f32], blocks: &mut [BlockQ6K], imatrix: Option<&[f32]>) {
        let mut l = [0u8; QK_K];
        for (i, (x, y)) in super_blocks(src).zip(blocks).enumerate() {
            let xt = simd::load_transposed::<16, 2>(x);
            let w = match imatrix {
                Some(qw) => {
                    simd::load_transposed::<16, 2>(qw[QK_K * i..QK_K * (i + 1)].try_into().unwrap())
                }
                None => {
                    let mut w = [[_mm256_setzero_ps(); 2]; 16];
                    for k in 0..16 {
                        for g in 0..2 {
                            w[k][g] = _mm256_mul_ps(xt[k][g], xt[k][g]);
                        }
                    }
                    w
                }
            };
            let r = simd::qx_search::<2>(&xt, &w, 32);
            let scales = simd::lanes16(&r.scale);
            let levels = Levels16::new(&r.l);
            finish::<true>(x, &scales, &mut l, y, |j, lj| levels.fill(j, lj));
        }
    }
}

/// AVX-512 path: the 16 sub-block searches run as the 16 lanes of one
/// vector (Rust >= 1.89, see build.rs).
#[cfg(all(target_arch = "x86_64", ggml_qat_avx512))]
#[allow(clippy::incompatible_msrv)]
mod avx512 {
    use super::super::{block_at, simd512, QK_K};
    use super::{finish, BlockQ6K};

    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    pub(super) fn quantize_blocks(src: &[f32], blocks: &mut [BlockQ6K], imatrix: Option<&[f32]>) {
        let mut l = [0u8; QK_K];
        for (i, y) in blocks.iter_mut().enumerate() {
            let x = block_at(src, i);
            let xt = simd512::load_transposed16(x);
            let w = match imatrix {
                Some(qw) => simd512::load_transposed16(block_at(qw, i)),
                None => std::array::from_fn(|k| simd512::mul(xt[k], xt[k])),
            };
            let r = simd512::qx_search(&xt, &w, 32);
            let scales = simd512::lanes(r.scale);
            finish::<true>(x, &scales, &mut l, y, |j, lj| {
                // Rare (a zero final scale): C keeps the search's levels.
                for (i, o) in lj.iter_mut().enumerate() {
                    *o = simd512::lanes_i32(r.l[i])[j] as u8;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_blocks::{make_block, make_weights, Rng};
    use super::*;

    /// The dispatched (AVX-512 when present) and AVX2 row quantizers give
    /// the scalar translation's bytes on many super-blocks of every class,
    /// with and without an importance matrix.
    #[test]
    fn simd_paths_match_scalar() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let bpr = 16;
        let row_bytes = bpr * std::mem::size_of::<BlockQ6K>();
        for row in 0..2000u64 {
            let mut src = Vec::with_capacity(bpr * QK_K);
            let mut qw = Vec::with_capacity(bpr * QK_K);
            for b in 0..bpr as u64 {
                src.extend_from_slice(&make_block(&mut r, row * 7 + b));
                qw.extend_from_slice(&make_weights(&mut r, row * 7 + b));
            }
            for imatrix in [None, Some(qw.as_slice())] {
                let mut want = vec![0u8; row_bytes];
                quantize_row_scalar(&src, &mut want, imatrix);
                let mut got = vec![0u8; row_bytes];
                quantize_row(&src, &mut got, imatrix);
                assert!(
                    got == want,
                    "row {row} (imatrix {}): dispatched path differs from scalar",
                    imatrix.is_some()
                );
                quantize_row_avx2(&src, &mut got, imatrix);
                assert!(
                    got == want,
                    "row {row} (imatrix {}): AVX2 path differs from scalar",
                    imatrix.is_some()
                );
            }
        }
    }
}
