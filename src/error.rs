//! The crate's error type: every failure a C caller can cause, with the
//! message `ggml_qat_last_error()` reports.

use crate::quant::QuantError;

/// What went wrong, worded for the C caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{0} is NULL")]
    Null(&'static str),
    #[error("invalid argument {name}: {why}")]
    Invalid { name: &'static str, why: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("ggml context has {free} bytes free, {need} are needed for the result")]
    NoRoom { need: usize, free: usize },
    #[error("{0}")]
    Tensor(String),
    #[error("non-finite value {value} at element {index} of tensor '{tensor}'")]
    NonFinite {
        tensor: String,
        index: usize,
        value: f32,
    },
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error("{0}")]
    Ggml(String),
    #[error("cannot allocate {bytes} bytes for {what}")]
    Alloc { bytes: usize, what: String },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(name: &'static str, why: impl Into<String>) -> Error {
        Error::Invalid {
            name,
            why: why.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
