//! AVX-512 versions of K-quant kernels: one f32 lane per sub-block, all 16
//! sub-blocks of a Q3_K super-block in one `__m512`.
//!
//! The same rules as the AVX2 kernels of [`super::simd`] hold: every lane
//! performs exactly its sub-block's scalar sequence of f32 operations (same
//! operations, same order, no FMA in anything that reaches a result), and
//! branches become per-lane masks computed with the same ordered compares.

// Index loops mirror the scalar code lane by lane.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

/// Sixteen f32 lanes.
pub(crate) type F16 = __m512;

/// `nearest_int` of every lane (ggml's magic-number rounding).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn nint(v: F16) -> __m512i {
    let t = _mm512_add_ps(v, _mm512_set1_ps(12_582_912.0));
    _mm512_sub_epi32(
        _mm512_and_si512(_mm512_castps_si512(t), _mm512_set1_epi32(0x007f_ffff)),
        _mm512_set1_epi32(0x0040_0000),
    )
}

/// `MAX(lo, MIN(hi, nearest_int(v)))` of every lane, as i32.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn nint_clamp_i(v: F16, lo: __m512i, hi: __m512i) -> __m512i {
    _mm512_max_epi32(_mm512_min_epi32(nint(v), hi), lo)
}

/// `MAX(lo, MIN(hi, nearest_int(v)))` of every lane, as f32.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn nint_clamp(v: F16, lo: __m512i, hi: __m512i) -> F16 {
    _mm512_cvtepi32_ps(nint_clamp_i(v, lo, hi))
}

#[inline]
#[target_feature(enable = "avx512f")]
fn add(a: F16, b: F16) -> F16 {
    _mm512_add_ps(a, b)
}
#[inline]
#[target_feature(enable = "avx512f")]
fn sub(a: F16, b: F16) -> F16 {
    _mm512_sub_ps(a, b)
}
#[inline]
#[target_feature(enable = "avx512f")]
fn mul(a: F16, b: F16) -> F16 {
    _mm512_mul_ps(a, b)
}
#[inline]
#[target_feature(enable = "avx512f")]
fn div(a: F16, b: F16) -> F16 {
    _mm512_div_ps(a, b)
}
#[inline]
#[target_feature(enable = "avx512f")]
fn splat(v: f32) -> F16 {
    _mm512_set1_ps(v)
}

/// Element `i` of the 16 sub-blocks of 16 of a super-block: lane `j` of
/// `out[i]` is `x[16j + i]`.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(crate) fn load_transposed16(x: &[f32; 256]) -> [F16; 16] {
    let t = super::simd::load_transposed::<16, 2>(x);
    let mut out = [_mm512_setzero_ps(); 16];
    for i in 0..16 {
        out[i] = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(t[i][0]), t[i][1]);
    }
    out
}

/// Per-lane result of [`q3_search`].
pub(crate) struct Q3Out {
    /// The returned scale (0 for all-zero lanes).
    pub scale: F16,
    /// The levels, offset by `nmax` (0 for all-zero lanes): lane `j` of
    /// `l[i]` is level `i` of sub-block `j`.
    pub l: [__m512i; 16],
}

/// `make_q3_quants(16, nmax, x, L, true)` on 16 sub-blocks of 16 at once.
///
/// The refinement stops once 16 consecutive element steps (one for each
/// element) have changed no lane, or after ggml's 5 passes: a lane whose
/// state survived a visit of every element unchanged is a fixed point (each
/// element's decision depends only on that state), so ggml's remaining
/// steps for it change nothing; lanes that ggml would have stopped earlier
/// are unchanged by the extra steps for the same reason.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(crate) fn q3_search(x: &[F16; 16], nmax: i32) -> Q3Out {
    let zero = _mm512_setzero_ps();
    let lo = _mm512_set1_epi32(-nmax);
    let hi = _mm512_set1_epi32(nmax - 1);
    // Largest magnitude (the signed value), first one wins, as in C.
    let mut max = zero;
    let mut amax = zero;
    for i in 0..16 {
        let ax = _mm512_abs_ps(x[i]);
        let upd = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(ax, amax);
        amax = _mm512_mask_mov_ps(amax, upd, ax);
        max = _mm512_mask_mov_ps(max, upd, x[i]);
    }
    let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(amax, splat(crate::quant::search::GROUP_MAX_EPS));

    let mut w = [zero; 16];
    let mut wx = [zero; 16];
    let mut l = [zero; 16];
    // Cached per-element terms `(w·x)·l` and `(w·l)·l` of the current
    // levels, and `sumlx²`: the same products ggml recomputes.
    let mut wxl = [zero; 16];
    let mut wl2 = [zero; 16];
    let mut sumlx = zero;
    let mut suml2 = zero;
    let iscale = div(splat(-(nmax as f32)), max);
    for i in 0..16 {
        let q = nint_clamp(mul(iscale, x[i]), lo, hi);
        l[i] = q;
        w[i] = mul(x[i], x[i]);
        wx[i] = mul(w[i], x[i]);
        wxl[i] = mul(wx[i], q);
        wl2[i] = mul(mul(w[i], q), q);
        sumlx = add(sumlx, wxl[i]);
        suml2 = add(suml2, wl2[i]);
    }
    let mut sumlx2 = mul(sumlx, sumlx);
    let mut quiet = 0;
    'passes: for _ in 0..5 {
        for i in 0..16 {
            let li = l[i];
            let slx = sub(sumlx, wxl[i]);
            let sl2 = sub(suml2, wl2[i]);
            let new_l = nint_clamp(div(mul(x[i], sl2), slx), lo, hi);
            let nwxl = mul(wx[i], new_l);
            let nwl2 = mul(mul(w[i], new_l), new_l);
            let slx2 = add(slx, nwxl);
            let sl22 = add(sl2, nwl2);
            let slx2sq = mul(slx2, slx2);
            let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(slx, zero);
            let m = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_OQ>(m, new_l, li);
            let m = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(m, sl22, zero);
            let upd =
                _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(m, mul(slx2sq, suml2), mul(sumlx2, sl22));
            // Updates are rare after the first pass: branching over them
            // lets the next elements start before this one is decided.
            if upd != 0 {
                l[i] = _mm512_mask_mov_ps(li, upd, new_l);
                wxl[i] = _mm512_mask_mov_ps(wxl[i], upd, nwxl);
                wl2[i] = _mm512_mask_mov_ps(wl2[i], upd, nwl2);
                sumlx = _mm512_mask_mov_ps(sumlx, upd, slx2);
                suml2 = _mm512_mask_mov_ps(suml2, upd, sl22);
                sumlx2 = _mm512_mask_mov_ps(sumlx2, upd, slx2sq);
                quiet = 0;
            } else {
                quiet += 1;
                if quiet == 16 {
                    break 'passes;
                }
            }
        }
    }
    let off = _mm512_set1_epi32(nmax);
    let keep = !tiny;
    let mut out = [_mm512_setzero_si512(); 16];
    for i in 0..16 {
        let q = _mm512_add_epi32(_mm512_cvtps_epi32(l[i]), off);
        out[i] = _mm512_maskz_mov_epi32(keep, q);
    }
    let pos = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(keep, suml2, zero);
    let scale = _mm512_maskz_div_ps(pos, sumlx, suml2);
    Q3Out { scale, l: out }
}

/// Lane values of a vector.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn lanes(v: F16) -> [f32; 16] {
    let mut out = [0f32; 16];
    // SAFETY: 16 floats into a 16-float array.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Lane values of an i32 vector.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn lanes_i32(v: __m512i) -> [i32; 16] {
    let mut out = [0i32; 16];
    // SAFETY: 16 i32 into a 16-i32 array.
    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), v) };
    out
}

/// Requantization of one sub-block of 16 contiguous values with a fixed
/// scale: `l = clamp(nearest_int(x / d), lo, hi) + off`, as bytes.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn requantize16(x: &[f32], d: f32, lo: i32, hi: i32, off: i32, l: &mut [u8]) {
    assert!(x.len() >= 16 && l.len() >= 16);
    // SAFETY: 16 floats are readable.
    let v = unsafe { _mm512_loadu_ps(x.as_ptr()) };
    let q = nint_clamp_i(
        div(v, splat(d)),
        _mm512_set1_epi32(lo),
        _mm512_set1_epi32(hi),
    );
    let b = _mm512_cvtepi32_epi8(_mm512_add_epi32(q, _mm512_set1_epi32(off)));
    // SAFETY: 16 bytes are writable.
    unsafe { _mm_storeu_si128(l.as_mut_ptr().cast(), b) };
}
