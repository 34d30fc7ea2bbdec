//! Both imatrix readers (GGUF and legacy `.dat`, told apart by the magic)
//! on arbitrary bytes written to a file: an error is fine; a panic, an
//! abort or a large allocation is a bug. An accepted imatrix holds only
//! finite, non-negative weights.

#![no_main]

mod common;

use ggml_qat::model::imatrix;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("imatrix_file", data);
    let Ok(m) = imatrix::load(&path) else {
        return;
    };
    assert!(!m.is_empty());
    for (name, v) in &m {
        assert!(!v.is_empty(), "{name}: empty");
        assert!(
            v.iter().all(|x| x.is_finite() && *x >= 0.0),
            "{name}: {v:?}"
        );
    }
});
