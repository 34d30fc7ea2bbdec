//! Q5_K: 8 sub-blocks of 32 values, `x ≈ d·sc·q - dmin·m` with 5-bit `q`
//! (low 4 bits in `qs`, high bit in `qh`) and 6-bit scales and mins
//! (176 bytes per 256 values). Scale handling is Q4_K's (`scale_min`).

// Index loops mirror ggml's C so that the order of operations is evident.
#![allow(clippy::needless_range_loop)]

use super::scale_min::{self, get_scale_min_k4, ScaleMinBlock};
use super::{f16_value, Block, K_SCALE_SIZE, QK_K};

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
    if SIMD && crate::quant::cpu::avx2() {
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

impl ScaleMinBlock for BlockQ5K {
    const NMAX: i32 = 31;
    const REF_GRID: (f32, f32, i32) = (-0.5, 0.1, 15);
    const CLAMP_SCALES: bool = true;
    fn set_header(&mut self, scales: [u8; K_SCALE_SIZE], d: [u8; 2], dmin: [u8; 2]) {
        (self.scales, self.d, self.dmin) = (scales, d, dmin);
    }
    fn pack<const SIMD: bool>(&mut self, l: &[u8; QK_K]) {
        pack_q5::<SIMD>(l, &mut self.qh, &mut self.qs);
    }
}

/// Quantize one row (ggml's `quantize_q5_K` on a single row).
pub fn quantize_row(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    scale_min::quantize_row::<BlockQ5K>(src, dst, imatrix);
}

/// Quantize one row with the portable scalar code only (for tests).
pub fn quantize_row_scalar(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    scale_min::quantize_row_scalar::<BlockQ5K>(src, dst, imatrix);
}

crate::quant::dequant::dequantize_row_with_avx2!(
    dequantize_row,
    dequantize_row_streaming,
    BlockQ5K,
    QK_K,
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
            crate::quant::dequant::scale_levels::<STREAM, 32>(&lo, d1, m1, &mut y[64 * g..]);
            crate::quant::dequant::scale_levels::<STREAM, 32>(&hi, d2, m2, &mut y[64 * g + 32..]);
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}
