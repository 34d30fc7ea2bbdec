//! Plain floating-point formats: F32 (a copy), F16 and BF16.
//!
//! The conversions reproduce ggml's own, bit for bit, for every input:
//! - F32 → F16 is ggml's portable `ggml_compute_fp32_to_fp16` (round to
//!   nearest even, overflow to infinity, subnormals kept), with one twist
//!   that hardware converters do not share: every NaN becomes the quiet NaN
//!   `0x7E00` with the input's sign, whatever its payload.
//! - F16 → F32 is exact; a NaN keeps its payload and gets the quiet bit.
//! - F32 → BF16 is `ggml_compute_fp32_to_bf16`: round to nearest even on the
//!   top 16 bits, NaNs truncated and forced quiet (`| 0x40`).
//! - BF16 → F32 is a shift.
//!
//! The `half` crate is not used: its NaN conversion keeps the payload, which
//! ggml does not. On x86_64 with F16C the row loops use the hardware
//! converter and patch NaNs, which the unit tests check over all 2^16 halves
//! and a dense sweep of the 2^32 floats.

use super::{Format, QuantType};

/// Formats registered by this module.
pub static FORMATS: &[Format] = &[
    Format {
        ty: QuantType::F32,
        name: "f32",
        block_size: 1,
        block_bytes: 4,
        quantize_row: quantize_row_f32,
        quantize_row_streaming: None,
        quantize_row_checked: None,
        dequantize_row: dequantize_row_f32,
        dequantize_row_streaming: None,
    },
    Format {
        ty: QuantType::F16,
        name: "f16",
        block_size: 1,
        block_bytes: 2,
        quantize_row: quantize_row_f16,
        quantize_row_streaming: Some(quantize_row_f16_streaming),
        quantize_row_checked: Some(quantize_row_f16_checked),
        dequantize_row: dequantize_row_f16,
        dequantize_row_streaming: None,
    },
    Format {
        ty: QuantType::BF16,
        name: "bf16",
        block_size: 1,
        block_bytes: 2,
        quantize_row: quantize_row_bf16,
        quantize_row_streaming: Some(quantize_row_bf16_streaming),
        quantize_row_checked: Some(quantize_row_bf16_checked),
        dequantize_row: dequantize_row_bf16,
        dequantize_row_streaming: Some(dequantize_row_bf16_streaming),
    },
];

/// F32 → IEEE half bits, exactly as ggml's `GGML_FP32_TO_FP16`.
#[inline]
pub fn fp32_to_fp16(f: f32) -> u16 {
    // Scale so that the addition below rounds the mantissa to 10 bits
    // (round to nearest even) and overflows to infinity where it must.
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);

    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    let magnitude = if shl1_w > 0xFF00_0000 {
        0x7E00
    } else {
        nonsign
    };
    ((sign >> 16) | magnitude) as u16
}

/// IEEE half bits → F32, exactly as ggml's `GGML_FP16_TO_FP32`.
///
/// Written with integer operations only, so the result does not depend on
/// how the compiler treats NaN payloads: ggml multiplies the widened value
/// by 2^-112, which on IEEE hardware is exact for numbers and sets the quiet
/// bit of a NaN; that is what the NaN branch below does.
#[inline]
pub fn fp16_to_fp32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let mant = (h & 0x03FF) as u32;
    let bits = if exp == 0x1F {
        // Infinity or NaN (quieted, payload kept).
        let quiet = if mant != 0 { 0x0040_0000 } else { 0 };
        0x7F80_0000 | (mant << 13) | quiet
    } else if exp != 0 {
        ((exp + 112) << 23) | (mant << 13)
    } else if mant != 0 {
        // Subnormal: exactly mant * 2^-24.
        (mant as f32 * f32::from_bits(0x3380_0000)).to_bits()
    } else {
        0
    };
    f32::from_bits(sign | bits)
}

/// F32 → bfloat16 bits, exactly as ggml's `ggml_compute_fp32_to_bf16`.
#[inline]
pub fn fp32_to_bf16(f: f32) -> u16 {
    let i = f.to_bits();
    if (i & 0x7FFF_FFFF) > 0x7F80_0000 {
        // NaN: truncate and force quiet.
        return ((i >> 16) | 64) as u16;
    }
    (i.wrapping_add(0x7FFF + ((i >> 16) & 1)) >> 16) as u16
}

/// bfloat16 bits → F32 (exact).
#[inline]
pub fn bf16_to_fp32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn check_lengths(n: usize, bytes: usize, per: usize) {
    assert_eq!(bytes, n * per, "row buffers of mismatched lengths");
}

/// F32 "quantization": a little-endian copy.
pub fn quantize_row_f32(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    check_lengths(src.len(), dst.len(), 4);
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

/// F32 dequantization: a little-endian copy.
pub fn dequantize_row_f32(src: &[u8], dst: &mut [f32]) {
    check_lengths(dst.len(), src.len(), 4);
    for (s, d) in src.chunks_exact(4).zip(dst.iter_mut()) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

/// Row of F32 → F16 (`ggml_fp32_to_fp16_row`); the imatrix is ignored.
pub fn quantize_row_f16(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    quantize_row_2byte::<F16Bits, false>(src, dst);
}

/// [`quantize_row_f16`] with non-temporal stores (the same bytes; plain
/// stores when `dst` is not 16-byte aligned).
pub fn quantize_row_f16_streaming(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    quantize_row_2byte::<F16Bits, true>(src, dst);
}

/// [`quantize_row_f16`] (streaming with `streaming`) that also tells
/// whether every value was finite.
pub fn quantize_row_f16_checked(src: &[f32], dst: &mut [u8], streaming: bool) -> bool {
    if streaming {
        quantize_row_2byte::<F16Bits, true>(src, dst)
    } else {
        quantize_row_2byte::<F16Bits, false>(src, dst)
    }
}

/// [`quantize_row_bf16`] (streaming with `streaming`) that also tells
/// whether every value was finite.
pub fn quantize_row_bf16_checked(src: &[f32], dst: &mut [u8], streaming: bool) -> bool {
    if streaming {
        quantize_row_2byte::<Bf16Bits, true>(src, dst)
    } else {
        quantize_row_2byte::<Bf16Bits, false>(src, dst)
    }
}

/// A 2-byte float format's row conversions from F32.
/// Each returns whether every value of `src` was finite (checked on the
/// values it loads anyway).
trait TwoByte {
    /// The portable conversion.
    fn scalar(src: &[f32], dst: &mut [u8]) -> bool;
    /// The AVX2 (and F16C) conversion; with `NT`, non-temporal stores into
    /// a 16-byte-aligned `dst`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2<const NT: bool>(src: &[f32], dst: &mut [u8]) -> bool;
}

struct F16Bits;
impl TwoByte for F16Bits {
    fn scalar(src: &[f32], dst: &mut [u8]) -> bool {
        fp32_to_fp16_row_scalar(src, dst);
        src.iter().all(|v| v.is_finite())
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2<const NT: bool>(src: &[f32], dst: &mut [u8]) -> bool {
        simd::fp32_to_fp16_row::<NT>(src, dst)
    }
}

struct Bf16Bits;
impl TwoByte for Bf16Bits {
    fn scalar(src: &[f32], dst: &mut [u8]) -> bool {
        fp32_to_bf16_row_scalar(src, dst);
        src.iter().all(|v| v.is_finite())
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2<const NT: bool>(src: &[f32], dst: &mut [u8]) -> bool {
        simd::fp32_to_bf16_row::<NT>(src, dst)
    }
}

/// A row of F32 into format `T`: the AVX2 conversion when the CPU has AVX2
/// and F16C, streaming (`NT`) only into a 16-byte-aligned `dst`; else the
/// portable one. Returns whether every value was finite.
fn quantize_row_2byte<T: TwoByte, const NT: bool>(src: &[f32], dst: &mut [u8]) -> bool {
    check_lengths(src.len(), dst.len(), 2);
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu::avx2_f16c() {
        if NT && dst.as_ptr().align_offset(16) == 0 {
            // SAFETY: AVX2 and F16C are available and dst is 16-byte aligned
            // (checked just above); the fence orders the streamed stores
            // before whatever follows.
            unsafe {
                let finite = T::avx2::<true>(src, dst);
                std::arch::x86_64::_mm_sfence();
                return finite;
            }
        }
        // SAFETY: AVX2 and F16C are available (checked just above).
        return unsafe { T::avx2::<false>(src, dst) };
    }
    T::scalar(src, dst)
}

fn fp32_to_fp16_row_scalar(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&fp32_to_fp16(*s).to_le_bytes());
    }
}

/// Row of F16 → F32 (`ggml_fp16_to_fp32_row`).
pub fn dequantize_row_f16(src: &[u8], dst: &mut [f32]) {
    check_lengths(dst.len(), src.len(), 2);
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu::avx2_f16c() {
        // SAFETY: the CPU supports AVX2 and F16C (checked just above).
        unsafe { simd::fp16_to_fp32_row(src, dst) };
        return;
    }
    fp16_to_fp32_row_scalar(src, dst);
}

fn fp16_to_fp32_row_scalar(src: &[u8], dst: &mut [f32]) {
    for (s, d) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *d = fp16_to_fp32(u16::from_le_bytes([s[0], s[1]]));
    }
}

/// Row of F32 → BF16 (`ggml_fp32_to_bf16_row_ref`); the imatrix is ignored.
pub fn quantize_row_bf16(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    quantize_row_2byte::<Bf16Bits, false>(src, dst);
}

/// [`quantize_row_bf16`] with non-temporal stores (the same bytes; plain
/// stores when `dst` is not 16-byte aligned).
pub fn quantize_row_bf16_streaming(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    quantize_row_2byte::<Bf16Bits, true>(src, dst);
}

fn fp32_to_bf16_row_scalar(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&fp32_to_bf16(*s).to_le_bytes());
    }
}

/// Row of BF16 → F32 (`ggml_bf16_to_fp32_row`).
pub fn dequantize_row_bf16(src: &[u8], dst: &mut [f32]) {
    check_lengths(dst.len(), src.len(), 2);
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu::avx2_f16c() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { simd::bf16_to_fp32_row::<false>(src, dst) };
        return;
    }
    bf16_to_fp32_row_scalar(src, dst);
}

/// Row of BF16 → F32 with non-temporal stores (same values as
/// [`dequantize_row_bf16`]; plain stores when `dst` is not 16-byte aligned).
pub fn dequantize_row_bf16_streaming(src: &[u8], dst: &mut [f32]) {
    check_lengths(dst.len(), src.len(), 2);
    #[cfg(target_arch = "x86_64")]
    if crate::quant::cpu::avx2_f16c() && dst.as_ptr().align_offset(16) == 0 {
        // SAFETY: AVX2 is available and dst is 16-byte aligned (checked
        // just above); the fence orders the streamed stores before whatever
        // follows.
        unsafe {
            simd::bf16_to_fp32_row::<true>(src, dst);
            std::arch::x86_64::_mm_sfence();
        }
        return;
    }
    dequantize_row_bf16(src, dst);
}

fn bf16_to_fp32_row_scalar(src: &[u8], dst: &mut [f32]) {
    for (s, d) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *d = bf16_to_fp32(u16::from_le_bytes([s[0], s[1]]));
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Hardware F32 → F16 (round to nearest even) with NaNs replaced by
    /// ggml's `sign | 0x7E00`. With `NT`, non-temporal stores (`dst` must
    /// then be 16-byte aligned).
    /// Returns whether every value was finite.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn fp32_to_fp16_row<const NT: bool>(src: &[f32], dst: &mut [u8]) -> bool {
        let n = src.len();
        let abs_mask = _mm256_set1_epi32(0x7FFF_FFFF);
        let inf = _mm256_set1_epi32(0x7F80_0000);
        let below_inf = _mm256_set1_epi32(0x7F7F_FFFF);
        let qnan = _mm_set1_epi16(0x7E00);
        let mut bad = _mm256_setzero_si256();
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_loadu_ps(src.as_ptr().add(i));
            let bits = _mm256_castps_si256(x);
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
            // NaN lanes: |bits| > 0x7F800000 (as signed ints, both positive);
            // non-finite lanes: |bits| >= 0x7F800000.
            let abs = _mm256_and_si256(bits, abs_mask);
            let is_nan = _mm256_cmpgt_epi32(abs, inf);
            bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(abs, below_inf));
            // Narrow the 32-bit lane masks to 16 bits, keeping lane order.
            let nan16 = _mm_packs_epi32(
                _mm256_castsi256_si128(is_nan),
                _mm256_extracti128_si256::<1>(is_nan),
            );
            let sign16 = _mm_packs_epi32(
                _mm_srai_epi32::<16>(_mm256_castsi256_si128(bits)),
                _mm_srai_epi32::<16>(_mm256_extracti128_si256::<1>(bits)),
            );
            let sign16 = _mm_and_si128(sign16, _mm_set1_epi16(i16::MIN));
            let fixed = _mm_or_si128(sign16, qnan);
            let out = _mm_blendv_epi8(h, fixed, nan16);
            let y = dst.as_mut_ptr().add(2 * i) as *mut __m128i;
            if NT {
                _mm_stream_si128(y, out);
            } else {
                _mm_storeu_si128(y, out);
            }
            i += 8;
        }
        super::fp32_to_fp16_row_scalar(&src[i..], &mut dst[2 * i..]);
        _mm256_testz_si256(bad, bad) != 0 && src[i..].iter().all(|v| v.is_finite())
    }

    /// F32 → BF16 as ggml rounds (nearest even on the top 16 bits; NaNs
    /// truncated and made quiet with `| 0x40`). With `NT`, non-temporal
    /// stores (`dst` must then be 16-byte aligned).
    /// Returns whether every value was finite.
    #[target_feature(enable = "avx2")]
    pub unsafe fn fp32_to_bf16_row<const NT: bool>(src: &[f32], dst: &mut [u8]) -> bool {
        let n = src.len();
        let abs_mask = _mm256_set1_epi32(0x7FFF_FFFF);
        let inf = _mm256_set1_epi32(0x7F80_0000);
        let below_inf = _mm256_set1_epi32(0x7F7F_FFFF);
        let mut bad = _mm256_setzero_si256();
        let half = _mm256_set1_epi32(0x7FFF);
        let one = _mm256_set1_epi32(1);
        let quiet = _mm256_set1_epi32(64);
        let bf16 = |x: __m256| {
            let i = _mm256_castps_si256(x);
            let is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(i, abs_mask), inf);
            let top = _mm256_srli_epi32::<16>(i);
            let bias = _mm256_add_epi32(half, _mm256_and_si256(top, one));
            let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(i, bias));
            _mm256_blendv_epi8(rounded, _mm256_or_si256(top, quiet), is_nan)
        };
        let mut i = 0;
        while i + 16 <= n {
            let (xa, xb) = (
                _mm256_loadu_ps(src.as_ptr().add(i)),
                _mm256_loadu_ps(src.as_ptr().add(i + 8)),
            );
            for x in [xa, xb] {
                let abs = _mm256_and_si256(_mm256_castps_si256(x), abs_mask);
                bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(abs, below_inf));
            }
            let a = bf16(xa);
            let b = bf16(xb);
            // Values fit 16 bits: the unsigned pack is exact; it interleaves
            // the 128-bit halves, which the permutation puts back in order.
            let out = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b));
            let y = dst.as_mut_ptr().add(2 * i) as *mut __m128i;
            if NT {
                _mm_stream_si128(y, _mm256_castsi256_si128(out));
                _mm_stream_si128(y.add(1), _mm256_extracti128_si256::<1>(out));
            } else {
                _mm256_storeu_si256(y as *mut __m256i, out);
            }
            i += 16;
        }
        super::fp32_to_bf16_row_scalar(&src[i..], &mut dst[2 * i..]);
        _mm256_testz_si256(bad, bad) != 0 && src[i..].iter().all(|v| v.is_finite())
    }

    /// Hardware F16 → F32: exact for numbers; NaNs keep their payload and
    /// are quieted, as ggml's conversion does.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn fp16_to_fp32_row(src: &[u8], dst: &mut [f32]) {
        let n = dst.len();
        let mut i = 0;
        while i + 8 <= n {
            let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
        super::fp16_to_fp32_row_scalar(&src[2 * i..], &mut dst[i..]);
    }

    /// BF16 → F32: each value's bits shifted into the high half. With `NT`,
    /// non-temporal stores (`dst` must then be 16-byte aligned).
    #[target_feature(enable = "avx2")]
    pub unsafe fn bf16_to_fp32_row<const NT: bool>(src: &[u8], dst: &mut [f32]) {
        let n = dst.len();
        let mut i = 0;
        while i + 8 <= n {
            let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
            let f = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)));
            let y = dst.as_mut_ptr().add(i);
            if NT {
                _mm_stream_ps(y, _mm256_castps256_ps128(f));
                _mm_stream_ps(y.add(4), _mm256_extractf128_ps::<1>(f));
            } else {
                _mm256_storeu_ps(y, f);
            }
            i += 8;
        }
        super::bf16_to_fp32_row_scalar(&src[2 * i..], &mut dst[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's F16 → F32 written the way ggml writes it (float arithmetic),
    /// as an independent check of the integer version.
    fn fp16_to_fp32_ggml_style(h: u16) -> f32 {
        let w = (h as u32) << 16;
        let sign = w & 0x8000_0000;
        let two_w = w.wrapping_add(w);
        let exp_offset = 0xE0u32 << 23;
        let exp_scale = f32::from_bits(0x0780_0000);
        let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
        let magic_mask = 126u32 << 23;
        let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
        let cutoff = 1u32 << 27;
        let r = sign
            | if two_w < cutoff {
                denormalized.to_bits()
            } else {
                normalized.to_bits()
            };
        f32::from_bits(r)
    }

    #[test]
    fn fp16_to_fp32_all_halves() {
        let all: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        let mut out = vec![0f32; 65536];
        dequantize_row_f16(&all, &mut out);
        for h in 0..=u16::MAX {
            let a = fp16_to_fp32(h).to_bits();
            let b = fp16_to_fp32_ggml_style(h).to_bits();
            assert_eq!(a, b, "half {h:#06x}");
            assert_eq!(out[h as usize].to_bits(), a, "row half {h:#06x}");
        }
    }

    /// Checks the row converter (SIMD where available) against the scalar
    /// ggml formula on every `step`-th bit pattern plus the edges.
    fn sweep_fp32_to_fp16(step: u64) {
        sweep(step, quantize_row_f16, fp32_to_fp16);
    }

    /// `row` against the scalar conversion `one` on special values and
    /// every `step`-th f32 bit pattern.
    fn sweep(step: u64, row: super::super::QuantizeRowFn, one: fn(f32) -> u16) {
        let specials = [
            0u32,
            0x8000_0000,
            0x7F80_0000,
            0xFF80_0000,
            0x7F80_0001,
            0xFFC0_0000,
            0x7FFF_FFFF,
            0x477F_E000,
            0x477F_EFFF,
            0x477F_F000,
            0x3380_0000,
            0x3300_0000,
            0x3300_0001,
            0x3880_0000,
            0x387F_FFFF,
            0x0000_0001,
        ];
        let check = |chunk: &[f32]| {
            let mut dst = vec![0u8; chunk.len() * 2];
            row(chunk, &mut dst, None);
            for (k, x) in chunk.iter().enumerate() {
                let got = u16::from_le_bytes([dst[2 * k], dst[2 * k + 1]]);
                assert_eq!(got, one(*x), "f32 bits {:#010x}", x.to_bits());
            }
        };
        check(&specials.map(f32::from_bits));
        let mut chunk = Vec::with_capacity(1 << 16);
        let mut b = 0u64;
        while b < 1u64 << 32 {
            chunk.push(f32::from_bits(b as u32));
            if chunk.len() == 1 << 16 {
                check(&chunk);
                chunk.clear();
            }
            b += step;
        }
        check(&chunk);
    }

    #[test]
    fn fp32_to_fp16_row_matches_scalar() {
        sweep_fp32_to_fp16(997);
    }

    #[test]
    fn fp32_to_bf16_row_matches_scalar() {
        // Rounding ties (0x....8000), NaN payloads and infinities included.
        sweep(997, quantize_row_bf16, fp32_to_bf16);
        sweep(0x8000, quantize_row_bf16, fp32_to_bf16);
    }

    #[test]
    #[ignore = "exhaustive over 2^32 floats; run by hand"]
    fn fp32_to_fp16_row_matches_scalar_exhaustive() {
        sweep_fp32_to_fp16(1);
    }

    #[test]
    fn fp32_to_fp16_known_values() {
        assert_eq!(fp32_to_fp16(1.0), 0x3C00);
        assert_eq!(fp32_to_fp16(-2.0), 0xC000);
        assert_eq!(fp32_to_fp16(65504.0), 0x7BFF);
        assert_eq!(fp32_to_fp16(65520.0), 0x7C00); // rounds to infinity
        assert_eq!(fp32_to_fp16(f32::from_bits(0x3380_0000)), 0x0001); // 2^-24
        assert_eq!(fp32_to_fp16(f32::from_bits(0x3300_0000)), 0x0000); // 2^-25: tie to even
        assert_eq!(fp32_to_fp16(f32::from_bits(0x7F80_0001)), 0x7E00);
        assert_eq!(fp32_to_fp16(f32::from_bits(0xFFFF_FFFF)), 0xFE00);
        assert_eq!(fp32_to_fp16(-0.0), 0x8000);
    }

    #[test]
    fn bf16_known_values() {
        assert_eq!(fp32_to_bf16(1.0), 0x3F80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80); // tie to even
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0);
        assert_eq!(fp32_to_bf16(f32::from_bits(0xFF81_2345)), 0xFFC1);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7F7F_FFFF)), 0x7F80); // overflow to inf
        assert_eq!(bf16_to_fp32(0xC040).to_bits(), 0xC040_0000);
    }

    #[test]
    fn checked_quantizers_tell_finiteness_and_write_the_plain_bytes() {
        let mut r = crate::rng::TestRng(5);
        for (checked, plain) in [
            (
                quantize_row_f16_checked as super::super::CheckedQuantizeRowFn,
                quantize_row_f16 as super::super::QuantizeRowFn,
            ),
            (quantize_row_bf16_checked, quantize_row_bf16),
        ] {
            for n in [1usize, 7, 8, 15, 16, 100, 4096] {
                for bad in [
                    None,
                    Some(f32::NAN),
                    Some(f32::INFINITY),
                    Some(f32::NEG_INFINITY),
                ] {
                    let mut src: Vec<f32> = (0..n)
                        .map(|_| (r.next() >> 40) as f32 / 1e3 - 8e3)
                        .collect();
                    if let Some(b) = bad {
                        let at = (r.next() as usize) % n;
                        src[at] = b;
                    }
                    // The largest finite values are finite.
                    src[0] = if bad.is_none() { f32::MAX } else { src[0] };
                    let mut want = vec![0u8; 2 * n];
                    plain(&src, &mut want, None);
                    // An aligned buffer, so that streaming really streams.
                    let mut buf = vec![0u128; n.div_ceil(8) + 1];
                    let bytes: &mut [u8] =
                        unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), 2 * n) };
                    for streaming in [false, true] {
                        assert_eq!(
                            checked(&src, bytes, streaming),
                            bad.is_none(),
                            "n {n} {bad:?}"
                        );
                        assert!(
                            bytes == want.as_slice(),
                            "n {n} {bad:?} streaming {streaming}"
                        );
                    }
                }
            }
        }
    }
}
