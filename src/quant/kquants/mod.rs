//! The K-quant super-block formats Q2_K, Q3_K, Q4_K, Q5_K and Q6_K.
//!
//! Every format packs 256 values (a super-block) into one `#[repr(C)]` block
//! laid out exactly as ggml's `block_qN_K` (ggml-common.h). Quantization has
//! two paths, as in ggml's `quantize_qN_K`:
//! - without an importance matrix, `quantize_row_qN_K_ref`;
//! - with one, `quantize_row_qN_K_impl` (one weight per element of the row).
//!
//! Both give the same bytes as ggml; the dequantizers give the same floats.
//! Each format module holds a plain scalar translation of ggml's algorithm
//! (`scalar`) and, where it pays, a SIMD path that runs one lane per
//! sub-block and performs each lane's scalar sequence of operations exactly,
//! so the two are bit-identical; tests compare both with ggml.

use super::{Format, QuantType};

pub mod q2k;
pub mod q3k;
pub mod q4k;
pub mod q5k;
pub mod q6k;
pub(crate) mod scale_min;
#[cfg(target_arch = "x86_64")]
mod simd;
// Compiled only with Rust >= 1.89 (stable AVX-512 intrinsics; see build.rs).
#[cfg(all(target_arch = "x86_64", ggml_qat_avx512))]
#[allow(clippy::incompatible_msrv)]
mod simd512;

/// Values per super-block (`QK_K`).
pub const QK_K: usize = 256;
/// Bytes of the packed 6-bit scales and mins of Q4_K/Q5_K (`K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

pub use super::block::{as_blocks, as_blocks_mut, Block};

/// ggml's fp16 conversions (one implementation for every format).
pub use super::float::{fp16_to_fp32, fp32_to_fp16};

/// Store `f` as ggml fp16 bytes (little endian).
#[inline]
pub(crate) fn f16_bytes(f: f32) -> [u8; 2] {
    fp32_to_fp16(f).to_le_bytes()
}

/// Read ggml fp16 bytes as f32.
#[inline]
pub(crate) fn f16_value(b: [u8; 2]) -> f32 {
    fp16_to_fp32(u16::from_le_bytes(b))
}

/// Pack 2-bit levels (`l[j] < 4`) as Q2_K/Q3_K do: byte `32*g + k` of each
/// 128-value half holds levels `k, k+32, k+64, k+96` in bits 0-1, 2-3, 4-5, 6-7.
#[inline]
pub(crate) fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] =
                l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

/// Requantize one sub-block of 16 or 32 values with its final scale:
/// `l = clamp(nearest_int((x [+ m]) / d), lo, hi) + off` (`ADD_M` adds `m`
/// first, as the asymmetric formats do). `SIMD` selects the AVX2 version
/// (when the CPU has it); the results are the same.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn requantize_sub_block<const SIMD: bool, const ADD_M: bool>(
    x: &[f32],
    d: f32,
    m: f32,
    lo: i32,
    hi: i32,
    off: i32,
    l: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if SIMD && crate::quant::cpu::avx2() {
        // SAFETY: AVX2 is available.
        unsafe { simd::requantize::<ADD_M>(x, d, m, lo, hi, off, l) };
        return;
    }
    for (li, &xi) in l.iter_mut().zip(x) {
        let v = if ADD_M { xi + m } else { xi };
        *li = (crate::quant::search::nearest_int(v / d).clamp(lo, hi) + off) as u8;
    }
}

/// Split `x` into its super-blocks (the row is a multiple of 256 long).
#[inline]
pub(crate) fn super_blocks(x: &[f32]) -> impl Iterator<Item = &[f32; QK_K]> {
    x.chunks_exact(QK_K).map(|c| c.try_into().unwrap())
}

/// `dst` viewed as the blocks of one row of `src`, after checking that the
/// row is a whole number of super-blocks of `dst` and that `imatrix`, when
/// given, has one weight per element.
///
/// # Panics
/// On either length mismatch.
pub(crate) fn row_blocks<'a, B: Block>(
    src: &[f32],
    dst: &'a mut [u8],
    imatrix: Option<&[f32]>,
) -> &'a mut [B] {
    let blocks = as_blocks_mut::<B>(dst);
    assert_eq!(blocks.len() * QK_K, src.len(), "row length");
    if let Some(qw) = imatrix {
        assert_eq!(qw.len(), src.len(), "imatrix length");
    }
    blocks
}

/// Runs a scalar super-block quantizer over one row: `reference` without
/// an importance matrix (ggml's `quantize_row_qN_K_ref`), `weighted` with one
/// (`quantize_row_qN_K_impl`).
pub(crate) fn quantize_row_blocks<B: Block>(
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
    reference: impl Fn(&[f32; QK_K], &mut B),
    weighted: impl Fn(&[f32; QK_K], &[f32], &mut B),
) {
    let blocks = row_blocks::<B>(src, dst, imatrix);
    match imatrix {
        None => super_blocks(src)
            .zip(blocks)
            .for_each(|(x, y)| reference(x, y)),
        Some(qw) => {
            for ((x, y), w) in super_blocks(src).zip(blocks).zip(qw.chunks_exact(QK_K)) {
                weighted(x, w, y);
            }
        }
    }
}

/// Super-block `i` of a row.
#[inline(always)]
pub(crate) fn block_at(v: &[f32], i: usize) -> &[f32; QK_K] {
    v[QK_K * i..QK_K * (i + 1)].try_into().unwrap()
}

/// The largest of `v` and 0, as C's `if (v[j] > max) max = v[j];` from 0
/// (a NaN never wins).
#[inline(always)]
pub(crate) fn largest<const N: usize>(v: &[f32; N]) -> f32 {
    let mut max = 0f32;
    for &x in v {
        if x > max {
            max = x;
        }
    }
    max
}

/// Formats registered by this module.
pub static FORMATS: &[Format] = &[
    Format {
        ty: QuantType::Q2_K,
        name: "q2_K",
        block_size: QK_K,
        block_bytes: std::mem::size_of::<q2k::BlockQ2K>(),
        quantize_row: q2k::quantize_row,
        quantize_row_streaming: None,
        quantize_row_checked: None,
        dequantize_row: q2k::dequantize_row,
        dequantize_row_streaming: Some(q2k::dequantize_row_streaming),
    },
    Format {
        ty: QuantType::Q3_K,
        name: "q3_K",
        block_size: QK_K,
        block_bytes: std::mem::size_of::<q3k::BlockQ3K>(),
        quantize_row: q3k::quantize_row,
        quantize_row_streaming: None,
        quantize_row_checked: None,
        dequantize_row: q3k::dequantize_row,
        dequantize_row_streaming: Some(q3k::dequantize_row_streaming),
    },
    Format {
        ty: QuantType::Q4_K,
        name: "q4_K",
        block_size: QK_K,
        block_bytes: std::mem::size_of::<q4k::BlockQ4K>(),
        quantize_row: q4k::quantize_row,
        quantize_row_streaming: None,
        quantize_row_checked: None,
        dequantize_row: q4k::dequantize_row,
        dequantize_row_streaming: Some(q4k::dequantize_row_streaming),
    },
    Format {
        ty: QuantType::Q5_K,
        name: "q5_K",
        block_size: QK_K,
        block_bytes: std::mem::size_of::<q5k::BlockQ5K>(),
        quantize_row: q5k::quantize_row,
        quantize_row_streaming: None,
        quantize_row_checked: None,
        dequantize_row: q5k::dequantize_row,
        dequantize_row_streaming: Some(q5k::dequantize_row_streaming),
    },
    Format {
        ty: QuantType::Q6_K,
        name: "q6_K",
        block_size: QK_K,
        block_bytes: std::mem::size_of::<q6k::BlockQ6K>(),
        quantize_row: q6k::quantize_row,
        quantize_row_streaming: None,
        quantize_row_checked: None,
        dequantize_row: q6k::dequantize_row,
        dequantize_row_streaming: Some(q6k::dequantize_row_streaming),
    },
];

/// Test inputs shared by the K-quant modules' SIMD-versus-scalar tests.
#[cfg(test)]
pub(crate) mod test_blocks {
    use super::QK_K;

    pub(crate) use crate::rng::TestRng as Rng;

    /// Super-blocks of one of several classes: Gaussian at magnitudes from
    /// 1e-38 to 1e38, small integers and halves (exact rounding ties), sparse
    /// blocks, subnormals, and specials (NaN, ±∞, ±0, ±MAX).
    pub(crate) fn make_block(r: &mut Rng, class: u64) -> [f32; QK_K] {
        let mut x = [0f32; QK_K];
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-40,
            -1e-45,
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE,
        ];
        for (i, v) in x.iter_mut().enumerate() {
            *v = match class % 8 {
                0 => r.gauss(),
                1 => r.gauss() * 10f32.powi((r.next() % 77) as i32 - 38),
                2 => (r.next() % 17) as f32 - 8.0,
                3 => ((r.next() % 33) as f32 - 16.0) * 0.5 * 10f32.powi((class / 8 % 9) as i32 - 4),
                4 => {
                    if r.next() % 5 == 0 {
                        r.gauss()
                    } else {
                        0.0
                    }
                }
                5 => {
                    f32::from_bits((r.next() % 0x0080_0000) as u32)
                        * if i % 3 == 0 { -1.0 } else { 1.0 }
                }
                6 => r.gauss() * 10f32.powi(((i / 16) % 61) as i32 - 30),
                _ => {
                    if r.next() % 13 == 0 {
                        specials[(r.next() % specials.len() as u64) as usize]
                    } else {
                        r.gauss() * 10f32.powi((r.next() % 9) as i32 - 4)
                    }
                }
            };
        }
        x
    }

    /// Importance weights for a super-block: mostly positive magnitudes,
    /// with zeros, tiny and huge values, and (class 7) specials.
    pub(crate) fn make_weights(r: &mut Rng, class: u64) -> [f32; QK_K] {
        let mut w = [0f32; QK_K];
        for v in w.iter_mut() {
            *v = match r.next() % 16 {
                0 => 0.0,
                1 => r.gauss().abs() * 1e-30,
                2 => r.gauss().abs() * 1e30,
                3 if class % 8 == 7 => {
                    [f32::NAN, f32::INFINITY, -1.0, -0.0, 1e-45][(r.next() % 5) as usize]
                }
                _ => r.gauss().abs() + 0.01,
            };
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_matches_half_on_non_nan() {
        let mut s = 0x1234_5678u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let f = f32::from_bits(s);
            if f.is_nan() {
                assert_eq!(fp32_to_fp16(f) & 0x7FFF, 0x7E00);
                continue;
            }
            assert_eq!(fp32_to_fp16(f), half::f16::from_f32(f).to_bits(), "{f:e}");
        }
        for h in 0..=u16::MAX {
            let a = fp16_to_fp32(h);
            let b = half::f16::from_bits(h).to_f32();
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{h:#x}"
            );
        }
    }
}
