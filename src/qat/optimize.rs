//! Output-aware ("data-free optimized") quantization of a linear layer.
//!
//! ggml chooses block scales, mins and codes to minimise a weight-space
//! heuristic. Here they are chosen to minimise the error of the layer's
//! *outputs*: for a weight row `w` (length `n`, ggml's `ne[0]`) quantized to
//! `ŵ`, and inputs `X` (`s` samples of width `n`), the output error is
//!
//! ```text
//!     Σ_samples (Σ_i (w_i − ŵ_i)·x_i)²  =  eᵀ H e,   e = w − ŵ,   H = XᵀX,
//! ```
//!
//! with `H` shared by all rows of the layer. Without inputs, `H` is the
//! identity: the expectation of `XᵀX / s` for the synthetic N(0,1)
//! calibration inputs, i.e. plain weight-space squared error.
//!
//! Per row the quantizer builds several candidates and keeps the one with the
//! lowest measured `eᵀHe` (computed from the bytes, decoded exactly as ggml
//! decodes them):
//! 1. ggml's reference quantization (no importance matrix);
//! 2. ggml's importance-matrix quantization with `imatrix = diag(H)/s`, the
//!    per-column mean of `x²` ([`input_imatrix`]);
//! 3. a GPTQ-style candidate (K-quants, full `H`): super-block by super-block,
//!    the scales come from ggml's imatrix search on the error-compensated
//!    weights, then codes are chosen in order with error feedback through
//!    the upper Cholesky factor of `(H + λI)⁻¹`;
//! 4. each of 1–3 refined by alternating (a) exact coordinate descent on the
//!    codes in the `H` metric and (b) a least-squares re-fit of every
//!    super-block's sub-block scales and mins (codes fixed), projected onto
//!    the format's grid (fp16 super-scales, 4/6/8-bit integer sub-scales)
//!    with a grid search and integer coordinate descent, and (c) a global
//!    rescan of each sub-block's integer scale (and min). Every accepted move
//!    lowers the search metric exactly.
//!
//! The search runs on `(1 − α)·H + α·diag(H)`, with `α` the Ledoit–Wolf
//! shrinkage intensity estimated from the samples: with few samples
//! (`s ≲ n`) the off-diagonal entries of the sample `H` are mostly noise, and
//! a search on the raw `H` fits that noise (large in-sample gains that turn
//! into losses on fresh inputs); with genuinely correlated inputs `α` is
//! small and the full matrix (and GPTQ) is used. The final choice between
//! candidates uses the raw `H` (or `X` itself).
//!
//! Candidates 1 and 2 are always present, so the result is never worse than
//! ggml on these inputs, with or without the importance matrix. The output
//! is an ordinary ggml tensor of type `ty`: the same row size, the same block
//! layout, readable by ggml's `to_float` and matmul kernels.
//!
//! Formats with a refinement model: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. Every other
//! implemented quantized type gets the better of candidates 1 and 2; float
//! types are stored as `quantize_rows` stores them.
//!
//! Rows are independent and run in parallel (rayon); the result does not
//! depend on the thread count. Memory: `H` is `n × n` f64 (and GPTQ's factor
//! another), so the full metric is used for `n ≤` [`MAX_FULL_N`] and GPTQ for
//! `n ≤` [`MAX_GPTQ_N`]; wider layers use `diag(H)` only.

// Index loops follow the block layouts, which reads better than iterators.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use crate::error::Error;
use crate::quant::kquants::q2k::BlockQ2K;
use crate::quant::kquants::q3k::{get_scale, put_scale, BlockQ3K};
use crate::quant::kquants::q4k::{pack_q4, BlockQ4K};
use crate::quant::kquants::q5k::{pack_q5, BlockQ5K};
use crate::quant::kquants::q6k::BlockQ6K;
use crate::quant::kquants::scale_min::{get_scale_min_k4, pack_scales_mins};
use crate::quant::kquants::{as_blocks, as_blocks_mut, fp16_to_fp32, fp32_to_fp16, QK_K};
use crate::quant::{format, is_implemented, quantize_rows, QuantError, QuantType};

/// Widest row (`n`) for which the full `n × n` metric is kept; wider layers
/// are optimized against `diag(H)` (the error is still measured exactly by
/// [`output_mse`]).
pub const MAX_FULL_N: usize = 8192;
/// Widest row for which the GPTQ candidate is built (its factor is another
/// `n × n` f64 matrix and costs `O(n³)` once per layer).
pub const MAX_GPTQ_N: usize = 4096;

/// Tuning of [`quantize_output_aware_with`]. The defaults are what
/// [`quantize_output_aware`] uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rounds of (code descent, scale re-fit) per candidate.
    pub max_rounds: usize,
    /// Build the GPTQ candidate when inputs are given.
    pub gptq: bool,
    /// GPTQ damping: `λ = damp · mean(diag H)`.
    pub damp: f64,
    /// Also refine ggml's reference candidate (not only the imatrix and
    /// GPTQ ones).
    pub refine_reference: bool,
    /// Shrinkage `α` of the sample `H` towards its diagonal for the search,
    /// `(1 − α)·H + α·diag(H)`: `None` estimates it (Ledoit–Wolf), which
    /// keeps the search from fitting the sampling noise of `H` when there
    /// are few samples; `Some(0.0)` searches on the raw `H`. The final choice
    /// between candidates always uses the raw `H`.
    pub shrinkage: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_rounds: 8,
            gptq: true,
            damp: 0.01,
            refine_reference: true,
            shrinkage: None,
        }
    }
}

/// Which candidate each row kept, for reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choice {
    /// Rows where ggml's reference bytes were best.
    pub reference: usize,
    /// Rows where ggml's imatrix bytes were best.
    pub imatrix: usize,
    /// Rows where a refined candidate was best.
    pub refined: usize,
    /// The shrinkage `α` the search used (1: diagonal metric).
    pub shrinkage: f64,
}

/// Per-column importance of the inputs: the mean of `x²` over samples (f64
/// accumulation), i.e. `diag(XᵀX)/s`. This is the importance matrix that
/// llama.cpp's `imatrix` tool collects, and the one candidate 2 uses.
///
/// # Panics
/// When `x.len() != n * n_samples`.
pub fn input_imatrix(x: &[f32], n: usize, n_samples: usize) -> Vec<f32> {
    assert_eq!(x.len(), n * n_samples, "inputs length");
    let mut acc = vec![0f64; n];
    for sample in x.chunks_exact(n.max(1)) {
        for (a, &v) in acc.iter_mut().zip(sample) {
            *a += v as f64 * v as f64;
        }
    }
    acc.iter()
        .map(|&a| (a / n_samples.max(1) as f64) as f32)
        .collect()
}

/// Output mean squared error of quantized rows `q` (type `ty`, rows of `n`)
/// against the float rows `w` on inputs `x` (`n_samples` samples of width
/// `n`): `Σ_rows Σ_samples (Σ_i (w_i − ŵ_i)·x_i)² / (rows · samples)`, in f64.
/// With `x = None` it is the weight-space MSE `Σ (w − ŵ)² / (rows · n)`
/// (the expectation per output under N(0,1) inputs).
pub fn output_mse(
    ty: QuantType,
    q: &[u8],
    w: &[f32],
    n: usize,
    x: Option<&[f32]>,
    n_samples: usize,
) -> Result<f64, Error> {
    let (rows, _) = check_args(ty, w, n, x, n_samples)?;
    let f = format(ty);
    let row_bytes = f.row_bytes(n).expect("checked");
    if q.len() != rows * row_bytes {
        return Err(QuantError::BadLength {
            got: q.len(),
            want: rows * row_bytes,
        }
        .into());
    }
    let per_row: Vec<f64> = q
        .par_chunks(row_bytes)
        .zip(w.par_chunks(n))
        .map(|(qb, wr)| {
            let mut deq = vec![0f32; n];
            (f.dequantize_row)(qb, &mut deq);
            let e: Vec<f64> = wr
                .iter()
                .zip(&deq)
                .map(|(&a, &b)| a as f64 - b as f64)
                .collect();
            match x {
                None => e.iter().map(|v| v * v).sum::<f64>(),
                Some(x) => x
                    .chunks_exact(n)
                    .map(|xs| {
                        let y: f64 = e.iter().zip(xs).map(|(a, &b)| a * b as f64).sum();
                        y * y
                    })
                    .sum::<f64>(),
            }
        })
        .collect();
    let denom = rows as f64 * if x.is_some() { n_samples } else { n } as f64;
    Ok(per_row.iter().sum::<f64>() / denom)
}

/// Quantize the weight matrix `w` (rows of `n` floats) to `ty`, choosing
/// scales, mins and codes to minimise the output error on the inputs `x`
/// (`n_samples` samples of width `n`, sample after sample), or the
/// weight-space error when `x` is `None`. Returns the bytes of the rows in
/// ggml's block layout of `ty` (`rows · row_size(ty, n)` bytes).
///
/// Deterministic; rows run in parallel on the current rayon pool.
pub fn quantize_output_aware(
    ty: QuantType,
    w: &[f32],
    n: usize,
    x: Option<&[f32]>,
    n_samples: usize,
) -> Result<Vec<u8>, Error> {
    quantize_output_aware_with(ty, w, n, x, n_samples, &Options::default()).map(|(b, _)| b)
}

/// [`quantize_output_aware`] with explicit [`Options`]; also says which
/// candidate each row kept.
pub fn quantize_output_aware_with(
    ty: QuantType,
    w: &[f32],
    n: usize,
    x: Option<&[f32]>,
    n_samples: usize,
    opts: &Options,
) -> Result<(Vec<u8>, Choice), Error> {
    let (rows, row_bytes) = check_args(ty, w, n, x, n_samples)?;
    let mut reference = vec![0u8; rows * row_bytes];
    quantize_rows(ty, w, n, &mut reference, None)?;
    let fmt = format(ty);
    if fmt.block_size == 1 {
        // F32, F16, BF16: nothing to choose.
        return Ok((
            reference,
            Choice {
                reference: rows,
                shrinkage: 1.0,
                ..Choice::default()
            },
        ));
    }
    let imatrix = match x {
        Some(x) => input_imatrix(x, n, n_samples),
        None => vec![1.0; n],
    };
    let mut with_imatrix = vec![0u8; rows * row_bytes];
    quantize_rows(ty, w, n, &mut with_imatrix, Some(&imatrix))?;

    let gram = Gram::new(x, n, n_samples, opts.shrinkage);
    let finite = gram.is_finite();
    let opt = gram.shrunk();
    let factor = match (opt.h, kind(ty)) {
        (Some(_), Some(_)) if opts.gptq && finite && n <= MAX_GPTQ_N => {
            gptq_factor(&opt.dense(), n, opts.damp)
        }
        _ => None,
    };
    // The exact error is measured on X itself when that is cheaper than H
    // (or H is not kept).
    let x64: Option<Vec<f64>> = x
        .filter(|_| n_samples < n || gram.h.is_none())
        .map(|x| x.iter().map(|&v| v as f64).collect());
    let ctx = RowCtx {
        ty,
        n,
        metric: opt,
        exact: gram.exact(),
        x: x64.as_deref(),
        factor: factor.as_deref(),
        imatrix: &imatrix,
        opts,
        refine: finite,
    };

    let mut out = vec![0u8; rows * row_bytes];
    let picks: Vec<u8> = out
        .par_chunks_mut(row_bytes)
        .zip(w.par_chunks(n))
        .zip(reference.par_chunks(row_bytes))
        .zip(with_imatrix.par_chunks(row_bytes))
        .map(|(((dst, wr), rb), ib)| ctx.row(wr, rb, ib, dst))
        .collect();
    let mut choice = Choice {
        shrinkage: opt.alpha,
        ..Choice::default()
    };
    for p in picks {
        match p {
            0 => choice.reference += 1,
            1 => choice.imatrix += 1,
            _ => choice.refined += 1,
        }
    }
    Ok((out, choice))
}

/// Validates the shapes; returns (rows, bytes per row).
fn check_args(
    ty: QuantType,
    w: &[f32],
    n: usize,
    x: Option<&[f32]>,
    n_samples: usize,
) -> Result<(usize, usize), Error> {
    if !is_implemented(ty) {
        return Err(QuantError::NotImplemented { ty }.into());
    }
    let f = format(ty);
    let row_bytes = f
        .row_bytes(n)
        .filter(|_| n > 0)
        .ok_or(QuantError::RowNotBlockAligned {
            ty,
            n_per_row: n,
            block: f.block_size,
        })?;
    if w.len() % n != 0 {
        return Err(QuantError::BadLength {
            got: w.len(),
            want: w.len().div_ceil(n) * n,
        }
        .into());
    }
    if let Some(x) = x {
        if n_samples == 0 {
            return Err(Error::invalid("n_samples", "inputs given with 0 samples"));
        }
        if Some(x.len()) != n.checked_mul(n_samples) {
            return Err(Error::invalid(
                "x",
                format!(
                    "{} values where {n_samples} samples of {n} were expected",
                    x.len()
                ),
            ));
        }
    }
    Ok((w.len() / n, row_bytes))
}

// ---------------------------------------------------------------------------
// The metric H.

/// The inputs' second moments `H = XᵀX`: its diagonal always, the full
/// matrix when `n ≤ MAX_FULL_N`, and the Ledoit–Wolf shrinkage intensity
/// `α` of the sample matrix towards its diagonal.
struct Gram {
    n: usize,
    d: Vec<f64>,
    h: Option<Vec<f64>>,
    alpha: f64,
}

impl Gram {
    fn new(x: Option<&[f32]>, n: usize, s: usize, shrinkage: Option<f64>) -> Gram {
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

    fn is_finite(&self) -> bool {
        self.d.iter().all(|v| v.is_finite())
            && self
                .h
                .as_ref()
                .map_or(true, |h| h.iter().all(|v| v.is_finite()))
    }

    /// The metric the search minimises: `(1 − α) H + α diag(H)`.
    fn shrunk(&self) -> Metric<'_> {
        let full = self.alpha < 1.0 - 1e-9;
        Metric {
            n: self.n,
            d: &self.d,
            h: if full { self.h.as_deref() } else { None },
            alpha: if full { self.alpha } else { 1.0 },
        }
    }

    /// `H` itself (its diagonal when the full matrix is not kept).
    fn exact(&self) -> Metric<'_> {
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
struct Metric<'a> {
    n: usize,
    d: &'a [f64],
    h: Option<&'a [f64]>,
    alpha: f64,
}

impl Metric<'_> {
    #[inline]
    fn hii(&self, i: usize) -> f64 {
        self.d[i]
    }

    #[inline]
    fn row(&self, i: usize) -> Option<&[f64]> {
        self.h.map(|h| &h[i * self.n..(i + 1) * self.n])
    }

    /// `g = H e`.
    fn apply(&self, e: &[f64], g: &mut [f64]) {
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
    fn sub_update(&self, g: &mut [f64], start: usize, delta: &[f64]) {
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
    fn quad_local(&self, start: usize, delta: &[f64]) -> f64 {
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
    fn block_times(&self, start: usize, len: usize, grp: usize, v: &[f64], u: &mut [f64]) {
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
    fn dense(&self) -> Vec<f64> {
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

#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
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

/// GPTQ's factor: the upper Cholesky factor `U` of `(H + λI)⁻¹`
/// (`UᵀU = (H + λI)⁻¹`), row-major. Computed as `J L⁻¹ J` where `L` is the
/// lower Cholesky factor of `J (H + λI) J` (`J` reverses the order). `None`
/// when `H` is zero or not positive definite after damping.
fn gptq_factor(h: &[f64], n: usize, damp: f64) -> Option<Vec<f64>> {
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

// ---------------------------------------------------------------------------
// Format models.

/// How a format's sub-block scales are stored.
#[derive(Clone, Copy, Debug)]
enum Scales {
    /// `a_j = d·ls_j`, `b_j = dmin·lm_j`, `ls, lm ∈ [0, smax]`, value `a·q − b`.
    WithMin { smax: i32 },
    /// `a_j = d·ls_j`, `ls ∈ [lo, hi]`, value `a·(code + lev0)`.
    Signed { lo: i32, hi: i32 },
}

/// A K-quant as the optimizer sees it: super-blocks of 256, sub-blocks of
/// `group` values, codes `0..nlev` standing for levels `lev0 + code`.
#[derive(Clone, Copy, Debug)]
struct Kind {
    ty: QuantType,
    group: usize,
    lev0: i32,
    nlev: i32,
    scales: Scales,
}

fn kind(ty: QuantType) -> Option<Kind> {
    let (group, lev0, nlev, scales) = match ty {
        QuantType::Q2_K => (16, 0, 4, Scales::WithMin { smax: 15 }),
        QuantType::Q3_K => (16, -4, 8, Scales::Signed { lo: -32, hi: 31 }),
        QuantType::Q4_K => (32, 0, 16, Scales::WithMin { smax: 63 }),
        QuantType::Q5_K => (32, 0, 32, Scales::WithMin { smax: 63 }),
        QuantType::Q6_K => (16, -32, 64, Scales::Signed { lo: -128, hi: 127 }),
        _ => return None,
    };
    Some(Kind {
        ty,
        group,
        lev0,
        nlev,
        scales,
    })
}

/// The decoded parameters of one row.
#[derive(Clone, Debug)]
struct Model {
    kind: Kind,
    codes: Vec<u8>,
    /// Per super-block, fp16 bits.
    d: Vec<u16>,
    dmin: Vec<u16>,
    /// Per sub-block.
    ls: Vec<i32>,
    lm: Vec<i32>,
}

impl Model {
    fn new(kind: Kind, n: usize) -> Model {
        let nsb = n / QK_K;
        let ng = n / kind.group;
        Model {
            kind,
            codes: vec![0; n],
            d: vec![0; nsb],
            dmin: vec![0; nsb],
            ls: vec![0; ng],
            lm: vec![0; ng],
        }
    }

    #[inline]
    fn a(&self, j: usize) -> f32 {
        fp16_to_fp32(self.d[j * self.kind.group / QK_K]) * self.ls[j] as f32
    }

    #[inline]
    fn b(&self, j: usize) -> f32 {
        match self.kind.scales {
            Scales::WithMin { .. } => {
                fp16_to_fp32(self.dmin[j * self.kind.group / QK_K]) * self.lm[j] as f32
            }
            Scales::Signed { .. } => 0.0,
        }
    }

    #[inline]
    fn lev(&self, code: u8) -> f32 {
        (self.kind.lev0 + code as i32) as f32
    }

    /// The value ggml's dequantizer gives element `i` (same f32 operations).
    #[inline]
    fn value(&self, i: usize) -> f32 {
        let j = i / self.kind.group;
        self.a(j) * self.lev(self.codes[i]) - self.b(j)
    }

    /// The code whose value `a·lev − b` is nearest to `t`; `None` when the
    /// sub-block's scale is zero (every code gives the same value).
    #[inline]
    fn nearest_code(&self, t: f64, a: f32, b: f32) -> Option<u8> {
        if a == 0.0 || !a.is_finite() {
            return None;
        }
        let u = (t + b as f64) / a as f64 - self.kind.lev0 as f64;
        if !u.is_finite() {
            return None;
        }
        Some(u.round().clamp(0.0, (self.kind.nlev - 1) as f64) as u8)
    }

    /// Read super-block `sb` (its parameters and codes) from ggml bytes.
    fn decode_block(&mut self, sb: usize, blk: &[u8]) {
        let base = sb * QK_K;
        let codes = &mut self.codes[base..base + QK_K];
        let gpb = QK_K / self.kind.group;
        let (ls, lm) = (
            &mut self.ls[sb * gpb..(sb + 1) * gpb],
            &mut self.lm[sb * gpb..(sb + 1) * gpb],
        );
        match self.kind.ty {
            QuantType::Q2_K => {
                let b = &as_blocks::<BlockQ2K>(blk)[0];
                self.d[sb] = u16::from_le_bytes(b.d);
                self.dmin[sb] = u16::from_le_bytes(b.dmin);
                for j in 0..16 {
                    ls[j] = (b.scales[j] & 0xF) as i32;
                    lm[j] = (b.scales[j] >> 4) as i32;
                }
                unpack_2bit(&b.qs, codes);
            }
            QuantType::Q3_K => {
                let b = &as_blocks::<BlockQ3K>(blk)[0];
                self.d[sb] = u16::from_le_bytes(b.d);
                for j in 0..16 {
                    ls[j] = get_scale(&b.scales, j);
                }
                unpack_2bit(&b.qs, codes);
                for (i, c) in codes.iter_mut().enumerate() {
                    if b.hmask[i % 32] & (1 << (i / 32)) != 0 {
                        *c += 4;
                    }
                }
            }
            QuantType::Q4_K | QuantType::Q5_K => {
                let (d, dmin, scales, qs, qh) = if self.kind.ty == QuantType::Q4_K {
                    let b = &as_blocks::<BlockQ4K>(blk)[0];
                    (b.d, b.dmin, b.scales, &b.qs, None)
                } else {
                    let b = &as_blocks::<BlockQ5K>(blk)[0];
                    (b.d, b.dmin, b.scales, &b.qs, Some(&b.qh))
                };
                self.d[sb] = u16::from_le_bytes(d);
                self.dmin[sb] = u16::from_le_bytes(dmin);
                for j in 0..8 {
                    let (s, m) = get_scale_min_k4(j, &scales);
                    ls[j] = s as i32;
                    lm[j] = m as i32;
                }
                for g in 0..4 {
                    for k in 0..32 {
                        let mut c1 = qs[32 * g + k] & 0xF;
                        let mut c2 = qs[32 * g + k] >> 4;
                        if let Some(qh) = qh {
                            c1 += ((qh[k] >> (2 * g)) & 1) << 4;
                            c2 += ((qh[k] >> (2 * g + 1)) & 1) << 4;
                        }
                        codes[64 * g + k] = c1;
                        codes[64 * g + 32 + k] = c2;
                    }
                }
            }
            QuantType::Q6_K => {
                let b = &as_blocks::<BlockQ6K>(blk)[0];
                self.d[sb] = u16::from_le_bytes(b.d);
                for j in 0..16 {
                    ls[j] = b.scales[j] as i8 as i32;
                }
                for h in 0..2 {
                    let ql = &b.ql[64 * h..64 * h + 64];
                    let qh = &b.qh[32 * h..32 * h + 32];
                    let c = &mut codes[128 * h..128 * h + 128];
                    for k in 0..32 {
                        c[k] = (ql[k] & 0xF) | ((qh[k] & 3) << 4);
                        c[k + 32] = (ql[k + 32] & 0xF) | (((qh[k] >> 2) & 3) << 4);
                        c[k + 64] = (ql[k] >> 4) | (((qh[k] >> 4) & 3) << 4);
                        c[k + 96] = (ql[k + 32] >> 4) | (((qh[k] >> 6) & 3) << 4);
                    }
                }
            }
            _ => unreachable!("no model for {:?}", self.kind.ty),
        }
    }

    fn decode(kind: Kind, bytes: &[u8], n: usize) -> Model {
        let mut m = Model::new(kind, n);
        let bb = format(kind.ty).block_bytes;
        for (sb, blk) in bytes.chunks_exact(bb).enumerate() {
            m.decode_block(sb, blk);
        }
        m
    }

    /// Write the row in ggml's layout.
    fn encode(&self, out: &mut [u8]) {
        let bb = format(self.kind.ty).block_bytes;
        let gpb = QK_K / self.kind.group;
        for (sb, blk) in out.chunks_exact_mut(bb).enumerate() {
            let mut l = [0u8; QK_K];
            l.copy_from_slice(&self.codes[sb * QK_K..(sb + 1) * QK_K]);
            let ls = &self.ls[sb * gpb..(sb + 1) * gpb];
            let lm = &self.lm[sb * gpb..(sb + 1) * gpb];
            let d = self.d[sb].to_le_bytes();
            let dmin = self.dmin[sb].to_le_bytes();
            match self.kind.ty {
                QuantType::Q2_K => {
                    let b = &mut as_blocks_mut::<BlockQ2K>(blk)[0];
                    b.d = d;
                    b.dmin = dmin;
                    for j in 0..16 {
                        b.scales[j] = ls[j] as u8 | ((lm[j] as u8) << 4);
                    }
                    crate::quant::kquants::pack_2bit(&l, &mut b.qs);
                }
                QuantType::Q3_K => {
                    let b = &mut as_blocks_mut::<BlockQ3K>(blk)[0];
                    b.d = d;
                    b.scales = [0; 12];
                    for j in 0..16 {
                        put_scale(&mut b.scales, j, ls[j] + 32);
                    }
                    b.hmask = [0; QK_K / 8];
                    for j in 0..QK_K {
                        if l[j] > 3 {
                            b.hmask[j % 32] |= 1 << (j / 32);
                            l[j] -= 4;
                        }
                    }
                    crate::quant::kquants::pack_2bit(&l, &mut b.qs);
                }
                QuantType::Q4_K | QuantType::Q5_K => {
                    let mut s8 = [0u8; 8];
                    let mut m8 = [0u8; 8];
                    for j in 0..8 {
                        s8[j] = ls[j] as u8;
                        m8[j] = lm[j] as u8;
                    }
                    let packed = pack_scales_mins(&s8, &m8);
                    if self.kind.ty == QuantType::Q4_K {
                        let b = &mut as_blocks_mut::<BlockQ4K>(blk)[0];
                        b.d = d;
                        b.dmin = dmin;
                        b.scales = packed;
                        pack_q4::<true>(&l, &mut b.qs);
                    } else {
                        let b = &mut as_blocks_mut::<BlockQ5K>(blk)[0];
                        b.d = d;
                        b.dmin = dmin;
                        b.scales = packed;
                        pack_q5::<true>(&l, &mut b.qh, &mut b.qs);
                    }
                }
                QuantType::Q6_K => {
                    let b = &mut as_blocks_mut::<BlockQ6K>(blk)[0];
                    b.d = d;
                    for j in 0..16 {
                        b.scales[j] = ls[j] as i8 as u8;
                    }
                    // ggml's packing (quantize_row_q6_K_ref).
                    for (h, j) in (0..QK_K).step_by(128).enumerate() {
                        let ql = &mut b.ql[64 * h..64 * h + 64];
                        let qh = &mut b.qh[32 * h..32 * h + 32];
                        for k in 0..32 {
                            let q1 = l[j + k] & 0xF;
                            let q2 = l[j + k + 32] & 0xF;
                            let q3 = l[j + k + 64] & 0xF;
                            let q4 = l[j + k + 96] & 0xF;
                            ql[k] = q1 | (q3 << 4);
                            ql[k + 32] = q2 | (q4 << 4);
                            qh[k] = (l[j + k] >> 4)
                                | ((l[j + k + 32] >> 4) << 2)
                                | ((l[j + k + 64] >> 4) << 4)
                                | ((l[j + k + 96] >> 4) << 6);
                        }
                    }
                }
                _ => unreachable!(),
            }
        }
    }
}

/// Inverse of `pack_2bit`.
fn unpack_2bit(qs: &[u8; QK_K / 4], l: &mut [u8]) {
    for h in 0..2 {
        for k in 0..32 {
            let q = qs[32 * h + k];
            for s in 0..4 {
                l[128 * h + 32 * s + k] = (q >> (2 * s)) & 3;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// One row.

struct RowCtx<'a> {
    ty: QuantType,
    n: usize,
    /// The metric the refinement minimises (shrunk H).
    metric: Metric<'a>,
    /// H itself, for the final choice ...
    exact: Metric<'a>,
    /// ... or X (rows of samples, f64) when measuring on X is cheaper.
    x: Option<&'a [f64]>,
    factor: Option<&'a [f64]>,
    imatrix: &'a [f32],
    opts: &'a Options,
    /// False when H is not finite: only ggml's candidates are used.
    refine: bool,
}

impl RowCtx<'_> {
    /// Exact `eᵀHe` of row bytes (decoded by our ggml-identical dequantizer).
    fn error_of(&self, w: &[f32], bytes: &[u8], e: &mut [f64], g: &mut [f64]) -> f64 {
        let mut deq = vec![0f32; self.n];
        (format(self.ty).dequantize_row)(bytes, &mut deq);
        for i in 0..self.n {
            e[i] = w[i] as f64 - deq[i] as f64;
        }
        let f = match self.x {
            Some(x) => x
                .chunks_exact(self.n)
                .map(|xs| {
                    let y = dot(xs, e);
                    y * y
                })
                .sum(),
            None => {
                self.exact.apply(e, g);
                dot(e, g)
            }
        };
        if f.is_nan() {
            f64::INFINITY
        } else {
            f
        }
    }

    /// Fill `dst` with the best candidate; returns 0 (reference), 1
    /// (imatrix) or 2 (refined).
    fn row(&self, w: &[f32], rb: &[u8], ib: &[u8], dst: &mut [u8]) -> u8 {
        let n = self.n;
        let mut e = vec![0f64; n];
        let mut g = vec![0f64; n];
        let f_ref = self.error_of(w, rb, &mut e, &mut g);
        let f_imat = self.error_of(w, ib, &mut e, &mut g);
        let (mut best, mut pick) = if f_imat < f_ref {
            dst.copy_from_slice(ib);
            (f_imat, 1)
        } else {
            dst.copy_from_slice(rb);
            (f_ref, 0)
        };
        let Some(kind) = kind(self.ty) else {
            return pick;
        };
        if !self.refine || w.iter().any(|v| !v.is_finite()) {
            return pick;
        }
        let mut starts = Vec::with_capacity(3);
        if self.opts.refine_reference {
            starts.push(Model::decode(kind, rb, n));
        }
        starts.push(Model::decode(kind, ib, n));
        if let Some(u) = self.factor {
            starts.push(self.gptq(kind, w, u));
        }
        let mut tmp = vec![0u8; dst.len()];
        for m in starts {
            let mut st = State::new(self.metric, w, m);
            st.optimize(self.opts.max_rounds);
            st.model.encode(&mut tmp);
            let f = self.error_of(w, &tmp, &mut e, &mut g);
            if f < best {
                best = f;
                pick = 2;
                dst.copy_from_slice(&tmp);
            }
        }
        pick
    }

    /// GPTQ with per-super-block scales from ggml's imatrix search on the
    /// error-compensated weights.
    fn gptq(&self, kind: Kind, w: &[f32], u: &[f64]) -> Model {
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

/// A row being refined: the model, its values, `g = H(w − ŵ)` and `f = eᵀHe`.
struct State<'a> {
    metric: Metric<'a>,
    w: &'a [f32],
    model: Model,
    val: Vec<f32>,
    g: Vec<f64>,
    f: f64,
}

impl<'a> State<'a> {
    fn new(metric: Metric<'a>, w: &'a [f32], model: Model) -> State<'a> {
        let n = w.len();
        let val: Vec<f32> = (0..n).map(|i| model.value(i)).collect();
        let mut st = State {
            metric,
            w,
            model,
            val,
            g: vec![0f64; n],
            f: 0.0,
        };
        st.refresh();
        st
    }

    /// Recompute `g` and `f` from scratch (removes accumulated drift).
    fn refresh(&mut self) {
        let e: Vec<f64> = self
            .w
            .iter()
            .zip(&self.val)
            .map(|(&a, &b)| a as f64 - b as f64)
            .collect();
        self.metric.apply(&e, &mut self.g);
        self.f = dot(&e, &self.g);
    }

    fn optimize(&mut self, rounds: usize) {
        if !self.f.is_finite() {
            return;
        }
        let nsb = self.w.len() / QK_K;
        for _ in 0..rounds {
            let before = self.f;
            self.code_sweeps(6);
            for sb in 0..nsb {
                self.refit_scales(sb);
            }
            for j in 0..self.w.len() / self.model.kind.group {
                self.rescan_group(j);
            }
            self.code_sweeps(6);
            self.refresh();
            let gain = before - self.f;
            if gain.is_nan() || gain <= 1e-7 * before.abs() {
                break;
            }
        }
    }

    /// Global search over the integer scale (and min) of sub-block `j`, the
    /// super-block's fp16 scales fixed: every scale level, the min fitted by
    /// least squares and rounded (±1), codes re-chosen, scored by the
    /// separable model `Σ H_ii (t_i − ŵ_i)²` around the targets
    /// `t = ŵ + g / diag(H)` (exact for a diagonal metric). The best is
    /// applied when the exact error drops.
    fn rescan_group(&mut self, j: usize) {
        let kind = self.model.kind;
        let group = kind.group;
        let i0 = j * group;
        let sb = i0 / QK_K;
        let with_min = matches!(kind.scales, Scales::WithMin { .. });
        let (lo, hi) = match kind.scales {
            Scales::WithMin { smax } => (0, smax),
            Scales::Signed { lo, hi } => (lo, hi),
        };
        let ds = fp16_to_fp32(self.model.d[sb]);
        let ms = fp16_to_fp32(self.model.dmin[sb]);
        if ds == 0.0 || !ds.is_finite() || !ms.is_finite() {
            return;
        }
        let mut t = [0f64; 32];
        let mut h = [0f64; 32];
        let mut base = 0.0;
        for k in 0..group {
            let hi_ = self.metric.hii(i0 + k);
            h[k] = if hi_ > 0.0 { hi_ } else { 0.0 };
            t[k] = if h[k] > 0.0 {
                self.val[i0 + k] as f64 + self.g[i0 + k] / h[k]
            } else {
                self.val[i0 + k] as f64
            };
            let r = t[k] - self.val[i0 + k] as f64;
            base += h[k] * r * r;
        }
        let lev0 = kind.lev0 as f64;
        let top = (kind.nlev - 1) as f64;
        // Proxy error of (a, b) with codes chosen by rounding.
        let score = |a: f32, b: f32| -> f64 {
            let mut e = 0.0;
            for k in 0..group {
                let u = ((t[k] + b as f64) / a as f64 - lev0)
                    .round()
                    .clamp(0.0, top);
                let v = a * (u + lev0) as f32 - b;
                let r = t[k] - v as f64;
                e += h[k] * r * r;
            }
            e
        };
        let cur_ls = self.model.ls[j];
        let cur_lm = self.model.lm[j];
        let mut best = (base, cur_ls, cur_lm);
        let sum_h: f64 = h[..group].iter().sum();
        if sum_h.is_nan() || sum_h <= 0.0 {
            return;
        }
        for ls in lo..=hi {
            let a = ds * ls as f32;
            if a == 0.0 {
                continue;
            }
            if !with_min || ms == 0.0 {
                let e = score(a, 0.0);
                if e < best.0 {
                    best = (e, ls, if with_min { cur_lm } else { 0 });
                }
                continue;
            }
            // Min by least squares for codes rounded with the current min.
            let b0 = ms * cur_lm as f32;
            let mut num = 0.0;
            for k in 0..group {
                let u = ((t[k] + b0 as f64) / a as f64 - lev0)
                    .round()
                    .clamp(0.0, top);
                num += h[k] * (a as f64 * (u + lev0) - t[k]);
            }
            let lm0 = (num / sum_h / ms as f64).round();
            let lm0 = if lm0.is_finite() { lm0 as i32 } else { cur_lm };
            for lm in [lm0 - 1, lm0, lm0 + 1, cur_lm] {
                if lm < 0 || lm > hi {
                    continue;
                }
                let e = score(a, ms * lm as f32);
                if e < best.0 {
                    best = (e, ls, lm);
                }
            }
        }
        let (_, ls, lm) = best;
        if ls == cur_ls && lm == cur_lm {
            return;
        }
        let old_codes: Vec<u8> = self.model.codes[i0..i0 + group].to_vec();
        self.model.ls[j] = ls;
        self.model.lm[j] = lm;
        let (a, b) = (self.model.a(j), self.model.b(j));
        let mut dv = [0f64; 32];
        for k in 0..group {
            if let Some(c) = self.model.nearest_code(t[k], a, b) {
                self.model.codes[i0 + k] = c;
            }
            dv[k] = self.model.value(i0 + k) as f64 - self.val[i0 + k] as f64;
        }
        let dv = &dv[..group];
        let df = -2.0 * dot(dv, &self.g[i0..i0 + group]) + self.metric.quad_local(i0, dv);
        if df < 0.0 {
            for k in 0..group {
                self.val[i0 + k] = self.model.value(i0 + k);
            }
            self.metric.sub_update(&mut self.g, i0, dv);
            self.f += df;
        } else {
            self.model.ls[j] = cur_ls;
            self.model.lm[j] = cur_lm;
            self.model.codes[i0..i0 + group].copy_from_slice(&old_codes);
        }
    }

    /// Exact coordinate descent over the codes: for each element, the code
    /// nearest to the unconstrained optimum `ŵ_i + g_i / H_ii`.
    fn code_sweeps(&mut self, max: usize) {
        let n = self.w.len();
        let group = self.model.kind.group;
        for _ in 0..max {
            let mut changed = 0usize;
            for j in 0..n / group {
                let (a, b) = (self.model.a(j), self.model.b(j));
                if a == 0.0 {
                    continue;
                }
                for i in j * group..(j + 1) * group {
                    let hii = self.metric.hii(i);
                    if hii.is_nan() || hii <= 0.0 {
                        continue;
                    }
                    let cur = self.val[i];
                    let t = cur as f64 + self.g[i] / hii;
                    let Some(c) = self.model.nearest_code(t, a, b) else {
                        continue;
                    };
                    if c == self.model.codes[i] {
                        continue;
                    }
                    let nv = a * self.model.lev(c) - b;
                    let d = nv as f64 - cur as f64;
                    let df = -2.0 * d * self.g[i] + d * d * hii;
                    if df < 0.0 {
                        self.model.codes[i] = c;
                        self.val[i] = nv;
                        self.metric.sub_update(&mut self.g, i, &[d]);
                        self.f += df;
                        changed += 1;
                    }
                }
            }
            if changed == 0 {
                break;
            }
        }
    }

    /// Re-fit the sub-block scales (and mins) of super-block `sb` with the
    /// codes fixed: least squares in the H metric, projected on the format's
    /// grid by a search over the fp16 super-scales and integer coordinate
    /// descent; applied only when the exact error drops.
    fn refit_scales(&mut self, sb: usize) {
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
        let Some(delta) = solve_ridge(&q, &r, p) else {
            return;
        };
        let target: Vec<f64> = theta0.iter().zip(&delta).map(|(a, b)| a + b).collect();
        // Model error of a parameter vector: −2Δ·r + ΔᵀQΔ.
        let model_err = |theta: &[f64]| -> f64 {
            let d: Vec<f64> = theta.iter().zip(&theta0).map(|(a, b)| a - b).collect();
            let mut s = 0.0;
            for c in 0..p {
                if d[c] != 0.0 {
                    s += d[c] * (dot(&q[c * p..c * p + p], &d) - 2.0 * r[c]);
                }
            }
            s
        };

        let cur_d = self.model.d[sb];
        let cur_m = self.model.dmin[sb];
        let cur_ls: Vec<i32> = self.model.ls[g0..g0 + k].to_vec();
        let cur_lm: Vec<i32> = self.model.lm[g0..g0 + k].to_vec();
        let (lo, hi) = match kind.scales {
            Scales::WithMin { smax } => (0, smax),
            Scales::Signed { lo, hi } => (lo, hi),
        };
        let d_cands = super_scale_candidates(&target[..k], lo, hi, cur_d);
        let m_cands = if with_min {
            super_scale_candidates(&target[k..], 0, hi, cur_m)
        } else {
            vec![0]
        };
        let ints = |ds: f32, t: &[f64], cur: &[i32], same: bool| -> Vec<i32> {
            if same {
                return cur.to_vec();
            }
            t.iter()
                .map(|&v| {
                    if ds == 0.0 {
                        0
                    } else {
                        (v / ds as f64).round().clamp(lo as f64, hi as f64) as i32
                    }
                })
                .collect()
        };
        let theta_of = |dh: u16, mh: u16, ls: &[i32], lm: &[i32]| -> Vec<f64> {
            let (ds, ms) = (fp16_to_fp32(dh), fp16_to_fp32(mh));
            let mut t: Vec<f64> = ls.iter().map(|&l| (ds * l as f32) as f64).collect();
            if with_min {
                t.extend(lm.iter().map(|&l| (ms * l as f32) as f64));
            }
            t
        };
        let mut best = (0.0f64, cur_d, cur_m, cur_ls.clone(), cur_lm.clone());
        for &dh in &d_cands {
            let ls = ints(fp16_to_fp32(dh), &target[..k], &cur_ls, dh == cur_d);
            for &mh in &m_cands {
                let lm = if with_min {
                    ints(fp16_to_fp32(mh), &target[k..], &cur_lm, mh == cur_m)
                } else {
                    cur_lm.clone()
                };
                let th = theta_of(dh, mh, &ls, &lm);
                let e = model_err(&th);
                if e < best.0 {
                    best = (e, dh, mh, ls.clone(), lm);
                }
            }
        }
        // Integer coordinate descent on the sub-block scales and mins.
        let (_, dh, mh, mut ls, mut lm) = best;
        let (ds, ms) = (fp16_to_fp32(dh), fp16_to_fp32(mh));
        for _ in 0..8 {
            let mut improved = false;
            for c in 0..p {
                for step in [-1i32, 1] {
                    let (cur_l, scale) = if c < k { (ls[c], ds) } else { (lm[c - k], ms) };
                    let nl = cur_l + step;
                    if nl < lo || nl > hi || scale == 0.0 {
                        continue;
                    }
                    let th_old = theta_of(dh, mh, &ls, &lm);
                    let mut th_new = th_old.clone();
                    th_new[c] = (scale * nl as f32) as f64;
                    if model_err(&th_new) < model_err(&th_old) {
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
        if dh == cur_d && mh == cur_m && ls == cur_ls && lm == cur_lm {
            return;
        }
        // Apply exactly; keep only if the true error drops.
        let old_vals: Vec<f32> = self.val[s0..s0 + QK_K].to_vec();
        self.model.d[sb] = dh;
        self.model.dmin[sb] = mh;
        self.model.ls[g0..g0 + k].copy_from_slice(&ls);
        self.model.lm[g0..g0 + k].copy_from_slice(&lm);
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
            self.model.d[sb] = cur_d;
            self.model.dmin[sb] = cur_m;
            self.model.ls[g0..g0 + k].copy_from_slice(&cur_ls);
            self.model.lm[g0..g0 + k].copy_from_slice(&cur_lm);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize_rows;

    fn rng(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(seed: &mut u64) -> f32 {
        let (u1, u2) = (rng(seed), rng(seed));
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    #[test]
    fn models_round_trip_ggml_bytes() {
        let n = 512;
        let mut s = 7u64;
        let w: Vec<f32> = (0..n).map(|_| normal(&mut s)).collect();
        for ty in [
            QuantType::Q2_K,
            QuantType::Q3_K,
            QuantType::Q4_K,
            QuantType::Q5_K,
            QuantType::Q6_K,
        ] {
            let kind = kind(ty).unwrap();
            let rb = format(ty).row_bytes(n).unwrap();
            let mut bytes = vec![0u8; rb];
            quantize_rows(ty, &w, n, &mut bytes, None).unwrap();
            let m = Model::decode(kind, &bytes, n);
            let mut again = vec![0u8; rb];
            m.encode(&mut again);
            assert_eq!(bytes, again, "{ty:?} re-encoding");
            let mut deq = vec![0f32; n];
            dequantize_rows(ty, &bytes, n, &mut deq).unwrap();
            for i in 0..n {
                assert_eq!(m.value(i).to_bits(), deq[i].to_bits(), "{ty:?} value {i}");
            }
        }
    }

    #[test]
    fn gptq_factor_inverts() {
        let (n, s) = (24, 40);
        let mut seed = 3u64;
        let x: Vec<f32> = (0..n * s).map(|_| normal(&mut seed)).collect();
        let h = Gram::new(Some(&x), n, s, Some(0.0)).h.unwrap();
        let u = gptq_factor(&h, n, 0.01).unwrap();
        let lam = 0.01 * (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        // (UᵀU)(H + λI) = I.
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0;
                for k in 0..n {
                    let mut utu = 0.0;
                    for t in 0..n {
                        utu += u[t * n + i] * u[t * n + k];
                    }
                    s += utu * (h[k * n + j] + if k == j { lam } else { 0.0 });
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-8, "{i},{j}: {s}");
            }
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0);
            }
        }
    }

    #[test]
    fn never_worse_in_weight_space() {
        let (rows, n) = (8, 512);
        let mut s = 11u64;
        let w: Vec<f32> = (0..rows * n).map(|_| normal(&mut s)).collect();
        for ty in [QuantType::Q2_K, QuantType::Q4_K, QuantType::Q6_K] {
            let ours = quantize_output_aware(ty, &w, n, None, 0).unwrap();
            let rb = format(ty).row_bytes(n).unwrap();
            let mut theirs = vec![0u8; rows * rb];
            quantize_rows(ty, &w, n, &mut theirs, None).unwrap();
            let a = output_mse(ty, &ours, &w, n, None, 0).unwrap();
            let b = output_mse(ty, &theirs, &w, n, None, 0).unwrap();
            assert!(a <= b, "{ty:?}: {a} > {b}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let w = vec![0f32; 256];
        assert!(quantize_output_aware(QuantType::Q4_K, &w, 100, None, 0).is_err());
        assert!(quantize_output_aware(QuantType::Q4_K, &w, 256, Some(&[0.0; 10]), 1).is_err());
        assert!(quantize_output_aware(QuantType::Q4_K, &w, 256, Some(&[]), 0).is_err());
    }
}
