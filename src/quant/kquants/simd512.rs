//! AVX-512 versions of K-quant kernels: one f32 lane per sub-block, all 16
//! sub-blocks of a Q3_K or Q6_K super-block in one `__m512`.
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

/// `MAX(lo, MIN(hi, nearest_int(v)))` of every lane, as f32: the plain
/// form, the tests' reference for [`nint_clamp_5`].
#[cfg(test)]
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn nint_clamp(v: F16, lo: __m512i, hi: __m512i) -> F16 {
    _mm512_cvtepi32_ps(nint_clamp_i(v, lo, hi))
}

/// [`nint_clamp`] for `lo <= hi` in `[-2^22, 2^22)`, in 5 operations
/// instead of 6, the same value for every input: `nint` takes the low 23
/// bits `m` of `t = v + 1.5·2^23` and returns `m - 2^22`. Here `m` goes in
/// the mantissa of `u = 2^23 + m` (bits `0x4B00_0000 | m`), clamped as an
/// integer (monotonic in `m`) to `2^23 + 2^22 + [lo, hi]`, and `u - 1.5·2^23`
/// is exact (integers below 2^24), `+0` for 0 as `cvtepi32_ps` gives.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn nint_clamp_5(v: F16, lo: i32, hi: i32) -> F16 {
    let t = _mm512_castps_si512(add(v, splat(12_582_912.0)));
    let u = _mm512_ternarylogic_epi32::<0xEA>(
        t,
        _mm512_set1_epi32(0x007f_ffff),
        _mm512_set1_epi32(0x4b00_0000),
    );
    let u = _mm512_min_epi32(u, _mm512_set1_epi32(0x4b40_0000 + hi));
    let u = _mm512_max_epi32(u, _mm512_set1_epi32(0x4b40_0000 + lo));
    sub(_mm512_castsi512_ps(u), splat(12_582_912.0))
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
pub(crate) fn mul(a: F16, b: F16) -> F16 {
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
    let mut out = [_mm512_setzero_ps(); 16];
    load_transposed16_into(x, &mut out);
    out
}

/// [`load_transposed16`] into `out`.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(crate) fn load_transposed16_into(x: &[f32; 256], out: &mut [F16; 16]) {
    let t = super::simd::load_transposed::<16, 2>(x);
    for i in 0..16 {
        out[i] = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(t[i][0]), t[i][1]);
    }
}

/// Per-lane result of [`q3_search`] and [`qx_search`].
pub(crate) struct SearchOut {
    /// The returned scale (0 for all-zero lanes).
    pub scale: F16,
    /// The levels, offset by `nmax` (0 for all-zero lanes): lane `j` of
    /// `l[i]` is level `i` of sub-block `j`.
    pub l: [__m512i; 16],
}

impl SearchOut {
    /// All zeros (a value to overwrite).
    pub(crate) fn zero() -> Self {
        // SAFETY: all-zero bits are valid vectors.
        unsafe { std::mem::zeroed() }
    }
}

/// Largest magnitude of each lane and the signed value of its first
/// occurrence, as C's `if (ax > amax)` scan from 0 (NaN never wins).
#[inline]
#[target_feature(enable = "avx512f")]
fn signed_absmax(x: &[F16; 16]) -> (F16, F16) {
    let mut amax = _mm512_setzero_ps();
    let mut max = _mm512_setzero_ps();
    for i in 0..16 {
        let ax = _mm512_abs_ps(x[i]);
        let upd = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(ax, amax);
        amax = _mm512_mask_mov_ps(amax, upd, ax);
        max = _mm512_mask_mov_ps(max, upd, x[i]);
    }
    (amax, max)
}

/// `sumlx` and `suml2` of `make_qx_quants` for `N` candidate scales
/// `iscale` at once (`N` independent chains of additions, so that they
/// overlap; each chain adds its elements in C's order).
///
/// `FINITE` (every `x` finite) computes each level as
/// `clamp(roundeven(v), lo, hi)` in floats, 2 operations fewer than C's
/// `nearest_int` (see [`qx_search`] for why that is exact), and then
/// `CLAMP` = 2 clamps both sides, 1 only from above, 0 not at all (for
/// candidates whose |v| cannot round beyond those sides, see
/// [`qx_all_sums`]).
#[inline]
#[target_feature(enable = "avx512f")]
fn qx_sums<const N: usize, const FINITE: bool, const CLAMP: u8>(
    x: &[F16; 16],
    w: &[F16; 16],
    wx: &[F16; 16],
    iscale: &[F16],
    lo: i32,
    hi: i32,
) -> ([F16; N], [F16; N]) {
    let mut sumlx = [_mm512_setzero_ps(); N];
    let mut suml2 = [_mm512_setzero_ps(); N];
    for i in 0..16 {
        for k in 0..N {
            let v = mul(iscale[k], x[i]);
            let l = if FINITE {
                let r =
                    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                match CLAMP {
                    0 => r,
                    1 => _mm512_min_ps(r, splat(hi as f32)),
                    _ => _mm512_max_ps(_mm512_min_ps(r, splat(hi as f32)), splat(lo as f32)),
                }
            } else {
                nint_clamp_5(v, lo, hi)
            };
            sumlx[k] = add(sumlx[k], mul(wx[i], l));
            suml2[k] = add(suml2[k], mul(mul(w[i], l), l));
        }
    }
    (sumlx, suml2)
}

/// All 19 candidates' sums (see [`qx_sums`]), 6 or 7 at a time.
///
/// With `FINITE` and `nmax` = 32, in the lanes that matter (see
/// [`qx_search`]) |x| <= |max|, so |v| <= |num|·(1 + 2^-24)^2 for the
/// candidate's numerator `num` = -(32 + 0.1·is): for `is` <= -6,
/// |num| <= 31.4 + 2^-19 and |v| < 31.5, so roundeven(v) is in [-31, 31]
/// and needs no clamp; for -5 <= `is` <= 0, |v| < 32.5, so roundeven(v)
/// is at least -32 and needs only the upper clamp
/// (`clamp_kinds_are_sound` checks the float constants).
#[inline]
#[target_feature(enable = "avx512f")]
fn qx_all_sums<const FINITE: bool>(
    x: &[F16; 16],
    w: &[F16; 16],
    wx: &[F16; 16],
    iscale: &[F16; 19],
    nmax: i32,
) -> ([F16; 19], [F16; 19]) {
    let mut sumlx = [_mm512_setzero_ps(); 19];
    let mut suml2 = [_mm512_setzero_ps(); 19];
    let (lo, hi) = (-nmax, nmax - 1);
    if FINITE && nmax == 32 {
        // Candidates 1..=4 (is = -9..=-6): no clamp.
        let (a, b) = qx_sums::<4, true, 0>(x, w, wx, &iscale[1..5], lo, hi);
        sumlx[1..5].copy_from_slice(&a);
        suml2[1..5].copy_from_slice(&b);
        // Candidates 0 and 5..=9 (is = 0, -5..=-1): upper clamp only.
        let sel = [
            iscale[0], iscale[5], iscale[6], iscale[7], iscale[8], iscale[9],
        ];
        let (a, b) = qx_sums::<6, true, 1>(x, w, wx, &sel, lo, hi);
        for (j, k) in [0, 5, 6, 7, 8, 9].into_iter().enumerate() {
            sumlx[k] = a[j];
            suml2[k] = b[j];
        }
        let (a, b) = qx_sums::<5, true, 2>(x, w, wx, &iscale[10..15], lo, hi);
        sumlx[10..15].copy_from_slice(&a);
        suml2[10..15].copy_from_slice(&b);
        let (a, b) = qx_sums::<4, true, 2>(x, w, wx, &iscale[15..19], lo, hi);
        sumlx[15..19].copy_from_slice(&a);
        suml2[15..19].copy_from_slice(&b);
        return (sumlx, suml2);
    }
    let (a, b) = qx_sums::<6, FINITE, 2>(x, w, wx, &iscale[0..6], lo, hi);
    sumlx[0..6].copy_from_slice(&a);
    suml2[0..6].copy_from_slice(&b);
    let (a, b) = qx_sums::<6, FINITE, 2>(x, w, wx, &iscale[6..12], lo, hi);
    sumlx[6..12].copy_from_slice(&a);
    suml2[6..12].copy_from_slice(&b);
    let (a, b) = qx_sums::<7, FINITE, 2>(x, w, wx, &iscale[12..19], lo, hi);
    sumlx[12..19].copy_from_slice(&a);
    suml2[12..19].copy_from_slice(&b);
    (sumlx, suml2)
}

/// `make_qx_quants(16, nmax, x, L, 1, w)` on 16 sub-blocks of 16 at once
/// (`w` = the weights, x² when ggml passes NULL): lane `j` performs
/// sub-block `j`'s scalar sequence of operations. The sums of the 19
/// candidate scales do not depend on each other, so they are computed
/// first, several at a time; the choice among them then follows C's order.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(crate) fn qx_search(x: &[F16; 16], w: &[F16; 16], nmax: i32) -> SearchOut {
    let zero = _mm512_setzero_ps();
    let lo = _mm512_set1_epi32(-nmax);
    let hi = _mm512_set1_epi32(nmax - 1);
    let (amax, max) = signed_absmax(x);
    let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(amax, splat(crate::quant::search::GROUP_MAX_EPS));
    let wx: [F16; 16] = std::array::from_fn(|i| mul(w[i], x[i]));
    // Candidate 0 is C's first `iscale`, then `is` = -9..=-1, 1..=9.
    let iscale: [F16; 19] = std::array::from_fn(|k| {
        let num = match k {
            0 => -(nmax as f32),
            _ => {
                let is = if k <= 9 { k as i32 - 10 } else { k as i32 - 9 };
                -(nmax as f32 + 0.1f32 * is as f32)
            }
        };
        div(splat(num), max)
    });
    // When every element is finite, a lane that is not tiny has a finite
    // `max` with |max| >= GROUP_MAX_EPS and |x| <= |max|, so every
    // `v = iscale·x` is finite with |v| < 33: there C's `nearest_int(v)` is
    // exactly roundeven(v) (`v + 1.5·2^23` is rounded to an integer in
    // [2^23, 2^24)), and min/max clamp as C's MIN/MAX. The only other
    // difference is the sign of a zero level, which changes no sum: every
    // sum starts at +0 and (round to nearest) a sum is -0 only when both
    // of its terms are. Tiny lanes' sums are discarded.
    let special = (0..16).fold(0, |m, i| m | _mm512_fpclass_ps_mask::<0x99>(x[i]));
    let (sumlx, suml2) = if special == 0 {
        qx_all_sums::<true>(x, w, &wx, &iscale, nmax)
    } else {
        qx_all_sums::<false>(x, w, &wx, &iscale, nmax)
    };
    // `suml2 ? sumlx/suml2 : 0.0f` (NaN is true).
    let nz = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(suml2[0], zero);
    let mut scale = _mm512_maskz_div_ps(nz, sumlx[0], suml2[0]);
    let mut best = mul(scale, sumlx[0]);
    let mut win_iscale = iscale[0];
    for k in 1..19 {
        let upd = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(suml2[k], zero);
        let upd = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(
            upd,
            mul(sumlx[k], sumlx[k]),
            mul(best, suml2[k]),
        );
        let s = div(sumlx[k], suml2[k]);
        scale = _mm512_mask_mov_ps(scale, upd, s);
        best = _mm512_mask_mov_ps(best, upd, mul(s, sumlx[k]));
        win_iscale = _mm512_mask_mov_ps(win_iscale, upd, iscale[k]);
    }
    let off = _mm512_set1_epi32(nmax);
    let keep = !tiny;
    let mut out = [_mm512_setzero_si512(); 16];
    for i in 0..16 {
        let q = nint_clamp_i(mul(win_iscale, x[i]), lo, hi);
        out[i] = _mm512_maskz_add_epi32(keep, q, off);
    }
    SearchOut {
        scale: _mm512_maskz_mov_ps(keep, scale),
        l: out,
    }
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
pub(crate) fn q3_search(x: &[F16; 16], nmax: i32) -> SearchOut {
    let mut s = Q3Search::zero();
    s.start(x, nmax);
    s.refine(x, nmax, 0, 0);
    let mut out = SearchOut::zero();
    s.finish(nmax, &mut out);
    out
}

/// [`q3_search`] on `G` super-blocks, with the first pass of the `G`
/// blocks interleaved and without branches. In the first pass about a
/// third of the steps update some lane, and a step that updates holds up
/// the next one for its whole chain of dependent operations (a branch over
/// it mispredicts after that chain); the `G` independent chains overlap
/// instead. The later passes, where updates are rare, branch per block as
/// [`q3_search`] does.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(crate) fn q3_search_group<const G: usize>(
    x: [&[F16; 16]; G],
    nmax: i32,
    s: &mut [Q3Search; G],
    out: &mut [SearchOut; G],
) {
    for g in 0..G {
        s[g].start(x[g], nmax);
    }
    let mut sums: [Sums; G] = std::array::from_fn(|g| s[g].sums);
    let mut quiet = [0u32; G];
    for i in 0..16 {
        for g in 0..G {
            let b = &mut s[g];
            let p = propose::<false>(x[g][i], b.l[i], b.wxl[i], b.wl2[i], sums[g], nmax);
            let upd = p.upd;
            b.l[i] = _mm512_mask_mov_ps(b.l[i], upd, p.l);
            b.wxl[i] = _mm512_mask_mov_ps(b.wxl[i], upd, p.wxl);
            b.wl2[i] = _mm512_mask_mov_ps(b.wl2[i], upd, p.wl2);
            sums[g] = Sums {
                lx: _mm512_mask_mov_ps(sums[g].lx, upd, p.sums.lx),
                l2: _mm512_mask_mov_ps(sums[g].l2, upd, p.sums.l2),
                lx2: _mm512_mask_mov_ps(sums[g].lx2, upd, p.sums.lx2),
            };
            quiet[g] = if upd != 0 { 0 } else { quiet[g] + 1 };
        }
    }
    for g in 0..G {
        s[g].sums = sums[g];
        s[g].refine(x[g], nmax, 1, quiet[g]);
        s[g].finish(nmax, &mut out[g]);
    }
}

/// `sumlx`, `suml2` and `sumlx²` of every lane.
#[derive(Clone, Copy)]
struct Sums {
    lx: F16,
    l2: F16,
    lx2: F16,
}

/// The refinement state of `make_q3_quants` on the 16 sub-blocks (lanes)
/// of one super-block.
pub(crate) struct Q3Search {
    /// The current levels (not offset) and their terms `(w·x)·l` and
    /// `(w·l)·l`: the same products ggml recomputes.
    l: [F16; 16],
    wxl: [F16; 16],
    wl2: [F16; 16],
    sums: Sums,
    /// Lanes whose largest magnitude is below `GROUP_MAX_EPS`.
    tiny: __mmask16,
}

impl Q3Search {
    /// A state to [`Self::start`] from.
    pub(crate) fn zero() -> Self {
        // SAFETY: all-zero bits are valid vectors and masks.
        unsafe { std::mem::zeroed() }
    }

    /// The first rounding and its sums, in place.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn start(&mut self, x: &[F16; 16], nmax: i32) {
        let zero = _mm512_setzero_ps();
        // Largest magnitude and the signed value of its first occurrence,
        // as C's `if (ax > amax)` scan from 0 (NaN never wins): the maximum
        // of the non-NaN magnitudes, then the first element reaching it
        // (only lanes where it is positive matter: the others are below
        // GROUP_MAX_EPS).
        let mut amax = zero;
        for i in 0..16 {
            // `max_ps(a, b)` gives `b` when `a` is NaN.
            amax = _mm512_max_ps(_mm512_abs_ps(x[i]), amax);
        }
        let mut max = zero;
        for i in (0..16).rev() {
            let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(x[i]), amax);
            max = _mm512_mask_mov_ps(max, hit, x[i]);
        }
        self.tiny =
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(amax, splat(crate::quant::search::GROUP_MAX_EPS));
        let iscale = div(splat(-(nmax as f32)), max);
        let mut lx = zero;
        let mut l2 = zero;
        for i in 0..16 {
            let w = mul(x[i], x[i]);
            let wx = mul(w, x[i]);
            let l = nint_clamp_5(mul(iscale, x[i]), -nmax, nmax - 1);
            let wxl = mul(wx, l);
            let wl2 = mul(mul(w, l), l);
            lx = add(lx, wxl);
            l2 = add(l2, wl2);
            (self.l[i], self.wxl[i], self.wl2[i]) = (l, wxl, wl2);
        }
        self.sums = Sums {
            lx,
            l2,
            lx2: mul(lx, lx),
        };
    }

    /// ggml's passes from `pass` (0-based) on, after `quiet` steps without
    /// a change, stopping at 16 such steps.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn refine(&mut self, x: &[F16; 16], nmax: i32, pass: usize, mut quiet: u32) {
        if quiet >= 16 {
            return;
        }
        // The sums stay in registers through the loop.
        let mut sums = self.sums;
        'passes: for _ in pass..5 {
            for i in 0..16 {
                let p = propose::<true>(x[i], self.l[i], self.wxl[i], self.wl2[i], sums, nmax);
                // Updates are rare after the first pass: branching over
                // them lets the next elements start before this one is
                // decided.
                if p.upd != 0 {
                    self.l[i] = _mm512_mask_mov_ps(self.l[i], p.upd, p.l);
                    self.wxl[i] = _mm512_mask_mov_ps(self.wxl[i], p.upd, p.wxl);
                    self.wl2[i] = _mm512_mask_mov_ps(self.wl2[i], p.upd, p.wl2);
                    sums = Sums {
                        lx: _mm512_mask_mov_ps(sums.lx, p.upd, p.sums.lx),
                        l2: _mm512_mask_mov_ps(sums.l2, p.upd, p.sums.l2),
                        lx2: _mm512_mask_mov_ps(sums.lx2, p.upd, p.sums.lx2),
                    };
                    quiet = 0;
                } else {
                    quiet += 1;
                    if quiet == 16 {
                        break 'passes;
                    }
                }
            }
        }
        self.sums = sums;
    }

    /// The levels offset by `nmax` and the scale `sumlx / suml2`, into `out`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn finish(&self, nmax: i32, out: &mut SearchOut) {
        let off = _mm512_set1_epi32(nmax);
        let keep = !self.tiny;
        for i in 0..16 {
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(self.l[i]), off);
            out.l[i] = _mm512_maskz_mov_epi32(keep, q);
        }
        let pos = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(keep, self.sums.l2, _mm512_setzero_ps());
        out.scale = _mm512_maskz_div_ps(pos, self.sums.lx, self.sums.l2);
    }
}

/// What [`propose`] found: the lanes where a new level lowers the error
/// (`upd`), with that level, its terms and the sums it gives (meaningful in
/// `upd` lanes only).
struct Proposal {
    upd: __mmask16,
    l: F16,
    wxl: F16,
    wl2: F16,
    sums: Sums,
}

/// ggml's step for one element of every lane, from its value `x`, current
/// level `li`, the level's terms `wxl`, `wl2`, and the sums. `BRANCHY`
/// returns as soon as no lane proposes a new level (most steps after the
/// first pass), which also makes an update known (mispredicted) sooner.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn propose<const BRANCHY: bool>(
    x: F16,
    li: F16,
    wxl: F16,
    wl2: F16,
    s: Sums,
    nmax: i32,
) -> Proposal {
    let zero = _mm512_setzero_ps();
    let slx = sub(s.lx, wxl);
    let sl2 = sub(s.l2, wl2);
    let new_l = nint_clamp_5(div(mul(x, sl2), slx), -nmax, nmax - 1);
    let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(slx, zero);
    let m = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_OQ>(m, new_l, li);
    if BRANCHY && m == 0 {
        return Proposal {
            upd: 0,
            l: li,
            wxl,
            wl2,
            sums: s,
        };
    }
    let w = mul(x, x);
    let nwxl = mul(mul(w, x), new_l);
    let nwl2 = mul(mul(w, new_l), new_l);
    let slx2 = add(slx, nwxl);
    let sl22 = add(sl2, nwl2);
    let slx2sq = mul(slx2, slx2);
    let m = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(m, sl22, zero);
    let upd = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(m, mul(slx2sq, s.l2), mul(s.lx2, sl22));
    Proposal {
        upd,
        l: new_l,
        wxl: nwxl,
        wl2: nwl2,
        sums: Sums {
            lx: slx2,
            l2: sl22,
            lx2: slx2sq,
        },
    }
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

/// Q3_K's scale quantization (`quantize_row_q3_K_ref` from the largest
/// sub-block scale to the stored `d`) on the 16 scales of `scale`: writes
/// the packed 6-bit scales and `d`, and returns each sub-block's
/// requantization scale `d · (stored scale - 32)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
pub(crate) fn q3_scales(scale: F16, scales: &mut [u8; 12], d: &mut [u8; 2]) -> F16 {
    use super::{f16_bytes, f16_value};
    // C scans `if (fabsf(s) > amax)` from 0: the largest non-NaN magnitude,
    // the first scale reaching it.
    let a = _mm512_abs_ps(scale);
    let a = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(a, a), a);
    let amax = _mm512_reduce_max_ps(a);
    let sc = if amax > 0.0 {
        let first = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, splat(amax)).trailing_zeros();
        let max_scale = lanes(scale)[first as usize];
        let iscale = -32.0f32 / max_scale;
        // `int8_t l = nearest_int(iscale*scales[j])`: wrapped to 8 bits.
        let q = nint(mul(splat(iscale), scale));
        let q = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(q));
        let q = _mm512_max_epi32(
            _mm512_min_epi32(q, _mm512_set1_epi32(31)),
            _mm512_set1_epi32(-32),
        );
        let mut b = [0u8; 16];
        let v = _mm512_cvtepi32_epi8(_mm512_add_epi32(q, _mm512_set1_epi32(32)));
        // SAFETY: 16 bytes into a 16-byte array.
        unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) };
        // Low nibbles of scales j and j + 8 in byte j, the high 2 bits of
        // scale j in bits 2·(j/4) of byte 8 + j % 4.
        let v = u128::from_le_bytes(b);
        let low = v & 0x0F0F_0F0F_0F0F_0F0F_0F0F_0F0F_0F0F_0F0F;
        let high = (v >> 4) & 0x0303_0303_0303_0303_0303_0303_0303_0303;
        let packed_low = (low as u64) | ((low >> 64) as u64) << 4;
        let h = |k: u32| (high >> (32 * k)) as u32;
        let packed_high = h(0) | h(1) << 2 | h(2) << 4 | h(3) << 6;
        scales[..8].copy_from_slice(&packed_low.to_le_bytes());
        scales[8..].copy_from_slice(&packed_high.to_le_bytes());
        *d = f16_bytes(1.0 / iscale);
        q
    } else {
        *scales = [0; 12];
        *d = f16_bytes(0.0);
        _mm512_set1_epi32(-32)
    };
    mul(splat(f16_value(*d)), _mm512_cvtepi32_ps(sc))
}

/// Requantization of one sub-block of 16 contiguous values with the scale
/// `d` (`rd` = fl(1/d); `fast`: 2^-100 <= |d| <= 2^100):
/// `l = clamp(nearest_int(x / d), -4, 3) + 4`, as bytes.
///
/// Exactness of the division-free shortcut: let t = fl(x/d) (what C
/// rounds) and t' = fl(x·rd). With |d| in that range rd is normal, so
/// |t' - x/d| <= |x/d|·(2^-23 + 2^-48) + 2^-150 (the last term for a
/// subnormal t') and |t - x/d| <= |x/d|·2^-24 + 2^-150. The shortcut is
/// taken only when every lane has |t'| < 2^21 (so t' is finite: x was
/// neither NaN nor infinite; and |t| < 2^22, where `nearest_int` is
/// round-to-nearest-even) and c = clamp(t', -4, 3) lies within
/// 0.5 - 2^-16 of k = roundeven(c). If t' is in [-4, 3], |t - t'| < 2^-20,
/// so |t - k| < 0.5 and roundeven(t) = k; if t' > 3 (< -4), then t > 2.9
/// (< -3.9) and the clamped level is 3 (-4), which is k as well.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn requantize_q3(x: &[f32], d: f32, rd: f32, fast: bool, l: &mut [u8]) {
    assert!(x.len() >= 16 && l.len() >= 16);
    // SAFETY: 16 floats are readable.
    let v = unsafe { _mm512_loadu_ps(x.as_ptr()) };
    let q = 'q: {
        if fast {
            let t = mul(v, splat(rd));
            let c = _mm512_min_ps(_mm512_max_ps(t, splat(-4.0)), splat(3.0));
            let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(c);
            let near = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(
                _mm512_abs_ps(sub(c, k)),
                splat(0.5 - 1.0 / 65536.0),
            );
            let small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(t), splat(2_097_152.0));
            if near & small == 0xFFFF {
                break 'q _mm512_cvtps_epi32(k);
            }
        }
        let lo = _mm512_set1_epi32(-4);
        let hi = _mm512_set1_epi32(3);
        nint_clamp_i(div(v, splat(d)), lo, hi)
    };
    let b = _mm512_cvtepi32_epi8(_mm512_add_epi32(q, _mm512_set1_epi32(4)));
    // SAFETY: 16 bytes are writable.
    unsafe { _mm_storeu_si128(l.as_mut_ptr().cast(), b) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::search::nearest_int;

    /// The bounds behind `qx_all_sums`'s clamp kinds, on the actual float
    /// numerators of the candidates (as C computes them).
    #[test]
    fn clamp_kinds_are_sound() {
        let grow = |v: f32| v as f64 * (1.0 + 2f64.powi(-24)).powi(2);
        for is in -9i32..=0 {
            let num = 32f32 + 0.1f32 * is as f32;
            assert!(grow(num) < 32.5, "is {is}");
            if is <= -6 {
                assert!(grow(num) < 31.5, "is {is}");
            }
        }
    }

    /// The 5-operation clamp against `nint_clamp` on random bit patterns
    /// (every NaN payload, infinities, subnormals), values near every
    /// rounding boundary, and both formats' bounds.
    #[test]
    fn nint_clamp_5_is_exact() {
        if !crate::quant::cpu::avx512() {
            return;
        }
        let mut r = crate::rng::TestRng(0x2545_F491_4F6C_DD1D);
        let mut next = move || r.next();
        for (lo, hi) in [(-32, 31), (-4, 3), (-128, 127), (0, 0)] {
            for round in 0..100_000 {
                let v: [f32; 16] = std::array::from_fn(|_| match round % 3 {
                    0 => f32::from_bits(next() as u32),
                    1 => {
                        let base = ((next() % 160) as f32 - 80.0) * 0.5;
                        let ulps = (next() % 9) as i32 - 4;
                        f32::from_bits((base.to_bits() as i32).wrapping_add(ulps) as u32)
                    }
                    _ => (next() % 2_000_000) as f32 * 1e-3 - 1000.0,
                });
                // SAFETY: AVX-512 is available.
                let (got, want) = unsafe {
                    let x = _mm512_loadu_ps(v.as_ptr());
                    let got = lanes(nint_clamp_5(x, lo, hi));
                    let want = lanes(nint_clamp(x, _mm512_set1_epi32(lo), _mm512_set1_epi32(hi)));
                    (got, want)
                };
                for k in 0..16 {
                    assert_eq!(got[k].to_bits(), want[k].to_bits(), "{:e}", v[k]);
                }
            }
        }
    }

    /// The division-free requantization against C's formula on values at,
    /// and a few ulps around, every rounding boundary, for scales across
    /// the whole range (in and out of the shortcut's), plus specials.
    #[test]
    fn requantize_q3_is_exact() {
        if !crate::quant::cpu::avx512() {
            return;
        }
        let mut r = crate::rng::TestRng(0x2545_F491_4F6C_DD1D);
        let mut next = move || r.next();
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            1e-45,
        ];
        for _ in 0..200_000 {
            let e = (next() % 280) as i32 - 140;
            let d = (1.0 + (next() % 1024) as f32 / 1024.0)
                * 2f32.powi(e)
                * if next() % 2 == 0 { -1.0 } else { 1.0 };
            if d == 0.0 || !d.is_finite() {
                continue;
            }
            let mut x = [0f32; 16];
            for v in x.iter_mut() {
                let base = ((next() % 20) as f32 - 10.0) * 0.5 * d;
                let ulps = (next() % 9) as i32 - 4;
                *v = f32::from_bits((base.to_bits() as i32).wrapping_add(ulps) as u32);
                if next() % 50 == 0 {
                    *v = specials[(next() % specials.len() as u64) as usize];
                }
            }
            let rd = 1.0 / d;
            let fast = (2f32.powi(-100)..=2f32.powi(100)).contains(&d.abs());
            let mut got = [0u8; 16];
            // SAFETY: AVX-512 is available.
            unsafe { requantize_q3(&x, d, rd, fast, &mut got) };
            for k in 0..16 {
                let want = (nearest_int(x[k] / d).clamp(-4, 3) + 4) as u8;
                assert_eq!(got[k], want, "x {:e} d {:e}", x[k], d);
            }
        }
    }
}
