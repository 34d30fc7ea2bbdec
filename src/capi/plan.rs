//! Sensitivity and the mixed-precision plan (extensions).

use std::ffi::c_int;

use super::context::{session, QatContext};
use super::ffi_boundary;
use super::quantize::c_slice;
use super::types::{GgmlTensor, GgmlType};
use crate::error::{Error, Result};
use crate::ggml::Tensor;

/// Sensitivity of `layer` to quantization to `qtype` (after fallback): its
/// output error on config calibration_samples synthetic N(0,1) inputs
/// (Y = W X with ggml's CPU backend), kl_divergence_weight * KL of
/// softmax(Y / T) + (1 - kl_divergence_weight) * ||Y - Y'||^2 / ||Y||^2,
/// divided by the MiB saved against F32. Lower is safer to quantize. NAN on
/// bad arguments or a type that saves nothing.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_layer_sensitivity(
    ctx: *mut QatContext,
    layer: *mut GgmlTensor,
    qtype: GgmlType,
) -> f32 {
    ffi_boundary!(f32::NAN, {
        let s = session(ctx)?;
        let t = Tensor::from_raw(layer, "layer")?;
        Ok(s.sensitivity(&t, crate::qat::config::producible("qtype", qtype.0)?)? as f32)
    })
}

/// Picks a type per layer (from Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0, F16,
/// after fallback) so that the total size is at most
/// (1 - memory_reduction_target) of the layers' F32 size with the least
/// total output error (as in ggml_qat_layer_sensitivity): the least
/// sensitive layers are quantized first. Writes `n_tensors` types to
/// `types_out`. False (nothing written) on bad arguments or an unreachable
/// target.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_plan_mixed_precision(
    ctx: *mut QatContext,
    tensors: *mut *mut GgmlTensor,
    n_tensors: c_int,
    types_out: *mut GgmlType,
) -> bool {
    ffi_boundary!(false, {
        let s = session(ctx)?;
        let n = usize::try_from(n_tensors)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::invalid("n_tensors", format!("{n_tensors} (must be > 0)")))?;
        if types_out.is_null() {
            return Err(Error::Null("types_out"));
        }
        let layers = c_slice(tensors, n, "tensors")?
            .iter()
            .map(|&p| Tensor::from_raw(p, "tensors[i]"))
            .collect::<Result<Vec<_>>>()?;
        let plan = s.plan_mixed_precision(&layers)?;
        for (i, ty) in plan.into_iter().enumerate() {
            *types_out.add(i) = GgmlType(ty.ggml_id());
        }
        Ok(true)
    })
}
