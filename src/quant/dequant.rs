//! Row dequantizers: the scaling of integer levels shared by the formats,
//! and a macro giving a format its AVX2 and streaming (non-temporal store)
//! row functions from one generic body.

/// `y[k] = d · l[k] − m` (ggml's `d * q - m`: a product, then a difference;
/// no fused multiply-add). Written to auto-vectorize. With `STREAM` the
/// values are written with non-temporal stores: only inside an AVX2
/// function, with `y` 16-byte aligned, and the caller fences.
#[inline(always)]
pub(crate) fn scale_levels<const STREAM: bool, const N: usize>(
    l: &[u8; N],
    d: f32,
    m: f32,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if STREAM {
        // SAFETY: the streaming row function runs this only after checking
        // AVX2 and the alignment of its output (every group of it is then
        // aligned too: groups are multiples of 16 values).
        unsafe { stream_levels::<N, false>(l.as_ptr(), d, Some(m), &mut y[..N]) };
        return;
    }
    for (y, &l) in y[..N].iter_mut().zip(l) {
        *y = d * l as f32 - m;
    }
}

/// `y[k] = d · l[k]` for signed levels (ggml's `d * q`: one product), as
/// [`scale_levels`] (the same streaming rules).
#[inline(always)]
pub(crate) fn scale_signed<const STREAM: bool, const N: usize>(l: &[i8; N], d: f32, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if STREAM {
        // SAFETY: as in `scale_levels`.
        unsafe { stream_levels::<N, true>(l.as_ptr().cast(), d, None, &mut y[..N]) };
        return;
    }
    for (y, &l) in y[..N].iter_mut().zip(l) {
        *y = d * l as f32;
    }
}

/// `d · l[k]`, minus `m` when given, for the `N` level bytes at `l` (signed
/// when `SIGNED`), 8 lanes at a time, written with non-temporal stores
/// (`N` a multiple of 8, `y` 16-byte aligned).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn stream_levels<const N: usize, const SIGNED: bool>(
    l: *const u8,
    d: f32,
    m: Option<f32>,
    y: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(N % 8 == 0 && y.len() == N && y.as_ptr().align_offset(16) == 0);
    let dv = _mm256_set1_ps(d);
    for k in 0..N / 8 {
        let bytes = _mm_loadl_epi64(l.add(8 * k) as *const __m128i);
        let q = if SIGNED {
            _mm256_cvtepi8_epi32(bytes)
        } else {
            _mm256_cvtepu8_epi32(bytes)
        };
        let mut r = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(q));
        if let Some(m) = m {
            r = _mm256_sub_ps(r, _mm256_set1_ps(m));
        }
        _mm_stream_ps(y.as_mut_ptr().add(8 * k), _mm256_castps256_ps128(r));
        _mm_stream_ps(y.as_mut_ptr().add(8 * k + 4), _mm256_extractf128_ps::<1>(r));
    }
}

/// Defines `pub fn $name(src, dst)` for block type `$block` (`$per_block`
/// values each) from an `#[inline(always)] fn $body<const STREAM: bool>(
/// blocks: &[$block], dst: &mut [f32])`: the body is compiled for the
/// baseline and (inlined into a `#[target_feature(enable = "avx2")]`
/// function) for AVX2, so the compiler vectorizes the same float operations
/// 8 wide; the AVX2 copy runs when the CPU has it. Also `pub fn
/// $streaming(src, dst)`: the same values written with non-temporal stores
/// (plain stores when `dst` is not 16-byte aligned or the CPU has no AVX2).
macro_rules! dequantize_row_with_avx2 {
    ($name:ident, $streaming:ident, $block:ty, $per_block:expr, $body:ident, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(src: &[u8], dst: &mut [f32]) {
            let blocks = $crate::quant::block::as_blocks::<$block>(src);
            assert_eq!(blocks.len() * $per_block, dst.len(), "row length");
            #[cfg(target_arch = "x86_64")]
            if $crate::quant::cpu::avx2() {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2(blocks: &[$block], dst: &mut [f32]) {
                    $body::<false>(blocks, dst)
                }
                // SAFETY: AVX2 is available.
                return unsafe { avx2(blocks, dst) };
            }
            $body::<false>(blocks, dst)
        }

        #[doc = $doc]
        /// With non-temporal stores (same values).
        pub fn $streaming(src: &[u8], dst: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            if $crate::quant::cpu::avx2() && dst.as_ptr().align_offset(16) == 0 {
                let blocks = $crate::quant::block::as_blocks::<$block>(src);
                assert_eq!(blocks.len() * $per_block, dst.len(), "row length");
                #[target_feature(enable = "avx2")]
                unsafe fn avx2(blocks: &[$block], dst: &mut [f32]) {
                    $body::<true>(blocks, dst)
                }
                // SAFETY: AVX2 is available and dst is 16-byte aligned; the
                // fence orders the streamed stores before whatever follows.
                unsafe {
                    avx2(blocks, dst);
                    std::arch::x86_64::_mm_sfence();
                }
                return;
            }
            $name(src, dst)
        }
    };
}
pub(crate) use dequantize_row_with_avx2;
