//! Layer sensitivity and the mixed-precision plan.
//!
//! The error of a layer at a type is measured on synthetic inputs: both the
//! F32 and the quantized weights run as `Y = W X` with ggml's CPU backend, and
//! the error blends the mean per-sample KL of softmax(Y / T) (weight
//! `kl_divergence_weight`) with the relative output MSE ‖Y − Ŷ‖² / ‖Y‖²
//! (weight `1 − kl_divergence_weight`). Sensitivity is that error per MiB
//! saved against F32.

use super::check::checked_values;
use super::config::Config;
use super::measure::{compare, cpu_backend, synthetic_inputs, Weights};
use super::metrics;
use super::plan;
use super::threads::Threads;
use crate::error::{Error, Result};
use crate::ggml::compute::Backend;
use crate::ggml::{Context, Tensor};
use crate::quant::QuantType;
use crate::rng::Stream;

const MIB: f64 = 1024.0 * 1024.0;

/// The types the planner chooses from, least precise first.
pub const PLAN_LADDER: [QuantType; 7] = [
    QuantType::Q2_K,
    QuantType::Q3_K,
    QuantType::Q4_K,
    QuantType::Q5_K,
    QuantType::Q6_K,
    QuantType::Q8_0,
    QuantType::F16,
];

/// Output error of a layer at one type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputError {
    pub kl: f64,
    pub rel_mse: f64,
    /// Top-1 agreement of the outputs (not part of the blended error).
    pub top1: f64,
}

/// A layer's values, its F32 reference and the synthetic inputs it is
/// measured on (see [`probe`]).
pub struct Probe<'v> {
    pub values: &'v [f32],
    pub reference: Weights,
    pub x: Vec<f32>,
    pub n: usize,
}

/// One layer's candidates: (type, bytes, blended error), least precise first.
struct Candidates(Vec<(QuantType, usize, f64)>);

/// `kl_divergence_weight · kl + (1 − kl_divergence_weight) · rel_mse`.
pub fn blended(config: &Config, e: OutputError) -> f64 {
    let w = config.kl_divergence_weight as f64;
    w * e.kl + (1.0 - w) * e.rel_mse
}

/// A layer's values with its F32 reference and the synthetic inputs
/// (`calibration_samples` N(0,1) samples drawn from `stream`) it is
/// measured on.
pub fn probe<'v>(
    config: &Config,
    threads: &Threads,
    stream: Stream,
    values: &'v [f32],
    ne0: usize,
) -> Result<Probe<'v>> {
    let (x, n) = synthetic_inputs(config, threads, ne0, stream)?;
    Ok(Probe {
        values,
        reference: Weights::quantized(QuantType::F32, values, ne0)?,
        x,
        n,
    })
}

/// The probe's values quantized to `ty`, with their output error against
/// the F32 reference (both products with ggml on `backend`).
pub fn output_error(
    config: &Config,
    backend: &Backend,
    probe: &Probe,
    ty: QuantType,
) -> Result<(OutputError, Weights)> {
    let reference = &probe.reference;
    let w = Weights::quantized(ty, probe.values, reference.ne0)?;
    let c = compare(backend, reference, &w, &probe.x, probe.n, 0)?;
    let t = config.temperature as f64;
    let (num, den) = c
        .y_a
        .iter()
        .zip(&c.y_b)
        .fold((0f64, 0f64), |(num, den), (&a, &b)| {
            (
                num + (a as f64 - b as f64).powi(2),
                den + (a as f64).powi(2),
            )
        });
    let e = OutputError {
        kl: metrics::mean_kl(&c.y_a, &c.y_b, reference.ne1, t),
        rel_mse: if den > 0.0 { num / den } else { 0.0 },
        top1: metrics::top1_agreement(&c.y_a, &c.y_b, reference.ne1),
    };
    Ok((e, w))
}

/// Output error of `layer` quantized to `ty` (after fallback), on
/// `calibration_samples` synthetic inputs drawn from `next()`.
pub fn layer_error(
    config: &Config,
    threads: &Threads,
    next: &dyn Fn() -> Stream,
    layer: &Tensor,
    ty: QuantType,
) -> Result<OutputError> {
    let values = checked_values(layer)?;
    let ne0 = layer.row_len();
    let probe = probe(config, threads, next(), &values, ne0)?;
    let backend = cpu_backend(threads)?;
    Ok(output_error(config, &backend, &probe, plan::type_for_row(ty, ne0))?.0)
}

/// Blended output error per MiB saved against F32 when `layer` is
/// quantized to `ty` (after fallback).
pub fn sensitivity(
    config: &Config,
    threads: &Threads,
    next: &dyn Fn() -> Stream,
    layer: &Tensor,
    ty: QuantType,
) -> Result<f64> {
    let ty = plan::type_for_row(ty, layer.row_len());
    let f32_bytes = Context::data_bytes(QuantType::F32.ggml_id(), &layer.ne())?;
    let bytes = Context::data_bytes(ty.ggml_id(), &layer.ne())?;
    if bytes >= f32_bytes {
        return Err(Error::invalid(
            "type",
            format!("{} saves nothing against F32", ty.format().name),
        ));
    }
    let e = layer_error(config, threads, next, layer, ty)?;
    Ok(blended(config, e) / ((f32_bytes - bytes) as f64 / MIB))
}

fn candidates(
    config: &Config,
    threads: &Threads,
    stream: Stream,
    backend: &Backend,
    layer: &Tensor,
) -> Result<Candidates> {
    let values = checked_values(layer)?;
    let ne0 = layer.row_len();
    let probe = probe(config, threads, stream, &values, ne0)?;
    let mut types: Vec<QuantType> = PLAN_LADDER
        .iter()
        .map(|&t| plan::type_for_row(t, ne0))
        .collect();
    types.dedup();
    let threshold = config.accuracy_threshold as f64;
    let most_precise = *types.last().expect("the ladder is not empty");
    let mut out = Vec::with_capacity(types.len());
    for ty in types {
        let bytes = Context::data_bytes(ty.ggml_id(), &layer.ne())?;
        let (e, _) = output_error(config, backend, &probe, ty)?;
        // The accuracy gate: a type whose top-1 agreement misses the
        // threshold is not a candidate (the most precise always is).
        if e.top1 >= threshold || ty == most_precise {
            out.push((ty, bytes, blended(config, e)));
        }
    }
    // Keep sizes strictly increasing (a fallback may map two rungs to
    // types of equal size).
    out.dedup_by(|b, a| b.1 <= a.1);
    Ok(Candidates(out))
}

/// A type per layer whose total size is at most `1 − memory_reduction_target`
/// of the layers' F32 size, with the least total blended error: starting
/// from the most precise type of every layer, the step down with the least
/// added error per byte saved (the least sensitive layer) is taken first,
/// until the target is met. Types whose top-1 agreement on the synthetic
/// inputs (one stream from `next()` per layer) is below
/// `accuracy_threshold` are not considered (F16 always is).
pub fn plan_mixed_precision(
    config: &Config,
    threads: &Threads,
    next: &dyn Fn() -> Stream,
    layers: &[Tensor],
) -> Result<Vec<QuantType>> {
    let backend = cpu_backend(threads)?;
    let cands = layers
        .iter()
        .map(|l| candidates(config, threads, next(), &backend, l))
        .collect::<Result<Vec<_>>>()?;
    let f32_total: usize = layers
        .iter()
        .map(|l| Context::data_bytes(QuantType::F32.ggml_id(), &l.ne()))
        .sum::<Result<usize>>()?;
    let budget =
        ((1.0 - config.memory_reduction_target as f64) * f32_total as f64).floor() as usize;
    let mut at: Vec<usize> = cands.iter().map(|c| c.0.len() - 1).collect();
    let mut total: usize = cands.iter().zip(&at).map(|(c, &i)| c.0[i].1).sum();
    while total > budget {
        let best = cands
            .iter()
            .zip(&at)
            .enumerate()
            .filter(|(_, (_, &i))| i > 0)
            .map(|(l, (c, &i))| {
                let (hi, lo) = (c.0[i], c.0[i - 1]);
                let cost = (lo.2 - hi.2).max(0.0) / (hi.1 - lo.1) as f64;
                (l, cost)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let Some((l, _)) = best else {
            // Every layer is at its smallest admissible type: `total` is
            // the least size the gate allows.
            return Err(Error::invalid(
                "memory_reduction_target",
                format!(
                    "{} cannot be reached: with every layer at the smallest type whose top-1 agreement meets accuracy_threshold {} the reduction is {:.1}% (lower one of them)",
                    config.memory_reduction_target,
                    config.accuracy_threshold,
                    100.0 * (1.0 - total as f64 / f32_total as f64)
                ),
            ));
        };
        total -= cands[l].0[at[l]].1 - cands[l].0[at[l] - 1].1;
        at[l] -= 1;
    }
    Ok(cands.iter().zip(&at).map(|(c, &i)| c.0[i].0).collect())
}
