//! Whole-model quantization (extension): a GGUF file in, a GGUF file out.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::PathBuf;

use super::context::QatContext;
use super::types::{CBool, GgmlType};
use super::{c_str, ffi_boundary, opt_path};
use crate::error::{Error, Result};
use crate::model::planner::{Factors, SizeTarget};
use crate::model::preset::{Preset, Target};
use crate::model::{self, How, Params, Progress, ReportParams, What};
use crate::qat::LayerClass;
use crate::quant::QuantType;

/// One per-tensor override: tensors whose name matches `pattern` (a regular
/// expression searched in the name, as llama-quantize's --tensor-type) get
/// `type`. The first matching override wins.
/// cbindgen:field-names=[pattern, type]
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ggml_qat_tensor_override_t {
    pub pattern: *const c_char,
    pub type_: GgmlType,
}

/// Progress of ggml_qat_quantize_model: called before each tensor and after
/// each chunk of rows with the tensor's 1-based index, the tensor count, its
/// name, and the input bytes done so far out of the total. Return false to
/// cancel (the call then fails and no output file remains).
pub type ggml_qat_progress_callback = Option<
    unsafe extern "C" fn(
        tensor_index: c_int,
        n_tensors: c_int,
        name: *const c_char,
        bytes_done: u64,
        bytes_total: u64,
        user_data: *mut c_void,
    ) -> bool,
>;

/// Totals of a model quantization (per-tensor details: report_json_path).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct ggml_qat_model_report_t {
    pub n_tensors: c_int,
    /// Tensors whose type fell back (row length not a multiple of the block).
    pub n_fallback: c_int,
    /// Tensor data bytes before and after.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Whole file sizes before and after (headers and padding included).
    pub file_bytes_in: u64,
    pub file_bytes_out: u64,
    pub bits_per_weight_in: f64,
    pub bits_per_weight_out: f64,
    pub seconds: f64,
    /// Peak resident memory of the process at the end (bytes).
    pub peak_rss_bytes: u64,
}

/// Parameters of ggml_qat_quantize_model; start from
/// ggml_qat_model_default_params().
/// cbindgen:field-names=[target, overrides, n_overrides, output_tensor_type, token_embedding_type, imatrix_path, allow_requantize, pure, leave_output_tensor, dry_run, keep_split, n_threads, max_buffer_bytes, progress, progress_user_data, report_json_path, report, optimize, target_size_bytes, target_bpw, plan_types, n_plan_types, plan_factors_path, calibration_path]
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ggml_qat_model_params_t {
    /// A llama-quantize preset ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    /// "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S",
    /// "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "F16", "BF16", "F32"; the same
    /// per-tensor types as llama-quantize), or "classes": the context's four
    /// class types (config embedding/attention/ffn/layernorm_qtype; other
    /// 2-D weights take the ffn type; needs ctx). NULL: "Q4_K_M".
    pub target: *const c_char,
    /// Per-tensor overrides, in order (may be NULL when n_overrides is 0).
    pub overrides: *const ggml_qat_tensor_override_t,
    pub n_overrides: c_int,
    /// Type of output.weight, or -1 (default) for the preset's choice.
    pub output_tensor_type: c_int,
    /// Type of token_embd.weight, or -1 (default) for the preset's choice.
    pub token_embedding_type: c_int,
    /// Importance matrix (llama-imatrix GGUF or legacy .dat), or NULL.
    pub imatrix_path: *const c_char,
    /// Allow converting tensors that are already block-quantized.
    pub allow_requantize: CBool,
    /// The preset's default type for every tensor (no mixture).
    pub pure_: CBool,
    /// Keep output.weight as it is.
    pub leave_output_tensor: CBool,
    /// Types and sizes only (report filled), nothing written.
    pub dry_run: CBool,
    /// Quantize every shard of a split input, each to OUT-0000i-of-0000N.gguf.
    pub keep_split: CBool,
    /// Threads; 0 (default): all cores; at most 1024.
    pub n_threads: c_int,
    /// Bound on the working buffers in bytes; 0 (default): 32 MiB.
    pub max_buffer_bytes: usize,
    /// Progress callback, or NULL.
    pub progress: ggml_qat_progress_callback,
    pub progress_user_data: *mut c_void,
    /// When not NULL, the per-tensor report is written there as JSON (through
    /// a temporary file; never over the input, the output or a non-file).
    pub report_json_path: *const c_char,
    /// When not NULL, receives the totals.
    pub report: *mut ggml_qat_model_report_t,
    /// Every quantized tensor through the output-aware search, weighted by
    /// the imatrix when one is given (plain weight-space error otherwise);
    /// per chunk of rows, ggml's bytes are kept unless the search's are not
    /// worse on that objective. The per-tensor gain is in the JSON report.
    /// False (default): bytes identical to llama-quantize's.
    pub optimize: CBool,
    /// Size planner: when not 0, the per-tensor types are chosen to make the
    /// output file(s) at most this many bytes with the least predicted error
    /// (the target preset then only says which tensors stay as they are;
    /// per-tensor overrides stay fixed). Per-tensor candidates and
    /// predictions are in the JSON report. 0 (default): the preset's types.
    pub target_size_bytes: u64,
    /// Size planner by bits per weight (8 × tensor data bytes / weights);
    /// 0 (default): none. At most one of target_size_bytes and target_bpw.
    pub target_bpw: f64,
    /// The types the planner may choose (ggml type ids), or NULL for its
    /// default set (Q2_K Q3_K IQ4_XS IQ4_NL Q4_0 Q4_1 Q4_K Q5_0 Q5_1 Q5_K
    /// Q6_K Q8_0).
    pub plan_types: *const c_int,
    pub n_plan_types: c_int,
    /// The planner's role and depth factors, a file of `ROLE VALUE` lines
    /// and `depth FIRST MIDDLE LAST` (as ggml-qat-quantize --plan-factors),
    /// or NULL (default) for the factors measured on Gemma 3 270M.
    pub plan_factors_path: *const c_char,
    /// A calibration file of ggml-qat-calibrate (as ggml-qat-quantize
    /// --calibration), or NULL (default): its diagonal is the importance
    /// matrix (the same bytes as imatrix_path with that file), and the role
    /// and depth factors it measured on the model, when it has them, are
    /// the size planner's (the default ones otherwise; the JSON report says
    /// which). With optimize, its Gram matrices (XᵀX/n of each weight's
    /// inputs) drive the Gram quantizer: per row the best of ggml's bytes,
    /// the diagonal search and GPTQ in the block format on the output
    /// error. Not together with imatrix_path or plan_factors_path.
    pub calibration_path: *const c_char,
}

/// The default model parameters: Q4_K_M, no overrides, all cores, 32 MiB
/// buffers, nothing else.
// Not wrapped in `guard`: it only builds a struct of constants and cannot panic.
#[no_mangle]
pub extern "C" fn ggml_qat_model_default_params() -> ggml_qat_model_params_t {
    ggml_qat_model_params_t {
        target: std::ptr::null(),
        overrides: std::ptr::null(),
        n_overrides: 0,
        output_tensor_type: -1,
        token_embedding_type: -1,
        imatrix_path: std::ptr::null(),
        allow_requantize: CBool(0),
        pure_: CBool(0),
        leave_output_tensor: CBool(0),
        dry_run: CBool(0),
        keep_split: CBool(0),
        n_threads: 0,
        max_buffer_bytes: 0,
        progress: None,
        progress_user_data: std::ptr::null_mut(),
        report_json_path: std::ptr::null(),
        report: std::ptr::null_mut(),
        optimize: CBool(0),
        target_size_bytes: 0,
        target_bpw: 0.0,
        plan_types: std::ptr::null(),
        n_plan_types: 0,
        plan_factors_path: std::ptr::null(),
        calibration_path: std::ptr::null(),
    }
}

/// The caller's array `p` of `n` items (NULL allowed when `n` is 0).
unsafe fn c_array<'a, T>(p: *const T, n: c_int, name: &'static str) -> Result<&'a [T]> {
    let n = usize::try_from(n).map_err(|_| Error::invalid(name, "negative count"))?;
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::Null(name));
    }
    Ok(std::slice::from_raw_parts(p, n))
}

fn opt_type(v: c_int, name: &'static str) -> Result<Option<QuantType>> {
    if v < 0 {
        return Ok(None);
    }
    QuantType::from_ggml(v)
        .map(Some)
        .ok_or_else(|| Error::invalid(name, format!("type {v} is not one this library produces")))
}

/// Quantizes the GGUF model at `in_path` into `out_path` (see
/// ggml_qat_model_params_t; `params` NULL: the defaults). The output is
/// written to a temporary file beside it and renamed at the end: on failure
/// or cancel no output remains, and the input is never modified. `ctx` is
/// needed only for the "classes" target (may be NULL otherwise). False on
/// failure, with ggml_qat_last_error() saying why.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_quantize_model(
    ctx: *mut QatContext,
    in_path: *const c_char,
    out_path: *const c_char,
    params: *const ggml_qat_model_params_t,
) -> bool {
    ffi_boundary!(false, {
        let input = PathBuf::from(c_str(in_path, "in_path")?);
        let output = PathBuf::from(c_str(out_path, "out_path")?);
        let cp = params
            .as_ref()
            .copied()
            .unwrap_or_else(|| ggml_qat_model_default_params());
        let p = params_from_c(ctx, &cp)?;
        let mut cb = |pr: &Progress| -> bool {
            match cp.progress {
                None => true,
                Some(f) => {
                    let name = CString::new(pr.name.replace('\0', " ")).unwrap_or_default();
                    f(
                        pr.index as c_int,
                        pr.count as c_int,
                        name.as_ptr(),
                        pr.bytes_done,
                        pr.bytes_total,
                        cp.progress_user_data,
                    )
                }
            }
        };
        let r = model::quantize_model(&input, &output, &p, &mut cb)
            .map_err(|e| Error::Unsupported(e.to_string()))?;
        if let Some(out) = cp.report.as_mut() {
            *out = ggml_qat_model_report_t {
                n_tensors: r.tensors.len() as c_int,
                n_fallback: r.n_fallback as c_int,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                file_bytes_in: r.file_bytes_in,
                file_bytes_out: r.file_bytes_out,
                bits_per_weight_in: r.bits_per_weight_in,
                bits_per_weight_out: r.bits_per_weight_out,
                seconds: r.seconds,
                peak_rss_bytes: r.peak_rss_bytes,
            };
        }
        Ok(true)
    })
}

/// The model parameters of the C struct (checked further, with the command
/// line's, by `Params::validate`).
unsafe fn params_from_c(ctx: *mut QatContext, cp: &ggml_qat_model_params_t) -> Result<Params> {
    let what = What {
        target: target_from_c(ctx, cp)?,
        pure: cp.pure_.get(),
        overrides: overrides_from_c(cp)?,
        output_type: opt_type(cp.output_tensor_type, "params->output_tensor_type")?,
        token_embd_type: opt_type(cp.token_embedding_type, "params->token_embedding_type")?,
        leave_output: cp.leave_output_tensor.get(),
        imatrix: opt_path(cp.imatrix_path, "params->imatrix_path")?,
        calibration: opt_path(cp.calibration_path, "params->calibration_path")?,
        allow_requantize: cp.allow_requantize.get(),
        keep_split: cp.keep_split.get(),
        optimize: cp.optimize.get(),
        norm_importance: false,
        size_target: size_target_from_c(cp)?,
        plan_types: plan_types_from_c(cp)?,
        plan_factors: factors_from_c(cp)?,
    };
    let how = How {
        threads: usize::try_from(cp.n_threads)
            .map_err(|_| Error::invalid("params->n_threads", "negative"))?,
        max_buffer: if cp.max_buffer_bytes == 0 {
            How::default().max_buffer
        } else {
            cp.max_buffer_bytes
        },
        dry_run: cp.dry_run.get(),
    };
    let report = ReportParams {
        measure_error: !cp.dry_run.get(),
        json_path: opt_path(cp.report_json_path, "params->report_json_path")?,
    };
    Ok(Params { what, how, report })
}

/// The preset, or the context's classes for "classes".
unsafe fn target_from_c(ctx: *mut QatContext, cp: &ggml_qat_model_params_t) -> Result<Target> {
    let name = if cp.target.is_null() {
        "Q4_K_M"
    } else {
        c_str(cp.target, "params->target")?
    };
    if !name.eq_ignore_ascii_case("classes") {
        return Preset::parse(name)
            .map(Target::Preset)
            .ok_or_else(|| Error::invalid("params->target", format!("unknown preset '{name}'")));
    }
    let s = ctx
        .as_ref()
        .map(|c| &c.session)
        .ok_or(Error::Null("ctx (needed by the \"classes\" target)"))?;
    let c = s.config();
    Ok(Target::Classes([
        c.qtype_for(LayerClass::Embedding),
        c.qtype_for(LayerClass::Attention),
        c.qtype_for(LayerClass::Ffn),
        c.qtype_for(LayerClass::LayerNorm),
    ]))
}

unsafe fn overrides_from_c(cp: &ggml_qat_model_params_t) -> Result<Vec<(String, QuantType)>> {
    let mut overrides = Vec::new();
    for o in c_array(cp.overrides, cp.n_overrides, "params->overrides")? {
        let pat = c_str(o.pattern, "params->overrides[i].pattern")?;
        let ty = opt_type(o.type_.0, "params->overrides[i].type")?
            .ok_or_else(|| Error::invalid("params->overrides[i].type", "negative"))?;
        overrides.push((pat.to_string(), ty));
    }
    Ok(overrides)
}

fn size_target_from_c(cp: &ggml_qat_model_params_t) -> Result<Option<SizeTarget>> {
    let (size, bpw) = (cp.target_size_bytes, cp.target_bpw);
    if size != 0 && bpw != 0.0 {
        return Err(Error::invalid(
            "params->target_bpw",
            "set together with target_size_bytes: give one of them",
        ));
    }
    if size != 0 {
        return Ok(Some(SizeTarget::FileBytes(size)));
    }
    if bpw == 0.0 {
        return Ok(None);
    }
    if bpw.is_finite() && bpw > 0.0 {
        return Ok(Some(SizeTarget::BitsPerWeight(bpw)));
    }
    Err(Error::invalid(
        "params->target_bpw",
        format!("{bpw}: a positive number of bits per weight expected"),
    ))
}

type PlanTypes = Vec<(Option<String>, Vec<QuantType>)>;

unsafe fn plan_types_from_c(cp: &ggml_qat_model_params_t) -> Result<PlanTypes> {
    let mut plan_types = Vec::new();
    for &t in c_array(cp.plan_types, cp.n_plan_types, "params->plan_types")? {
        let t = opt_type(t, "params->plan_types[i]")?
            .filter(|t| t.format().block_size > 1)
            .ok_or_else(|| Error::invalid("params->plan_types[i]", "not a block-quantized type"))?;
        plan_types.push(t);
    }
    Ok(if plan_types.is_empty() {
        Vec::new()
    } else {
        vec![(None, plan_types)]
    })
}

unsafe fn factors_from_c(cp: &ggml_qat_model_params_t) -> Result<Option<Factors>> {
    if cp.plan_factors_path.is_null() {
        return Ok(None);
    }
    let path = c_str(cp.plan_factors_path, "params->plan_factors_path")?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid("params->plan_factors_path", format!("{path}: {e}")))?;
    Factors::parse(&text)
        .map(Some)
        .map_err(|e| Error::invalid("params->plan_factors_path", format!("{path}: {e}")))
}
