//! The calibrator's errors: each names what failed and why.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{}: not a GGUF file", .0.display())]
    NotGguf(PathBuf),
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    #[error("llama.cpp could not load the model {}{}", .0.display(), log_suffix(.1))]
    ModelLoad(PathBuf, String),
    #[error("llama.cpp could not create a context ({}){}", .0, log_suffix(.1))]
    Context(String, String),
    #[error("llama_decode failed with status {} while {}{}", .0, .1, log_suffix(.2))]
    Decode(i32, &'static str, String),
    #[error("tokenizing {0} failed")]
    Tokenize(String),
    #[error("{0}")]
    Statistics(String),
    #[error("writing the calibration file: {0}")]
    Write(String),
    #[error("cancelled")]
    Cancelled,
}

fn log_suffix(log: &str) -> String {
    let log = log.trim();
    if log.is_empty() {
        String::new()
    } else {
        format!(": {log}")
    }
}

pub type Result<T> = std::result::Result<T, Error>;
