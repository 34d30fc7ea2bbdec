//! Context life cycle, configuration and the small extensions.

use std::ffi::{c_char, c_int};

use super::ffi_boundary;
use super::types::{ggml_qat_config_t, ggml_qat_stats_t, CBool, GgmlType};
use crate::error::{Error, Result};
use crate::qat::config::RawConfig;
use crate::qat::{Config, Session};

/// The opaque `ggml_qat_context_t`.
pub struct QatContext {
    pub(crate) session: Session,
}

/// The session behind `ctx`, or an error naming the NULL argument.
pub(crate) unsafe fn session<'a>(ctx: *const QatContext) -> Result<&'a Session> {
    ctx.as_ref().map(|c| &c.session).ok_or(Error::Null("ctx"))
}

/// The default configuration: embeddings Q8_0, attention Q4_K, FFN Q6_K,
/// norms Q8_0, kl_divergence_weight 0.5, temperature 3, progressive_layers 0
/// (all), calibration_samples 128, memory_reduction_target 0.75,
/// accuracy_threshold 0.98, OpenCog structures enabled.
// Not wrapped in `ffi_boundary!`: it cannot panic (constants and field copies only).
#[no_mangle]
pub extern "C" fn ggml_qat_default_config() -> ggml_qat_config_t {
    let d = Config::default();
    ggml_qat_config_t {
        embedding_qtype: GgmlType(d.embedding_qtype.ggml_id()),
        attention_qtype: GgmlType(d.attention_qtype.ggml_id()),
        ffn_qtype: GgmlType(d.ffn_qtype.ggml_id()),
        layernorm_qtype: GgmlType(d.layernorm_qtype.ggml_id()),
        kl_divergence_weight: d.kl_divergence_weight,
        temperature: d.temperature,
        progressive_layers: d.progressive_layers as c_int,
        calibration_samples: d.calibration_samples as c_int,
        memory_reduction_target: d.memory_reduction_target,
        accuracy_threshold: d.accuracy_threshold,
        enable_atomspace: CBool::from(d.enable_atomspace),
        enable_moses: CBool::from(d.enable_moses),
        enable_ecan: CBool::from(d.enable_ecan),
    }
}

/// A new context with a copy of `config` (NULL: the default configuration).
/// Returns NULL when a field is invalid (NaN, a negative count, a target
/// outside its range, a type ggml-qat cannot produce); see
/// ggml_qat_last_error(). Free with ggml_qat_free().
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_init(config: *const ggml_qat_config_t) -> *mut QatContext {
    ffi_boundary!(std::ptr::null_mut(), {
        let config = match config.as_ref() {
            None => Config::default(),
            Some(c) => RawConfig {
                qtypes: [
                    c.embedding_qtype.0,
                    c.attention_qtype.0,
                    c.ffn_qtype.0,
                    c.layernorm_qtype.0,
                ],
                kl_divergence_weight: c.kl_divergence_weight,
                temperature: c.temperature,
                progressive_layers: c.progressive_layers,
                calibration_samples: c.calibration_samples,
                memory_reduction_target: c.memory_reduction_target,
                accuracy_threshold: c.accuracy_threshold,
                enables: [
                    c.enable_atomspace.get(),
                    c.enable_moses.get(),
                    c.enable_ecan.get(),
                ],
            }
            .validate()?,
        };
        Ok(Box::into_raw(Box::new(QatContext {
            session: Session::new(config),
        })))
    })
}

/// Frees a context (NULL is accepted). Tensors it created live in their ggml
/// contexts and stay valid.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_free(ctx: *mut QatContext) {
    ffi_boundary!((), {
        if !ctx.is_null() {
            drop(Box::from_raw(ctx));
        }
        Ok(())
    })
}

/// Restarts the context's random generator from `seed` (a new context starts
/// from 12345). The same seed and the same calls give the same data.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_set_seed(ctx: *mut QatContext, seed: u64) -> bool {
    ffi_boundary!(false, {
        session(ctx)?.set_seed(seed);
        Ok(true)
    })
}

/// Worker threads for this context's quantization and metrics; 0 uses the
/// global pool (RAYON_NUM_THREADS, or one per CPU). False on a negative count
/// or more than 1024.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_set_n_threads(ctx: *mut QatContext, n_threads: c_int) -> bool {
    ffi_boundary!(false, {
        let s = session(ctx)?;
        let n = usize::try_from(n_threads)
            .map_err(|_| Error::invalid("n_threads", format!("{n_threads} is negative")))?;
        s.set_n_threads(n)?;
        Ok(true)
    })
}

/// Statistics of the context: total sizes of everything
/// ggml_qat_quantize_layer() produced (and their ratio), with the accuracy,
/// KL and speedup of the latest ggml_qat_validate_performance(). All zero
/// for a NULL context.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_get_stats(ctx: *const QatContext) -> ggml_qat_stats_t {
    ffi_boundary!(ggml_qat_stats_t::default(), {
        Ok(session(ctx)?.stats().into())
    })
}

/// Writes one line per tensor that fell back to another type than its
/// class's ("name: q4_K -> q5_0 (...)") into `buf` (NUL-terminated, cut to
/// `buf_size`), and returns the length of the full text like snprintf.
/// `buf` may be NULL when `buf_size` is 0. Returns 0 for a NULL context.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_get_fallbacks(
    ctx: *const QatContext,
    buf: *mut c_char,
    buf_size: usize,
) -> usize {
    ffi_boundary!(0, {
        let text: String = session(ctx)?
            .fallbacks()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        if buf_size > 0 {
            if buf.is_null() {
                return Err(Error::Null("buf"));
            }
            let n = text.len().min(buf_size - 1);
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
        Ok(text.len())
    })
}

/// The library version, "MAJOR.MINOR.PATCH".
// Not wrapped in `ffi_boundary!`: it cannot panic (a static string).
#[no_mangle]
pub extern "C" fn ggml_qat_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
