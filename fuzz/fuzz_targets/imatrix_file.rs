//! Both imatrix readers (GGUF and legacy `.dat`, told apart by the magic)
//! and the calibration file's reader (a GGUF imatrix with our keys)
//! on arbitrary bytes written to a file: an error is fine; a panic, an
//! abort or a large allocation is a bug. An accepted imatrix holds only
//! finite, non-negative weights (`common::model`).

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("imatrix_file", data);
    common::model::imatrix_file(&path);
});
