//! Progressive, gated quantization: layers are quantized once each, in
//! order, and a layer whose top-1 agreement on synthetic inputs falls below
//! `accuracy_threshold` is raised one precision step at a time until it
//! passes.

use super::check::checked_values;
use super::config::Config;
use super::layer::LayerClass;
use super::measure::{cpu_backend, Weights};
use super::plan;
use super::sensitivity::{output_error, probe};
use super::stats::Quantized;
use super::tensors::{is_quantized, new_like};
use super::threads::Threads;
use crate::error::{Error, Result};
use crate::ggml::compute::Backend;
use crate::ggml::{Context, Tensor};
use crate::quant::QuantType;
use crate::rng::Stream;

/// A layer's weights at one type, with its measured agreement.
pub struct Gated {
    pub weights: Weights,
    pub agreement: f64,
    /// The types tried before `weights.ty`, each with its agreement.
    pub rejected: Vec<(QuantType, f64)>,
}

/// `values` (rows of `ne0`) quantized to `start`, raised one precision
/// step at a time until top-1 agreement on `calibration_samples` synthetic
/// inputs (keyed by `seed`) reaches `accuracy_threshold` (F32 always does).
pub fn gate(
    config: &Config,
    threads: &Threads,
    seed: u64,
    backend: &Backend,
    values: &[f32],
    ne0: usize,
    start: QuantType,
) -> Result<Gated> {
    // Inputs keyed by the row length: the same layer gets the same
    // measurement (and gate decision) whatever was drawn before.
    let probe = probe(
        config,
        threads,
        Stream::keyed(seed, ne0 as u64),
        values,
        ne0,
    )?;
    let threshold = config.accuracy_threshold as f64;
    let mut ty = plan::type_for_row(start, ne0);
    let mut rejected = Vec::new();
    loop {
        let (e, weights) = output_error(config, backend, &probe, ty)?;
        let agreement = e.top1;
        match plan::raise(ty) {
            Some(next) if agreement < threshold => {
                rejected.push((ty, agreement));
                ty = plan::type_for_row(next, ne0);
            }
            _ => {
                return Ok(Gated {
                    weights,
                    agreement,
                    rejected,
                })
            }
        }
    }
}

/// Brings `layers[0..=current]` to their quantized form, and says what
/// it made (one [`Quantized`] per replaced layer, for the statistics).
/// What a layer needs follows from the tensor alone (nothing is
/// remembered between calls, so a new tensor at the address of an old one
/// is treated as new): block-quantized layers are left as they are; the
/// others are gated from their class's type, and a layer whose gate ends at
/// its own type (an F16 layer kept at F16, say) is left as it is too, so
/// calling again changes nothing. The gate's inputs depend only on `seed`
/// and the row length, so a layer's type depends only on the seed, its
/// values and the configuration. The pointers change only when every layer
/// succeeded. With `progressive_layers > 0`, a call may gate at most that
/// many layers.
pub fn progressive(
    config: &Config,
    threads: &Threads,
    seed: u64,
    gctx: &Context,
    layers: &mut [*mut crate::ggml::ffi::GgmlTensor],
    classes: &[LayerClass],
    current: usize,
) -> Result<Vec<Quantized>> {
    let mut pending = Vec::new();
    for (i, &ptr) in layers.iter().enumerate().take(current + 1) {
        let t = unsafe { Tensor::from_raw(ptr, "layers[i]") }
            .map_err(|e| Error::invalid("layers", format!("layer {i}: {e}")))?;
        if !is_quantized(&t) {
            pending.push((i, t));
        }
    }
    let backend = cpu_backend(threads)?;
    let mut done = Vec::with_capacity(pending.len());
    for (i, src) in pending {
        let wanted = config.qtype_for(classes[i]);
        let values = checked_values(&src)?;
        let gated = gate(
            config,
            threads,
            seed,
            &backend,
            &values,
            src.row_len(),
            wanted,
        )?;
        if src.quant_type().is_ok_and(|t| t == gated.weights.ty) {
            // Already in the form the gate chose: nothing to replace.
            continue;
        }
        done.push((i, src, wanted, gated));
    }
    let cap = config.progressive_layers;
    if cap > 0 && done.len() > cap {
        return Err(Error::invalid(
            "current_layer",
            format!(
                "{} layers are waiting, more than progressive_layers = {cap} per call",
                done.len()
            ),
        ));
    }
    // Allocate only now, and only when everything fits, so a failure
    // leaves the context untouched.
    let need: usize = done
        .iter()
        .map(|(_, _, _, g)| Context::tensor_cost(g.weights.bytes.len()))
        .sum();
    if need > gctx.free_bytes() {
        return Err(Error::NoRoom {
            need,
            free: gctx.free_bytes(),
        });
    }
    let mut out = Vec::with_capacity(done.len());
    for (i, src, wanted, gated) in done {
        let mut dst = new_like(gctx, &src, gated.weights.ty)?;
        dst.bytes_mut()?.copy_from_slice(&gated.weights.bytes);
        out.push((i, src, wanted, gated, dst.finish()));
    }
    let mut made = Vec::with_capacity(out.len());
    for (i, src, wanted, gated, dst) in out {
        let mut why = Vec::new();
        if plan::type_for_row(wanted, src.row_len()) != wanted {
            why.push(plan::fallback_reason(wanted, src.row_len()));
        }
        why.extend(gated.rejected.iter().map(|(ty, a)| {
            format!(
                "{} top-1 {:.4} < {}",
                ty.format().name,
                a,
                config.accuracy_threshold
            )
        }));
        let why = (!why.is_empty()).then(|| why.join("; "));
        made.push(Quantized::of(&src, &dst, wanted, why));
        layers[i] = dst.as_ptr();
    }
    Ok(made)
}
