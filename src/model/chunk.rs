//! One chunk of rows quantized the way the model writer writes it; shared by
//! the writer ([`super::run`]) and the size planner ([`super::planner`]),
//! so the planner measures exactly the bytes that would be written.

use crate::error::Error;
use crate::qat::optimize::{self, GramFactor};
use crate::quant::{self, QuantType};

/// What the output-aware search did to one chunk (`optimize` only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Searched {
    /// Objective of ggml's bytes and of the bytes kept (Σ d_i (w_i − ŵ_i)²,
    /// or with a Gram matrix Σ_rows eᵀGe).
    pub ggml: f64,
    pub kept: f64,
    /// Rows whose bytes differ from ggml's.
    pub rows_changed: u64,
    /// With a Gram matrix: rows won by ggml's bytes, the diagonal search and
    /// the Gram quantizer.
    pub won: [u64; 3],
}

/// Quantizes the rows `x` (rows of `row_len`) to `to` into `dst`: ggml's
/// quantizer (with the imatrix row `imrow` when given); with `optimize`,
/// then the output-aware search under the column weights `wrow`, whose
/// bytes replace ggml's when their objective is not higher; with `optimize`
/// and the Gram matrix of the tensor's inputs (a type with a grid), per row the best of ggml's
/// bytes, the diagonal search's and the Gram quantizer's on the Gram
/// objective ([`gram_chunk`]). Runs on the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn quantize_chunk(
    to: QuantType,
    x: &[f32],
    row_len: usize,
    dst: &mut [u8],
    imrow: Option<&[f32]>,
    wrow: Option<&[f32]>,
    optimize: bool,
    gram: Option<&GramFactor>,
) -> Result<Option<Searched>, Error> {
    quant::quantize_rows(to, x, row_len, dst, imrow)?;
    // Float targets (F16, BF16, F32) have nothing to search.
    if !optimize || to.format().block_size <= 1 {
        return Ok(None);
    }
    // ggml's bytes are already those of the search's weights when the
    // imatrix is them: not computed twice.
    let same = imrow.is_some() && imrow == wrow;
    if let Some(g) = gram.filter(|_| optimize::gram_supported(to)) {
        return gram_chunk(to, x, row_len, dst, wrow, same, g).map(Some);
    }
    let opts = optimize::Options::default();
    let given = same.then_some(&*dst);
    let (bytes, _) = optimize::quantize_weighted_with(to, x, row_len, wrow, &opts, given)?;
    let ggml = optimize::weighted_error(to, dst, x, row_len, wrow)?;
    if bytes == dst {
        // The search kept ggml's bytes (e.g. Q8_0, whose quantizer ignores
        // the weights): nothing to measure twice.
        return Ok(Some(Searched {
            ggml,
            kept: ggml,
            ..Searched::default()
        }));
    }
    let ours = optimize::weighted_error(to, &bytes, x, row_len, wrow)?;
    if ours > ggml {
        return Ok(Some(Searched {
            ggml,
            kept: ggml,
            ..Searched::default()
        }));
    }
    let row_bytes = dst.len() / (x.len() / row_len).max(1);
    let rows_changed = dst
        .chunks(row_bytes.max(1))
        .zip(bytes.chunks(row_bytes.max(1)))
        .filter(|(a, b)| a != b)
        .count() as u64;
    dst.copy_from_slice(&bytes);
    Ok(Some(Searched {
        ggml,
        kept: ours,
        rows_changed,
        ..Searched::default()
    }))
}

/// The Gram path of [`quantize_chunk`]: `dst` holds ggml's bytes (with the
/// weights `wrow` when `same`); each row becomes the best of those, the
/// Gram quantizer's and the diagonal search's (weights `wrow`), on `eᵀGe`.
/// The diagonal search, the costly one (it optimises another objective),
/// runs only on the rows where GPTQ did not beat ggml's bytes.
fn gram_chunk(
    to: QuantType,
    x: &[f32],
    row_len: usize,
    dst: &mut [u8],
    wrow: Option<&[f32]>,
    same: bool,
    g: &GramFactor,
) -> Result<Searched, Error> {
    let rows = x.len() / row_len;
    let row_bytes = dst.len() / rows.max(1);
    let span = |r: usize| r * row_bytes..(r + 1) * row_bytes;
    let (gptq, mut gptq_errs) = optimize::quantize_gram_errors(to, x, g)?;
    let ggml_errs = optimize::gram_errors(to, dst, x, g)?;
    // GPTQ's errors come from its own sums: a row it wrote as ggml did
    // takes ggml's figure, so a tie is not counted as a win.
    for (r, e) in gptq_errs.iter_mut().enumerate() {
        if gptq[span(r)] == dst[span(r)] {
            *e = ggml_errs[r];
        }
    }
    let open: Vec<usize> = (0..rows)
        .filter(|&r| gptq_errs[r] >= ggml_errs[r])
        .collect();
    let diag_errs = diagonal_rows(to, x, row_len, dst, wrow, same, g, &open)?;
    let mut s = Searched::default();
    for r in 0..rows {
        let mut cands = [
            (ggml_errs[r], None),
            (f64::INFINITY, None),
            (gptq_errs[r], Some(&gptq[span(r)])),
        ];
        if let Some((e, bytes)) = &diag_errs[r] {
            cands[1] = (*e, Some(bytes.as_slice()));
        }
        let best = (1..3).fold(0, |b, c| if cands[c].0 < cands[b].0 { c } else { b });
        s.ggml += ggml_errs[r];
        s.kept += cands[best].0;
        s.won[best] += 1;
        if let Some(from) = cands[best].1 {
            if dst[span(r)] != *from {
                s.rows_changed += 1;
                dst[span(r)].copy_from_slice(from);
            }
        }
    }
    Ok(s)
}

/// Rows `which` (of `width` values each) of `v`, one after another.
fn gather<T: Copy>(v: &[T], width: usize, which: &[usize]) -> Vec<T> {
    which
        .iter()
        .flat_map(|&r| v[r * width..(r + 1) * width].iter().copied())
        .collect()
}

/// A row's error `eᵀGe` and its bytes.
type Candidate = (f64, Vec<u8>);

/// The diagonal search on the rows `open` of the chunk: per row, its bytes
/// and `eᵀGe` where they differ from ggml's (`dst`), else `None`.
#[allow(clippy::too_many_arguments)]
fn diagonal_rows(
    to: QuantType,
    x: &[f32],
    row_len: usize,
    dst: &[u8],
    wrow: Option<&[f32]>,
    same: bool,
    g: &GramFactor,
    open: &[usize],
) -> Result<Vec<Option<Candidate>>, Error> {
    let rows = x.len() / row_len;
    let row_bytes = dst.len() / rows.max(1);
    let mut out = vec![None; rows];
    if open.is_empty() {
        return Ok(out);
    }
    let (xs, given) = (gather(x, row_len, open), gather(dst, row_bytes, open));
    let opts = optimize::Options::default();
    let (diag, _) = optimize::quantize_weighted_with(
        to,
        &xs,
        row_len,
        wrow,
        &opts,
        same.then_some(&given[..]),
    )?;
    let changed: Vec<usize> = (0..open.len())
        .filter(|&k| {
            diag[k * row_bytes..(k + 1) * row_bytes] != given[k * row_bytes..(k + 1) * row_bytes]
        })
        .collect();
    let (cx, cq) = (
        gather(&xs, row_len, &changed),
        gather(&diag, row_bytes, &changed),
    );
    let errs = optimize::gram_errors(to, &cq, &cx, g)?;
    for (&k, (e, q)) in changed
        .iter()
        .zip(errs.into_iter().zip(cq.chunks_exact(row_bytes)))
    {
        out[open[k]] = Some((e, q.to_vec()));
    }
    Ok(out)
}
