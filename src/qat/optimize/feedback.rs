//! The Gram quantizer: for a weight `W` whose inputs have the Gram matrix
//! `G` (`XᵀX/s`, from a calibration file), bytes of any block format that
//! make the output error `tr((W − Ŵ) G (W − Ŵ)ᵀ)` small, by GPTQ's column
//! order with error feedback (optimal brain quantization):
//!
//! - once per `G` ([`GramFactor::new`]): the upper Cholesky factor `U` of
//!   `(G + λI)⁻¹`, `λ` a fraction of the mean of `diag G` (raised tenfold
//!   up to three times when the factorisation fails);
//! - per row, block by block: the block's parameters (scale, min,
//!   sub-block scales) from ggml's own quantizer with `diag G` as its
//!   importance, on the row as the errors of the columns already coded have
//!   left it; then each element's code nearest to its updated value, and
//!   its error `(w_i − ŵ_i)/U_ii` fed forward to every later column through
//!   row `i` of `U`.
//!
//! The objective itself ([`gram_errors`]) is a matrix product per tile of
//! rows (`E·G`, matrixmultiply's sgemm) summed in f64.

use rayon::prelude::*;

use super::gptq::gptq_factor;
use super::grid::Grid;
use crate::error::Error;
use crate::quant::{format, QuantType};

/// Rows per tile of the objective's matrix product.
const TILE: usize = 64;

/// A Gram matrix ready for the quantizer: `G` itself (the objective),
/// `diag G` (ggml's importance for block parameters) and GPTQ's factor.
pub struct GramFactor {
    n: usize,
    g: Vec<f32>,
    diag: Vec<f32>,
    u: Vec<f32>,
    /// The damping used, relative to the mean of `diag G`.
    pub damp: f64,
    /// The damping added to the diagonal (`damp` × the mean of `diag G`).
    lambda: f64,
}

impl GramFactor {
    /// Factors `g` (`n × n`, row-major, symmetric) with damping `damp`
    /// (relative to the mean of its diagonal; 0.01 is GPTQ's). An error
    /// when `g` is not `n × n`, holds a non-finite value, has a diagonal
    /// that is negative or all zero, or stays singular after damping.
    pub fn new(g: Vec<f32>, n: usize, damp: f64) -> Result<GramFactor, Error> {
        let bad = |what: String| Err(Error::invalid("gram", what));
        if n == 0 || Some(g.len()) != n.checked_mul(n) {
            return bad(format!("{} values for a {n} × {n} matrix", g.len()));
        }
        if let Some(i) = g.iter().position(|v| !v.is_finite()) {
            return bad(format!("value [{}][{}] is {}", i / n, i % n, g[i]));
        }
        let diag: Vec<f32> = (0..n).map(|i| g[i * n + i]).collect();
        if diag.iter().any(|&d| d < 0.0) || diag.iter().all(|&d| d == 0.0) {
            return bad("its diagonal is negative or all zero (no input seen)".into());
        }
        let h: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        let mut damp = damp.max(1e-6);
        for _ in 0..4 {
            if let Some(u) = gptq_factor(&h, n, damp) {
                let mean = diag.iter().map(|&d| d as f64).sum::<f64>() / n as f64;
                return Ok(GramFactor {
                    n,
                    g,
                    diag,
                    u: u.iter().map(|&v| v as f32).collect(),
                    damp,
                    lambda: damp * mean,
                });
            }
            damp *= 10.0;
        }
        bad(format!(
            "not positive definite even with damping {damp:e} of its mean diagonal"
        ))
    }

    /// The row length `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `diag G`, the importance of each column.
    pub fn diag(&self) -> &[f32] {
        &self.diag
    }
}

/// Quantizes the rows `w` (rows of `f.n()`) to `ty` by GPTQ in `ty`'s
/// blocks (see the module doc). Rows run in tiles of [`TILE`], in parallel
/// on the current rayon pool; the bytes do not depend on the thread count.
pub fn quantize_gram(ty: QuantType, w: &[f32], f: &GramFactor) -> Result<Vec<u8>, Error> {
    quantize_gram_errors(ty, w, f).map(|(q, _)| q)
}

/// [`quantize_gram`] and the Gram error `eᵀGe` of each row it wrote, from
/// GPTQ's own sums rather than a product with `G`: with `(G + λI)⁻¹ = UᵀU`
/// the fed-forward errors `ε` satisfy `w − ŵ = Uᵀε`, so
/// `eᵀ(G + λI)e = Σ ε²` and `eᵀGe = Σ ε² − λ Σ e²` (exact up to f32
/// rounding in the updates; never below 0).
pub fn quantize_gram_errors(
    ty: QuantType,
    w: &[f32],
    f: &GramFactor,
) -> Result<(Vec<u8>, Vec<f64>), Error> {
    let n = f.n;
    let fmt = format(ty);
    let row_bytes = fmt
        .row_bytes(n)
        .filter(|_| w.len() % n == 0)
        .ok_or_else(|| Error::invalid("w", format!("rows of {n} cannot be {ty:?}")))?;
    let Some(probe) = Grid::new(ty, n) else {
        return Err(Error::invalid("ty", format!("{ty:?} has no block grid")));
    };
    if n % probe.block() != 0 {
        return Err(Error::invalid("w", format!("rows of {n} cannot be {ty:?}")));
    }
    let rows = w.len() / n;
    let mut out = vec![0u8; rows * row_bytes];
    let mut errs = vec![0f64; rows];
    out.par_chunks_mut(TILE * row_bytes)
        .zip(w.par_chunks(TILE * n))
        .zip(errs.par_chunks_mut(TILE))
        .for_each(|((dst, rows), e)| gptq_tile(ty, rows, f, dst, e));
    Ok((out, errs))
}

/// Columns coded between two updates of the rest of the row (GPTQ's lazy
/// batch): a multiple of the grid's block that divides `n`.
fn lazy_block(n: usize, block: usize) -> usize {
    let mut b = block;
    while b < LAZY && n % (2 * b) == 0 {
        b *= 2;
    }
    b
}

/// Lazy batch width the columns are grouped to (at least the grid's block).
const LAZY: usize = 128;

/// A tile of rows through GPTQ: inside each lazy batch of columns, each
/// row's codes are chosen in order with the feedback limited to the batch;
/// then the batch's scaled errors update the rest of every row of the tile
/// at once (`W[:, rest] −= E · U[batch, rest]`, one sgemm). `obj` gets
/// each row's `eᵀGe` (see [`quantize_gram_errors`]).
fn gptq_tile(ty: QuantType, w: &[f32], f: &GramFactor, dst: &mut [u8], obj: &mut [f64]) {
    let n = f.n;
    let rows = w.len() / n;
    let fmt = format(ty);
    let mut grids: Vec<Grid> = (0..rows)
        .map(|_| Grid::new(ty, n).expect("checked by the caller"))
        .collect();
    let bs = grids[0].block();
    let bb = fmt.block_bytes * bs / fmt.block_size;
    let lb = lazy_block(n, bs);
    let mut wq = w.to_vec();
    let mut errs = vec![0f32; rows * lb];
    let mut blk = vec![0u8; bb];
    // Per row: Σ ε² and Σ e² (in f64).
    let mut sums = vec![(0f64, 0f64); rows];
    for s0 in (0..n).step_by(lb) {
        for (r, grid) in grids.iter_mut().enumerate() {
            let row = &mut wq[r * n..(r + 1) * n];
            let e = &mut errs[r * lb..(r + 1) * lb];
            let (w0, sum) = (&w[r * n..(r + 1) * n], &mut sums[r]);
            for b0 in (s0..s0 + lb).step_by(bs) {
                (fmt.quantize_row)(&row[b0..b0 + bs], &mut blk, Some(&f.diag[b0..b0 + bs]));
                grid.set_block(b0 / bs, &blk);
                for i in b0..b0 + bs {
                    let v = grid.pick(i, row[i]);
                    let u = &f.u[i * n..i * n + s0 + lb];
                    let mut err = (row[i] - v) / u[i];
                    if !err.is_finite() {
                        err = 0.0;
                    }
                    e[i - s0] = err;
                    let d = (w0[i] - v) as f64;
                    *sum = (sum.0 + err as f64 * err as f64, sum.1 + d * d);
                    if err != 0.0 {
                        for (x, &c) in row[i + 1..s0 + lb].iter_mut().zip(&u[i + 1..]) {
                            *x -= err * c;
                        }
                    }
                }
            }
        }
        let rest = n - (s0 + lb);
        if rest > 0 {
            // SAFETY: errs is rows × lb (row stride lb), U's rows s0..s0+lb
            // from column s0+lb are lb × rest (row stride n), wq's columns
            // s0+lb.. are rows × rest (row stride n); all in bounds.
            unsafe {
                matrixmultiply::sgemm(
                    rows,
                    lb,
                    rest,
                    -1.0,
                    errs.as_ptr(),
                    lb as isize,
                    1,
                    f.u.as_ptr().add(s0 * n + s0 + lb),
                    n as isize,
                    1,
                    1.0,
                    wq.as_mut_ptr().add(s0 + lb),
                    n as isize,
                    1,
                );
            }
        }
    }
    let row_bytes = dst.len() / rows;
    for (grid, d) in grids.iter().zip(dst.chunks_exact_mut(row_bytes)) {
        grid.encode(d);
    }
    for (o, &(e2, d2)) in obj.iter_mut().zip(&sums) {
        let v = e2 - f.lambda * d2;
        *o = if v.is_finite() {
            v.max(0.0)
        } else {
            f64::INFINITY
        };
    }
}

/// The output error of each row of `q` (bytes of `ty`) against `w` (rows
/// of `f.n()`): `eᵀ G e` with `e = w − ŵ`, `ŵ` as ggml decodes it, in
/// f64. A row with a non-finite error gets infinity.
pub fn gram_errors(ty: QuantType, q: &[u8], w: &[f32], f: &GramFactor) -> Result<Vec<f64>, Error> {
    let n = f.n;
    let row_bytes = format(ty).row_bytes(n).unwrap_or(0);
    let rows = w.len() / n;
    if w.len() % n != 0 || row_bytes == 0 || q.len() != rows * row_bytes {
        return Err(Error::invalid(
            "q",
            format!("{} bytes for {rows} rows of {n} in {ty:?}", q.len()),
        ));
    }
    let tiles: Vec<Vec<f64>> = q
        .par_chunks(TILE * row_bytes)
        .zip(w.par_chunks(TILE * n))
        .map(|(qt, wt)| tile_errors(ty, qt, wt, f))
        .collect();
    Ok(tiles.concat())
}

/// `vᵀ G v` of each row of `v` (rows of `f.n()`), in f64: the Gram
/// objective of the rows themselves (the planner's signal). A row with a
/// non-finite result gets infinity.
pub fn gram_norms(v: &[f32], f: &GramFactor) -> Result<Vec<f64>, Error> {
    let n = f.n;
    if v.len() % n != 0 {
        return Err(Error::invalid(
            "v",
            format!("{} values for rows of {n}", v.len()),
        ));
    }
    let tiles: Vec<Vec<f64>> = v.par_chunks(TILE * n).map(|t| quadratic(t, f)).collect();
    Ok(tiles.concat())
}

/// [`gram_errors`] of one tile of rows.
fn tile_errors(ty: QuantType, q: &[u8], w: &[f32], f: &GramFactor) -> Vec<f64> {
    let n = f.n;
    let fmt = format(ty);
    let rows = w.len() / n;
    let mut e = vec![0f32; rows * n];
    for ((er, qr), wr) in e
        .chunks_exact_mut(n)
        .zip(q.chunks_exact(q.len() / rows))
        .zip(w.chunks_exact(n))
    {
        (fmt.dequantize_row)(qr, er);
        for (x, &a) in er.iter_mut().zip(wr) {
            *x = a - *x;
        }
    }
    quadratic(&e, f)
}

/// Columns per strip of [`quadratic`].
const STRIP: usize = 128;

/// `eᵀ G e` of each row of the tile `e`, sums in f64. `G` is symmetric, so
/// only its upper triangle is read: strip by strip of columns `I`,
/// `P = E_I · G[I, I..]` (one sgemm) and `eᵀGe = Σ_I e_I·P_I,I + 2 e_J·P_I,J`
/// over the later columns `J`: half the products of a full `E·G`.
fn quadratic(e: &[f32], f: &GramFactor) -> Vec<f64> {
    let n = f.n;
    let rows = e.len() / n;
    let mut p = vec![0f32; rows * n];
    let mut s = vec![0f64; rows];
    for i0 in (0..n).step_by(STRIP) {
        let (kb, width) = (STRIP.min(n - i0), n - i0);
        // SAFETY: E's columns i0..i0+kb are rows × kb (row stride n), G's
        // rows i0..i0+kb from column i0 are kb × width (row stride n), p
        // holds rows × width (row stride width); all in bounds.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                kb,
                width,
                1.0,
                e.as_ptr().add(i0),
                n as isize,
                1,
                f.g.as_ptr().add(i0 * n + i0),
                n as isize,
                1,
                0.0,
                p.as_mut_ptr(),
                width as isize,
                1,
            );
        }
        for (r, acc) in s.iter_mut().enumerate() {
            let (er, pr) = (&e[r * n + i0..(r + 1) * n], &p[r * width..(r + 1) * width]);
            let dot = |a: &[f32], b: &[f32]| -> f64 {
                a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
            };
            *acc += dot(&er[..kb], &pr[..kb]) + 2.0 * dot(&er[kb..], &pr[kb..]);
        }
    }
    s.into_iter()
        .map(|v| if v.is_finite() { v } else { f64::INFINITY })
        .collect()
}
