//! AVX2 + F16C block kernels. Each computes, lane by lane, the same
//! float operations as the scalar reference (no FMA, same rounding,
//! `cvttps` truncation as C's conversions); blocks holding a NaN or an
//! infinity go to the scalar code, where C's NaN-ordering subtleties are
//! reproduced one element at a time.
use super::dequantize::dequantize_nan_block;
use super::quantize::{
    inverse_or_zero, quantize_block_q4_0_ref, quantize_block_q4_1_ref, quantize_block_q5_0_ref,
    quantize_block_q5_1_ref, quantize_block_q8_0_ref,
};
use super::*;
use std::arch::x86_64::*;

/// The block's 32 floats as four vectors.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load(x: &[f32]) -> [__m256; 4] {
    assert!(x.len() >= QK);
    let p = x.as_ptr();
    [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ]
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn abs(v: __m256) -> __m256 {
    _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF)))
}

/// All 32 values are finite (no NaN, no infinity).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn all_finite(a: &[__m256; 4]) -> bool {
    let inf = _mm256_set1_ps(f32::INFINITY);
    let ok = _mm256_and_ps(
        _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_LT_OQ>(a[0], inf),
            _mm256_cmp_ps::<_CMP_LT_OQ>(a[1], inf),
        ),
        _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_LT_OQ>(a[2], inf),
            _mm256_cmp_ps::<_CMP_LT_OQ>(a[3], inf),
        ),
    );
    _mm256_movemask_ps(ok) == 0xFF
}

/// Horizontal maximum (values are not NaN).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
    _mm_cvtss_f32(m)
}

/// Horizontal minimum (values are not NaN).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn hmin(v: __m256) -> f32 {
    let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_min_ss(m, _mm_shuffle_ps::<1>(m, m));
    _mm_cvtss_f32(m)
}

/// Bit j set when lane j of the block compares equal to `t`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn eq_mask(v: &[__m256; 4], t: f32) -> u32 {
    let t = _mm256_set1_ps(t);
    let mut m = 0u32;
    for (k, vk) in v.iter().enumerate() {
        m |= (_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(*vk, t)) as u32) << (8 * k);
    }
    m
}

/// The first element equal to `value` (which must occur), to recover
/// the sign of a zero extreme the way C's sequential scan keeps it.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn first_equal(x: &[f32], v: &[__m256; 4], value: f32) -> f32 {
    x[eq_mask(v, value).trailing_zeros() as usize]
}

/// ggml's F16 bits of a value that is not NaN (hardware rounding is
/// ggml's there; NaN would need ggml's canonical 0x7E00).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16(x: f32) -> [u8; 2] {
    if x.is_nan() {
        return f16_bytes(x);
    }
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x));
    (_mm_extract_epi16::<0>(h) as u16).to_le_bytes()
}

/// The scalar F16 → F32 of a block scale (F16C is exact, NaNs quieted
/// like ggml's).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f32_of(h: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(
        _mm_cvtsi32_si128(u16::from_le_bytes(h) as i32),
    ))
}

/// Signed value of largest magnitude, first on ties (as `signed_absmax`),
/// for a block with no NaN.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn signed_absmax_v(x: &[f32], a: &[__m256; 4]) -> f32 {
    let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
    let amax = hmax(m);
    if amax == 0.0 {
        return 0.0;
    }
    x[eq_mask(a, amax).trailing_zeros() as usize]
}

/// `(min, max)` as the scalar `min_max`, for a block with no NaN.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn min_max_v(x: &[f32], v: &[__m256; 4]) -> (f32, f32) {
    let mn = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
    let mx = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
    let (mut min, mut max) = (hmin(mn), hmax(mx));
    if min == 0.0 {
        min = first_equal(x, v, 0.0);
    }
    if max == 0.0 {
        max = first_equal(x, v, 0.0);
    }
    (min, max)
}

/// `cvtt(v * id + bias)` on four vectors, or `cvtt((v - min) * id + bias)`
/// when `min` is given (each operation rounded separately, as in C).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn scale_round(v: &[__m256; 4], min: Option<f32>, id: f32, bias: f32) -> [__m256i; 4] {
    let idv = _mm256_set1_ps(id);
    let b = _mm256_set1_ps(bias);
    let mut q = [_mm256_setzero_si256(); 4];
    for k in 0..4 {
        let t = match min {
            Some(m) => _mm256_sub_ps(v[k], _mm256_set1_ps(m)),
            None => v[k],
        };
        q[k] = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(t, idv), b));
    }
    q
}

/// `qs[j] = q[j] | q[j+16] << 4` for values already in 0..=15 (or
/// `i32::MIN`, which saturates to 0 like C's low byte of it).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn pack_nibbles(q: &[__m256i; 4], qs: &mut [u8; QK / 2]) {
    let lo = _mm256_or_si256(q[0], _mm256_slli_epi32::<4>(q[2]));
    let hi = _mm256_or_si256(q[1], _mm256_slli_epi32::<4>(q[3]));
    let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(lo, hi));
    let b = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
    _mm_storeu_si128(qs.as_mut_ptr() as *mut __m128i, b);
}

/// Low nibbles into `qs`, fifth bits into the returned `qh`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn pack_q5_v(q: &[__m256i; 4], qs: &mut [u8; QK / 2]) -> [u8; 4] {
    let nib = _mm256_set1_epi32(0x0F);
    let low = [
        _mm256_and_si256(q[0], nib),
        _mm256_and_si256(q[1], nib),
        _mm256_and_si256(q[2], nib),
        _mm256_and_si256(q[3], nib),
    ];
    pack_nibbles(&low, qs);
    let mut qh = 0u32;
    for (k, qk) in q.iter().enumerate() {
        let bit4 = _mm256_castsi256_ps(_mm256_slli_epi32::<27>(*qk));
        qh |= (_mm256_movemask_ps(bit4) as u32) << (8 * k);
    }
    qh.to_le_bytes()
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn min_epi32(q: [__m256i; 4], hi: i32) -> [__m256i; 4] {
    let h = _mm256_set1_epi32(hi);
    q.map(|v| _mm256_min_epi32(v, h))
}

#[target_feature(enable = "avx2,f16c")]
pub unsafe fn quantize_row_q4_0(src: &[f32], ys: &mut [BlockQ4_0]) -> bool {
    let mut finite = true;
    for (x, y) in src.chunks_exact(QK).zip(ys) {
        let v = load(x);
        let a = v.map(|t| abs(t));
        if !all_finite(&a) {
            finite = false;
            quantize_block_q4_0_ref(block_slice(x), y);
            continue;
        }
        let max = signed_absmax_v(x, &a);
        let d = max / -8.0;
        let id = inverse_or_zero(d);
        y.d = f16(d);
        let q = min_epi32(scale_round(&v, None, id, 8.5), 15);
        pack_nibbles(&q, &mut y.qs);
    }
    finite
}

#[target_feature(enable = "avx2,f16c")]
pub unsafe fn quantize_row_q4_1(src: &[f32], ys: &mut [BlockQ4_1]) -> bool {
    let mut finite = true;
    for (x, y) in src.chunks_exact(QK).zip(ys) {
        let v = load(x);
        if !all_finite(&v.map(|t| abs(t))) {
            finite = false;
            quantize_block_q4_1_ref(block_slice(x), y);
            continue;
        }
        let (min, max) = min_max_v(x, &v);
        let d = (max - min) / 15.0;
        let id = inverse_or_zero(d);
        y.d = f16(d);
        y.m = f16(min);
        let q = min_epi32(scale_round(&v, Some(min), id, 0.5), 15);
        pack_nibbles(&q, &mut y.qs);
    }
    finite
}

#[target_feature(enable = "avx2,f16c")]
pub unsafe fn quantize_row_q5_0(src: &[f32], ys: &mut [BlockQ5_0]) -> bool {
    let mut finite = true;
    for (x, y) in src.chunks_exact(QK).zip(ys) {
        let v = load(x);
        let a = v.map(|t| abs(t));
        if !all_finite(&a) {
            finite = false;
            quantize_block_q5_0_ref(block_slice(x), y);
            continue;
        }
        let max = signed_absmax_v(x, &a);
        let d = max / -16.0;
        let id = inverse_or_zero(d);
        y.d = f16(d);
        let q = min_epi32(scale_round(&v, None, id, 16.5), 31);
        y.qh = pack_q5_v(&q, &mut y.qs);
    }
    finite
}

#[target_feature(enable = "avx2,f16c")]
pub unsafe fn quantize_row_q5_1(src: &[f32], ys: &mut [BlockQ5_1]) -> bool {
    let mut finite = true;
    for (x, y) in src.chunks_exact(QK).zip(ys) {
        let v = load(x);
        if !all_finite(&v.map(|t| abs(t))) {
            finite = false;
            quantize_block_q5_1_ref(block_slice(x), y);
            continue;
        }
        let (min, max) = min_max_v(x, &v);
        let d = (max - min) / 31.0;
        let id = inverse_or_zero(d);
        y.d = f16(d);
        y.m = f16(min);
        let q = scale_round(&v, Some(min), id, 0.5);
        y.qh = pack_q5_v(&q, &mut y.qs);
    }
    finite
}

/// C's `roundf` (half away from zero) on a vector, exactly: truncate,
/// then step away from zero when the (exact) remainder is at least 1/2.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn round_half_away(x: __m256) -> __m256 {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
    let rem = abs(_mm256_sub_ps(x, t));
    let step = _mm256_or_ps(_mm256_and_ps(x, _mm256_set1_ps(-0.0)), _mm256_set1_ps(1.0));
    let away = _mm256_cmp_ps::<_CMP_GE_OQ>(rem, _mm256_set1_ps(0.5));
    _mm256_add_ps(t, _mm256_and_ps(away, step))
}

#[target_feature(enable = "avx2,f16c")]
pub unsafe fn quantize_row_q8_0(src: &[f32], ys: &mut [BlockQ8_0]) -> bool {
    let mut finite = true;
    for (x, y) in src.chunks_exact(QK).zip(ys) {
        let v = load(x);
        let a = v.map(|t| abs(t));
        if !all_finite(&a) {
            finite = false;
            quantize_block_q8_0_ref(block_slice(x), y);
            continue;
        }
        let amax = hmax(_mm256_max_ps(
            _mm256_max_ps(a[0], a[1]),
            _mm256_max_ps(a[2], a[3]),
        ));
        let d = amax / 127.0;
        let id = inverse_or_zero(d);
        y.d = f16(d);
        let idv = _mm256_set1_ps(id);
        // Keep the low byte of each i32 (C's narrowing; `i32::MIN` from
        // an infinite `x * id` becomes 0), then pack without saturating.
        let low = _mm256_set1_epi32(0xFF);
        let q = v.map(|t| {
            let r = _mm256_cvttps_epi32(round_half_away(_mm256_mul_ps(t, idv)));
            _mm256_and_si256(r, low)
        });
        let a16 = _mm256_packus_epi32(q[0], q[1]);
        let b16 = _mm256_packus_epi32(q[2], q[3]);
        let c8 = _mm256_packus_epi16(a16, b16);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let out = _mm256_permutevar8x32_epi32(c8, order);
        _mm256_storeu_si256(y.qs.as_mut_ptr() as *mut __m256i, out);
    }
    finite
}

// -- dequantization ------------------------------------------------------

/// The 32 nibbles of `qs` as i32 vectors: elements 0..8, 8..16 (low
/// nibbles) and 16..24, 24..32 (high nibbles).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn nibbles(qs: &[u8; QK / 2]) -> [__m256i; 4] {
    let b = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(b, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
    [
        _mm256_cvtepu8_epi32(lo),
        _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(lo, lo)),
        _mm256_cvtepu8_epi32(hi),
        _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(hi, hi)),
    ]
}

/// The fifth bits of Q5 blocks as 0 or 16 per element, same layout.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn fifth_bits(qh: [u8; 4]) -> [__m256i; 4] {
    let qh = u32::from_le_bytes(qh) as i32;
    let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let sixteen = _mm256_set1_epi32(16);
    let mut out = [_mm256_setzero_si256(); 4];
    for (k, o) in out.iter_mut().enumerate() {
        let h = _mm256_set1_epi32(qh >> (8 * k));
        let set = _mm256_cmpeq_epi32(_mm256_and_si256(h, bits), bits);
        *o = _mm256_and_si256(set, sixteen);
    }
    out
}

/// `y = float(q - offset) * d (+ m)`, each step rounded as in C; with
/// `NT`, non-temporal stores (`y` must then be 16-byte aligned).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn store_scaled<const NT: bool>(
    q: [__m256i; 4],
    offset: i32,
    d: f32,
    m: Option<f32>,
    y: &mut [f32],
) {
    assert!(y.len() >= QK);
    let off = _mm256_set1_epi32(offset);
    let dv = _mm256_set1_ps(d);
    for (k, qk) in q.iter().enumerate() {
        let f = _mm256_cvtepi32_ps(_mm256_sub_epi32(*qk, off));
        let mut r = _mm256_mul_ps(f, dv);
        if let Some(m) = m {
            r = _mm256_add_ps(r, _mm256_set1_ps(m));
        }
        // Two 16-byte stores: when the output streams to memory they
        // measured ~5-10% faster here than one 32-byte store.
        let (lo, hi) = (_mm256_castps256_ps128(r), _mm256_extractf128_ps::<1>(r));
        if NT {
            _mm_stream_ps(y.as_mut_ptr().add(8 * k), lo);
            _mm_stream_ps(y.as_mut_ptr().add(8 * k + 4), hi);
        } else {
            _mm_storeu_ps(y.as_mut_ptr().add(8 * k), lo);
            _mm_storeu_ps(y.as_mut_ptr().add(8 * k + 4), hi);
        }
    }
}

#[target_feature(enable = "avx2,f16c")]
pub unsafe fn dequantize_row_q4_0<const NT: bool>(xs: &[BlockQ4_0], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        store_scaled::<NT>(nibbles(&b.qs), 8, f32_of(b.d), None, y);
    }
}

#[target_feature(enable = "avx2,f16c")]
pub unsafe fn dequantize_row_q4_1<const NT: bool>(xs: &[BlockQ4_1], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (f32_of(b.d), f32_of(b.m));
        if d.is_nan() || m.is_nan() {
            dequantize_nan_block(b.qs, 0, d, m, y);
            continue;
        }
        store_scaled::<NT>(nibbles(&b.qs), 0, d, Some(m), y);
    }
}

#[target_feature(enable = "avx2,f16c")]
pub unsafe fn dequantize_row_q5_0<const NT: bool>(xs: &[BlockQ5_0], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let n = nibbles(&b.qs);
        let h = fifth_bits(b.qh);
        let q = [0, 1, 2, 3].map(|k| _mm256_or_si256(n[k], h[k]));
        store_scaled::<NT>(q, 16, f32_of(b.d), None, y);
    }
}

#[target_feature(enable = "avx2,f16c")]
pub unsafe fn dequantize_row_q5_1<const NT: bool>(xs: &[BlockQ5_1], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let n = nibbles(&b.qs);
        let h = fifth_bits(b.qh);
        let q = [0, 1, 2, 3].map(|k| _mm256_or_si256(n[k], h[k]));
        let (d, m) = (f32_of(b.d), f32_of(b.m));
        if d.is_nan() || m.is_nan() {
            dequantize_nan_block(b.qs, u32::from_le_bytes(b.qh), d, m, y);
            continue;
        }
        store_scaled::<NT>(q, 0, d, Some(m), y);
    }
}

#[target_feature(enable = "avx2,f16c")]
pub unsafe fn dequantize_row_q8_0<const NT: bool>(xs: &[BlockQ8_0], dst: &mut [f32]) {
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK)) {
        let p = b.qs.as_ptr();
        let q = [0, 1, 2, 3]
            .map(|k| _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(8 * k) as *const __m128i)));
        store_scaled::<NT>(q, 0, f32_of(b.d), None, y);
    }
}
