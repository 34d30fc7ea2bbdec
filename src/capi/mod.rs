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
pub mod model;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::ffi::CStr;

    fn last_error() -> String {
        unsafe { CStr::from_ptr(error::ggml_qat_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn guard_turns_a_panic_into_the_failure_value_and_a_message() {
        // &str payload
        let v = guard("ggml_qat_test_str", 7, || -> Result<i32> { panic!("boom") });
        assert_eq!(v, 7);
        assert_eq!(last_error(), "ggml_qat_test_str: internal error: boom");
        // String payload (formatted panic)
        let v = guard("ggml_qat_test_string", std::ptr::null_mut::<u8>(), || {
            let n = 3;
            panic!("index {n} out of range")
        });
        assert!(v.is_null());
        assert_eq!(
            last_error(),
            "ggml_qat_test_string: internal error: index 3 out of range"
        );
        // any other payload
        let v = guard("ggml_qat_test_any", f32::NAN, || -> Result<f32> {
            std::panic::panic_any(42u8)
        });
        assert!(v.is_nan());
        assert_eq!(
            last_error(),
            "ggml_qat_test_any: internal error: unknown panic"
        );
        // a real panic from a library path: slice indexing out of bounds
        let v = guard("ggml_qat_test_index", false, || {
            let a = [1, 2, 3];
            let i = a.len() + usize::from(last_error().is_empty());
            Ok(a[i] == 0)
        });
        assert!(!v);
        assert!(
            last_error().starts_with("ggml_qat_test_index: internal error: index out of bounds")
        );
    }

    #[test]
    fn guard_passes_values_and_errors() {
        assert_eq!(guard("ggml_qat_test_ok", 0, || Ok(5)), 5);
        let v = guard("ggml_qat_test_err", 0, || -> Result<i32> {
            Err(Error::Null("ctx"))
        });
        assert_eq!(v, 0);
        assert_eq!(last_error(), "ggml_qat_test_err: ctx is NULL");
        // A success does not clear the message.
        assert_eq!(guard("ggml_qat_test_ok", 0, || Ok(1)), 1);
        assert_eq!(last_error(), "ggml_qat_test_err: ctx is NULL");
    }

    #[test]
    fn last_error_is_per_thread() {
        guard("ggml_qat_test_main", (), || Err(Error::Null("a")));
        std::thread::spawn(|| {
            assert_eq!(last_error(), "");
            guard("ggml_qat_test_other", (), || Err(Error::Null("b")));
            assert_eq!(last_error(), "ggml_qat_test_other: b is NULL");
        })
        .join()
        .unwrap();
        assert_eq!(last_error(), "ggml_qat_test_main: a is NULL");
    }

    /// Every exported function runs inside `guard`, except the few that
    /// cannot panic, each of which says why in a comment above it.
    #[test]
    fn every_exported_function_is_guarded_or_documented() {
        let sources = [
            include_str!("context.rs"),
            include_str!("error.rs"),
            include_str!("metrics.rs"),
            include_str!("model.rs"),
            include_str!("opencog.rs"),
            include_str!("plan.rs"),
            include_str!("quantize.rs"),
        ];
        let mut n = 0;
        for src in sources {
            let parts: Vec<&str> = src.split("#[no_mangle]").collect();
            for (i, item) in parts.iter().enumerate().skip(1) {
                n += 1;
                let name = item
                    .split("fn ")
                    .nth(1)
                    .and_then(|s| s.split('(').next())
                    .unwrap();
                let preceding = parts[i - 1]
                    .lines()
                    .rev()
                    .take_while(|l| l.starts_with("//"));
                let documented = preceding
                    .into_iter()
                    .any(|l| l.contains("Not wrapped in `guard`") || l.contains("cannot panic"));
                let guarded = item.contains(&format!("guard(\"{name}\""))
                    || item.contains(&format!("\"{name}\","));
                assert!(
                    guarded || documented,
                    "{name} neither runs inside guard(\"{name}\", ...) nor says why it cannot panic"
                );
            }
        }
        assert_eq!(n, 30, "exported functions found");
    }
}
