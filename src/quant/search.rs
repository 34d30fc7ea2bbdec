//! Scale searches shared by the K-quants and the importance-weighted legacy
//! formats, with the exact floating-point semantics of ggml-quants.c.
//!
//! Each function performs the same f32 operations, in the same order, as its
//! namesake in ggml (commit 8c63e70), so that callers can be byte-identical to
//! ggml: products are evaluated left to right (`w * x * l` is `(w * x) * l`),
//! integers are converted to f32 where C converts them, comparisons are the
//! same strict/non-strict ones (they decide ties and NaN behaviour), and no
//! fused multiply-add is used anywhere.
//!
//! Slices replace C's `(n, pointer)` pairs: `x.len()` is the group size `n`,
//! output slices must be at least that long. Search scratch (`Laux` in C) is
//! internal; groups are limited to [`MAX_GROUP`] elements.

// Index loops mirror the C so that the order of operations is evident.
#![allow(clippy::needless_range_loop)]

/// Largest group the searches accept (the K-quants use 16 and 32, the legacy
/// formats 32).
pub const MAX_GROUP: usize = 256;

/// Groups whose largest magnitude is below this are treated as all zero
/// (`GROUP_MAX_EPS`).
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to the nearest integer, ties to even, by ggml's magic-number trick.
///
/// Adding 1.5·2²³ leaves the rounded integer in the low mantissa bits. Valid
/// for |x| ≤ 4194303; outside that range (and for NaN/∞) it returns the same
/// garbage as ggml's, which ggml's callers then clamp, so we must match it
/// rather than saturate.
#[inline(always)]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0f32;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// `MAX(a, b)` of C for floats: `a > b ? a : b` (NaN `b` wins).
#[inline(always)]
fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Weight of element `x` in [`make_qx_quants`] when no weights are given.
#[inline(always)]
fn rmse_weight(rmse_type: i32, x: f32) -> f32 {
    match rmse_type {
        1 => x * x,
        2 => 1.0,
        3 => x.abs(),
        _ => x.abs().sqrt(),
    }
}

/// Symmetric quantization of `x` to `[-nmax, nmax-1]` (stored offset by
/// `nmax` in `l`), searching the scale that minimises the weighted error.
/// Returns the scale (ggml's `make_qx_quants`).
///
/// `rmse_type` 0: plain round-to-nearest with scale `max/-nmax`; 1..=4 pick
/// the implicit weight when `qw` is `None` (x², 1, |x|, √|x|); a negative
/// value returns after the first least-squares step.
pub fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    l: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let n = x.len();
    let l = &mut l[..n];
    if let Some(w) = qw {
        assert!(w.len() >= n);
    }
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for (li, &xi) in l.iter_mut().zip(x) {
            let q = nearest_int(iscale * xi);
            *li = (nmax + q.min(nmax - 1).max(-nmax)) as i8;
        }
        return 1.0 / iscale;
    }
    let (rmse_type, return_early) = if rmse_type < 0 {
        (-rmse_type, true)
    } else {
        (rmse_type, false)
    };
    let weight = |i: usize| match qw {
        Some(w) => w[i],
        None => rmse_weight(rmse_type, x[i]),
    };
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
        l[i] = (q + nmax) as i8;
        let w = weight(i);
        let qf = q as f32;
        sumlx += w * x[i] * qf;
        suml2 += w * qf * qf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
            let w = weight(i);
            let qf = q as f32;
            sumlx += w * x[i] * qf;
            suml2 += w * qf * qf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let q = nearest_int(iscale * x[i]);
                l[i] = (nmax + q.min(nmax - 1).max(-nmax)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Symmetric 3-bit style quantization with coordinate-descent refinement
/// (ggml's `make_q3_quants`): levels `[-nmax, nmax-1]` stored offset by
/// `nmax`, weights x². Returns the scale.
pub fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let l = &mut l[..n];
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
            l[i] = q as i8;
            let w = x[i] * x[i];
            let qf = q as f32;
            sumlx += w * x[i] * qf;
            suml2 += w * qf * qf;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).min(nmax - 1).max(-nmax);
                    if new_l != l[i] as i32 {
                        let nl = new_l as f32;
                        slx += w * x[i] * nl;
                        sl2 += w * nl * nl;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for li in l.iter_mut() {
            *li = li.wrapping_add(nmax as i8);
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
        l[i] = (q + nmax) as i8;
    }
    1.0 / iscale
}

/// Asymmetric quantization `x ≈ scale·l - min`, `l` in `[0, nmax]`, with a
/// grid search over `nstep + 1` candidate scales around `nmax/(max - min)`
/// (ggml's `make_qkx2_quants`). Returns `(scale, the_min)` where `the_min`
/// is what ggml stores through its `the_min` pointer (the positive offset).
///
/// `use_mad` measures errors as |d| instead of d².
#[allow(clippy::too_many_arguments)]
pub fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    qkx_search(
        nmax,
        x,
        |i| weights[i],
        l,
        rmin,
        rdelta,
        nstep,
        use_mad,
        false,
    )
}

/// The candidate-scale grid `(rmin, rdelta, nstep)` with which every
/// importance-weighted path of ggml (`quantize_row_q*_impl`) calls
/// [`make_qkx3_quants`].
pub const IMPL_GRID: (f32, f32, i32) = (-0.9, 0.05, 36);

/// Like [`make_qkx2_quants`] but with optional weights (x² when `None`) and
/// a `max <= min` degenerate test (ggml's `make_qkx3_quants`).
#[allow(clippy::too_many_arguments)]
pub fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    match weights {
        Some(w) => {
            assert!(w.len() >= x.len());
            qkx_search(nmax, x, |i| w[i], l, rmin, rdelta, nstep, use_mad, true)
        }
        None => qkx_search(
            nmax,
            x,
            |i| x[i] * x[i],
            l,
            rmin,
            rdelta,
            nstep,
            use_mad,
            true,
        ),
    }
}

/// The common body of `make_qkx2_quants` and `make_qkx3_quants`; they differ
/// only in the weights and in the degenerate-range test (`max == min` vs
/// `max <= min`, which differ for NaN ranges).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn qkx_search(
    nmax: i32,
    x: &[f32],
    weight: impl Fn(usize) -> f32,
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
    le_test: bool,
) -> (f32, f32) {
    let n = x.len();
    assert!((1..=MAX_GROUP).contains(&n));
    let l = &mut l[..n];
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weight(0);
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weight(i);
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    let degenerate = if le_test { max <= min } else { max == min };
    if degenerate {
        l.fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).min(nmax).max(0);
        l[i] = q as u8;
        let diff = err(scale * l[i] as f32 + min - x[i]);
        best_error += weight(i) * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; MAX_GROUP];
    let laux = &mut laux[..n];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).min(nmax).max(0);
            laux[i] = q as u8;
            let w = weight(i);
            let qf = q as f32;
            sum_l += w * qf;
            sum_l2 += w * qf * qf;
            sum_xl += w * qf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = err(this_scale * laux[i] as f32 + this_min - x[i]);
                cur_error += weight(i) * diff;
            }
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Non-negative quantization of `x` to `[0, nmax]` (levels may exceed nmax
/// only through ggml's own unclamped first pass) with weighted scale search
/// and coordinate descent (ggml's `make_qp_quants`), used for the scales of
/// the K-quant super-blocks. Returns the scale.
pub fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len();
    let l = &mut l[..n];
    let qw = &quant_weights[..n];
    let mut max = 0.0f32;
    for &xi in x {
        max = c_max(max, xi);
    }
    if max < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for i in 0..n {
        l[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        let w = qw[i];
        let qf = q as f32;
        sumlx += w * x[i] * qf;
        suml2 += w * qf * qf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-3.7), -4);
        assert_eq!(nearest_int(4194303.0), 4194303);
        assert_eq!(nearest_int(-4194303.0), -4194303);
    }

    #[test]
    fn qx_zero_group_is_zero() {
        let x = [0.0f32; 16];
        let mut l = [1i8; 16];
        assert_eq!(make_qx_quants(32, &x, &mut l, 1, None), 0.0);
        assert!(l.iter().all(|&v| v == 0));
    }

    #[test]
    fn qkx2_reconstructs_a_ramp() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 * 0.25 - 1.0).collect();
        let w = vec![1.0f32; 32];
        let mut l = [0u8; 32];
        let (scale, min) = make_qkx2_quants(31, &x, &w, &mut l, -0.5, 0.1, 15, false);
        for i in 0..32 {
            assert!((scale * l[i] as f32 - min - x[i]).abs() <= scale * 0.5 + 1e-6);
        }
    }
}
