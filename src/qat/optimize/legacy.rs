//! Q4_0 (32 values, one fp16 scale `d`, codes in −8..7): a weighted search
//! of each block's scale. With a diagonal metric the best codes for a given
//! `d` are the rounded, clamped `x/d`, and the best `d` for given codes is
//! the weighted least-squares fit (then rounded to fp16). The code vectors
//! that rounding produces change only at finitely many scales, so one
//! sorted sweep over them ([`starts`]) finds the fits with the lowest error
//! (before fp16 rounding); from those, and from ggml's start (the extreme
//! value on −8), codes and scale are alternated to a fixed point and the
//! lowest weighted error kept. ggml's own candidates (make_qx_quants) are
//! among those the row chooses from, so this only adds.

use crate::quant::float::{fp16_to_fp32, fp32_to_fp16};

const QK: usize = 32;

/// Weighted error of codes `q` at scale `d`.
#[inline]
pub(super) fn err(x: &[f32], w: &[f64], q: &[i8; QK], d: f32) -> f64 {
    let mut e = 0f64;
    for i in 0..QK {
        let r = x[i] as f64 - d as f64 * q[i] as f64;
        e += w[i] * r * r;
    }
    e
}

#[inline]
pub(super) fn round_codes(x: &[f32], d: f32, q: &mut [i8; QK]) {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for i in 0..QK {
        // `roundf(v).clamp(-8, 7)`, branch-free: v + ±0.5 is exact in f64
        // and the cast truncates (saturating; NaN to 0 as before).
        let v = x[i] * id;
        let r = (v as f64 + 0.5f64.copysign(v as f64)) as i32;
        q[i] = r.clamp(-8, 7) as i8;
    }
}

/// The codes at scale `d` ([`round_codes`]) and their sums `Σ w x q`,
/// `Σ w q²`, in one pass: the weighted error of the codes at a scale `s` is
/// `Σ w x² − 2 s Σ w x q + s² Σ w q²`, and their least-squares scale is the
/// ratio of the sums.
#[inline]
fn codes_and_sums(x: &[f32], w: &[f64], d: f32, q: &mut [i8; QK]) -> (f64, f64) {
    round_codes(x, d, q);
    let (mut num, mut den) = (0f64, 0f64);
    for i in 0..QK {
        let qi = q[i] as f64;
        num += w[i] * x[i] as f64 * qi;
        den += w[i] * qi * qi;
    }
    (num, den)
}

/// The window of the sweep in [`starts`]: `1/|d|` from `T_LO/amax` to
/// `T_HI/amax` (the block's extreme value on level `T_LO` … `T_HI`).
/// ggml's own choice is 8.
pub(super) const T_LO: f32 = 4.0;
pub(super) const T_HI: f32 = 12.0;

/// The scales worth starting the alternation from, for one block: per sign
/// of `d`, the weighted least-squares scale of the code vector with the
/// lowest continuous error `Σ w x² − (Σ w x q)² / Σ w q²`, among all the
/// code vectors `q = clamp(round(x/d))` that the scales `d` of that sign in
/// the window [`T_LO`, `T_HI`] produce. Those vectors change only where
/// some `|x_i|/|d|` crosses a half-integer, so sweeping the crossings in
/// order of `1/|d|` visits each once, with O(1) updates of both sums. When
/// the best scale (before fp16 rounding) lies in the window, it is one of
/// these: at the optimum the codes are the rounded ones and the scale is
/// their fit. Returns how many were filled (0 to 2).
pub(super) fn starts(x: &[f32], w: &[f64], out: &mut [f32; 2]) -> usize {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let any = amax > 0.0;
    if !any {
        return 0;
    }
    let (s_lo, s_hi) = (T_LO / amax, T_HI / amax);
    // Crossing of element i from level k to k + 1 (magnitudes) at
    // 1/|d| = (k + 0.5)/|x_i|, keyed by it (positive f32s order as their
    // bits); crossings before the window make the starting levels.
    let mut ev = [0u64; QK * 8];
    let mut m = 0;
    let mut lev0 = [0u32; QK];
    for i in 0..QK {
        let a = x[i].abs();
        let counts = a > 0.0 && w[i] > 0.0;
        if !counts {
            continue;
        }
        let ia = 1.0 / a;
        for k in 0..8u32 {
            // branch-free: an unconditional store, a conditional count
            let s = (k as f32 + 0.5) * ia;
            lev0[i] += (s <= s_lo) as u32;
            ev[m] = ((s.to_bits() as u64) << 8) | ((i as u64) << 3) | k as u64;
            m += (s > s_lo && s <= s_hi) as usize;
        }
    }
    let ev = &mut ev[..m];
    ev.sort_unstable();
    let mut filled = 0;
    // sign = +1: d > 0, codes of positive x reach at most 7, of negative
    // x −8 (magnitude 8); sign = −1: the other way round.
    for pos in [true, false] {
        let cap = |i: usize| if (x[i] > 0.0) == pos { 7 } else { 8 };
        let (mut num, mut den) = (0f64, 0f64);
        for i in 0..QK {
            let l = lev0[i].min(cap(i)) as f64;
            num += w[i] * x[i].abs() as f64 * l;
            den += w[i] * l * l;
        }
        // The best (num, den) by num²/den, compared without dividing.
        let mut best = (0f64, 0f64);
        let mut offer = |n: f64, d: f64| {
            if d > 0.0 && (best.1 == 0.0 || n * n * best.1 > best.0 * best.0 * d) {
                best = (n, d);
            }
        };
        offer(num, den);
        for &e in ev.iter() {
            let i = ((e >> 3) & 31) as usize;
            let k = (e & 7) as u32;
            // a crossing past the cap changes nothing (branch-free)
            let on = (k < cap(i)) as u32 as f64 * w[i];
            num += on * x[i].abs() as f64;
            den += on * (2 * k + 1) as f64;
            if on > 0.0 {
                offer(num, den);
            }
        }
        let (n, d) = best;
        if d > 0.0 && n > 0.0 {
            out[filled] = ((if pos { n } else { -n }) / d) as f32;
            filled += 1;
        }
    }
    filled
}

/// Quantizes one row to Q4_0 bytes (`out`: 18 bytes per block), minimising
/// `Σ w_i (x_i − x̂_i)²` block by block. `x` must be finite.
pub(super) fn q4_0_row(x: &[f32], w: &[f64], out: &mut [u8]) {
    for ((xb, wb), ob) in x
        .chunks_exact(QK)
        .zip(w.chunks_exact(QK))
        .zip(out.chunks_exact_mut(18))
    {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut best_q = [0i8; QK];
        let mut best_d = 0f32;
        let mut best_e = err(xb, wb, &best_q, 0.0);
        if amax > 0.0 {
            let mut q = [0i8; QK];
            let mut from = [0f32; 3];
            let k = starts(xb, wb, (&mut from[..2]).try_into().unwrap());
            // and ggml's own start: the extreme value on −8
            from[k] = max / -8.0;
            let sxx: f64 = (0..QK).map(|i| wb[i] * xb[i] as f64 * xb[i] as f64).sum();
            for &d0 in &from[..=k] {
                let mut d = fp16_to_fp32(fp32_to_fp16(d0));
                // Alternate codes and scale to a fixed point.
                for _ in 0..4 {
                    let (num, den) = codes_and_sums(xb, wb, d, &mut q);
                    let df = d as f64;
                    let e = sxx - 2.0 * df * num + df * df * den;
                    if e < best_e {
                        best_e = e;
                        best_d = d;
                        best_q = q;
                    }
                    if den <= 0.0 {
                        break;
                    }
                    let nd = fp16_to_fp32(fp32_to_fp16((num / den) as f32));
                    if nd == d {
                        break;
                    }
                    d = nd;
                }
            }
        }
        let h = fp32_to_fp16(best_d);
        ob[..2].copy_from_slice(&h.to_le_bytes());
        for j in 0..QK / 2 {
            let lo = (best_q[j] + 8) as u8;
            let hi = (best_q[j + QK / 2] + 8) as u8;
            ob[2 + j] = lo | (hi << 4);
        }
    }
}
