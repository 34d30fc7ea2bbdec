//! Each candidate type of a tensor measured on a sample of its rows,
//! quantized as the writer would quantize them.

use super::SAMPLE_VALUES;
use crate::model::chunk;
use crate::model::source::{Source, TensorRef};
use crate::model::weights::ColumnWeights;
use crate::model::ModelError;
use crate::qat::optimize::{gram_errors, gram_norms, weighted_error, GramFactor};
use crate::quant::QuantType;

/// Quantizes an evenly spaced sample of `r`'s rows to each of `tys`;
/// returns the number of rows sampled and each type's relative squared
/// error `Σ a (w − ŵ)² / Σ a w²`, `a` the imatrix entry or ones, or with
/// the Gram matrix `gram` of the tensor's inputs (the writer's bytes then
/// come from the Gram path too) `Σ eᵀGe / Σ wᵀGw`. A type equal to the
/// source's is copied by the writer: error 0. Runs on the current rayon
/// pool.
pub fn measure(
    src: &Source,
    r: TensorRef,
    w: &ColumnWeights,
    tys: &[QuantType],
    optimize: bool,
    gram: Option<&GramFactor>,
) -> Result<(u64, Vec<f64>), ModelError> {
    let t = src.info(r);
    let row_len = t.ne[0] as usize;
    let nrows = t.nrows() as usize;
    if nrows == 0 || row_len == 0 {
        return Ok((0, vec![0.0; tys.len()]));
    }
    let want = SAMPLE_VALUES.div_ceil(row_len).clamp(1, nrows);
    let picked: Vec<usize> = (0..want).map(|k| k * nrows / want).collect();
    let mut raw = Vec::new();
    let mut x = vec![0f32; want * row_len];
    for (k, &row) in picked.iter().enumerate() {
        src.rows_f32(r, row, &mut raw, &mut x[k * row_len..(k + 1) * row_len])?;
    }
    let groups = expert_groups(&picked, w);
    let in_tensor = |e| ModelError::Invalid(format!("tensor '{}': {e}", t.name));
    let signal: f64 = match gram {
        Some(g) => gram_norms(&x, g).map_err(in_tensor)?.iter().sum(),
        None => groups
            .iter()
            .map(|&(first, count, row)| {
                weighted_signal(
                    &x[first * row_len..(first + count) * row_len],
                    w.imatrix_row(row),
                )
            })
            .sum(),
    };
    if !signal.is_finite() {
        return Err(ModelError::Format(format!(
            "tensor '{}' holds non-finite values (NaN or Inf)",
            t.name
        )));
    }
    let mut errors = Vec::with_capacity(tys.len());
    for &ty in tys {
        if ty.ggml_id() == t.ty {
            errors.push(0.0);
            continue;
        }
        let dst_row = ty.format().row_bytes(row_len).unwrap_or(0);
        let mut err = 0f64;
        for &(first, count, row) in &groups {
            let xs = &x[first * row_len..(first + count) * row_len];
            let mut dst = vec![0u8; count * dst_row];
            let (im, search) = (w.imatrix_row(row), w.search_row(row));
            let searched =
                chunk::quantize_chunk(ty, xs, row_len, &mut dst, im, search, optimize, gram)
                    .map_err(in_tensor)?;
            // The search measured what it kept on its own weights; when
            // they are the metric's (the Gram path: rows won), that figure
            // is the error.
            err += match (searched, gram) {
                (Some(s), Some(_)) if s.won.iter().sum::<u64>() > 0 => s.kept,
                (_, Some(g)) => gram_errors(ty, &dst, xs, g)
                    .map_err(in_tensor)?
                    .iter()
                    .sum(),
                (Some(s), None) if w.kind() != "norm" => s.kept,
                _ => weighted_error(ty, &dst, xs, row_len, im).map_err(in_tensor)?,
            };
        }
        errors.push(if signal > 0.0 { err / signal } else { 0.0 });
    }
    Ok((want as u64, errors))
}

/// The sampled rows grouped by expert: `(first sample, count, a row of
/// the expert)`.
fn expert_groups(picked: &[usize], w: &ColumnWeights) -> Vec<(usize, usize, usize)> {
    let mut groups: Vec<(usize, usize, usize)> = Vec::new();
    for (k, &row) in picked.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if w.rows_left_in_expert(g.2) > row - g.2 => g.1 += 1,
            _ => groups.push((k, 1, row)),
        }
    }
    groups
}

/// `Σ a_j w_j²` over rows `x` (`a` ones when `None`).
fn weighted_signal(x: &[f32], a: Option<&[f32]>) -> f64 {
    let n = a.map_or(x.len(), |a| a.len()).max(1);
    x.chunks(n)
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(j, &v)| a.map_or(1.0, |a| a[j] as f64) * (v as f64) * (v as f64))
                .sum::<f64>()
        })
        .sum()
}
