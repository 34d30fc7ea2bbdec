//! Q4_0 (32 values, one fp16 scale `d`, codes in −8..7): a weighted search
//! of each block's scale. With a diagonal metric the best codes for a given
//! `d` are the rounded, clamped `x/d`, and the best `d` for given codes is
//! the weighted least-squares fit (then rounded to fp16), so each of a dense
//! grid of starting scales (the block's extreme value mapped to ±5.5 … ±9)
//! is alternated between the two to a fixed point, and the lowest weighted
//! error kept. ggml's own search (make_qx_quants, 19 starting scales, one
//! fit) is one of the candidates the row chooses from, so this only adds.

use super::model::roundf;
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
        q[i] = roundf(x[i] * id).clamp(-8.0, 7.0) as i8;
    }
}

/// The fp16 value of the weighted least-squares scale for codes `q`
/// (`None` when the codes are all zero).
#[inline]
fn fit(x: &[f32], w: &[f64], q: &[i8; QK]) -> Option<f32> {
    let (mut num, mut den) = (0f64, 0f64);
    for i in 0..QK {
        let qi = q[i] as f64;
        num += w[i] * x[i] as f64 * qi;
        den += w[i] * qi * qi;
    }
    (den > 0.0).then(|| fp16_to_fp32(fp32_to_fp16((num / den) as f32)))
}

/// The scales worth starting the alternation from, for one block: per sign
/// of `d`, the weighted least-squares scales of the two code vectors with
/// the lowest continuous error `Σ w x² − (Σ w x q)² / Σ w q²`, among all
/// the code vectors `q = clamp(round(x/d))` that any real `d` of that sign
/// produces. Those vectors change only where some `|x_i|/|d|` crosses a
/// half-integer, so sweeping the crossings in order of `1/|d|` visits each
/// once, with O(1) updates of both sums. The best scale overall (before
/// fp16 rounding) is the fit of one of them: at the optimum the codes are
/// the rounded ones and the scale is their fit. Returns how many were filled.
pub(super) fn starts(x: &[f32], w: &[f64], out: &mut [f32; 4]) -> usize {
    // Crossing of element i from level k to k + 1 (magnitudes), keyed by
    // 1/|d| = (k + 0.5)/|x_i|: positive f32s order as their bits.
    let mut ev = [0u64; QK * 8];
    let mut m = 0;
    for i in 0..QK {
        let a = x[i].abs();
        if !(a > 0.0) || !(w[i] > 0.0) {
            continue;
        }
        for k in 0..8 {
            let s = (k as f32 + 0.5) / a;
            ev[m] = ((s.to_bits() as u64) << 8) | ((i as u64) << 3) | k as u64;
            m += 1;
        }
    }
    let ev = &mut ev[..m];
    ev.sort_unstable();
    let mut filled = 0;
    // sign = +1: d > 0, codes of positive x reach at most 7, of negative
    // x −8 (magnitude 8); sign = −1: the other way round.
    for sign in [1f32, -1.0] {
        let (mut num, mut den) = (0f64, 0f64);
        let mut best = [(0f64, 0f64); 2]; // (num²/den, d)
        for &e in ev.iter() {
            let i = ((e >> 3) & 31) as usize;
            let k = (e & 7) as u32;
            let cap = if (x[i] > 0.0) == (sign > 0.0) { 7 } else { 8 };
            if k + 1 > cap {
                continue;
            }
            num += w[i] * x[i].abs() as f64;
            den += w[i] * (2 * k + 1) as f64;
            let score = num * num / den;
            if score > best[1].0 {
                let d = sign as f64 * num / den;
                if score > best[0].0 {
                    best[1] = best[0];
                    best[0] = (score, d);
                } else {
                    best[1] = (score, d);
                }
            }
        }
        for (score, d) in best {
            if score > 0.0 {
                out[filled] = d as f32;
                filled += 1;
            }
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
            let mut from = [0f32; 5];
            let k = starts(xb, wb, (&mut from[..4]).try_into().unwrap());
            // and ggml's own start: the extreme value on −8
            from[k] = max / -8.0;
            for &d0 in &from[..=k] {
                let mut d = fp16_to_fp32(fp32_to_fp16(d0));
                // Alternate codes and scale to a fixed point.
                for _ in 0..4 {
                    round_codes(xb, d, &mut q);
                    let e = err(xb, wb, &q, d);
                    if e < best_e {
                        best_e = e;
                        best_d = d;
                        best_q = q;
                    }
                    match fit(xb, wb, &q) {
                        Some(nd) if nd != d => d = nd,
                        _ => break,
                    }
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
