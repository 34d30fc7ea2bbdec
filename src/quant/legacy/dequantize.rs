//! The row dequantizers of the five formats (ggml's `dequantize_row_q4_0`
//! …): an int times a float scale, plus the minimum for the _1 formats; each
//! with a streaming twin (non-temporal stores) and the AVX2 kernel of
//! `simd` when the CPU has it.

use super::x86_nan::{x86_add, x86_mul};
use super::*;
use crate::quant::block::as_blocks;

/// A Q4_1/Q5_1 block whose scale or minimum is NaN, computed as ggml's
/// compiled `(float(q) * d) + m`, operands in that order (`qh` is 0 for
/// Q4_1).
pub(super) fn dequantize_nan_block(qs: [u8; QK / 2], qh: u32, d: f32, m: f32, y: &mut [f32]) {
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
            if crate::quant::cpu::avx2_f16c() {
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
            if crate::quant::cpu::avx2_f16c() && dst.as_ptr().align_offset(16) == 0 {
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

#[cfg(test)]
mod tests {
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
