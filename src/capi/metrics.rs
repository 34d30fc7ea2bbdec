//! Distribution metrics and measured validation.

use super::context::{session, QatContext};
use super::error::set_last_error;
use super::ffi_boundary;
use super::types::{ggml_qat_stats_t, GgmlBackendT, GgmlContext, GgmlTensor};
use crate::error::Error;
use crate::ggml::compute::Backend;
use crate::ggml::Tensor;
use std::ffi::c_int;

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
    ffi_boundary!(f32::NAN, |name| {
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
                "{name}: shapes differ: original {:?}, quantized {:?}",
                p.ne(),
                q.ne()
            ));
            return Ok(f32::INFINITY);
        }
        Ok(s.kl_divergence(&p, &q, temperature)? as f32)
    })
}

/// Runs the two models as the same linear layer, Y = ggml_mul_mat(W, X),
/// with ggml's CPU backend on `test_data` X (ne[0] = the model's ne[0],
/// ne[1] = samples; NULL: config calibration_samples synthetic N(0,1)
/// samples). Sizes are ggml_nbytes in MiB; compression_ratio = quantized /
/// original; kl_divergence_loss = mean per-sample KL of softmax(Y / T) at the
/// config temperature; accuracy_retention = share of samples whose top-1
/// output agrees; inference_speedup = measured median original time /
/// quantized time. The figures are also kept for ggml_qat_get_stats(). All
/// zero on bad arguments (NULL, shapes that differ, non-finite inputs).
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_validate_performance(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    original_model: *mut GgmlTensor,
    quantized_model: *mut GgmlTensor,
    test_data: *mut GgmlTensor,
) -> ggml_qat_stats_t {
    let _ = ggml_ctx;
    ffi_boundary!(ggml_qat_stats_t::default(), {
        let s = session(ctx)?;
        let a = Tensor::from_raw(original_model, "original_model")?;
        let b = Tensor::from_raw(quantized_model, "quantized_model")?;
        let x = Tensor::from_raw_opt(test_data, "test_data")?;
        Ok(s.validate(&a, &b, x.as_ref())?.into())
    })
}

/// Runs Y = ggml_mul_mat(model, test_input) on `backend` (NULL: the CPU
/// backend) `n_iterations` times after a warm-up, and the same with an F32
/// copy of the model; returns median F32 time / median model time (> 1: the
/// model is faster). The absolute times are kept for
/// ggml_qat_get_benchmark_times(). 0 on bad arguments (NULL model or input,
/// n_iterations <= 0 or > 1000000, ne[0] that differ, an operation the
/// backend lacks). Several threads may pass the same backend: calls of
/// the library on one backend run one after the other (ggml backends are
/// not safe to compute on from two threads at once); the library cannot
/// keep other code of the caller off the backend meanwhile.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_benchmark_inference_speed(
    ctx: *mut QatContext,
    backend: GgmlBackendT,
    model: *mut GgmlTensor,
    test_input: *mut GgmlTensor,
    n_iterations: c_int,
) -> f32 {
    ffi_boundary!(0.0, {
        let s = session(ctx)?;
        let m = Tensor::from_raw(model, "model")?;
        let x = Tensor::from_raw(test_input, "test_input")?;
        let n = usize::try_from(n_iterations)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::invalid("n_iterations", format!("{n_iterations} (must be > 0)"))
            })?;
        let backend = Backend::from_raw_or_cpu(backend, s.threads().count())?;
        Ok(s.benchmark(&backend, &m, &x, n)? as f32)
    })
}

/// The median times in seconds of the latest
/// ggml_qat_benchmark_inference_speed() on this context: the F32 copy and
/// the model. False (outputs untouched) for a NULL context or before any
/// benchmark.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_get_benchmark_times(
    ctx: *const QatContext,
    f32_seconds: *mut f64,
    model_seconds: *mut f64,
) -> bool {
    ffi_boundary!(false, {
        let t = session(ctx)?.benchmark_times();
        if t.iterations == 0 {
            return Err(Error::invalid(
                "ctx",
                "no benchmark has run on this context",
            ));
        }
        if let Some(p) = f32_seconds.as_mut() {
            *p = t.f32_seconds;
        }
        if let Some(p) = model_seconds.as_mut() {
            *p = t.model_seconds;
        }
        Ok(true)
    })
}
