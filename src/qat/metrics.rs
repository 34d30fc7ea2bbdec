//! Distribution metrics: KL divergence of row softmaxes and top-1 agreement;
//! and the sums of a relative squared error.
//! Rows are independent and computed in parallel; sums are in f64.

use std::convert::Infallible;

use rayon::prelude::*;

use crate::quant::rows::{self, RowSource};

/// `KL(P‖Q)` of one row, `P = softmax(p/T)`, `Q = softmax(q/T)`, computed
/// with log-sum-exp in f64. Identical rows give exactly 0.
pub fn kl_row(p: &[f32], q: &[f32], inv_t: f64) -> f64 {
    let lse = |x: &[f32]| {
        let m = x
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64 * inv_t));
        m + x
            .iter()
            .map(|&v| (v as f64 * inv_t - m).exp())
            .sum::<f64>()
            .ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    let kl: f64 = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| {
            let log_p = a as f64 * inv_t - lp;
            let log_q = b as f64 * inv_t - lq;
            log_p.exp() * (log_p - log_q)
        })
        .sum();
    kl.max(0.0)
}

/// Mean over rows of [`kl_row`]; `p` and `q` hold the same number of rows of
/// `row_len` values.
pub fn mean_kl(p: &[f32], q: &[f32], row_len: usize, temperature: f64) -> f64 {
    assert_eq!(p.len(), q.len());
    let rows = p.len() / row_len;
    if rows == 0 {
        return 0.0;
    }
    let inv_t = 1.0 / temperature;
    let total: f64 = p
        .par_chunks(row_len)
        .zip(q.par_chunks(row_len))
        .map(|(a, b)| kl_row(a, b, inv_t))
        .sum();
    total / rows as f64
}

/// Index of the largest value (the first on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Share of rows whose argmax agrees (llama.cpp's "same top").
pub fn top1_agreement(p: &[f32], q: &[f32], row_len: usize) -> f64 {
    let rows = p.len() / row_len;
    if rows == 0 {
        return 1.0;
    }
    let same = p
        .par_chunks(row_len)
        .zip(q.par_chunks(row_len))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    same as f64 / rows as f64
}

/// Why [`mean_kl_rows`] could not give a figure.
#[derive(Debug, Clone, PartialEq)]
pub enum KlError {
    /// Source `which` (0: `p`, 1: `q`) has a NaN or infinite value at
    /// `index` (the first such of that source).
    NonFinite {
        which: usize,
        index: usize,
        value: f32,
    },
    /// A piece's buffer of `bytes` bytes could not be allocated.
    Alloc { bytes: usize },
}

/// [`mean_kl`] of two matrices of the same shape read from sources a piece
/// of rows at a time (in parallel; extra memory two pieces per thread),
/// refusing non-finite values: every value of `p` is checked before any of
/// `q` counts, so the error names the first bad value of `p` if it has one.
/// Rows are summed in order, so the figure does not depend on the threads.
pub fn mean_kl_rows<A, B>(p: &A, q: &B, temperature: f64) -> Result<f64, KlError>
where
    A: RowSource<Error = Infallible>,
    B: RowSource<Error = Infallible>,
{
    let (row_len, nrows) = (p.row_len(), p.nrows());
    assert_eq!((row_len, nrows), (q.row_len(), q.nrows()));
    if nrows == 0 {
        return Ok(0.0);
    }
    let inv_t = 1.0 / temperature;
    let pieces = rows::pieces(nrows, row_len, 1, false);
    let mut sums: Vec<Result<f64, KlError>> = vec![Ok(0.0); pieces.len()];
    let items = pieces.iter().zip(sums.iter_mut()).collect();
    crate::quant::for_each_piece(
        items,
        |(piece, sum): (&rows::Piece, &mut Result<f64, KlError>)| {
            let (mut bp, mut bq) = (Vec::new(), Vec::new());
            *sum = (|| {
                let at = piece.row * row_len;
                for (b, converts) in [(&mut bp, p.converts(piece)), (&mut bq, q.converts(piece))] {
                    if converts {
                        b.try_reserve(piece.len()).map_err(|_| KlError::Alloc {
                            bytes: piece.len() * std::mem::size_of::<f32>(),
                        })?;
                    }
                }
                let Ok(a) = p.read(piece, &mut bp);
                let Ok(b) = q.read(piece, &mut bq);
                for (which, v) in [a, b].into_iter().enumerate() {
                    if let Some(i) = rows::first_non_finite(v) {
                        return Err(KlError::NonFinite {
                            which,
                            index: at + i,
                            value: v[i],
                        });
                    }
                }
                Ok(a.chunks(row_len)
                    .zip(b.chunks(row_len))
                    .map(|(a, b)| kl_row(a, b, inv_t))
                    .sum())
            })();
        },
    );
    let mut total = 0.0;
    let mut first_error: Option<KlError> = None;
    for r in sums {
        match (r, &first_error) {
            (Ok(s), _) => total += s,
            (Err(e), None) => first_error = Some(e),
            (
                Err(e @ KlError::NonFinite { which, index, .. }),
                Some(KlError::NonFinite {
                    which: w, index: i, ..
                }),
            ) if (which, index) < (*w, *i) => first_error = Some(e),
            (Err(_), Some(_)) => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total / nrows as f64),
    }
}

/// Σ(x − y)² and Σx² (a relative squared error's numerator and
/// denominator), in parallel pieces: fast enough for a pass over a whole
/// model (the model tool's per-tensor error).
pub fn error_sums(x: &[f32], y: &[f32]) -> (f64, f64) {
    x.par_chunks(1 << 16)
        .zip(y.par_chunks(1 << 16))
        .map(|(a, b)| piece_sums(a, b))
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Σ(a - b)² and Σa² of one piece: blocks of 256 values summed in f32
/// lanes (SSE2, the x86-64 baseline; a relative error of about 1e-6, far
/// below the figure's printed digits), the blocks added in f64.
fn piece_sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut e, mut s) = (0f64, 0f64);
    for (pa, pb) in a.chunks(256).zip(b.chunks(256)) {
        let (be, bs) = block_sums(pa, pb);
        e += be;
        s += bs;
    }
    (e, s)
}

#[cfg(target_arch = "x86_64")]
fn block_sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let whole = n / 4 * 4;
    // SAFETY: SSE2 is part of x86-64; every load reads 4 floats inside
    // both slices (i + 4 <= whole <= n).
    let (lanes_e, lanes_s) = unsafe {
        let (mut e, mut s) = (_mm_setzero_ps(), _mm_setzero_ps());
        for i in (0..whole).step_by(4) {
            let p = _mm_loadu_ps(a.as_ptr().add(i));
            let d = _mm_sub_ps(p, _mm_loadu_ps(b.as_ptr().add(i)));
            e = _mm_add_ps(e, _mm_mul_ps(d, d));
            s = _mm_add_ps(s, _mm_mul_ps(p, p));
        }
        let (mut le, mut ls) = ([0f32; 4], [0f32; 4]);
        _mm_storeu_ps(le.as_mut_ptr(), e);
        _mm_storeu_ps(ls.as_mut_ptr(), s);
        (le, ls)
    };
    let (mut e, mut s) = (0f64, 0f64);
    for k in 0..4 {
        e += lanes_e[k] as f64;
        s += lanes_s[k] as f64;
    }
    let (te, ts) = scalar_sums(&a[whole..n], &b[whole..n]);
    (e + te, s + ts)
}

#[cfg(not(target_arch = "x86_64"))]
fn block_sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    scalar_sums(a, b)
}

fn scalar_sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(e, s), (&p, &q)| {
        (e + ((p - q) as f64).powi(2), s + (p as f64).powi(2))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_identical_rows_is_zero() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32).sin() * 5.0).collect();
        assert_eq!(mean_kl(&x, &x, 16, 1.0), 0.0);
    }

    #[test]
    fn kl_matches_direct_formula() {
        let p = [1.0f32, 2.0, 3.0];
        let q = [1.5f32, 1.0, 3.5];
        let sm = |x: &[f32]| {
            let s: f64 = x.iter().map(|&v| (v as f64 / 2.0).exp()).sum();
            x.iter()
                .map(|&v| (v as f64 / 2.0).exp() / s)
                .collect::<Vec<_>>()
        };
        let (a, b) = (sm(&p), sm(&q));
        let want: f64 = a.iter().zip(&b).map(|(x, y)| x * (x / y).ln()).sum();
        assert!((kl_row(&p, &q, 0.5) - want).abs() < 1e-12);
    }

    #[test]
    fn agreement_counts_rows() {
        let p = [0.0f32, 1.0, 1.0, 0.0];
        let q = [0.0f32, 1.0, 0.0, 1.0];
        assert_eq!(top1_agreement(&p, &q, 2), 0.5);
    }

    #[test]
    fn piece_sums_match_a_plain_sum() {
        let a: Vec<f32> = (0..10003).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = a.iter().map(|x| x + 0.01 * x.cos()).collect();
        let (mut e, mut s) = (0f64, 0f64);
        for (&p, &q) in a.iter().zip(&b) {
            e += ((p - q) as f64).powi(2);
            s += (p as f64).powi(2);
        }
        let (e2, s2) = piece_sums(&a, &b);
        assert!((e - e2).abs() <= 1e-5 * e && (s - s2).abs() <= 1e-5 * s);
    }
}
