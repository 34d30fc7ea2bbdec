//! Distribution metrics and measured validation.

use super::context::{session, QatContext};
use super::error::set_last_error;
use super::guard;
use super::types::{ggml_qat_stats_t, GgmlBackendT, GgmlContext, GgmlTensor};
use crate::error::Error;
use crate::ggml::Tensor;

/// KL(P‖Q) with P = softmax(original / T) and Q = softmax(quantized / T)
/// along ne[0], averaged over rows (log-sum-exp, double accumulation). Any
/// implemented type (quantized tensors are dequantized). Identical tensors
/// give 0. INFINITY when the shapes differ; NAN on NULL arguments, T <= 0 or
/// NaN, or non-finite data. `ggml_ctx` is not used and may be NULL.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_kl_divergence_loss(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    original: *mut GgmlTensor,
    quantized: *mut GgmlTensor,
    temperature: f32,
) -> f32 {
    let _ = ggml_ctx;
    guard("ggml_qat_kl_divergence_loss", f32::NAN, || {
        let s = session(ctx)?;
        let p = Tensor::from_raw(original, "original")?;
        let q = Tensor::from_raw(quantized, "quantized")?;
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(Error::invalid(
                "temperature",
                format!("{temperature} (must be > 0)"),
            ));
        }
        if p.ne() != q.ne() {
            set_last_error(format!(
                "ggml_qat_kl_divergence_loss: shapes differ: original {:?}, quantized {:?}",
                p.ne(),
                q.ne()
            ));
            return Ok(f32::INFINITY);
        }
        Ok(s.kl_divergence(&p, &q, temperature)? as f32)
    })
}

/// Not available yet: returns all-zero stats with an error message.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_validate_performance(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    original_model: *mut GgmlTensor,
    quantized_model: *mut GgmlTensor,
    test_data: *mut GgmlTensor,
) -> ggml_qat_stats_t {
    let _ = (ctx, ggml_ctx, original_model, quantized_model, test_data);
    guard(
        "ggml_qat_validate_performance",
        ggml_qat_stats_t::default(),
        || {
            Err(Error::Unsupported(
                "not available yet in this version".into(),
            ))
        },
    )
}

/// Not available yet: returns 0 with an error message.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_benchmark_inference_speed(
    ctx: *mut QatContext,
    backend: GgmlBackendT,
    model: *mut GgmlTensor,
    test_input: *mut GgmlTensor,
    n_iterations: std::ffi::c_int,
) -> f32 {
    let _ = (ctx, backend, model, test_input, n_iterations);
    guard("ggml_qat_benchmark_inference_speed", 0.0, || {
        Err(Error::Unsupported(
            "not available yet in this version".into(),
        ))
    })
}
