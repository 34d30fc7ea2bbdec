//! Whole model files: GGUF in, GGUF out, as a pipeline of small stages.
//!
//! [`quantize_model`] ([`run`]) wires them:
//!
//! 1. [`params`]: what to produce, how to run, what to report; one
//!    validation for the command line and the C API;
//! 2. [`source`]: the model's shards opened once ([`gguf`] reads each
//!    header, every size bounded by the file), tensors by shard and index,
//!    rows as F32;
//! 3. [`assign`]: a type per tensor and where it came from — the preset's
//!    rules ([`preset`]) over the tensors' roles ([`roles`]), the manual
//!    options, llama.cpp's fallbacks;
//! 4. [`planner`] (under a size target): measure each free tensor's
//!    candidates, then allocate the bytes, weighing errors by role and
//!    depth ([`factors`]: the default, a factors file's, or those a
//!    [`calibration`] file measured on the model);
//! 5. [`layout`]: the output files' headers and sizes, computed once;
//! 6. [`convert`]: each tensor read, converted ([`chunk`], with the column
//!    weights of [`weights`] and [`imatrix`], or the diagonal of a
//!    [`calibration`] file) and written, the three overlapping, into a
//!    temporary file ([`sink`]);
//! 7. [`report`]: what was done, built at the end, written before the
//!    outputs are committed.
//!
//! Peak memory is a few chunk buffers plus the headers, whatever the
//! model's size.

pub mod assign;
pub mod calibration;
pub mod chunk;
pub mod convert;
pub mod factors;
pub mod gguf;
pub mod gram;
pub mod imatrix;
pub mod layout;
pub mod params;
pub mod planner;
pub mod preset;
pub mod report;
pub mod roles;
pub mod run;
pub mod sink;
pub mod source;
pub mod weights;

pub use convert::Objective;
pub use params::{How, Params, ReportParams, What};
pub use report::{Progress, Report, TensorReport};
pub use run::quantize_model;

use std::path::Path;

/// Why a model could not be quantized.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Format(String),
    #[error("{path}: {what}: {err}")]
    Io {
        path: String,
        what: &'static str,
        err: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("imatrix: {0}")]
    Imatrix(String),
    #[error("calibration file: {0}")]
    Calibration(String),
    #[error("cancelled by the progress callback")]
    Cancelled,
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
}

impl ModelError {
    pub fn io(path: &Path, what: &'static str, err: std::io::Error) -> ModelError {
        ModelError::Io {
            path: path.display().to_string(),
            what,
            err,
        }
    }
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
