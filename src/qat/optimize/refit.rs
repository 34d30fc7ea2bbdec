//! The re-fit of one super-block's sub-block scales and mins with the codes
//! fixed ([`State::refit_scales`]): least squares in the `H` metric, then
//! projected on the format's grid by a search over the fp16 super-scales
//! ([`super_scale_candidates`]) and integer coordinate descent.

use super::gram::dot;
use super::model::{round, Model, Scales};
use super::refine::State;
use crate::quant::kquants::{fp16_to_fp32, fp32_to_fp16, QK_K};

impl State<'_> {
    /// Re-fit the sub-block scales (and mins) of super-block `sb` with the
    /// codes fixed: least squares in the H metric, projected on the format's
    /// grid by a search over the fp16 super-scales and integer coordinate
    /// descent; applied only when the exact error drops.
    pub(super) fn refit_scales(&mut self, sb: usize) {
        let Some((fit, target)) = self.scale_fit(sb) else {
            return;
        };
        let cur = SuperScales::of(&self.model, sb, fit.k);
        let best = fit.integer_descent(fit.grid_search(&target, &cur));
        if best == cur {
            return;
        }
        self.try_super_scales(sb, &cur, &best);
    }

    /// The least-squares problem of super-block `sb`'s scales (and mins),
    /// codes fixed, and its unconstrained solution (the targets); `None`
    /// when the system cannot be solved.
    fn scale_fit(&self, sb: usize) -> Option<(ScaleFit, Vec<f64>)> {
        let kind = self.model.kind;
        let group = kind.group;
        let k = QK_K / group;
        let with_min = matches!(kind.scales, Scales::WithMin { .. });
        let p = if with_min { 2 * k } else { k };
        let s0 = sb * QK_K;
        let g0 = sb * k;

        // Columns of B: ∂ŵ/∂a_j = lev, ∂ŵ/∂b_j = −1, on group j.
        let mut cols = vec![[0f64; 32]; p];
        for j in 0..k {
            for t in 0..group {
                cols[j][t] = self.model.lev(self.model.codes[s0 + j * group + t]) as f64;
                if with_min {
                    cols[k + j][t] = -1.0;
                }
            }
        }
        let mut q = vec![0f64; p * p];
        let mut r = vec![0f64; p];
        let mut u = [0f64; QK_K];
        for c in 0..p {
            let j = c % k;
            let gs = s0 + j * group;
            let v = &cols[c][..group];
            r[c] = dot(v, &self.g[gs..gs + group]);
            self.metric.block_times(s0, QK_K, gs, v, &mut u);
            for c2 in 0..p {
                let j2 = c2 % k;
                q[c2 * p + c] = dot(&cols[c2][..group], &u[j2 * group..(j2 + 1) * group]);
            }
        }
        let theta0: Vec<f64> = (0..p)
            .map(|c| {
                if c < k {
                    self.model.a(g0 + c) as f64
                } else {
                    self.model.b(g0 + c - k) as f64
                }
            })
            .collect();
        let delta = solve_ridge(&q, &r, p)?;
        let target: Vec<f64> = theta0.iter().zip(&delta).map(|(a, b)| a + b).collect();
        let (lo, hi) = match kind.scales {
            Scales::WithMin { smax } => (0, smax),
            Scales::Signed { lo, hi } => (lo, hi),
        };
        let fit = ScaleFit {
            k,
            p,
            with_min,
            lo,
            hi,
            q,
            r,
            theta0,
        };
        Some((fit, target))
    }

    /// Sets super-block `sb`'s scales to `new`; kept when the exact error
    /// drops, back to `cur` otherwise.
    fn try_super_scales(&mut self, sb: usize, cur: &SuperScales, new: &SuperScales) {
        let s0 = sb * QK_K;
        let old_vals: Vec<f32> = self.val[s0..s0 + QK_K].to_vec();
        new.store(&mut self.model, sb);
        let mut dv = [0f64; QK_K];
        for t in 0..QK_K {
            let nv = self.model.value(s0 + t);
            dv[t] = nv as f64 - old_vals[t] as f64;
        }
        let df = -2.0 * dot(&dv, &self.g[s0..s0 + QK_K]) + self.metric.quad_local(s0, &dv);
        if df < 0.0 {
            for t in 0..QK_K {
                self.val[s0 + t] = self.model.value(s0 + t);
            }
            self.metric.sub_update(&mut self.g, s0, &dv);
            self.f += df;
        } else {
            cur.store(&mut self.model, sb);
        }
    }
}

/// The scales of one super-block: fp16 super-scales (bits) and the integer
/// scales and mins of its `k` sub-blocks.
#[derive(Clone, Debug, PartialEq)]
struct SuperScales {
    d: u16,
    dmin: u16,
    ls: Vec<i32>,
    lm: Vec<i32>,
}

impl SuperScales {
    fn of(model: &Model, sb: usize, k: usize) -> SuperScales {
        let g0 = sb * k;
        SuperScales {
            d: model.d[sb],
            dmin: model.dmin[sb],
            ls: model.ls[g0..g0 + k].to_vec(),
            lm: model.lm[g0..g0 + k].to_vec(),
        }
    }

    fn store(&self, model: &mut Model, sb: usize) {
        let (k, g0) = (self.ls.len(), sb * self.ls.len());
        model.d[sb] = self.d;
        model.dmin[sb] = self.dmin;
        model.ls[g0..g0 + k].copy_from_slice(&self.ls);
        model.lm[g0..g0 + k].copy_from_slice(&self.lm);
    }
}

/// The least-squares problem of one super-block's `p` parameters (`k`
/// sub-block scales, then `k` mins when the format has them), codes fixed:
/// the change `Δ = θ − θ0` from the current values `θ0` costs
/// `−2Δ·r + ΔᵀQΔ` in the search metric.
struct ScaleFit {
    k: usize,
    p: usize,
    with_min: bool,
    /// The integer range of the sub-block scales (mins: `0..=hi`).
    lo: i32,
    hi: i32,
    q: Vec<f64>,
    r: Vec<f64>,
    theta0: Vec<f64>,
}

impl ScaleFit {
    /// Model error of a parameter vector: −2Δ·r + ΔᵀQΔ.
    fn model_err(&self, theta: &[f64]) -> f64 {
        let p = self.p;
        let d: Vec<f64> = theta.iter().zip(&self.theta0).map(|(a, b)| a - b).collect();
        let mut s = 0.0;
        for c in 0..p {
            if d[c] != 0.0 {
                s += d[c] * (dot(&self.q[c * p..c * p + p], &d) - 2.0 * self.r[c]);
            }
        }
        s
    }

    /// The integers nearest to targets `t` on super-scale `ds` (`cur` when
    /// the super-scale is the current one).
    fn ints(&self, ds: f32, t: &[f64], cur: &[i32], same: bool) -> Vec<i32> {
        if same {
            return cur.to_vec();
        }
        t.iter()
            .map(|&v| {
                if ds == 0.0 {
                    0
                } else {
                    round(v / ds as f64).clamp(self.lo as f64, self.hi as f64) as i32
                }
            })
            .collect()
    }

    /// The parameter vector of fp16 super-scales `dh`, `mh` and integers
    /// `ls`, `lm`, as the dequantizer computes it.
    fn theta_of(&self, dh: u16, mh: u16, ls: &[i32], lm: &[i32]) -> Vec<f64> {
        let (ds, ms) = (fp16_to_fp32(dh), fp16_to_fp32(mh));
        let mut t: Vec<f64> = ls.iter().map(|&l| (ds * l as f32) as f64).collect();
        if self.with_min {
            t.extend(lm.iter().map(|&l| (ms * l as f32) as f64));
        }
        t
    }

    /// The candidate super-scales for `target`, each with its rounded
    /// integers: the best by model error (`cur` unless one is lower).
    fn grid_search(&self, target: &[f64], cur: &SuperScales) -> SuperScales {
        let k = self.k;
        let d_cands = super_scale_candidates(&target[..k], self.lo, self.hi, cur.d);
        let m_cands = if self.with_min {
            super_scale_candidates(&target[k..], 0, self.hi, cur.dmin)
        } else {
            vec![0]
        };
        let mut best = (0.0f64, cur.clone());
        for &dh in &d_cands {
            let ls = self.ints(fp16_to_fp32(dh), &target[..k], &cur.ls, dh == cur.d);
            for &mh in &m_cands {
                let lm = if self.with_min {
                    self.ints(fp16_to_fp32(mh), &target[k..], &cur.lm, mh == cur.dmin)
                } else {
                    cur.lm.clone()
                };
                let th = self.theta_of(dh, mh, &ls, &lm);
                let e = self.model_err(&th);
                if e < best.0 {
                    best = (
                        e,
                        SuperScales {
                            d: dh,
                            dmin: mh,
                            ls: ls.clone(),
                            lm,
                        },
                    );
                }
            }
        }
        best.1
    }

    /// Integer coordinate descent on the sub-block scales and mins, the
    /// super-scales fixed.
    fn integer_descent(&self, s: SuperScales) -> SuperScales {
        let (k, lo, hi) = (self.k, self.lo, self.hi);
        let SuperScales {
            d: dh,
            dmin: mh,
            mut ls,
            mut lm,
        } = s;
        let (ds, ms) = (fp16_to_fp32(dh), fp16_to_fp32(mh));
        for _ in 0..8 {
            let mut improved = false;
            for c in 0..self.p {
                for step in [-1i32, 1] {
                    let (cur_l, scale) = if c < k { (ls[c], ds) } else { (lm[c - k], ms) };
                    let nl = cur_l + step;
                    if nl < lo || nl > hi || scale == 0.0 {
                        continue;
                    }
                    let th_old = self.theta_of(dh, mh, &ls, &lm);
                    let mut th_new = th_old.clone();
                    th_new[c] = (scale * nl as f32) as f64;
                    if self.model_err(&th_new) < self.model_err(&th_old) {
                        if c < k {
                            ls[c] = nl;
                        } else {
                            lm[c - k] = nl;
                        }
                        improved = true;
                    }
                }
            }
            if !improved {
                break;
            }
        }
        SuperScales {
            d: dh,
            dmin: mh,
            ls,
            lm,
        }
    }
}

/// fp16 super-scales to try for sub-block targets `t` on the integer range
/// `[lo, hi]`: the extreme target mapped near either end of the range, plus
/// the current one.
fn super_scale_candidates(t: &[f64], lo: i32, hi: i32, current: u16) -> Vec<u16> {
    let mut out = vec![current];
    let (mut ext, mut amax) = (0f64, 0f64);
    for &v in t {
        if v.abs() > amax && (lo < 0 || v > 0.0) {
            amax = v.abs();
            ext = v;
        }
    }
    if !(amax > 0.0 && amax.is_finite()) {
        if lo >= 0 {
            out.push(0);
        }
        return out;
    }
    let step = ((hi - lo + 1) as f64 / 128.0).max(0.25);
    let mut ends = vec![hi as f64];
    if lo < 0 {
        ends.push(lo as f64);
    }
    for end in ends {
        for s in -2..=8 {
            let denom = end - end.signum() * step * s as f64;
            if denom == 0.0 || denom.signum() != end.signum() {
                continue;
            }
            let d = fp32_to_fp16((ext / denom) as f32);
            if fp16_to_fp32(d).is_finite() && !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// Solve `(Q + εI) x = r` (Q symmetric PSD, p ≤ 32) by Gaussian elimination
/// with partial pivoting; `None` when it is singular or not finite.
fn solve_ridge(q: &[f64], r: &[f64], p: usize) -> Option<Vec<f64>> {
    let tr = (0..p).map(|i| q[i * p + i]).fold(0f64, f64::max);
    if !(tr > 0.0 && tr.is_finite()) {
        return None;
    }
    let eps = 1e-10 * tr;
    let mut a: Vec<f64> = q.to_vec();
    let mut b = r.to_vec();
    for i in 0..p {
        a[i * p + i] += eps;
    }
    for c in 0..p {
        let piv = (c..p).max_by(|&x, &y| a[x * p + c].abs().total_cmp(&a[y * p + c].abs()))?;
        if a[piv * p + c].abs() < 1e-300 {
            return None;
        }
        if piv != c {
            for t in 0..p {
                a.swap(c * p + t, piv * p + t);
            }
            b.swap(c, piv);
        }
        for rr in c + 1..p {
            let f = a[rr * p + c] / a[c * p + c];
            if f != 0.0 {
                for t in c..p {
                    a[rr * p + t] -= f * a[c * p + t];
                }
                b[rr] -= f * b[c];
            }
        }
    }
    let mut x = vec![0f64; p];
    for c in (0..p).rev() {
        let mut s = b[c];
        for t in c + 1..p {
            s -= a[c * p + t] * x[t];
        }
        x[c] = s / a[c * p + c];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}
