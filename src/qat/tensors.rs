//! The protocol's operations on ggml tensors: calibration data, a tensor
//! quantized into a new tensor (ggml's bytes, or the output-aware search),
//! KL divergence between two tensors, and the bytes a quantization would
//! take. Each takes what it reads (the threads, a configuration or a
//! random stream) and returns what it made; counting it is the caller's.

use super::calibration::{fill_normal, MAX_ABS_NORMAL};
use super::check::checked_values;
use super::config::Config;
use super::layer::LayerClass;
use super::measure::given_inputs;
use super::metrics;
use super::optimize::quantize_output_aware;
use super::plan;
use super::stats::Quantized;
use super::threads::Threads;
use crate::error::{Error, Result};
use crate::ggml::{Context, NewTensor, Tensor};
use crate::quant::rows::{Finite, FromError};
use crate::quant::{self, QuantType};
use crate::rng::Stream;

/// A new F32 tensor of `shape` in `gctx`, filled with Normal(mean, std)
/// from the stream `next_stream` gives (called once the tensor exists).
pub fn calibration_data(
    threads: &Threads,
    gctx: &Context,
    shape: &[i64],
    mean: f32,
    std: f32,
    next_stream: impl FnOnce() -> Stream,
) -> Result<Tensor> {
    if !mean.is_finite() {
        return Err(Error::invalid("mean", format!("{mean} is not finite")));
    }
    if !(std.is_finite() && std >= 0.0) {
        return Err(Error::invalid(
            "std",
            format!("{std} is not a finite value >= 0"),
        ));
    }
    if mean.abs() as f64 + MAX_ABS_NORMAL * std as f64 > f32::MAX as f64 {
        return Err(Error::invalid(
            "std",
            format!("mean {mean} and std {std} give values beyond the F32 range"),
        ));
    }
    let mut t = gctx.new_tensor(QuantType::F32.ggml_id(), shape)?;
    let stream = next_stream();
    let out = t.f32_mut()?;
    threads.run_pieces(|| fill_normal(out, &stream, mean, std));
    Ok(t.finish())
}

/// A new tensor of `gctx` of type `ty` with the shape and name of `src`.
pub fn new_like(gctx: &Context, src: &Tensor, ty: QuantType) -> Result<NewTensor> {
    let mut dst = gctx.new_tensor(ty.ggml_id(), &src.ne()[..src.n_dims()])?;
    dst.set_name(&src.name());
    Ok(dst)
}

/// Whether `t` already holds block-quantized weights (known from its
/// type alone: nothing is remembered about tensors between calls).
pub fn is_quantized(t: &Tensor) -> bool {
    t.quant_type().is_ok_and(plan::is_block_quantized)
}

/// `src` quantized to `wanted` (after fallback) as a new tensor of
/// `gctx` with the same shape and name.
///
/// The source is read a piece of rows at a time (converted to F32 in a
/// per-thread buffer unless it is contiguous aligned F32), checked for
/// non-finite values and quantized while in the cache: one pass over
/// the data, extra memory bounded by a piece per thread. The output is
/// written where ggml will place the result and the tensor created
/// afterwards (see [`Context::next_tensor_data`]), so non-finite data,
/// found during that pass, leaves `gctx` untouched.
pub fn quantize_as(
    threads: &Threads,
    gctx: &Context,
    src: &Tensor,
    wanted: QuantType,
) -> Result<(Tensor, Quantized)> {
    let rows = src.rows()?;
    let row_len = src.row_len();
    let ty = plan::type_for_row(wanted, row_len);
    let shape = &src.ne()[..src.n_dims()];
    let quantize = |out: &mut [u8], finite| {
        threads
            .run_pieces(|| quant::rows::quantize_from(ty, &rows, out, None, finite))
            .map_err(|e| match e {
                FromError::Quant(e) => Error::Quant(e),
                FromError::Source(never) => match never {},
                FromError::NonFinite { index, value } => Error::NonFinite {
                    tensor: src.name(),
                    index,
                    value,
                },
            })
    };
    // Written into the pool where ggml will put the result's data, and the
    // tensor created only when that succeeded: a failure (a non-finite
    // value found while quantizing) leaves the context as it was, and
    // success costs no copy.
    // SAFETY: ggml contexts are single-threaded: nothing else creates
    // tensors in `gctx` during this call.
    let spot = unsafe { gctx.next_tensor_data(ty.ggml_id(), shape)? };
    let spot_ptr = spot.as_ptr();
    quantize(spot, Finite::Check)?;
    let mut dst = new_like(gctx, src, ty)?;
    let out = dst.bytes_mut()?;
    if out.as_ptr() != spot_ptr {
        // This ggml lays its pool out otherwise: quantize in place.
        quantize(out, Finite::Trust)?;
    }
    let dst = dst.finish();
    let why = (ty != wanted).then(|| plan::fallback_reason(wanted, row_len));
    let made = Quantized::of(src, &dst, wanted, why);
    Ok((dst, made))
}

/// `src` quantized to `wanted` (after fallback) with the output-aware
/// search of [`super::optimize`]: the block parameters minimize
/// ‖(W − Ŵ)X‖² on `calibration` (rows of ne[0] = `src`'s ne[0]), or the
/// weight-space error without inputs. Never worse than ggml's quantizer on
/// those inputs; an ordinary tensor of the same type and size.
pub fn quantize_optimized(
    threads: &Threads,
    gctx: &Context,
    src: &Tensor,
    wanted: QuantType,
    calibration: Option<&Tensor>,
) -> Result<(Tensor, Quantized)> {
    let values = checked_values(src)?;
    let row_len = src.row_len();
    let ty = plan::type_for_row(wanted, row_len);
    let x = calibration.map(|x| given_inputs(row_len, x)).transpose()?;
    let bytes = threads.run(|| {
        quantize_output_aware(
            ty,
            &values,
            row_len,
            x.as_ref().map(|(x, _)| x.as_slice()),
            x.as_ref().map_or(0, |(_, n)| *n),
        )
    })?;
    let mut dst = new_like(gctx, src, ty)?;
    dst.bytes_mut()?.copy_from_slice(&bytes);
    let dst = dst.finish();
    let why = (ty != wanted).then(|| plan::fallback_reason(wanted, row_len));
    let made = Quantized::of(src, &dst, wanted, why);
    Ok((dst, made))
}

/// Mean over rows of KL(softmax(original/T) ‖ softmax(quantized/T)).
pub fn kl_divergence(
    threads: &Threads,
    original: &Tensor,
    quantized: &Tensor,
    temperature: f32,
) -> Result<f64> {
    if original.ne() != quantized.ne() {
        return Err(Error::invalid(
            "quantized",
            format!(
                "shape {:?} differs from the original's {:?}",
                quantized.ne(),
                original.ne()
            ),
        ));
    }
    let (p, q) = (original.rows()?, quantized.rows()?);
    threads
        .run_pieces(|| metrics::mean_kl_rows(&p, &q, temperature as f64))
        .map_err(|e| match e {
            metrics::KlError::NonFinite {
                which,
                index,
                value,
            } => Error::NonFinite {
                tensor: [original, quantized][which].name(),
                index,
                value,
            },
            metrics::KlError::Alloc { bytes } => Error::Alloc {
                bytes,
                what: "a piece of rows".into(),
            },
        })
}

/// Exact bytes the tensors take once quantized with `config` (fallback
/// included); block-quantized tensors count as they are.
pub fn estimate_memory(
    config: &Config,
    tensors: &[Tensor],
    classes: &[LayerClass],
) -> Result<usize> {
    let mut total = 0usize;
    for (t, &class) in tensors.iter().zip(classes) {
        let bytes = match t.quant_type()? {
            ty if plan::is_block_quantized(ty) => t.nbytes(),
            _ => {
                let ty = plan::type_for_row(config.qtype_for(class), t.row_len());
                Context::data_bytes(ty.ggml_id(), &t.ne())?
            }
        };
        total = total
            .checked_add(bytes)
            .ok_or_else(|| Error::invalid("tensors", "total size overflows size_t"))?;
    }
    Ok(total)
}
