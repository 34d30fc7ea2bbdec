//! The parameters of a model conversion, in three parts — what to produce
//! ([`What`]), how to run ([`How`]), what to report ([`ReportParams`]) — and
//! the one validation ([`Params::validate`]) that the command line and the C
//! API share: conflicting options, patterns, the thread count.

use std::path::PathBuf;

use regex::Regex;

use super::factors::Factors;
use super::preset::{Preset, Target};
use super::ModelError;
use crate::quant::QuantType;

/// The most threads a run may ask for. The same on every machine (so a
/// script behaves the same everywhere) and above the hardware threads of any
/// current two-socket server; a larger count is a typo, not a wish, and used
/// to spawn threads until the process was killed.
pub const MAX_THREADS: usize = 1024;

/// What to do with a model.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub what: What,
    pub how: How,
    pub report: ReportParams,
}

/// What to produce: the types, the importance, the search, the size.
#[derive(Clone, Debug)]
pub struct What {
    pub target: Target,
    /// The preset's default type for every quantizable tensor (no mixture).
    pub pure: bool,
    /// `(regex, type)`: the first pattern found in a tensor's name wins.
    pub overrides: Vec<(String, QuantType)>,
    pub output_type: Option<QuantType>,
    pub token_embd_type: Option<QuantType>,
    /// Keep `output.weight` as it is.
    pub leave_output: bool,
    pub imatrix: Option<PathBuf>,
    /// A calibration file of ggml-qat-calibrate ([`super::calibration`]):
    /// its diagonal is the importance matrix, read as `imatrix` reads it
    /// (the same bytes out); its factors, when it has them, the planner's.
    pub calibration: Option<PathBuf>,
    pub allow_requantize: bool,
    /// Quantize every shard of a split model, each to its own output shard.
    pub keep_split: bool,
    /// Every quantized tensor through the output-aware search
    /// ([`crate::qat::optimize::quantize_weighted`]): weighted by the
    /// tensor's imatrix entry when one is given, plain weight-space error
    /// otherwise. Chunk by chunk, the result is kept only when its error on
    /// that objective is not above ggml's bytes for the same type (the bytes
    /// written without `optimize`), which are kept otherwise.
    pub optimize: bool,
    /// Under `optimize`, for tensors without an imatrix entry: weight each
    /// input column by the square of the RMS-norm weight that scales it
    /// (`attn_norm` for attn_q/k/v, `ffn_norm` for ffn_gate/up,
    /// `output_norm` for output), read from the model itself; plain
    /// weight-space error for the other tensors (or when false, the
    /// default). Measured on Gemma 3 270M Q4_0 (scripts/eval-kld.sh), this
    /// objective gives a higher mean KLD than the plain one, and even than
    /// ggml's bytes: kept as an option for other models, off by default.
    pub norm_importance: bool,
    /// Plan the types to meet this size ([`super::planner`]): the preset
    /// then only says which tensors are left as they are.
    pub size_target: Option<SizeTarget>,
    /// The types the planner may choose: `(pattern, types)`, the first
    /// pattern found in a tensor's name wins, `None` matches every tensor;
    /// no match (or empty): [`super::planner::DEFAULT_TYPES`].
    pub plan_types: Vec<(Option<String>, Vec<QuantType>)>,
    /// The planner's role and depth factors ([`Factors`]), given
    /// (`--plan-factors`); `None`: the calibration file's when it has
    /// them, else the default.
    pub plan_factors: Option<Factors>,
}

impl Default for What {
    fn default() -> What {
        What {
            target: Target::Preset(Preset::Q4_K_M),
            pure: false,
            overrides: Vec::new(),
            output_type: None,
            token_embd_type: None,
            leave_output: false,
            imatrix: None,
            calibration: None,
            allow_requantize: false,
            keep_split: false,
            optimize: false,
            norm_importance: false,
            size_target: None,
            plan_types: Vec::new(),
            plan_factors: None,
        }
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct How {
    /// 0: all cores; at most [`MAX_THREADS`].
    pub threads: usize,
    /// Bound on the chunk buffers (bytes); at least one row is processed.
    pub max_buffer: usize,
    /// Sizes and types only; nothing is written.
    pub dry_run: bool,
}

impl Default for How {
    fn default() -> How {
        How {
            threads: 0,
            max_buffer: 32 << 20,
            dry_run: false,
        }
    }
}

/// What to report besides the types and sizes.
#[derive(Clone, Debug)]
pub struct ReportParams {
    /// Measure each tensor's relative RMS error (dequantizing the output).
    pub measure_error: bool,
    /// Write the report as JSON there, before the model output is
    /// committed (a failure leaves no output).
    pub json_path: Option<PathBuf>,
}

impl Default for ReportParams {
    fn default() -> ReportParams {
        ReportParams {
            measure_error: true,
            json_path: None,
        }
    }
}

/// The size to meet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SizeTarget {
    /// Whole output file(s), headers and padding included.
    FileBytes(u64),
    /// Bits per weight as llama.cpp counts them: 8 × tensor data bytes /
    /// weights, over every tensor.
    BitsPerWeight(f64),
}

/// The types the planner may give the tensors whose name matches
/// `pattern` (searched in the name; `None`: every tensor). The first rule
/// that matches a tensor applies; with none, [`super::planner::DEFAULT_TYPES`].
#[derive(Clone, Debug)]
pub struct TypeRule {
    pub pattern: Option<regex::Regex>,
    pub types: Vec<QuantType>,
}

/// Parameters that passed [`Params::validate`], with what it derived.
pub struct Checked<'a> {
    pub what: &'a What,
    pub how: &'a How,
    pub report: &'a ReportParams,
    /// The worker threads to run (0 resolved to the cores).
    pub threads: usize,
    /// `--tensor-type` patterns, compiled.
    pub overrides: Vec<(Regex, QuantType)>,
    /// `--plan-types` rules, compiled.
    pub plan_rules: Vec<TypeRule>,
}

impl Params {
    /// Checks the parameters on their own (before any file is read):
    /// conflicting options are refused with a message naming both, patterns
    /// compiled, the thread count resolved and bounded.
    pub fn validate(&self) -> Result<Checked<'_>, ModelError> {
        check_conflicts(&self.what)?;
        let threads = match self.how.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > MAX_THREADS => {
                return Err(ModelError::Invalid(format!(
                    "{n} threads: at most {MAX_THREADS} (0 means one per core)"
                )))
            }
            n => n,
        };
        let overrides = self
            .what
            .overrides
            .iter()
            .map(|(p, t)| Ok((regex(p, "--tensor-type")?, *t)))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let plan_rules = self
            .what
            .plan_types
            .iter()
            .map(|(p, types)| {
                Ok(TypeRule {
                    pattern: p.as_deref().map(|p| regex(p, "--plan-types")).transpose()?,
                    types: types.clone(),
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Checked {
            what: &self.what,
            how: &self.how,
            report: &self.report,
            threads,
            overrides,
            plan_rules,
        })
    }
}

fn regex(p: &str, option: &str) -> Result<Regex, ModelError> {
    Regex::new(p).map_err(|e| ModelError::Invalid(format!("{option} pattern '{p}': {e}")))
}

/// Options that contradict each other: refused, naming both.
fn check_conflicts(w: &What) -> Result<(), ModelError> {
    let conflict = |a: &str, b: &str, why: &str| {
        Err(ModelError::Invalid(format!(
            "{a} and {b} cannot be used together: {why}"
        )))
    };
    if w.leave_output && w.output_type.is_some() {
        return conflict(
            "--leave-output-tensor",
            "--output-tensor-type",
            "one keeps output.weight as it is, the other gives it a type",
        );
    }
    if w.calibration.is_some() && w.imatrix.is_some() {
        return conflict(
            "--calibration",
            "--imatrix",
            "the calibration file's diagonal is the importance matrix",
        );
    }
    if w.calibration.is_some() && w.plan_factors.is_some() {
        return conflict(
            "--calibration",
            "--plan-factors",
            "the calibration file gives the planner's factors (the default ones when it has none)",
        );
    }
    if w.pure && !w.overrides.is_empty() {
        return conflict(
            "--pure",
            "--tensor-type",
            "--pure gives every tensor the preset's default type",
        );
    }
    if w.norm_importance && !w.optimize {
        return conflict(
            "--norm-importance",
            "no --optimize",
            "the norms' weights only steer the --optimize search",
        );
    }
    if !w.plan_types.is_empty() && w.size_target.is_none() {
        return conflict(
            "--plan-types",
            "no --target-size/--target-bpw",
            "the types are the size planner's candidates",
        );
    }
    if w.size_target.is_some() && matches!(w.target, Target::Classes(_)) {
        return conflict(
            "--target-size/--target-bpw",
            "the type classes",
            "a size target needs a llama-quantize preset as the type (its rules say which tensors stay as they are)",
        );
    }
    Ok(())
}
