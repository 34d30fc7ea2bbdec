//! Synthetic calibration data: i.i.d. normal values from a seeded stream.

use crate::rng::Stream;

/// A bound on |x| of every standard normal the streams produce: Box-Muller
/// of uniforms no smaller than 2^-54 gives at most sqrt(2 · 54 · ln 2) ≈ 8.65.
pub const MAX_ABS_NORMAL: f64 = 8.7;

/// Fills `out` with Normal(mean, std) values: element `i` is
/// `mean + std * stream.normal_at(i)`, so the bytes do not depend on how many
/// threads fill them. `std == 0` gives exactly `mean`.
pub fn fill_normal(out: &mut [f32], stream: &Stream, mean: f32, std: f32) {
    const CHUNK: usize = 1 << 14;
    let chunks = out.chunks_mut(CHUNK).enumerate().collect();
    crate::quant::for_each_piece(chunks, |(c, chunk): (usize, &mut [f32])| {
        let base = (c * CHUNK) as u64;
        for (j, v) in chunk.iter_mut().enumerate() {
            *v = if std == 0.0 {
                mean
            } else {
                (mean as f64 + std as f64 * stream.normal_at(base + j as u64)) as f32
            };
        }
    });
}
