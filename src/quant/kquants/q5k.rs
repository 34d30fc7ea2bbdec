//! Q5_K: 8 sub-blocks of 32 values, `x ≈ d·sc·q - dmin·m` with 5-bit `q`
//! (low 4 bits in `qs`, high bit in `qh`) and 6-bit scales and mins
//! (176 bytes per 256 values). Scale handling is Q4_K's.

// Index loops mirror ggml's C so that the order of operations is evident.
#![allow(clippy::needless_range_loop)]

use super::q4k::{
    finish_scales_common, get_scale_min_k4, pack_scales_mins, quantize_scales_impl, requantize,
    search_impl, search_ref,
};
use super::{f16_bytes, f16_value, super_blocks, Block, K_SCALE_SIZE, QK_K};

/// ggml's `block_q5_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5K {
    /// Super-block scale of the sub-block scales (fp16).
    pub d: [u8; 2],
    /// Super-block scale of the sub-block mins (fp16).
    pub dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit mins, packed as in Q4_K.
    pub scales: [u8; K_SCALE_SIZE],
    /// High bits: bit `2g` of byte `k` is value `64g + k`, bit `2g+1` value `64g + 32 + k`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, laid out as Q4_K's quants.
    pub qs: [u8; QK_K / 2],
}
const _: () =
    assert!(std::mem::size_of::<BlockQ5K>() == 2 * 2 + K_SCALE_SIZE + QK_K / 2 + QK_K / 8);
const _: () = assert!(std::mem::align_of::<BlockQ5K>() == 1);
// SAFETY: repr(C) of u8 arrays only.
unsafe impl Block for BlockQ5K {}

#[inline(always)]
pub(crate) fn pack_q5<const SIMD: bool>(
    l: &[u8; QK_K],
    qh: &mut [u8; QK_K / 8],
    qs: &mut [u8; QK_K / 2],
) {
    #[cfg(target_arch = "x86_64")]
    if SIMD && super::has_avx2() {
        // SAFETY: AVX2 is available.
        unsafe { super::simd::pack_q5(l, qh, qs) };
        return;
    }
    qh.fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (g, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            // Branch-free: the tests are unpredictable.
            let (l1, l2) = (l[n + j], l[n + j + 32]);
            let (h1, h2) = ((l1 > 15) as u8, (l2 > 15) as u8);
            qh[j] |= (m1 * h1) | (m2 * h2);
            qs[32 * g + j] = (l1 - 16 * h1) | ((l2 - 16 * h2) << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

/// `quantize_row_q5_K_ref` on one super-block, scalar.
pub fn quantize_block_ref_scalar(x: &[f32; QK_K], y: &mut BlockQ5K) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    search_ref(x, 31, -0.5, 0.1, 15, &mut l, &mut scales, &mut mins);
    finish_ref::<false>(x, &scales, &mins, &mut l, y, |_, _| {});
}

/// Scale quantization, requantization and packing after the search.
#[inline(always)]
pub(crate) fn finish_ref<const SIMD: bool>(
    x: &[f32; QK_K],
    scales: &[f32; 8],
    mins: &[f32; 8],
    l: &mut [u8; QK_K],
    y: &mut BlockQ5K,
    search_levels: impl FnMut(usize, &mut [u8]),
) {
    let (packed, d, dmin) = finish_scales_common(scales, mins);
    y.scales = packed;
    y.d = d;
    y.dmin = dmin;
    requantize::<SIMD>(x, &packed, d, dmin, 31, l, search_levels);
    pack_q5::<SIMD>(l, &mut y.qh, &mut y.qs);
}

/// `quantize_row_q5_K_impl` on one super-block with its 256 weights, scalar.
pub fn quantize_block_impl_scalar(x: &[f32; QK_K], qw: &[f32], y: &mut BlockQ5K) {
    let mut l = [0u8; QK_K];
    let (scales, mins, sw) = search_impl(x, qw, 31, &mut l);
    finish_impl::<false>(x, &scales, &mins, &sw, &mut l, y, |_, _| {});
}

/// The weighted path after the search.
#[inline(always)]
pub(crate) fn finish_impl<const SIMD: bool>(
    x: &[f32; QK_K],
    scales: &[f32; 8],
    mins: &[f32; 8],
    sw: &[f32; 8],
    l: &mut [u8; QK_K],
    y: &mut BlockQ5K,
    search_levels: impl FnMut(usize, &mut [u8]),
) {
    let (mut ls, mut lm, d_block, m_block) = quantize_scales_impl(scales, mins, sw);
    for j in 0..8 {
        ls[j] = ls[j].min(63);
        lm[j] = lm[j].min(63);
    }
    let packed = pack_scales_mins(&ls, &lm);
    y.scales = packed;
    y.d = f16_bytes(d_block);
    y.dmin = f16_bytes(m_block);
    requantize::<SIMD>(x, &packed, y.d, y.dmin, 31, l, search_levels);
    pack_q5::<SIMD>(l, &mut y.qh, &mut y.qs);
}

/// Quantize one row with the portable scalar code only (for tests).
pub fn quantize_row_scalar(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    super::quantize_row_blocks::<BlockQ5K>(
        src,
        dst,
        imatrix,
        quantize_block_ref_scalar,
        quantize_block_impl_scalar,
    );
}

/// Quantize one row (ggml's `quantize_q5_K` on a single row).
pub fn quantize_row(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let blocks = super::row_blocks::<BlockQ5K>(src, dst, imatrix);
    match imatrix {
        None => {
            #[cfg(target_arch = "x86_64")]
            if super::has_avx2() {
                // SAFETY: AVX2 is available.
                return unsafe {
                    super::q4k::avx2::quantize_blocks_ref::<31, _>(
                        src,
                        blocks,
                        -0.5,
                        0.1,
                        15,
                        |x, s, m, l, y, f| finish_ref::<true>(x, s, m, l, y, f),
                    )
                };
            }
            for (x, y) in super_blocks(src).zip(blocks) {
                quantize_block_ref_scalar(x, y);
            }
        }
        Some(qw) => {
            #[cfg(target_arch = "x86_64")]
            if super::has_avx2() {
                // SAFETY: AVX2 is available.
                return unsafe {
                    super::q4k::avx2::quantize_blocks_impl::<31, _>(
                        src,
                        blocks,
                        qw,
                        |x, s, m, w, l, y, f| finish_impl::<true>(x, s, m, w, l, y, f),
                    )
                };
            }
            for ((x, y), w) in super_blocks(src).zip(blocks).zip(qw.chunks_exact(QK_K)) {
                quantize_block_impl_scalar(x, w, y);
            }
        }
    }
}

super::dequantize_row_with_avx2!(
    BlockQ5K,
    dequantize_blocks,
    "Dequantize one row (`dequantize_row_q5_K`)."
);

#[inline(always)]
fn dequantize_blocks<const STREAM: bool>(blocks: &[BlockQ5K], dst: &mut [f32]) {
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_value(b.d);
        let min = f16_value(b.dmin);
        let (mut u1, mut u2) = (1u8, 2u8);
        for g in 0..4 {
            let (sc, m) = get_scale_min_k4(2 * g, &b.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = get_scale_min_k4(2 * g + 1, &b.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            let ql = &b.qs[32 * g..32 * g + 32];
            let lo: [u8; 32] =
                std::array::from_fn(|k| (ql[k] & 0xF) + 16 * ((b.qh[k] & u1 != 0) as u8));
            let hi: [u8; 32] =
                std::array::from_fn(|k| (ql[k] >> 4) + 16 * ((b.qh[k] & u2 != 0) as u8));
            super::scale_levels::<STREAM>(&lo, d1, m1, &mut y[64 * g..]);
            super::scale_levels::<STREAM>(&hi, d2, m2, &mut y[64 * g + 32..]);
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}
