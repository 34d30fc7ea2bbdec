//! The GGUF header reader on arbitrary bytes (written to a file): an error
//! is fine; a panic, an abort or a large allocation is a bug. An accepted
//! header must survive the model checks, every accessor, and a round trip
//! through the writer to the same keys and tensors (`common::model`).

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("gguf_header", data);
    common::model::gguf_header(&path, &path.with_extension("back"));
});
