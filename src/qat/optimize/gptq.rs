//! The GPTQ-style candidate: the upper Cholesky factor of `(H + λI)⁻¹`
//! ([`gptq_factor`], once per layer), and the pass over a row
//! ([`RowCtx::gptq`]) that takes each super-block's scales from ggml's
//! imatrix search on the error-compensated weights, then chooses the codes
//! in order, feeding each element's error forward through the factor.

use rayon::prelude::*;

use super::gram::dot;
use super::model::{Kind, Model};
use super::row::RowCtx;
use crate::quant::format;
use crate::quant::kquants::QK_K;

/// GPTQ's factor: the upper Cholesky factor `U` of `(H + λI)⁻¹`
/// (`UᵀU = (H + λI)⁻¹`), row-major. Computed as `J L⁻¹ J` where `L` is the
/// lower Cholesky factor of `J (H + λI) J` (`J` reverses the order). `None`
/// when `H` is zero or not positive definite after damping.
pub(super) fn gptq_factor(h: &[f64], n: usize, damp: f64) -> Option<Vec<f64>> {
    let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    if !(mean > 0.0 && mean.is_finite()) {
        return None;
    }
    let lam = damp.max(1e-6) * mean;
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            l[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
        l[i * n + i] += lam;
    }
    // Cholesky–Banachiewicz, in place on the lower triangle.
    for i in 0..n {
        for j in 0..=i {
            let (top, cur) = l.split_at_mut(i * n);
            let li = &mut cur[..n];
            let lj: &[f64] = if j == i { &*li } else { &top[j * n..j * n + n] };
            let s = li[j] - dot(&li[..j], &lj[..j]);
            if j == i {
                if s.is_nan() || s <= 0.0 {
                    return None;
                }
                li[i] = s.sqrt();
            } else {
                let ljj = top[j * n + j];
                li[j] = s / ljj;
            }
        }
    }
    // Columns of L⁻¹ (lower), in parallel.
    let cols: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|j| {
            let mut x = vec![0f64; n];
            x[j] = 1.0 / l[j * n + j];
            for i in j + 1..n {
                let row = &l[i * n + j..i * n + i];
                x[i] = -dot(row, &x[j..i]) / l[i * n + i];
            }
            x
        })
        .collect();
    let mut u = vec![0f64; n * n];
    for (j, col) in cols.iter().enumerate() {
        for i in j..n {
            // Li[i][j] → U[n-1-i][n-1-j].
            u[(n - 1 - i) * n + (n - 1 - j)] = col[i];
        }
    }
    Some(u)
}

impl RowCtx<'_> {
    /// GPTQ with per-super-block scales from ggml's imatrix search on the
    /// error-compensated weights.
    pub(super) fn gptq(&self, kind: Kind, w: &[f32], u: &[f64]) -> Model {
        let n = self.n;
        let fmt = format(self.ty);
        let mut m = Model::new(kind, n);
        let mut wq: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let mut blk = vec![0u8; fmt.block_bytes];
        let mut xs = [0f32; QK_K];
        for sb in 0..n / QK_K {
            let s0 = sb * QK_K;
            for k in 0..QK_K {
                xs[k] = wq[s0 + k] as f32;
            }
            (fmt.quantize_row)(&xs, &mut blk, Some(&self.imatrix[s0..s0 + QK_K]));
            m.decode_block(sb, &blk);
            for i in s0..s0 + QK_K {
                let j = i / kind.group;
                let (a, b) = (m.a(j), m.b(j));
                if let Some(c) = m.nearest_code(wq[i], a, b) {
                    m.codes[i] = c;
                }
                let v = m.value(i) as f64;
                let row = &u[i * n..i * n + n];
                let err = (wq[i] - v) / row[i];
                if err != 0.0 && err.is_finite() {
                    for k in i + 1..n {
                        wq[k] -= err * row[k];
                    }
                }
            }
        }
        m
    }
}
