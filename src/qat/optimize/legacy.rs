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
/// Starting scales per sign.
const STEPS: usize = 36;

/// Weighted error of codes `q` at scale `d`.
#[inline]
fn err(x: &[f32], w: &[f64], q: &[i8; QK], d: f32) -> f64 {
    let mut e = 0f64;
    for i in 0..QK {
        let r = x[i] as f64 - d as f64 * q[i] as f64;
        e += w[i] * r * r;
    }
    e
}

#[inline]
fn round_codes(x: &[f32], d: f32, q: &mut [i8; QK]) {
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
            for sign in [-1f32, 1.0] {
                for k in 0..STEPS {
                    let t = 5.5 + 3.5 * k as f32 / (STEPS - 1) as f32;
                    let mut d = fp16_to_fp32(fp32_to_fp16(max / (sign * t)));
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
