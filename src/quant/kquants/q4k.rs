//! Q4_K: 8 sub-blocks of 32 values, `x ≈ d·sc·q - dmin·m` with 4-bit `q` and
//! 6-bit sub-block scales `sc` and mins `m` (144 bytes per 256 values).

// Index loops mirror ggml's C so that the order of operations is evident.
#![allow(clippy::needless_range_loop)]

use super::scale_min::{self, get_scale_min_k4, ScaleMinBlock};
use super::{f16_value, Block, K_SCALE_SIZE, QK_K};

/// ggml's `block_q4_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales (fp16).
    pub d: [u8; 2],
    /// Super-block scale of the sub-block mins (fp16).
    pub dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit mins, packed.
    pub scales: [u8; K_SCALE_SIZE],
    /// 4-bit quants: byte `32*g + k` holds values `64*g + k` (low nibble)
    /// and `64*g + 32 + k` (high nibble).
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 2 * 2 + K_SCALE_SIZE + QK_K / 2);
const _: () = assert!(std::mem::align_of::<BlockQ4K>() == 1);
// SAFETY: repr(C) of u8 arrays only.
unsafe impl Block for BlockQ4K {}

#[inline(always)]
pub(crate) fn pack_q4<const SIMD: bool>(l: &[u8; QK_K], qs: &mut [u8; QK_K / 2]) {
    #[cfg(target_arch = "x86_64")]
    if SIMD && crate::quant::cpu::avx2() {
        // SAFETY: AVX2 is available.
        unsafe { super::simd::pack_q4(l, qs) };
        return;
    }
    for (g, j) in (0..QK_K).step_by(64).enumerate() {
        for k in 0..32 {
            qs[32 * g + k] = l[j + k] | (l[j + k + 32] << 4);
        }
    }
}

impl ScaleMinBlock for BlockQ4K {
    const NMAX: i32 = 15;
    const REF_GRID: (f32, f32, i32) = (-1.0, 0.1, 20);
    const CLAMP_SCALES: bool = false;
    fn set_header(&mut self, scales: [u8; K_SCALE_SIZE], d: [u8; 2], dmin: [u8; 2]) {
        (self.scales, self.d, self.dmin) = (scales, d, dmin);
    }
    fn pack<const SIMD: bool>(&mut self, l: &[u8; QK_K]) {
        pack_q4::<SIMD>(l, &mut self.qs);
    }
}

/// Quantize one row (ggml's `quantize_q4_K` on a single row).
pub fn quantize_row(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    scale_min::quantize_row::<BlockQ4K>(src, dst, imatrix);
}

/// Quantize one row with the portable scalar code only (for tests).
pub fn quantize_row_scalar(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    scale_min::quantize_row_scalar::<BlockQ4K>(src, dst, imatrix);
}

crate::quant::dequant::dequantize_row_with_avx2!(
    dequantize_row,
    dequantize_row_streaming,
    BlockQ4K,
    QK_K,
    dequantize_blocks,
    "Dequantize one row (`dequantize_row_q4_K`)."
);

#[inline(always)]
fn dequantize_blocks<const STREAM: bool>(blocks: &[BlockQ4K], dst: &mut [f32]) {
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_value(b.d);
        let min = f16_value(b.dmin);
        for g in 0..4 {
            let (sc, m) = get_scale_min_k4(2 * g, &b.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = get_scale_min_k4(2 * g + 1, &b.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            let q = &b.qs[32 * g..32 * g + 32];
            let lo: [u8; 32] = std::array::from_fn(|k| q[k] & 0xF);
            let hi: [u8; 32] = std::array::from_fn(|k| q[k] >> 4);
            crate::quant::dequant::scale_levels::<STREAM, 32>(&lo, d1, m1, &mut y[64 * g..]);
            crate::quant::dequant::scale_levels::<STREAM, 32>(&hi, d2, m2, &mut y[64 * g + 32..]);
        }
    }
}
