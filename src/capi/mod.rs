//! The C ABI declared in `include/ggml-qat.h`: one file per header section.
//!
//! Every exported function is thin: it checks and converts its arguments,
//! calls safe Rust, and turns an error or a panic into the function's failure
//! value plus a message for `ggml_qat_last_error()` ([`guard`]). Pointers a C
//! caller passes must be NULL or valid for what the header says.
#![allow(clippy::missing_safety_doc)]

pub mod context;
pub mod error;
pub mod metrics;
pub mod opencog;
pub mod plan;
pub mod quantize;
pub mod types;

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Result;

/// Runs `body` as the exported function `func`: its value on success; on an
/// error or a panic, `fail`, with the message recorded for this thread.
pub(crate) fn guard<T>(func: &'static str, fail: T, body: impl FnOnce() -> Result<T>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            error::set_last_error(format!("{func}: {e}"));
            fail
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            error::set_last_error(format!("{func}: internal error: {what}"));
            fail
        }
    }
}
