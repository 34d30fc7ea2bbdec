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

//! The pieces, one concept a file:
//! - this file: the public entry ([`quantize_output_aware`]), its
//!   [`Options`] and report ([`Choice`]), and the output-error objective
//!   ([`output_mse`], [`input_imatrix`]);
//! - `gram`: the statistics `H = XᵀX`, their shrinkage, and the metric view
//!   the search works in;
//! - `gptq`: the GPTQ-style candidate (Cholesky factor, error feedback);
//! - `model`: the K-quant block models, decoded from and encoded to ggml's
//!   bytes;
//! - `row`: one row: its candidates and the choice between them;
//! - `refine`: the refinement loop, code descent and the sub-block rescan;
//! - `refit`: the least-squares re-fit of a super-block's scales and mins;
//! - `feedback`: the Gram quantizer of any block format (GPTQ with a Gram
//!   matrix given, as a calibration file holds it) and its objective;
//! - `grid`: a row's codes chosen one at a time inside ggml's block
//!   parameters, for every block format.

// Index loops follow the block layouts, which reads better than iterators.
#![allow(clippy::needless_range_loop)]

mod feedback;
mod gptq;
mod gram;
mod grid;
mod legacy;
mod model;
mod refine;
mod refit;
mod row;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use crate::error::Error;
use crate::quant::{format, is_implemented, quantize_rows, QuantError, QuantType};

pub use feedback::{gram_errors, gram_norms, quantize_gram, quantize_gram_errors, GramFactor};
use gptq::gptq_factor;
use gram::Gram;
use model::kind;
use row::RowCtx;

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

/// Whether [`quantize_gram`] can write `ty` (every implemented block
/// format; not the float types).
pub fn gram_supported(ty: QuantType) -> bool {
    is_implemented(ty) && grid::supports(ty)
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

    Ok(choose_rows(
        &ctx,
        w,
        n,
        row_bytes,
        &reference,
        &with_imatrix,
        opt.alpha,
    ))
}

/// [`quantize_output_aware_with`] for a diagonal `H`: the objective is the
/// weighted squared error `Σ_rows Σ_i d_i (w_i − ŵ_i)²`, `d` = `weights`
/// (an importance matrix such as llama.cpp's imatrix: per-column sums or
/// means of `x²`), or all ones when `None` (plain weight-space error, the
/// data-free objective). ggml's candidates are its reference bytes and its
/// importance-matrix bytes with `weights` (the latter are exactly what
/// llama-quantize writes with that imatrix), so per row the result is never
/// worse than either on this objective. Used by the model tool's
/// `--optimize`.
pub fn quantize_weighted(
    ty: QuantType,
    w: &[f32],
    n: usize,
    weights: Option<&[f32]>,
    opts: &Options,
) -> Result<(Vec<u8>, Choice), Error> {
    quantize_weighted_with(ty, w, n, weights, opts, None)
}

/// [`quantize_weighted`] given ggml's importance-matrix bytes of `w` with
/// `weights` (`ggml_weighted`, when the caller has them already: they are
/// not computed again). The result is the same.
pub fn quantize_weighted_with(
    ty: QuantType,
    w: &[f32],
    n: usize,
    weights: Option<&[f32]>,
    opts: &Options,
    ggml_weighted: Option<&[u8]>,
) -> Result<(Vec<u8>, Choice), Error> {
    let (rows, row_bytes) = check_args(ty, w, n, None, 0)?;
    if ggml_weighted.is_some_and(|b| b.len() != rows * row_bytes || weights.is_none()) {
        return Err(Error::invalid(
            "ggml_weighted",
            "not the bytes of these rows with these weights",
        ));
    }
    if let Some(d) = weights {
        if d.len() != n {
            return Err(Error::invalid(
                "weights",
                format!("{} weights for rows of {n}", d.len()),
            ));
        }
    }
    let mut reference = vec![0u8; rows * row_bytes];
    quantize_rows(ty, w, n, &mut reference, None)?;
    if format(ty).block_size == 1 {
        return Ok((
            reference,
            Choice {
                reference: rows,
                shrinkage: 1.0,
                ..Choice::default()
            },
        ));
    }
    let ones;
    let d = match weights {
        Some(d) => d,
        None => {
            ones = vec![1f32; n];
            &ones
        }
    };
    let with_imatrix = match ggml_weighted {
        Some(b) => b.to_vec(),
        None => {
            let mut b = vec![0u8; rows * row_bytes];
            quantize_rows(ty, w, n, &mut b, Some(d))?;
            b
        }
    };
    let gram = Gram::diagonal(d);
    let finite = gram.is_finite();
    let ctx = RowCtx {
        ty,
        n,
        metric: gram.shrunk(),
        exact: gram.exact(),
        x: None,
        factor: None,
        imatrix: d,
        opts,
        refine: finite,
    };
    Ok(choose_rows(
        &ctx,
        w,
        n,
        row_bytes,
        &reference,
        &with_imatrix,
        1.0,
    ))
}

/// Each row of `w` (rows of `n`) through `ctx`'s choice among ggml's
/// reference bytes, its importance-matrix bytes and the refined search,
/// in parallel (`row_bytes` per quantized row); the bytes and how many
/// rows took each.
fn choose_rows(
    ctx: &RowCtx,
    w: &[f32],
    n: usize,
    row_bytes: usize,
    reference: &[u8],
    with_imatrix: &[u8],
    shrinkage: f64,
) -> (Vec<u8>, Choice) {
    let mut out = vec![0u8; reference.len()];
    let picks: Vec<u8> = out
        .par_chunks_mut(row_bytes)
        .zip(w.par_chunks(n))
        .zip(reference.par_chunks(row_bytes))
        .zip(with_imatrix.par_chunks(row_bytes))
        .map(|(((dst, wr), rb), ib)| ctx.row(wr, rb, ib, dst))
        .collect();
    let mut choice = Choice {
        shrinkage,
        ..Choice::default()
    };
    for p in picks {
        match p {
            0 => choice.reference += 1,
            1 => choice.imatrix += 1,
            _ => choice.refined += 1,
        }
    }
    (out, choice)
}

/// The objective of [`quantize_weighted`]: `Σ_rows Σ_i d_i (w_i − ŵ_i)²`
/// (`d` all ones when `None`) for the rows `q` of type `ty`, in f64, summed
/// in row order (deterministic). Not normalised (sums add up across chunks
/// of rows).
pub fn weighted_error(
    ty: QuantType,
    q: &[u8],
    w: &[f32],
    n: usize,
    weights: Option<&[f32]>,
) -> Result<f64, Error> {
    let (rows, row_bytes) = check_args(ty, w, n, None, 0)?;
    if q.len() != rows * row_bytes {
        return Err(QuantError::BadLength {
            got: q.len(),
            want: rows * row_bytes,
        }
        .into());
    }
    let f = format(ty);
    Ok(q.par_chunks(row_bytes)
        .zip(w.par_chunks(n))
        .map(|(qb, wr)| {
            let mut deq = vec![0f32; n];
            (f.dequantize_row)(qb, &mut deq);
            let mut s = 0f64;
            for i in 0..n {
                let e = wr[i] as f64 - deq[i] as f64;
                s += weights.map_or(1.0, |d| d[i] as f64) * e * e;
            }
            s
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum())
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
