//! Model calibration (extension): runs the calibrator `ggml-qat-calibrate`
//! (a separate executable linking llama.cpp) on a GGUF model and writes the
//! calibration file that ggml_qat_quantize_model's calibration_path reads.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::PathBuf;

use super::types::CBool;
use super::{c_str, ffi_boundary, opt_path};
use crate::calibrator::{self, CalibratorError, Options, Progress};
use crate::error::{Error, Result};

/// Progress of ggml_qat_calibrate_model: `stage` is "evaluate" (tokens of
/// the given text evaluated), "generate" (tokens self-generated) or
/// "sensitivity" (groups of weights measured), with `done` of `total`
/// units of that stage. Called on the calling thread when a stage starts
/// (done 0), at most every 50 ms while it runs, and when it ends (done ==
/// total); a stage with nothing to do (no text files) is not reported. Return
/// false to cancel: the calibrator is stopped (SIGTERM, SIGKILL after 30
/// s), no output file remains, and the call fails with
/// ggml_qat_last_error() ending in "cancelled".
pub type ggml_qat_calibrate_progress_callback = Option<
    unsafe extern "C" fn(
        stage: *const c_char,
        done: u64,
        total: u64,
        user_data: *mut c_void,
    ) -> bool,
>;

/// Figures of a calibration (more in the JSON report: report_path).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct ggml_qat_calibrate_report_t {
    /// Calibration tokens in all: text evaluated plus self-generated.
    pub tokens: u64,
    /// Tokens of the given text files evaluated (whole chunks).
    pub text_tokens: u64,
    /// Tokens the model generated itself.
    pub generated_tokens: u64,
    /// Chunks (imatrix.chunk_count: text chunks plus generated sequences).
    pub n_chunks: u64,
    /// Weights with statistics (imatrix entries).
    pub n_weights: u64,
    /// Gram matrices written.
    pub n_grams: u64,
    /// Groups whose sensitivity was measured (0 with no_sensitivity).
    pub n_sensitivity_groups: u64,
    /// KL divergence of the restored model: the sensitivities' floor.
    pub sensitivity_floor: f64,
    /// Seconds spent evaluating the text, generating, measuring the
    /// sensitivities, and in all (the calibrator's own figures).
    pub seconds_evaluate: f64,
    pub seconds_generate: f64,
    pub seconds_sensitivity: f64,
    pub seconds: f64,
    /// Size of the calibration file written.
    pub output_bytes: u64,
    /// Peak resident memory of the calibrator process (bytes).
    pub peak_rss_bytes: u64,
}

/// Parameters of ggml_qat_calibrate_model; start from
/// ggml_qat_calibrate_default_params(). Zero and NULL fields mean the
/// calibrator's default (said per field); the command-line option of
/// ggml-qat-calibrate (llama.cpp's names) is in brackets.
/// cbindgen:field-names=[calibrator_path, text_files, n_text_files, save_text_path, n_tokens, n_ctx, n_ubatch, n_threads, n_gpu_layers, has_seed, seed, n_parallel, temperature, top_k, top_p, gram_max, process_output, probe_type, no_sensitivity, sensitivity_tokens, verbose, report_path, report, progress, progress_user_data]
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ggml_qat_calibrate_params_t {
    /// The calibrator executable. NULL (default): the environment variable
    /// GGML_QAT_CALIBRATE, else bin/ggml-qat-calibrate beside the folder of
    /// the loaded libggml-qat (an installed lib/libggml-qat.so finds
    /// bin/ggml-qat-calibrate), else ggml-qat-calibrate on PATH. A path
    /// given here or in GGML_QAT_CALIBRATE that is not an executable file
    /// is an error (the search does not go on).
    pub calibrator_path: *const c_char,
    /// Text files to calibrate on, in order [-f FILE, repeated]; may be
    /// NULL when n_text_files is 0. None (default): text the model samples
    /// itself.
    pub text_files: *const *const c_char,
    pub n_text_files: c_int,
    /// When not NULL, the evaluated text is also written there [--save-text].
    pub save_text_path: *const c_char,
    /// Calibration tokens, rounded up to whole chunks [--tokens]. 0
    /// (default): 10000, or with text files all of their text; with text
    /// files and n_tokens, self-generated text fills up to n_tokens.
    pub n_tokens: u64,
    /// Chunk (context) size [-c]; 0 (default): 512.
    pub n_ctx: c_int,
    /// Tokens per evaluation step [-ub]; 0 (default): 128.
    pub n_ubatch: c_int,
    /// Threads [-t]; 0 (default): all cores. The same seed, model and
    /// thread count give the same file.
    pub n_threads: c_int,
    /// Layers offloaded to a GPU when the calibrator's llama.cpp has one
    /// [-ngl]; 0 (default): none.
    pub n_gpu_layers: c_int,
    /// When true, `seed` seeds the self-generated text [--seed] (0 is a
    /// seed like any other); false (default): the calibrator's seed, 42.
    pub has_seed: CBool,
    pub seed: u64,
    /// Sequences generated together in one batch [-np]; 0 (default): 32.
    pub n_parallel: c_int,
    /// Sampling temperature of the self-generated text [--temp]; 0
    /// (default): 1.0 (greedy sampling is not offered: every sequence
    /// would be the same text).
    pub temperature: f32,
    /// Keep only the top_k most likely tokens [--top-k]; 0 (default): all.
    pub top_k: c_int,
    /// Keep the smallest set of tokens of probability top_p [--top-p]; 0
    /// (default): 1, all.
    pub top_p: f32,
    /// Gram matrices only for weights whose rows are at most this long
    /// [--gram-max]; 0 (default): 8192; negative: no Gram matrices
    /// (--gram-max 0).
    pub gram_max: i64,
    /// Also collect output.weight [--process-output].
    pub process_output: CBool,
    /// The type each group of weights is quantized to when measuring the
    /// sensitivities, by ggml's name ("q4_0", "q4_k", "iq4_nl", …)
    /// [--probe-type]; NULL (default): "q4_0".
    pub probe_type: *const c_char,
    /// Skip the sensitivities (the file then carries no planner factors;
    /// needed for an already-quantized model) [--no-sensitivity]; false
    /// (default): measure them.
    pub no_sensitivity: CBool,
    /// Tokens the sensitivities are measured on [--sensitivity-tokens]; 0
    /// (default): 1024.
    pub sensitivity_tokens: u64,
    /// Copy the calibrator's stderr (llama.cpp's log, progress bars) to this
    /// process's stderr [-v]; false (default): kept quiet, only its last
    /// lines kept for the error message.
    pub verbose: CBool,
    /// When not NULL, the calibrator's JSON report (tokens, chunks,
    /// weights, Gram matrices, each sensitivity group's kld and nsr,
    /// seconds per stage, output bytes, peak RSS) is written there
    /// [--report].
    pub report_path: *const c_char,
    /// When not NULL, receives the main figures of the report.
    pub report: *mut ggml_qat_calibrate_report_t,
    /// Progress callback (may cancel), or NULL.
    pub progress: ggml_qat_calibrate_progress_callback,
    pub progress_user_data: *mut c_void,
}

/// The default calibration parameters: every field 0 or NULL (the
/// calibrator's defaults: 10000 self-generated tokens in chunks of 512,
/// seed 42, sensitivities at q4_0, all cores).
// Not wrapped in `guard`: it only builds a struct of constants and cannot panic.
#[no_mangle]
pub extern "C" fn ggml_qat_calibrate_default_params() -> ggml_qat_calibrate_params_t {
    ggml_qat_calibrate_params_t {
        calibrator_path: std::ptr::null(),
        text_files: std::ptr::null(),
        n_text_files: 0,
        save_text_path: std::ptr::null(),
        n_tokens: 0,
        n_ctx: 0,
        n_ubatch: 0,
        n_threads: 0,
        n_gpu_layers: 0,
        has_seed: CBool(0),
        seed: 0,
        n_parallel: 0,
        temperature: 0.0,
        top_k: 0,
        top_p: 0.0,
        gram_max: 0,
        process_output: CBool(0),
        probe_type: std::ptr::null(),
        no_sensitivity: CBool(0),
        sensitivity_tokens: 0,
        verbose: CBool(0),
        report_path: std::ptr::null(),
        report: std::ptr::null_mut(),
        progress: None,
        progress_user_data: std::ptr::null_mut(),
    }
}

/// A count: 0 → None (the default), negative → an error.
fn count(v: c_int, name: &'static str) -> Result<Option<u64>> {
    match v {
        0 => Ok(None),
        v if v < 0 => Err(Error::invalid(name, format!("{v}: negative"))),
        v => Ok(Some(v as u64)),
    }
}

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

/// A float option: 0 → None; NaN and infinities are refused here (the
/// calibrator checks the ranges).
fn real(v: f32, name: &'static str) -> Result<Option<f32>> {
    if !v.is_finite() {
        return Err(Error::invalid(name, format!("{v}: not a finite number")));
    }
    Ok((v != 0.0).then_some(v))
}

/// The calibrator's options of the C struct.
unsafe fn options_from_c(cp: &ggml_qat_calibrate_params_t) -> Result<Options> {
    let n_files = usize::try_from(cp.n_text_files)
        .map_err(|_| Error::invalid("params->n_text_files", "negative"))?;
    let mut files = Vec::with_capacity(n_files.min(1024));
    if n_files > 0 {
        if cp.text_files.is_null() {
            return Err(Error::Null("params->text_files"));
        }
        for i in 0..n_files {
            files.push(PathBuf::from(c_str(
                *cp.text_files.add(i),
                "params->text_files[i]",
            )?));
        }
    }
    Ok(Options {
        calibrator: opt_path(cp.calibrator_path, "params->calibrator_path")?,
        files,
        save_text: opt_path(cp.save_text_path, "params->save_text_path")?,
        tokens: nonzero(cp.n_tokens),
        ctx_size: count(cp.n_ctx, "params->n_ctx")?,
        ubatch_size: count(cp.n_ubatch, "params->n_ubatch")?,
        threads: count(cp.n_threads, "params->n_threads")?,
        n_gpu_layers: (cp.n_gpu_layers != 0).then_some(cp.n_gpu_layers),
        seed: cp.has_seed.get().then_some(cp.seed),
        parallel: count(cp.n_parallel, "params->n_parallel")?,
        temp: real(cp.temperature, "params->temperature")?,
        top_k: count(cp.top_k, "params->top_k")?.map(|v| v as i32),
        top_p: real(cp.top_p, "params->top_p")?,
        gram_max: match cp.gram_max {
            0 => None,
            v if v < 0 => Some(0),
            v => Some(v as u64),
        },
        process_output: cp.process_output.get(),
        probe_type: if cp.probe_type.is_null() {
            None
        } else {
            Some(c_str(cp.probe_type, "params->probe_type")?.to_string())
        },
        no_sensitivity: cp.no_sensitivity.get(),
        sensitivity_tokens: nonzero(cp.sensitivity_tokens),
        verbose: cp.verbose.get(),
        report: opt_path(cp.report_path, "params->report_path")?,
    })
}

/// Calibrates the GGUF model at `model_path` into the calibration file
/// `output_path` (see ggml_qat_calibrate_params_t; `params` NULL: the
/// defaults) by running the calibrator ggml-qat-calibrate (llama.cpp's
/// libllama needs its own ggml, so it runs as a child process; its stdout
/// is discarded, its stderr kept for the error message). The file is
/// written under a temporary name and renamed at the end: on failure or
/// cancel no output remains. False on failure, with ggml_qat_last_error()
/// saying why: the calibrator's own last error line when it failed,
/// "cancelled" when the progress callback cancelled, which executables
/// were tried when none was found.
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_calibrate_model(
    model_path: *const c_char,
    output_path: *const c_char,
    params: *const ggml_qat_calibrate_params_t,
) -> bool {
    ffi_boundary!(false, {
        let model = PathBuf::from(c_str(model_path, "model_path")?);
        let output = PathBuf::from(c_str(output_path, "output_path")?);
        let cp = params
            .as_ref()
            .copied()
            .unwrap_or_else(|| ggml_qat_calibrate_default_params());
        let opts = options_from_c(&cp)?;
        let mut cb = |p: &Progress| -> bool {
            match cp.progress {
                None => true,
                Some(f) => {
                    let stage = CString::new(p.stage.replace('\0', " ")).unwrap_or_default();
                    f(stage.as_ptr(), p.done, p.total, cp.progress_user_data)
                }
            }
        };
        // CalibratorError::Cancelled reads "cancelled".
        let r = calibrator::calibrate(&model, &output, &opts, &mut cb)
            .map_err(|e: CalibratorError| Error::Unsupported(e.to_string()))?;
        if let Some(out) = cp.report.as_mut() {
            let s = r.sensitivity.as_ref();
            *out = ggml_qat_calibrate_report_t {
                tokens: r.tokens,
                text_tokens: r.text_tokens,
                generated_tokens: r.generated_tokens,
                n_chunks: r.chunks,
                n_weights: r.weights,
                n_grams: r.grams,
                n_sensitivity_groups: s.map_or(0, |s| s.groups.len() as u64),
                sensitivity_floor: s.map_or(0.0, |s| s.floor),
                seconds_evaluate: r.seconds.evaluate,
                seconds_generate: r.seconds.generate,
                seconds_sensitivity: r.seconds.sensitivity,
                seconds: r.seconds.total,
                output_bytes: r.output_bytes,
                peak_rss_bytes: r.peak_rss_bytes,
            };
        }
        Ok(true)
    })
}
