//! Calibration data, layer quantization, memory estimates and type choice.

use std::ffi::c_int;

use super::context::{session, QatContext};
use super::ffi_boundary;
use super::types::{GgmlBackendT, GgmlContext, GgmlTensor, GgmlType, LayerTypeArg};
use crate::error::{Error, Result};
use crate::ggml::compute::Backend;
use crate::ggml::{backend, Context, Tensor};

/// Reads `n` C array elements, or fails naming `what` when the pointer is
/// NULL (and `n > 0`).
pub(crate) unsafe fn c_slice<'a, T>(
    ptr: *const T,
    n: usize,
    what: &'static str,
) -> Result<&'a [T]> {
    match n {
        0 => Ok(&[]),
        _ if ptr.is_null() => Err(Error::Null(what)),
        _ => Ok(std::slice::from_raw_parts(ptr, n)),
    }
}

/// A new F32 tensor in `ggml_ctx` of `n_dims` (1 to 4) dimensions `shape`,
/// filled with i.i.d. Normal(mean, std) values from the context's seeded
/// generator (the same seed and calls give the same bytes, whatever the
/// thread count; std == 0 gives all `mean`). NULL on bad arguments (NaN or
/// infinite mean or std, std < 0, |mean| + 8.7 std beyond the F32 range),
/// or when `ggml_ctx` has no room.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_generate_calibration_data(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    shape: *mut i64,
    n_dims: c_int,
    mean: f32,
    std: f32,
) -> *mut GgmlTensor {
    ffi_boundary!(std::ptr::null_mut(), {
        let s = session(ctx)?;
        let gctx = Context::from_raw(ggml_ctx, "ggml_ctx")?;
        if !(1..=4).contains(&n_dims) {
            return Err(Error::invalid(
                "n_dims",
                format!("{n_dims} (must be 1 to 4)"),
            ));
        }
        let shape = c_slice(shape, n_dims as usize, "shape")?;
        Ok(s.calibration_data(&gctx, shape, mean, std)?.as_ptr())
    })
}

/// A new tensor in `ggml_ctx`, same shape and name as `src`, holding `src`
/// quantized to the type of `layer_type` (config types; ATOMSPACE and ECAN
/// Q8_0, MOSES Q6_K), byte-identical to ggml_quantize_chunk() without
/// imatrix. When ne[0] is not a multiple of the type's block, the type falls
/// back as llama.cpp does (Q2_K, Q3_K -> Q4_0; IQ4_XS -> IQ4_NL; Q4_K ->
/// Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0; then F16), listed by
/// ggml_qat_get_fallbacks(). `src` may be F32, F16, BF16 or any type
/// ggml-qat implements, any strides or byte offset (read and converted a
/// piece of rows at a time: the extra memory does not grow with the
/// tensor). NULL on bad arguments, non-finite data, or a ggml context
/// without room; `ggml_ctx` is then left as it was.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_quantize_layer(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    src: *mut GgmlTensor,
    layer_type: LayerTypeArg,
) -> *mut GgmlTensor {
    ffi_boundary!(std::ptr::null_mut(), {
        let s = session(ctx)?;
        let gctx = Context::from_raw(ggml_ctx, "ggml_ctx")?;
        let src = Tensor::from_raw(src, "src")?;
        let class = layer_type.class("layer_type")?;
        Ok(s.quantize_layer(&gctx, &src, class)?.as_ptr())
    })
}

/// Like ggml_qat_quantize_layer(), but the block scales, mins and codes are
/// searched to minimize the layer's output error ||(W - W')X||^2 on
/// `calibration` (F32/F16/BF16, ne[0] = src->ne[0], ne[1] = samples; NULL:
/// the weight-space error, the expectation under synthetic N(0,1) inputs)
/// instead of ggml's weight-space heuristic. The result is never worse than
/// ggml_quantize_chunk() (with or without the inputs as imatrix) on those
/// inputs, and is an ordinary tensor of the same type and size that any ggml
/// reads. NULL on bad arguments.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_quantize_layer_optimized(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    src: *mut GgmlTensor,
    layer_type: LayerTypeArg,
    calibration: *mut GgmlTensor,
) -> *mut GgmlTensor {
    ffi_boundary!(std::ptr::null_mut(), {
        let s = session(ctx)?;
        let gctx = Context::from_raw(ggml_ctx, "ggml_ctx")?;
        let src = Tensor::from_raw(src, "src")?;
        let class = layer_type.class("layer_type")?;
        let x = Tensor::from_raw_opt(calibration, "calibration")?;
        Ok(s.quantize_optimized(&gctx, &src, class, x.as_ref())?
            .as_ptr())
    })
}

/// Like ggml_qat_quantize_layer() with an explicit type instead of a layer
/// class (the same fallback applies): for applying a plan from
/// ggml_qat_plan_mixed_precision(). NULL on bad arguments.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_quantize_tensor(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    src: *mut GgmlTensor,
    qtype: GgmlType,
) -> *mut GgmlTensor {
    ffi_boundary!(std::ptr::null_mut(), {
        let s = session(ctx)?;
        let gctx = Context::from_raw(ggml_ctx, "ggml_ctx")?;
        let src = Tensor::from_raw(src, "src")?;
        let ty = crate::qat::config::producible("qtype", qtype.0)?;
        Ok(s.quantize_as(&gctx, &src, ty)?.as_ptr())
    })
}

/// The exact bytes (sum of ggml_nbytes) that ggml_qat_quantize_layer() would
/// produce for `tensors[i]` as `layer_types[i]`, fallback included; tensors
/// already block-quantized count as they are. 0 on bad arguments (and for
/// n_tensors == 0).
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_estimate_memory_usage(
    ctx: *mut QatContext,
    tensors: *mut *mut GgmlTensor,
    layer_types: *mut LayerTypeArg,
    n_tensors: c_int,
) -> usize {
    ffi_boundary!(0, {
        let s = session(ctx)?;
        let n = usize::try_from(n_tensors)
            .map_err(|_| Error::invalid("n_tensors", format!("{n_tensors} is negative")))?;
        let ptrs = c_slice(tensors, n, "tensors")?;
        let kinds = c_slice(layer_types, n, "layer_types")?;
        let tensors = ptrs
            .iter()
            .map(|&p| Tensor::from_raw(p, "tensors[i]"))
            .collect::<Result<Vec<_>>>()?;
        let classes = kinds
            .iter()
            .map(|k| k.class("layer_types[i]"))
            .collect::<Result<Vec<_>>>()?;
        s.estimate_memory(&tensors, &classes)
    })
}

/// The quantization type for `layer_type` on `backend`. NULL backend: the
/// default table (embeddings Q8_0, attention Q4_K, FFN Q6_K, norms Q8_0,
/// ATOMSPACE/ECAN Q8_0, MOSES Q6_K). Otherwise the first type of the class's
/// preference list whose MUL_MAT the backend supports
/// (ggml_backend_supports_op); for an accelerator device (BLAS, AMX: used
/// beside the CPU backend, which runs what it refuses) that supports none of
/// them, the CPU backend's answer. GGML_TYPE_F32 with an error on bad
/// arguments or when nothing in the list can run.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_get_optimal_qtype(
    layer_type: LayerTypeArg,
    backend: GgmlBackendT,
) -> GgmlType {
    ffi_boundary!(GgmlType(0), {
        let class = layer_type.class("layer_type")?;
        let ty = if backend.is_null() {
            crate::qat::Config::default().qtype_for(class)
        } else {
            backend::optimal_type(
                &Backend::borrowed(backend)?,
                &crate::qat::plan::preference(class),
            )?
        };
        Ok(GgmlType(ty.ggml_id()))
    })
}

/// Brings layers[0..=current_layer] to their quantized form, replacing the
/// pointers with new tensors of `ggml_ctx`. Idempotent, judged from each
/// tensor alone (nothing is remembered by address): block-quantized layers
/// are left as they are, so calls with current_layer = 0, 1, 2, ... quantize
/// each layer once. Each other layer gets its class's type and is checked on
/// config calibration_samples synthetic inputs (Y = W X with ggml's CPU
/// backend; the inputs depend only on the seed and ne[0], so a layer's type
/// depends only on the seed, its values and the config); while its top-1
/// agreement is below config accuracy_threshold it is raised one precision
/// step (... Q4_K -> Q5_K -> Q6_K -> Q8_0 -> F16 -> F32). A layer whose
/// check ends at its own type (an F16 layer kept at F16) is left as it is.
/// With config progressive_layers > 0 a call may replace at most that many
/// layers.
/// False on bad arguments, non-finite data or a context without room; then
/// no pointer changes.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_progressive_quantize(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    layers: *mut *mut GgmlTensor,
    layer_types: *mut LayerTypeArg,
    n_layers: c_int,
    current_layer: c_int,
) -> bool {
    ffi_boundary!(false, {
        let s = session(ctx)?;
        let gctx = Context::from_raw(ggml_ctx, "ggml_ctx")?;
        let n = usize::try_from(n_layers)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::invalid("n_layers", format!("{n_layers} (must be > 0)")))?;
        let current = usize::try_from(current_layer)
            .ok()
            .filter(|&c| c < n)
            .ok_or_else(|| {
                Error::invalid(
                    "current_layer",
                    format!("{current_layer} (must be in 0..{n})"),
                )
            })?;
        let mut work = c_slice(layers, n, "layers")?[..=current].to_vec();
        let classes = c_slice(layer_types, n, "layer_types")?[..=current]
            .iter()
            .map(|k| k.class("layer_types[i]"))
            .collect::<Result<Vec<_>>>()?;
        s.progressive(&gctx, &mut work, &classes, current)?;
        std::ptr::copy_nonoverlapping(work.as_ptr(), layers, work.len());
        Ok(true)
    })
}
