//! ECAN attention: short- and long-term importance on the 8-bit grid, and
//! attention scores quantized 8-bit relative to their maximum, then
//! renormalized to sum to 1.

use super::{count, quantize_unit_u8};
use crate::error::Result;
use crate::rng::Stream;

/// Weight of STI in the raw attention score (LTI takes the rest).
pub const STI_WEIGHT: f32 = 0.7;

/// A synthetic, quantized ECAN attention bank.
#[derive(Clone, Debug, PartialEq)]
pub struct Ecan {
    pub sti_values: Vec<f32>,
    pub lti_values: Vec<f32>,
    /// Positive scores summing to 1.
    pub attention_scores: Vec<f32>,
}

/// Quantizes non-negative `scores` to 8 bits relative to their maximum (a
/// positive score never below one step) and renormalizes them to sum to 1.
pub fn quantize_scores(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().fold(0.0f32, |m, &v| m.max(v));
    if max <= 0.0 {
        return vec![1.0 / scores.len() as f32; scores.len()];
    }
    let steps: Vec<f64> = scores
        .iter()
        .map(|&v| {
            let k = (v / max * 255.0).round();
            if v > 0.0 {
                k.max(1.0) as f64
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = steps.iter().sum();
    steps.iter().map(|&k| (k / total) as f32).collect()
}

impl Ecan {
    /// `n_elements >= 1` elements.
    pub fn generate(n_elements: i32, rng: &mut Stream) -> Result<Ecan> {
        let n = count("n_elements", n_elements, 1)?;
        let sti: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
        let lti: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
        let raw: Vec<f32> = sti
            .iter()
            .zip(&lti)
            .map(|(&s, &l)| STI_WEIGHT * s + (1.0 - STI_WEIGHT) * l)
            .collect();
        Ok(Ecan {
            sti_values: sti.into_iter().map(quantize_unit_u8).collect(),
            lti_values: lti.into_iter().map(quantize_unit_u8).collect(),
            attention_scores: quantize_scores(&raw),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeedSequence;

    #[test]
    fn scores_sum_to_one_and_never_collapse() {
        let mut s = SeedSequence::new(2).next_stream();
        let e = Ecan::generate(5000, &mut s).unwrap();
        let sum: f64 = e.attention_scores.iter().map(|&v| v as f64).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        assert!(e.attention_scores.iter().all(|&v| v > 0.0));
        // A tiny positive score keeps one step.
        let q = quantize_scores(&[1.0, 1e-6, 0.0]);
        assert!(q[1] > 0.0 && q[2] == 0.0);
        assert!((q.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
