//! The whole model pipeline (`quantize_model`) on small mutated models,
//! written for real into a temporary output. Input: `[preset, flags,
//! model bytes…]`. Any `Err` is fine; a panic, an abort or a hang is a bug.

#![no_main]

mod common;

use ggml_qat::model::select::{Preset, Target};
use ggml_qat::model::{quantize_model, Params};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (preset, flags) = (data[0], data[1]);
    let input = common::input_file("quantize_model", &data[2..]);
    let output = input.with_extension("out.gguf");
    let params = Params {
        threads: 1,
        target: Target::Preset(Preset::ALL[preset as usize % Preset::ALL.len()]),
        pure: flags & 1 != 0,
        measure_error: flags & 2 != 0,
        leave_output: flags & 4 != 0,
        allow_requantize: flags & 8 != 0,
        optimize: flags & 16 != 0,
        max_buffer: if flags & 32 != 0 { 1 } else { 1 << 20 },
        ..Default::default()
    };
    let _ = quantize_model(&input, &output, &params, &mut |_| true);
    let _ = std::fs::remove_file(&output);
});
