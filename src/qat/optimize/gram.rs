//! The statistics of the inputs: `H = XᵀX` (its diagonal always, the full
//! matrix for rows up to [`MAX_FULL_N`]), the Ledoit–Wolf shrinkage of `H`
//! towards its diagonal, and [`Metric`], the view of `(1 − α)·H + α·diag(H)`
//! that the search and the final choice work in (products, local updates,
//! quadratic forms), with the fixed-order [`dot`] they all use.

use rayon::prelude::*;

use super::MAX_FULL_N;

/// The inputs' second moments `H = XᵀX`: its diagonal always, the full
/// matrix when `n ≤ MAX_FULL_N`, and the Ledoit–Wolf shrinkage intensity
/// `α` of the sample matrix towards its diagonal.
pub(super) struct Gram {
    n: usize,
    d: Vec<f64>,
    pub(super) h: Option<Vec<f64>>,
    alpha: f64,
}

impl Gram {
    pub(super) fn new(x: Option<&[f32]>, n: usize, s: usize, shrinkage: Option<f64>) -> Gram {
        let Some(x) = x else {
            return Gram {
                n,
                d: vec![1.0; n],
                h: None,
                alpha: 1.0,
            };
        };
        let mut d = vec![0f64; n];
        // Σ_k [(Σ_i x_ki²)² − Σ_i x_ki⁴], for the Ledoit–Wolf estimate.
        let mut m4_off = 0f64;
        for xs in x.chunks_exact(n) {
            let (mut s2, mut s4) = (0f64, 0f64);
            for (a, &v) in d.iter_mut().zip(xs) {
                let v2 = v as f64 * v as f64;
                *a += v2;
                s2 += v2;
                s4 += v2 * v2;
            }
            m4_off += s2 * s2 - s4;
        }
        if n > MAX_FULL_N {
            return Gram {
                n,
                d,
                h: None,
                alpha: 1.0,
            };
        }
        // Columns of X, contiguous.
        let mut xt = vec![0f64; n * s];
        for (k, xs) in x.chunks_exact(n).enumerate() {
            for (i, &v) in xs.iter().enumerate() {
                xt[i * s + k] = v as f64;
            }
        }
        let mut h = vec![0f64; n * n];
        h.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            let ci = &xt[i * s..i * s + s];
            for j in 0..=i {
                row[j] = dot(ci, &xt[j * s..j * s + s]);
            }
        });
        let mut off2 = 0f64;
        for i in 0..n {
            for j in i + 1..n {
                let v = h[j * n + i];
                h[i * n + j] = v;
                off2 += 2.0 * v * v;
            }
        }
        // Ledoit–Wolf with the diagonal as target, on S = H/s:
        // γ = Σ_{i≠j} S_ij², π = Σ_{i≠j} Var(S_ij) ≈ (Σ_{i≠j} mean_k(x_ki² x_kj²) − γ)/s,
        // α = π/γ clamped to [0, 1].
        let sf = s as f64;
        let gamma = off2 / (sf * sf);
        let pi = (m4_off / sf - gamma) / sf;
        let alpha = match shrinkage {
            Some(a) => a.clamp(0.0, 1.0),
            None if gamma > 0.0 => (pi / gamma).clamp(0.0, 1.0),
            None => 1.0,
        };
        let alpha = if alpha.is_finite() { alpha } else { 1.0 };
        Gram {
            n,
            d,
            h: Some(h),
            alpha,
        }
    }

    /// A diagonal `H = diag(d)` (an importance matrix: per-column mean of
    /// `x²`, as llama.cpp's imatrix holds), no off-diagonal terms.
    pub(super) fn diagonal(d: &[f32]) -> Gram {
        Gram {
            n: d.len(),
            d: d.iter().map(|&v| v as f64).collect(),
            h: None,
            alpha: 1.0,
        }
    }

    pub(super) fn is_finite(&self) -> bool {
        self.d.iter().all(|v| v.is_finite())
            && self
                .h
                .as_ref()
                .map_or(true, |h| h.iter().all(|v| v.is_finite()))
    }

    /// The metric the search minimises: `(1 − α) H + α diag(H)`.
    pub(super) fn shrunk(&self) -> Metric<'_> {
        let full = self.alpha < 1.0 - 1e-9;
        Metric {
            n: self.n,
            d: &self.d,
            h: if full { self.h.as_deref() } else { None },
            alpha: if full { self.alpha } else { 1.0 },
        }
    }

    /// `H` itself (its diagonal when the full matrix is not kept).
    pub(super) fn exact(&self) -> Metric<'_> {
        Metric {
            n: self.n,
            d: &self.d,
            h: self.h.as_deref(),
            alpha: if self.h.is_some() { 0.0 } else { 1.0 },
        }
    }
}

/// A view of the metric `(1 − α)·h + α·diag(d)` (`diag(d)` alone when `h`
/// is `None`; `d` is always `h`'s diagonal).
#[derive(Clone, Copy)]
pub(super) struct Metric<'a> {
    n: usize,
    d: &'a [f64],
    pub(super) h: Option<&'a [f64]>,
    pub(super) alpha: f64,
}

impl Metric<'_> {
    #[inline]
    pub(super) fn hii(&self, i: usize) -> f64 {
        self.d[i]
    }

    #[inline]
    fn row(&self, i: usize) -> Option<&[f64]> {
        self.h.map(|h| &h[i * self.n..(i + 1) * self.n])
    }

    /// `g = H e`.
    pub(super) fn apply(&self, e: &[f64], g: &mut [f64]) {
        match self.h {
            None => {
                for ((g, d), e) in g.iter_mut().zip(self.d).zip(e) {
                    *g = d * e;
                }
            }
            Some(h) => {
                let (b, a) = (1.0 - self.alpha, self.alpha);
                for (i, (g, row)) in g.iter_mut().zip(h.chunks_exact(self.n)).enumerate() {
                    *g = b * dot(row, e) + a * self.d[i] * e[i];
                }
            }
        }
    }

    /// `g -= H[:, start..start+δ.len()] δ`.
    pub(super) fn sub_update(&self, g: &mut [f64], start: usize, delta: &[f64]) {
        let a = if self.h.is_some() { self.alpha } else { 1.0 };
        if a != 0.0 {
            for (k, &dv) in delta.iter().enumerate() {
                g[start + k] -= a * self.d[start + k] * dv;
            }
        }
        if self.h.is_some() {
            let b = 1.0 - self.alpha;
            for (k, &dv) in delta.iter().enumerate() {
                if dv != 0.0 {
                    let row = self.row(start + k).unwrap();
                    let c = b * dv;
                    for (g, &hv) in g.iter_mut().zip(row) {
                        *g -= hv * c;
                    }
                }
            }
        }
    }

    /// `δᵀ H[S, S] δ` for `S = start..start+δ.len()`.
    pub(super) fn quad_local(&self, start: usize, delta: &[f64]) -> f64 {
        let a = if self.h.is_some() { self.alpha } else { 1.0 };
        let diag: f64 = delta
            .iter()
            .enumerate()
            .map(|(k, v)| self.d[start + k] * v * v)
            .sum();
        let mut s = a * diag;
        if self.h.is_some() {
            let len = delta.len();
            let mut full = 0.0;
            for k in 0..len {
                if delta[k] != 0.0 {
                    let row = &self.row(start + k).unwrap()[start..start + len];
                    full += delta[k] * dot(row, delta);
                }
            }
            s += (1.0 - self.alpha) * full;
        }
        s
    }

    /// `u[k] = Σ_{i ∈ grp} H[start + k, i] v[i - grp]` for `k` in `0..len`:
    /// the columns `grp..grp+v.len()` of `H` restricted to rows
    /// `start..start+len`, times `v`.
    pub(super) fn block_times(
        &self,
        start: usize,
        len: usize,
        grp: usize,
        v: &[f64],
        u: &mut [f64],
    ) {
        let a = if self.h.is_some() { self.alpha } else { 1.0 };
        match self.h {
            None => u[..len].fill(0.0),
            Some(_) => {
                let b = 1.0 - self.alpha;
                for k in 0..len {
                    let row = &self.row(start + k).unwrap()[grp..grp + v.len()];
                    u[k] = b * dot(row, v);
                }
            }
        }
        for (k, &vv) in v.iter().enumerate() {
            u[grp + k - start] += a * self.d[grp + k] * vv;
        }
    }

    /// The effective matrix, dense (for GPTQ's factor).
    pub(super) fn dense(&self) -> Vec<f64> {
        let n = self.n;
        let mut m = match self.h {
            Some(h) => h.iter().map(|v| v * (1.0 - self.alpha)).collect(),
            None => vec![0f64; n * n],
        };
        let a = if self.h.is_some() { self.alpha } else { 1.0 };
        for i in 0..n {
            m[i * n + i] += a * self.d[i];
        }
        m
    }
}

/// `Σ a_i b_i`, in a fixed order.
#[inline]
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four partial sums: faster, and still a fixed order (deterministic).
    let mut s = [0f64; 4];
    let ca = a.chunks_exact(4);
    let cb = b.chunks_exact(4);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            s[k] += x[k] * y[k];
        }
    }
    let mut t = (s[0] + s[1]) + (s[2] + s[3]);
    for (x, y) in ra.iter().zip(rb) {
        t += x * y;
    }
    t
}
