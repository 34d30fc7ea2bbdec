//! Whole model files: GGUF in, GGUF out.
//!
//! [`quantize_model`] reads a GGUF header ([`gguf`]), picks a type per tensor
//! ([`select`]: llama-quantize's preset rules, or the ggml-qat layer classes,
//! per-tensor overrides, llama.cpp's fallbacks), then streams every tensor in
//! bounded chunks of rows (read at an offset, converted to F32, quantized by
//! [`crate::quant::quantize_rows`], written) into a temporary file beside the
//! target, renamed over it at the end ([`sink`]: which paths may be written,
//! the temporary file, the report, cleanup on a signal). Peak memory is the chunk buffers plus
//! the header, whatever the model's size.

pub mod chunk;
pub mod gguf;
pub mod imatrix;
pub mod planner;
pub mod run;
pub mod select;
pub mod sink;

pub use run::{quantize_model, Objective, Params, Progress, Report, TensorReport};

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
