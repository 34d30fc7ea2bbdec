//! One chunk of rows quantized the way the model writer writes it; shared by
//! the writer ([`super::run`]) and the size planner ([`super::planner`]),
//! so the planner measures exactly the bytes that would be written.

use crate::error::Error;
use crate::qat::optimize;
use crate::quant::{self, QuantType};

/// What the output-aware search did to one chunk (`optimize` only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Searched {
    /// Objective of ggml's bytes and of the bytes kept (Σ d_i (w_i − ŵ_i)²).
    pub ggml: f64,
    pub kept: f64,
    /// Rows whose bytes differ from ggml's.
    pub rows_changed: u64,
}

/// Quantizes the rows `x` (rows of `row_len`) to `to` into `dst`: ggml's
/// quantizer (with the imatrix row `imrow` when given); with `optimize`,
/// then the output-aware search under the column weights `wrow`, whose
/// bytes replace ggml's when their objective is not higher. Runs on the
/// current rayon pool.
pub fn quantize_chunk(
    to: QuantType,
    x: &[f32],
    row_len: usize,
    dst: &mut [u8],
    imrow: Option<&[f32]>,
    wrow: Option<&[f32]>,
    optimize: bool,
) -> Result<Option<Searched>, Error> {
    quant::quantize_rows(to, x, row_len, dst, imrow)?;
    // Float targets (F16, BF16, F32) have nothing to search.
    if !optimize || to.format().block_size <= 1 {
        return Ok(None);
    }
    let opts = optimize::Options::default();
    let (bytes, _) = optimize::quantize_weighted(to, x, row_len, wrow, &opts)?;
    let ggml = optimize::weighted_error(to, dst, x, row_len, wrow)?;
    if bytes == dst {
        // The search kept ggml's bytes (e.g. Q8_0, whose quantizer ignores
        // the weights): nothing to measure twice.
        return Ok(Some(Searched {
            ggml,
            kept: ggml,
            rows_changed: 0,
        }));
    }
    let ours = optimize::weighted_error(to, &bytes, x, row_len, wrow)?;
    if ours > ggml {
        return Ok(Some(Searched {
            ggml,
            kept: ggml,
            rows_changed: 0,
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
    }))
}
