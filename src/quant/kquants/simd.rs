//! AVX2 versions of the K-quant sub-block searches, one f32 lane per
//! sub-block.
//!
//! A super-block's sub-blocks are searched independently by ggml, each with
//! the same scalar sequence of f32 operations. Here lane `j` of every vector
//! holds element `i` of sub-block `j` (the super-block is transposed), and
//! every lane executes exactly its sub-block's scalar sequence: the same
//! operations in the same order, accumulations in element order, branches
//! turned into per-lane selects evaluated with the same (ordered) compares.
//! IEEE add/sub/mul/div/sqrt are correctly rounded in both forms, no FMA is
//! used, so each lane's result is bit-identical to the scalar code.
//!
//! Kernels are generic over `G`, the number of 8-lane groups processed
//! together (16 sub-blocks of 16 use two groups; independent groups also
//! hide the latency of the sequential accumulations).

// Index loops mirror the scalar code lane by lane.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

/// Eight f32 lanes.
pub(crate) type F8 = __m256;

/// `nearest_int` of every lane (ggml's magic-number rounding).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn nint(v: F8) -> __m256i {
    let t = _mm256_add_ps(v, _mm256_set1_ps(12_582_912.0));
    _mm256_sub_epi32(
        _mm256_and_si256(_mm256_castps_si256(t), _mm256_set1_epi32(0x007f_ffff)),
        _mm256_set1_epi32(0x0040_0000),
    )
}

/// `MAX(lo, MIN(hi, nearest_int(v)))` of every lane, as f32.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn nint_clamp(v: F8, lo: __m256i, hi: __m256i) -> F8 {
    _mm256_cvtepi32_ps(_mm256_max_epi32(_mm256_min_epi32(nint(v), hi), lo))
}

#[inline]
#[target_feature(enable = "avx2")]
fn add(a: F8, b: F8) -> F8 {
    _mm256_add_ps(a, b)
}
#[inline]
#[target_feature(enable = "avx2")]
fn sub(a: F8, b: F8) -> F8 {
    _mm256_sub_ps(a, b)
}
#[inline]
#[target_feature(enable = "avx2")]
fn mul(a: F8, b: F8) -> F8 {
    _mm256_mul_ps(a, b)
}
#[inline]
#[target_feature(enable = "avx2")]
fn div(a: F8, b: F8) -> F8 {
    _mm256_div_ps(a, b)
}
/// `fabsf` of every lane.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn abs(a: F8) -> F8 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), a)
}
/// `m ? b : a` per lane (`m` all-ones or all-zeros per lane).
#[inline]
#[target_feature(enable = "avx2")]
fn sel(a: F8, b: F8, m: F8) -> F8 {
    _mm256_blendv_ps(a, b, m)
}
#[inline]
#[target_feature(enable = "avx2")]
fn gt(a: F8, b: F8) -> F8 {
    _mm256_cmp_ps::<_CMP_GT_OQ>(a, b)
}
#[inline]
#[target_feature(enable = "avx2")]
fn lt(a: F8, b: F8) -> F8 {
    _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)
}
#[inline]
#[target_feature(enable = "avx2")]
fn and(a: F8, b: F8) -> F8 {
    _mm256_and_ps(a, b)
}
#[inline]
#[target_feature(enable = "avx2")]
fn splat(v: f32) -> F8 {
    _mm256_set1_ps(v)
}

/// Transpose an 8×8 matrix held in eight row vectors.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn transpose8(r: [F8; 8]) -> [F8; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// Transposed view of a super-block split into `8·G` sub-blocks of `N`
/// (`8·G·N == 256`): `out[i][g]` lane `j` is element `i` of sub-block
/// `8g + j`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn load_transposed<const N: usize, const G: usize>(x: &[f32; 256]) -> [[F8; G]; N] {
    debug_assert_eq!(8 * G * N, 256);
    let mut out = [[_mm256_setzero_ps(); G]; N];
    for g in 0..G {
        for c in 0..N / 8 {
            let mut rows = [_mm256_setzero_ps(); 8];
            for j in 0..8 {
                let off = N * (8 * g + j) + 8 * c;
                // SAFETY: off + 8 <= N * 8 * G == 256.
                rows[j] = unsafe { _mm256_loadu_ps(x.as_ptr().add(off)) };
            }
            let t = transpose8(rows);
            for k in 0..8 {
                out[8 * c + k][g] = t[k];
            }
        }
    }
    out
}

/// [`load_transposed`] of `P` super-blocks side by side: block `p` fills
/// groups `p·G/P .. (p+1)·G/P`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn load_transposed_multi<const N: usize, const G: usize, const P: usize>(
    xs: [&[f32; 256]; P],
) -> [[F8; G]; N] {
    debug_assert_eq!(8 * G * N, 256 * P);
    let gpb = G / P;
    let mut out = [[_mm256_setzero_ps(); G]; N];
    for g in 0..G {
        let (p, gl) = (g / gpb, g % gpb);
        for c in 0..N / 8 {
            let mut rows = [_mm256_setzero_ps(); 8];
            for j in 0..8 {
                let off = N * (8 * gl + j) + 8 * c;
                // SAFETY: off + 8 <= N * 8 * gpb == 256.
                rows[j] = unsafe { _mm256_loadu_ps(xs[p].as_ptr().add(off)) };
            }
            let t = transpose8(rows);
            for k in 0..8 {
                out[8 * c + k][g] = t[k];
            }
        }
    }
    out
}

/// Per-lane result of [`qkx_search`].
pub(crate) struct QkxOut<const G: usize> {
    /// The returned scale (0 for degenerate lanes).
    pub scale: [F8; G],
    /// What ggml stores through `the_min` (`-min`).
    pub the_min: [F8; G],
    /// The inverse scale and the min that produced the winning levels:
    /// `l = clamp(nearest_int(iscale·(x - min)), 0, nmax)`.
    pub win_iscale: [F8; G],
    pub win_min: [F8; G],
    /// Lanes whose range is degenerate: their levels are all 0.
    pub degenerate: [F8; G],
}

/// `make_qkx2_quants` (`LE == false`) / `make_qkx3_quants` (`LE == true`,
/// weights given) on `8·G` sub-blocks of `N` at once, `nstep >= 1`.
/// `MAD` selects absolute instead of squared errors.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn qkx_search<const N: usize, const G: usize, const MAD: bool, const LE: bool>(
    x: &[[F8; G]; N],
    w: &[[F8; G]; N],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> QkxOut<G> {
    debug_assert!(nstep >= 1);
    let zero = _mm256_setzero_ps();
    let lo = _mm256_setzero_si256();
    let hi = _mm256_set1_epi32(nmax);
    let err = |d: F8| if MAD { abs(d) } else { mul(d, d) };

    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = [zero; G];
    for g in 0..G {
        sum_x[g] = mul(sum_w[g], x[0][g]);
    }
    for i in 1..N {
        for g in 0..G {
            min[g] = _mm256_min_ps(x[i][g], min[g]);
            max[g] = _mm256_max_ps(x[i][g], max[g]);
            sum_w[g] = add(sum_w[g], w[i][g]);
            sum_x[g] = add(sum_x[g], mul(w[i][g], x[i][g]));
        }
    }
    let mut degenerate = [zero; G];
    for g in 0..G {
        min[g] = sel(min[g], zero, gt(min[g], zero));
        degenerate[g] = if LE {
            _mm256_cmp_ps::<_CMP_LE_OQ>(max[g], min[g])
        } else {
            _mm256_cmp_ps::<_CMP_EQ_OQ>(max[g], min[g])
        };
    }
    let min0 = min;
    let mut iscale = [zero; G];
    let mut scale = [zero; G];
    for g in 0..G {
        iscale[g] = div(splat(nmax as f32), sub(max[g], min[g]));
        scale[g] = div(splat(1.0), iscale[g]);
    }
    let mut best = [zero; G];
    for i in 0..N {
        for g in 0..G {
            let l = nint_clamp(mul(iscale[g], sub(x[i][g], min[g])), lo, hi);
            let diff = sub(add(mul(scale[g], l), min[g]), x[i][g]);
            best[g] = add(best[g], mul(w[i][g], err(diff)));
        }
    }
    let mut win_iscale = iscale;
    let mut win_min = min;
    let mut laux = [[zero; G]; N];
    for is in 0..=nstep {
        let num = splat(rmin + rdelta * is as f32 + nmax as f32);
        let mut sum_l = [zero; G];
        let mut sum_l2 = [zero; G];
        let mut sum_xl = [zero; G];
        for g in 0..G {
            iscale[g] = div(num, sub(max[g], min[g]));
        }
        for i in 0..N {
            for g in 0..G {
                let l = nint_clamp(mul(iscale[g], sub(x[i][g], min[g])), lo, hi);
                laux[i][g] = l;
                let wl = mul(w[i][g], l);
                sum_l[g] = add(sum_l[g], wl);
                sum_l2[g] = add(sum_l2[g], mul(wl, l));
                sum_xl[g] = add(sum_xl[g], mul(wl, x[i][g]));
            }
        }
        let mut this_scale = [zero; G];
        let mut this_min = [zero; G];
        let mut dpos = [zero; G];
        for g in 0..G {
            let d = sub(mul(sum_w[g], sum_l2[g]), mul(sum_l[g], sum_l[g]));
            dpos[g] = gt(d, zero);
            let s = div(sub(mul(sum_w[g], sum_xl[g]), mul(sum_x[g], sum_l[g])), d);
            let m = div(sub(mul(sum_l2[g], sum_x[g]), mul(sum_l[g], sum_xl[g])), d);
            let mpos = gt(m, zero);
            this_min[g] = sel(m, zero, mpos);
            this_scale[g] = sel(s, div(sum_xl[g], sum_l2[g]), mpos);
        }
        let mut cur = [zero; G];
        for i in 0..N {
            for g in 0..G {
                let diff = sub(add(mul(this_scale[g], laux[i][g]), this_min[g]), x[i][g]);
                cur[g] = add(cur[g], mul(w[i][g], err(diff)));
            }
        }
        for g in 0..G {
            let upd = and(dpos[g], lt(cur[g], best[g]));
            // Branch over the common no-update case: the next candidate then
            // does not wait for this one's error (its `min` is unchanged).
            if _mm256_movemask_ps(upd) == 0 {
                continue;
            }
            best[g] = sel(best[g], cur[g], upd);
            scale[g] = sel(scale[g], this_scale[g], upd);
            win_iscale[g] = sel(win_iscale[g], iscale[g], upd);
            win_min[g] = sel(win_min[g], min[g], upd);
            min[g] = sel(min[g], this_min[g], upd);
        }
    }
    let neg = |v: F8| _mm256_xor_ps(v, splat(-0.0));
    let mut the_min = [zero; G];
    for g in 0..G {
        scale[g] = sel(scale[g], zero, degenerate[g]);
        the_min[g] = sel(neg(min[g]), neg(min0[g]), degenerate[g]);
    }
    QkxOut {
        scale,
        the_min,
        win_iscale,
        win_min,
        degenerate,
    }
}

/// Per-lane result of [`qx_search`] and [`q3_search`].
pub(crate) struct QxOut<const G: usize> {
    /// The returned scale (0 for all-zero lanes).
    pub scale: [F8; G],
    /// The levels, offset by `nmax` (0 for all-zero lanes).
    pub l: [[__m256i; G]; 16],
}

/// Largest-magnitude element of each lane (`max`, the signed value) and the
/// mask of lanes below `GROUP_MAX_EPS`, as in `make_qx_quants`.
#[inline]
#[target_feature(enable = "avx2")]
fn signed_absmax<const N: usize, const G: usize>(x: &[[F8; G]; N]) -> ([F8; G], [F8; G]) {
    let zero = _mm256_setzero_ps();
    let mut max = [zero; G];
    let mut amax = [zero; G];
    for i in 0..N {
        for g in 0..G {
            let ax = abs(x[i][g]);
            let upd = gt(ax, amax[g]);
            amax[g] = sel(amax[g], ax, upd);
            max[g] = sel(max[g], x[i][g], upd);
        }
    }
    let mut tiny = [zero; G];
    for g in 0..G {
        tiny[g] = lt(amax[g], splat(crate::quant::search::GROUP_MAX_EPS));
    }
    (max, tiny)
}

/// `make_qx_quants(16, nmax, x, L, 1, w)` on `8·G` sub-blocks of 16 at once
/// (`w` = the weights, x² when ggml passes NULL).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn qx_search<const G: usize>(
    x: &[[F8; G]; 16],
    w: &[[F8; G]; 16],
    nmax: i32,
) -> QxOut<G> {
    let zero = _mm256_setzero_ps();
    let lo = _mm256_set1_epi32(-nmax);
    let hi = _mm256_set1_epi32(nmax - 1);
    let (max, tiny) = signed_absmax(x);
    let mut wx = [[zero; G]; 16];
    for i in 0..16 {
        for g in 0..G {
            wx[i][g] = mul(w[i][g], x[i][g]);
        }
    }
    let mut iscale = [zero; G];
    let mut sumlx = [zero; G];
    let mut suml2 = [zero; G];
    for g in 0..G {
        iscale[g] = div(splat(-(nmax as f32)), max[g]);
    }
    for i in 0..16 {
        for g in 0..G {
            let l = nint_clamp(mul(iscale[g], x[i][g]), lo, hi);
            sumlx[g] = add(sumlx[g], mul(wx[i][g], l));
            suml2[g] = add(suml2[g], mul(mul(w[i][g], l), l));
        }
    }
    let mut scale = [zero; G];
    let mut best = [zero; G];
    for g in 0..G {
        let nz = _mm256_cmp_ps::<_CMP_NEQ_UQ>(suml2[g], zero);
        scale[g] = sel(zero, div(sumlx[g], suml2[g]), nz);
        best[g] = mul(scale[g], sumlx[g]);
    }
    let mut win_iscale = iscale;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let num = splat(-(nmax as f32 + 0.1f32 * is as f32));
        for g in 0..G {
            iscale[g] = div(num, max[g]);
            sumlx[g] = zero;
            suml2[g] = zero;
        }
        for i in 0..16 {
            for g in 0..G {
                let l = nint_clamp(mul(iscale[g], x[i][g]), lo, hi);
                sumlx[g] = add(sumlx[g], mul(wx[i][g], l));
                suml2[g] = add(suml2[g], mul(mul(w[i][g], l), l));
            }
        }
        for g in 0..G {
            let upd = and(
                gt(suml2[g], zero),
                gt(mul(sumlx[g], sumlx[g]), mul(best[g], suml2[g])),
            );
            let s = div(sumlx[g], suml2[g]);
            scale[g] = sel(scale[g], s, upd);
            best[g] = sel(best[g], mul(s, sumlx[g]), upd);
            win_iscale[g] = sel(win_iscale[g], iscale[g], upd);
        }
    }
    let mut l = [[_mm256_setzero_si256(); G]; 16];
    let off = _mm256_set1_epi32(nmax);
    for g in 0..G {
        let keep = _mm256_castps_si256(_mm256_xor_ps(
            tiny[g],
            _mm256_castsi256_ps(_mm256_set1_epi32(-1)),
        ));
        for i in 0..16 {
            let q = _mm256_max_epi32(_mm256_min_epi32(nint(mul(win_iscale[g], x[i][g])), hi), lo);
            l[i][g] = _mm256_and_si256(_mm256_add_epi32(q, off), keep);
        }
        scale[g] = sel(scale[g], zero, tiny[g]);
    }
    QxOut { scale, l }
}

/// `make_q3_quants(16, nmax, x, L, true)` on `8·G` sub-blocks of 16 at once.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn q3_search<const G: usize>(x: &[[F8; G]; 16], nmax: i32) -> QxOut<G> {
    let zero = _mm256_setzero_ps();
    let lo = _mm256_set1_epi32(-nmax);
    let hi = _mm256_set1_epi32(nmax - 1);
    let (max, tiny) = signed_absmax(x);
    let iscale: [F8; G] = std::array::from_fn(|g| div(splat(-(nmax as f32)), max[g]));
    // Built in place (zeroed arrays to overwrite cost a memset per call).
    let w: [[F8; G]; 16] = std::array::from_fn(|i| std::array::from_fn(|g| mul(x[i][g], x[i][g])));
    let wx: [[F8; G]; 16] = std::array::from_fn(|i| std::array::from_fn(|g| mul(w[i][g], x[i][g])));
    let mut l: [[F8; G]; 16] = std::array::from_fn(|i| {
        std::array::from_fn(|g| nint_clamp(mul(iscale[g], x[i][g]), lo, hi))
    });
    // Cached per-element terms `(w·x)·l` and `(w·l)·l` of the current
    // levels, and `sumlx²`: the same products ggml recomputes.
    let mut wxl: [[F8; G]; 16] =
        std::array::from_fn(|i| std::array::from_fn(|g| mul(wx[i][g], l[i][g])));
    let mut wl2: [[F8; G]; 16] =
        std::array::from_fn(|i| std::array::from_fn(|g| mul(mul(w[i][g], l[i][g]), l[i][g])));
    let mut sumlx = [zero; G];
    let mut suml2 = [zero; G];
    for i in 0..16 {
        for g in 0..G {
            sumlx[g] = add(sumlx[g], wxl[i][g]);
            suml2[g] = add(suml2[g], wl2[i][g]);
        }
    }
    let sumlx2: [F8; G] = std::array::from_fn(|g| mul(sumlx[g], sumlx[g]));
    let mut sums: [[F8; 3]; G] = std::array::from_fn(|g| [sumlx[g], suml2[g], sumlx2[g]]);
    // ggml's refinement, one element of all groups per step. Updates are
    // rare after the first pass: a step where no lane proposes a new level
    // skips the rest (and an update is known, mispredicted, sooner). The
    // refinement stops once 16 consecutive steps have changed no lane (every
    // lane is then at a fixed point: each element's decision depends only on
    // the state, and that state survived a visit of every element), or
    // after ggml's 5 passes.
    let mut quiet = 0;
    'passes: for _ in 0..5 {
        for i in 0..16 {
            let mut new_l = [zero; G];
            let mut slx = [zero; G];
            let mut sl2 = [zero; G];
            let mut m = [zero; G];
            let mut any = 0;
            for g in 0..G {
                slx[g] = sub(sums[g][0], wxl[i][g]);
                sl2[g] = sub(sums[g][1], wl2[i][g]);
                new_l[g] = nint_clamp(div(mul(x[i][g], sl2[g]), slx[g]), lo, hi);
                m[g] = and(
                    gt(slx[g], zero),
                    _mm256_cmp_ps::<_CMP_NEQ_OQ>(new_l[g], l[i][g]),
                );
                any |= _mm256_movemask_ps(m[g]);
            }
            let mut changed = 0;
            if any != 0 {
                for g in 0..G {
                    let nwxl = mul(wx[i][g], new_l[g]);
                    let nwl2 = mul(mul(w[i][g], new_l[g]), new_l[g]);
                    let slx2 = add(slx[g], nwxl);
                    let sl22 = add(sl2[g], nwl2);
                    let slx2sq = mul(slx2, slx2);
                    let better = gt(mul(slx2sq, sums[g][1]), mul(sums[g][2], sl22));
                    let upd = and(m[g], and(gt(sl22, zero), better));
                    l[i][g] = sel(l[i][g], new_l[g], upd);
                    wxl[i][g] = sel(wxl[i][g], nwxl, upd);
                    wl2[i][g] = sel(wl2[i][g], nwl2, upd);
                    sums[g] = [
                        sel(sums[g][0], slx2, upd),
                        sel(sums[g][1], sl22, upd),
                        sel(sums[g][2], slx2sq, upd),
                    ];
                    changed |= _mm256_movemask_ps(upd);
                }
            }
            if changed != 0 {
                quiet = 0;
            } else {
                quiet += 1;
                if quiet == 16 {
                    break 'passes;
                }
            }
        }
    }
    let sumlx: [F8; G] = std::array::from_fn(|g| sums[g][0]);
    let suml2: [F8; G] = std::array::from_fn(|g| sums[g][1]);
    let mut out = [[_mm256_setzero_si256(); G]; 16];
    let off = _mm256_set1_epi32(nmax);
    let mut scale = [zero; G];
    for g in 0..G {
        let keep = _mm256_castps_si256(_mm256_xor_ps(
            tiny[g],
            _mm256_castsi256_ps(_mm256_set1_epi32(-1)),
        ));
        for i in 0..16 {
            let q = _mm256_add_epi32(_mm256_cvtps_epi32(l[i][g]), off);
            out[i][g] = _mm256_and_si256(q, keep);
        }
        let s = sel(zero, div(sumlx[g], suml2[g]), gt(suml2[g], zero));
        scale[g] = sel(s, zero, tiny[g]);
    }
    QxOut { scale, l: out }
}

/// Lane values of a vector.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn lanes(v: F8) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: 8 floats into an 8-float array.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Levels of `8·G` sub-blocks of 16 held lane-wise, to read one sub-block
/// back on demand.
pub(crate) struct Levels16<const G: usize> {
    l: [[[i32; 8]; G]; 16],
}

impl<const G: usize> Levels16<G> {
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn new(v: &[[__m256i; G]; 16]) -> Self {
        let mut l = [[[0i32; 8]; G]; 16];
        for i in 0..16 {
            for g in 0..G {
                // SAFETY: 8 i32 into an 8-i32 array.
                unsafe { _mm256_storeu_si256(l[i][g].as_mut_ptr().cast(), v[i][g]) };
            }
        }
        Levels16 { l }
    }

    /// Levels of sub-block `j` into `out` (16 bytes).
    pub(crate) fn fill(&self, j: usize, out: &mut [u8]) {
        let (g, lane) = (j / 8, j % 8);
        for (i, o) in out.iter_mut().enumerate().take(16) {
            *o = self.l[i][g][lane] as u8;
        }
    }
}

/// Search parameters of `8·G` sub-blocks from [`qkx_search`], to rebuild
/// one sub-block's levels on demand:
/// `l = clamp(nearest_int(iscale·(x - min)), 0, nmax)`, 0 when degenerate.
pub(crate) struct QkxLevels<const G: usize> {
    iscale: [[f32; 8]; G],
    min: [[f32; 8]; G],
    degenerate: [[f32; 8]; G],
}

impl<const G: usize> QkxLevels<G> {
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn new(r: &QkxOut<G>) -> Self {
        let mut out = QkxLevels {
            iscale: [[0.0; 8]; G],
            min: [[0.0; 8]; G],
            degenerate: [[0.0; 8]; G],
        };
        for g in 0..G {
            out.iscale[g] = lanes(r.win_iscale[g]);
            out.min[g] = lanes(r.win_min[g]);
            out.degenerate[g] = lanes(r.degenerate[g]);
        }
        out
    }

    /// Levels of sub-block `j` (`x` its values) into `out`.
    pub(crate) fn fill(&self, j: usize, x: &[f32], nmax: i32, out: &mut [u8]) {
        let (g, lane) = (j / 8, j % 8);
        if self.degenerate[g][lane] != 0.0 {
            out.fill(0);
            return;
        }
        let (iscale, min) = (self.iscale[g][lane], self.min[g][lane]);
        for (o, &xi) in out.iter_mut().zip(x) {
            *o = crate::quant::search::nearest_int(iscale * (xi - min)).clamp(0, nmax) as u8;
        }
    }
}

/// Two lane vectors of f32 as one array of 16.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn lanes16(v: &[F8; 2]) -> [f32; 16] {
    let mut out = [0f32; 16];
    out[..8].copy_from_slice(&lanes(v[0]));
    out[8..].copy_from_slice(&lanes(v[1]));
    out
}

/// Requantization of one sub-block of 16 or 32 contiguous values with a
/// fixed scale: `l = clamp(nearest_int((x [+ m]) / d), lo, hi) + off`
/// (`ADD_M` selects the `+ m`, as the asymmetric formats do).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn requantize<const ADD_M: bool>(
    x: &[f32],
    d: f32,
    m: f32,
    lo: i32,
    hi: i32,
    off: i32,
    l: &mut [u8],
) {
    let n = x.len();
    assert!((n == 16 || n == 32) && l.len() == n);
    let dv = splat(d);
    let mv = splat(m);
    let lov = _mm256_set1_epi32(lo);
    let hiv = _mm256_set1_epi32(hi);
    let offv = _mm256_set1_epi32(off);
    let mut q = [_mm256_setzero_si256(); 4];
    for k in 0..n / 8 {
        // SAFETY: 8 * k + 8 <= n == x.len().
        let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) };
        let v = if ADD_M { add(v, mv) } else { v };
        let t = _mm256_max_epi32(_mm256_min_epi32(nint(div(v, dv)), hiv), lov);
        q[k] = _mm256_add_epi32(t, offv);
    }
    // i32 -> u8 with in-lane packs, then restore the order.
    let a = _mm256_packs_epi32(q[0], q[1]);
    let b = _mm256_packs_epi32(q[2], q[3]);
    let p = _mm256_packus_epi16(a, b);
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let mut bytes = [0u8; 32];
    // SAFETY: 32 bytes into a 32-byte array.
    unsafe { _mm256_storeu_si256(bytes.as_mut_ptr().cast(), p) };
    l.copy_from_slice(&bytes[..n]);
}

#[inline]
#[target_feature(enable = "avx2")]
fn load32(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: at least 32 bytes.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn store32(b: &mut [u8], v: __m256i) {
    assert!(b.len() >= 32);
    // SAFETY: at least 32 bytes.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

/// `a | b << s` for bytes whose shifted values stay below 256.
#[inline]
#[target_feature(enable = "avx2")]
fn or_shl<const S: i32>(a: __m256i, b: __m256i) -> __m256i {
    _mm256_or_si256(a, _mm256_slli_epi16::<S>(b))
}

/// 2-bit packing of Q2_K/Q3_K (levels 0..=3), as [`super::pack_2bit`].
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn pack_2bit(l: &[u8; 256], qs: &mut [u8; 64]) {
    for h in 0..2 {
        let b = 128 * h;
        let q = or_shl::<6>(
            or_shl::<4>(
                or_shl::<2>(load32(&l[b..]), load32(&l[b + 32..])),
                load32(&l[b + 64..]),
            ),
            load32(&l[b + 96..]),
        );
        store32(&mut qs[32 * h..], q);
    }
}

/// Q3_K's high bits: bit `j / 32` of `hmask[j % 32]` is set and 4 taken off
/// `l[j]` when `l[j] > 3` (levels 0..=7).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn split_hmask(l: &mut [u8; 256], hmask: &mut [u8; 32]) {
    let three = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let mut hm = _mm256_setzero_si256();
    for k in 0..8 {
        let v = load32(&l[32 * k..]);
        let m = _mm256_cmpgt_epi8(v, three);
        hm = _mm256_or_si256(hm, _mm256_and_si256(m, _mm256_set1_epi8((1u8 << k) as i8)));
        store32(
            &mut l[32 * k..],
            _mm256_sub_epi8(v, _mm256_and_si256(m, four)),
        );
    }
    store32(hmask, hm);
}

/// Q4_K packing: byte `32g + k` = `l[64g + k] | l[64g + 32 + k] << 4`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn pack_q4(l: &[u8; 256], qs: &mut [u8; 128]) {
    for g in 0..4 {
        let q = or_shl::<4>(load32(&l[64 * g..]), load32(&l[64 * g + 32..]));
        store32(&mut qs[32 * g..], q);
    }
}

/// Q5_K packing (levels 0..=31): low nibbles as Q4_K, bit 4 of value
/// `64g + k` into bit `2g` of `qh[k]`, of `64g + 32 + k` into bit `2g + 1`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn pack_q5(l: &[u8; 256], qh: &mut [u8; 32], qs: &mut [u8; 128]) {
    let fifteen = _mm256_set1_epi8(15);
    let sixteen = _mm256_set1_epi8(16);
    let mut h = _mm256_setzero_si256();
    for g in 0..4 {
        let a = load32(&l[64 * g..]);
        let b = load32(&l[64 * g + 32..]);
        let ma = _mm256_cmpgt_epi8(a, fifteen);
        let mb = _mm256_cmpgt_epi8(b, fifteen);
        h = _mm256_or_si256(
            h,
            _mm256_and_si256(ma, _mm256_set1_epi8((1u8 << (2 * g)) as i8)),
        );
        h = _mm256_or_si256(
            h,
            _mm256_and_si256(mb, _mm256_set1_epi8((1u8 << (2 * g + 1)) as i8)),
        );
        let a = _mm256_sub_epi8(a, _mm256_and_si256(ma, sixteen));
        let b = _mm256_sub_epi8(b, _mm256_and_si256(mb, sixteen));
        store32(&mut qs[32 * g..], or_shl::<4>(a, b));
    }
    store32(qh, h);
}

/// Q6_K packing (levels 0..=63) of one 128-value half: low nibbles of
/// values `k`, `k+64` into `ql[k]`, of `k+32`, `k+96` into `ql[k+32]`; the
/// high 2 bits of `k`, `k+32`, `k+64`, `k+96` into `qh[k]`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn pack_q6_half(l: &[u8], ql: &mut [u8], qh: &mut [u8]) {
    let lo = _mm256_set1_epi8(0x0F);
    let q1 = load32(&l[0..]);
    let q2 = load32(&l[32..]);
    let q3 = load32(&l[64..]);
    let q4 = load32(&l[96..]);
    let low = |v: __m256i| _mm256_and_si256(v, lo);
    let high = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16::<4>(v), lo);
    store32(&mut ql[0..], or_shl::<4>(low(q1), low(q3)));
    store32(&mut ql[32..], or_shl::<4>(low(q2), low(q4)));
    let h = or_shl::<6>(
        or_shl::<4>(or_shl::<2>(high(q1), high(q2)), high(q3)),
        high(q4),
    );
    store32(qh, h);
}
