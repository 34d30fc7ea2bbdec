//! `--report FILE`: what a run did, as JSON (read by the C API's
//! `ggml_qat_calibrate_model` for its report struct, and by people).
//! Written through a temporary file beside the target, before the
//! calibration file is renamed into place.

use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Serialize, Default)]
pub struct Report {
    pub model: String,
    pub output: String,
    /// Calibration tokens in all: text evaluated plus self-generated.
    pub tokens: usize,
    pub text_tokens: usize,
    pub generated_tokens: usize,
    /// True when the added tokens were drawn from the vocabulary (an
    /// embedding model) rather than sampled from the model.
    pub drawn_tokens: bool,
    /// Self-generated (or drawn) sequences.
    pub sequences: usize,
    /// `imatrix.chunk_count`: text chunks plus generated sequences.
    pub chunks: usize,
    pub chunk_size: usize,
    pub seed: u64,
    /// Weights with statistics.
    pub weights: usize,
    /// Gram matrices written, and their bytes in the file.
    pub grams: usize,
    pub gram_bytes: u64,
    pub sensitivity: Option<Sensitivity>,
    pub seconds: Seconds,
    /// Size of the calibration file.
    pub output_bytes: u64,
    /// Peak resident memory of this process.
    pub peak_rss_bytes: u64,
}

#[derive(Serialize, Default)]
pub struct Sensitivity {
    pub probe_type: String,
    /// "kl-divergence", or "1-cosine" (an embedding model's pooled
    /// embeddings); each group's `kld` is that measure.
    pub measure: String,
    pub tokens: usize,
    /// Positions scored (sequences, for 1-cosine).
    pub positions: usize,
    pub floor: f64,
    pub groups: Vec<Group>,
}

#[derive(Serialize, Default)]
pub struct Group {
    pub name: String,
    pub kld: f64,
    pub nsr: f64,
}

#[derive(Serialize, Default)]
pub struct Seconds {
    pub evaluate: f64,
    pub generate: f64,
    pub sensitivity: f64,
    pub total: f64,
}

/// The temporary file of the report at `target`.
pub fn temp_for(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map_or("report".into(), |n| n.to_string_lossy());
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `r` to `target` through [`temp_for`] (removed on failure).
pub fn write(target: &Path, r: &Report) -> Result<()> {
    let temp = temp_for(target);
    let text =
        serde_json::to_vec_pretty(r).map_err(|e| Error::Write(format!("the report: {e}")))?;
    let res = std::fs::write(&temp, text).and_then(|_| std::fs::rename(&temp, target));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::Io(target.into(), e));
    }
    Ok(())
}

/// Peak resident memory of this process, in bytes (0 when unknown).
pub fn peak_rss() -> u64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0;
    }
    (u.ru_maxrss.max(0) as u64) * 1024
}
