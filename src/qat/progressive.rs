//! Progressive, gated quantization: layers are quantized once each, in
//! order, and a layer whose top-1 agreement on synthetic inputs falls below
//! `accuracy_threshold` is raised one precision step at a time until it
//! passes.

use super::layer::LayerClass;
use super::measure::Weights;
use super::plan;
use super::session::Session;
use crate::error::{Error, Result};
use crate::ggml::compute::Backend;
use crate::ggml::{Context, Tensor};
use crate::quant::QuantType;

/// A layer's weights at one type, with its measured agreement.
pub struct Gated {
    pub weights: Weights,
    pub agreement: f64,
    /// The types tried before `weights.ty`, each with its agreement.
    pub rejected: Vec<(QuantType, f64)>,
}

impl Session {
    /// `values` (rows of `ne0`) quantized to `start`, raised one precision
    /// step at a time until top-1 agreement on `calibration_samples` synthetic
    /// inputs reaches `accuracy_threshold` (F32 always does).
    pub fn gate(
        &self,
        backend: &Backend,
        values: &[f32],
        ne0: usize,
        start: QuantType,
    ) -> Result<Gated> {
        let probe = self.probe(values, ne0)?;
        let threshold = self.config().accuracy_threshold as f64;
        let mut ty = plan::type_for_row(start, ne0);
        let mut rejected = Vec::new();
        loop {
            let (e, weights) = self.output_error(backend, &probe, ty)?;
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

    /// Brings `layers[0..=current]` to their quantized form. What a layer
    /// needs follows from the tensor alone (nothing is remembered between
    /// calls, so a new tensor at the address of an old one is treated as
    /// new): block-quantized layers are left as they are; the others are
    /// gated from their class's type, and a layer whose gate ends at its own
    /// type (an F16 layer kept at F16, say) is left as it is too, so calling
    /// again changes nothing. The gate's inputs depend only on the seed and
    /// the row length, so a layer's type depends only on the seed, its
    /// values and the configuration. The pointers change only when every
    /// layer succeeded. With `progressive_layers > 0`, a call may gate at
    /// most that many layers.
    pub fn progressive(
        &self,
        gctx: &Context,
        layers: &mut [*mut crate::ggml::ffi::GgmlTensor],
        classes: &[LayerClass],
        current: usize,
    ) -> Result<usize> {
        let mut pending = Vec::new();
        for (i, &ptr) in layers.iter().enumerate().take(current + 1) {
            let t = unsafe { Tensor::from_raw(ptr, "layers[i]") }
                .map_err(|e| Error::invalid("layers", format!("layer {i}: {e}")))?;
            if !self.is_quantized(&t) {
                pending.push((i, t));
            }
        }
        let backend = self.cpu_backend()?;
        let mut done = Vec::with_capacity(pending.len());
        for (i, src) in pending {
            let wanted = self.config().qtype_for(classes[i]);
            let values = self.checked_values(&src)?;
            let gated = self.gate(&backend, &values, src.row_len(), wanted)?;
            if src.quant_type().is_ok_and(|t| t == gated.weights.ty) {
                // Already in the form the gate chose: nothing to replace.
                continue;
            }
            done.push((i, src, wanted, gated));
        }
        let cap = self.config().progressive_layers;
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
            let mut dst = self.new_like(gctx, &src, gated.weights.ty)?;
            dst.bytes_mut()?.copy_from_slice(&gated.weights.bytes);
            let dst = dst.finish();
            out.push((i, src, wanted, gated, dst));
        }
        let count = out.len();
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
                    self.config().accuracy_threshold
                )
            }));
            let why = (!why.is_empty()).then(|| why.join("; "));
            self.record_quantized(&src, &dst, wanted, why);
            layers[i] = dst.as_ptr();
        }
        Ok(count)
    }
}
