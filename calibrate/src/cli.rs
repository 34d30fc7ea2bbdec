//! Command-line options, named as llama.cpp's tools name them.

use crate::error::{Error, Result};
use clap::Parser;
use std::path::PathBuf;

/// Makes a calibration file (activation statistics in llama-imatrix's GGUF
/// layout, plus Gram matrices) by running MODEL through llama.cpp on text it
/// samples itself (from BOS alone) or on the given text files. An embedding
/// model (no language-model head) cannot sample: data-free, it reads tokens
/// drawn uniformly from its vocabulary, and its sensitivities are 1 − cosine
/// of its pooled embeddings.
#[derive(Parser, Debug)]
#[command(name = "ggml-qat-calibrate", version)]
pub struct Args {
    /// The model (GGUF) to run.
    pub model: PathBuf,
    /// The calibration file to write (GGUF).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Calibration tokens (rounded up to whole chunks). Default 10000; with
    /// --file, default all of the text, and self-generated text (for an
    /// embedding model, tokens drawn from the vocabulary) fills up to N
    /// when the text is shorter.
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Chunk (context) size: tokens evaluated together, as llama-imatrix's -c.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Tokens per evaluation step (-ub; at most the chunk): a chunk is
    /// evaluated in steps of this many, which bounds the logits kept. An
    /// embedding model reads each chunk in one step.
    #[arg(long = "ubatch-size", default_value_t = 128)]
    pub ubatch_size: usize,
    /// Threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Layers to offload to a GPU (-ngl); used only when the linked llama.cpp has one.
    #[arg(long = "n-gpu-layers", default_value_t = 0)]
    pub n_gpu_layers: i32,
    /// Seed of the self-generated text (each sequence's sampler derives its
    /// own), or of the tokens drawn for an embedding model.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// A text file to calibrate on (repeatable).
    #[arg(short = 'f', long = "file")]
    pub files: Vec<PathBuf>,
    /// Also write the evaluated text to FILE.
    #[arg(long = "save-text")]
    pub save_text: Option<PathBuf>,
    /// Embedding models: also write the pooled embeddings of the first
    /// sequences (those the sensitivities are scored on: up to
    /// --sensitivity-tokens tokens, whole chunks; the same with
    /// --no-sensitivity) to FILE (f32, little-endian, one row of the model's
    /// embedding size per sequence), as the model now is: the reference of
    /// the sensitivities, or a quantized model's vectors to compare.
    #[arg(long = "save-embeddings", value_name = "FILE")]
    pub save_embeddings: Option<PathBuf>,
    /// Sequences generated together in one batch (-np).
    #[arg(short = 'b', long = "parallel", default_value_t = 32)]
    pub parallel: usize,
    /// Sampling temperature of the self-generated text.
    #[arg(long, default_value_t = 1.0)]
    pub temp: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long = "top-k", default_value_t = 0)]
    pub top_k: i32,
    /// Keep the smallest set of tokens of probability P (1: all).
    #[arg(long = "top-p", default_value_t = 1.0)]
    pub top_p: f32,
    /// Gram matrices only for weights whose rows are at most this long (0: none).
    #[arg(long = "gram-max", default_value_t = 8192)]
    pub gram_max: usize,
    /// Also collect output.weight, as llama-imatrix --process-output.
    #[arg(long = "process-output")]
    pub process_output: bool,
    /// The type each group of weights is quantized to when measuring the
    /// model's sensitivities (ggml's name: q4_0, q4_k, iq4_nl, …).
    #[arg(long = "probe-type", default_value = "q4_0")]
    pub probe_type: String,
    /// Calibration tokens the sensitivities are measured on (the first
    /// chunks of the calibration text; rounded up to whole chunks).
    #[arg(long = "sensitivity-tokens", default_value_t = 1024)]
    pub sensitivity_tokens: usize,
    /// Do not measure the sensitivities (the file then carries no planner
    /// factors, and the model is memory-mapped rather than read).
    #[arg(long = "no-sensitivity")]
    pub no_sensitivity: bool,
    /// Write machine-readable progress lines `STAGE DONE TOTAL` (stages
    /// evaluate, generate, sensitivity; at least one per stage, the last
    /// with DONE = TOTAL) to this open file descriptor (the C API's pipe).
    #[arg(long = "progress-fd", value_name = "N")]
    pub progress_fd: Option<i32>,
    /// Also write a JSON report (tokens, chunks, weights, Gram matrices,
    /// each sensitivity group's figures, seconds per stage, output bytes,
    /// peak RSS) to FILE, before the calibration file is renamed into place.
    #[arg(long = "report", value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Show llama.cpp's log.
    #[arg(short, long)]
    pub verbose: bool,
    /// No progress lines.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Parses the command line; llama.cpp's single-dash long options (-ngl,
/// -np, -ub) are accepted too.
pub fn parse() -> Args {
    let args = std::env::args_os().map(|a| match a.to_str() {
        Some("-ngl") => "--n-gpu-layers".into(),
        Some("-np") => "--parallel".into(),
        Some("-ub") => "--ubatch-size".into(),
        Some(s) if s.starts_with("-ngl=") => format!("--n-gpu-layers={}", &s[5..]).into(),
        _ => a,
    });
    Args::parse_from(args)
}

impl Args {
    /// Refuses values no run could use.
    pub fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Usage(m.to_string()));
        if self.ctx_size < 2 || self.ctx_size > 1 << 20 {
            return bad("--ctx-size must be between 2 and 1048576");
        }
        if self.ubatch_size == 0 {
            return bad("--ubatch-size must be at least 1");
        }
        if self.tokens == Some(0) {
            return bad("--tokens must be at least 1");
        }
        if self.parallel == 0 || self.parallel > 1024 {
            return bad("--parallel must be between 1 and 1024");
        }
        if self.threads == Some(0) || self.threads.is_some_and(|t| t > 4096) {
            return bad("--threads must be between 1 and 4096");
        }
        if !(self.temp.is_finite() && self.temp >= 0.0) {
            return bad("--temp must be a finite number >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("--top-p must be in (0, 1]");
        }
        if self.sensitivity_tokens == 0 {
            return bad("--sensitivity-tokens must be at least 1");
        }
        if self.top_k < 0 {
            return bad("--top-k must be >= 0");
        }
        if self.report.as_ref() == Some(&self.output) {
            return bad("--report must not be the output file");
        }
        if self.progress_fd.is_some_and(|fd| fd < 0) {
            return bad("--progress-fd must be an open file descriptor");
        }
        Ok(())
    }

    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}
