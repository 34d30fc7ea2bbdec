//! The whole model pipeline (`quantize_model`) on small mutated models,
//! written for real into a temporary output. Input: `[preset, flags,
//! model bytes…]` (`common::model::quantize`). Any `Err` is fine; a panic,
//! an abort or a hang is a bug.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let input = common::input_file("quantize_model", &data[2..]);
    common::model::quantize(&input, &input.with_extension("out.gguf"), data[0], data[1]);
});
