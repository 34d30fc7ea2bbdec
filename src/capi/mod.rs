//! The C ABI declared in `include/ggml-qat.h`: one file per header section.
//!
//! Every exported function is thin: it checks and converts its arguments,
//! calls safe Rust, and turns an error or a panic into the function's failure
//! value plus a message for `ggml_qat_last_error()`. Its body runs inside
//! [`ffi_boundary!`], which names the function in that message without the
//! name being written twice (the few functions that cannot fail say why
//! in a comment instead). Pointers a C caller passes must be NULL or valid
//! for what the header says.
#![allow(clippy::missing_safety_doc)]

pub mod context;
pub mod error;
pub mod metrics;
pub mod model;
// After model: the header declares calibration after model quantization.
pub mod calibrate;
pub mod opencog;
pub mod plan;
pub mod quantize;
pub mod types;

use std::panic::{catch_unwind, AssertUnwindSafe};

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The body of an exported function, inside the panic boundary: as
/// rustls-ffi's `ffi_panic_boundary!`, it is used *in* the function (so
/// cbindgen, which expands no macro, still reads the signature and its doc
/// comment), and it learns the function's name from the function itself.
///
/// ```ignore
/// #[no_mangle]
/// pub unsafe extern "C" fn ggml_qat_x(ctx: *mut QatContext) -> f32 {
///     ffi_boundary!(f32::NAN, {
///         let s = session(ctx)?;
///         Ok(s.something()?)
///     })
/// }
/// ```
///
/// Use it directly in the function's body (in a closure it would name
/// the closure). The block returns `Result<T>`: its value on success; on an error or a
/// panic, the failure value (the first argument), with "ggml_qat_x: what
/// went wrong" recorded for `ggml_qat_last_error()`. With `|name| { … }`
/// the block also gets the name (for a message that goes with a success
/// value).
macro_rules! ffi_boundary {
    ($fail:expr, |$name:ident| $body:block $(,)?) => {{
        // An item of the enclosing function: its type name is that
        // function's path followed by `::here`.
        fn here() {}
        let $name = $crate::capi::function_name(::std::any::type_name_of_val(&here));
        $crate::capi::guard($name, $fail, || $body)
    }};
    ($fail:expr, $body:block $(,)?) => {
        $crate::capi::ffi_boundary!($fail, |_name| $body)
    };
}
pub(crate) use ffi_boundary;

/// The function name in the type name of an item declared in it
/// (`ggml_qat::capi::quantize::ggml_qat_quantize_layer::here` →
/// `ggml_qat_quantize_layer`); a plain name is returned as it is.
pub(crate) fn function_name(type_name: &'static str) -> &'static str {
    let path = type_name.strip_suffix("::here").unwrap_or(type_name);
    path.rsplit("::").next().unwrap_or(path)
}

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

/// The caller's C string `p` (the argument `name`), as UTF-8.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, name: &'static str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::Null(name));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| Error::invalid(name, "not UTF-8"))
}

/// An optional path: NULL → `None`.
pub(crate) unsafe fn opt_path(p: *const c_char, name: &'static str) -> Result<Option<PathBuf>> {
    if p.is_null() {
        return Ok(None);
    }
    Ok(Some(PathBuf::from(c_str(p, name)?)))
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

    /// A function of the shape of an exported one.
    fn ggml_qat_test_named(what: u8) -> i32 {
        ffi_boundary!(-1, {
            match what {
                0 => Ok(1),
                1 => Err(Error::Null("x")),
                _ => panic!("boom"),
            }
        })
    }

    #[test]
    fn the_boundary_names_the_function_it_is_used_in() {
        assert_eq!(ggml_qat_test_named(0), 1);
        assert_eq!(ggml_qat_test_named(1), -1);
        assert_eq!(last_error(), "ggml_qat_test_named: x is NULL");
        assert_eq!(ggml_qat_test_named(2), -1);
        assert_eq!(last_error(), "ggml_qat_test_named: internal error: boom");
        fn ggml_qat_test_with_name() -> &'static str {
            ffi_boundary!("", |name| { Ok(name) })
        }
        assert_eq!(ggml_qat_test_with_name(), "ggml_qat_test_with_name");
        assert_eq!(function_name("ggml_qat_plain"), "ggml_qat_plain");
    }

    /// Exported functions in each module name themselves.
    #[test]
    fn exported_functions_name_themselves() {
        use std::ptr::null_mut as null;
        unsafe {
            assert!(!context::ggml_qat_set_seed(null(), 1));
            assert_eq!(last_error(), "ggml_qat_set_seed: ctx is NULL");
            let t =
                quantize::ggml_qat_quantize_layer(null(), null(), null(), types::LayerTypeArg(0));
            assert!(t.is_null());
            assert_eq!(last_error(), "ggml_qat_quantize_layer: ctx is NULL");
            assert!(
                metrics::ggml_qat_kl_divergence_loss(null(), null(), null(), null(), 1.0).is_nan()
            );
            assert_eq!(last_error(), "ggml_qat_kl_divergence_loss: ctx is NULL");
            assert!(plan::ggml_qat_layer_sensitivity(null(), null(), types::GgmlType(8)).is_nan());
            assert_eq!(last_error(), "ggml_qat_layer_sensitivity: ctx is NULL");
            assert!(opencog::ggml_qat_create_ecan(null(), null(), 4).is_null());
            assert_eq!(last_error(), "ggml_qat_create_ecan: ctx is NULL");
        }
    }
}
