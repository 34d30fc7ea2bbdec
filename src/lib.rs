//! ggml-qat: data-free, architecture-aware quantization of ggml tensors.
//!
//! Module map (dependencies point one way: `capi → (qat, opencog) → ggml → quant`):
//! - [`quant`]: ggml block formats on plain slices (no FFI).
//! - [`rng`]: seeded counter-based random streams.
//! - [`qat`]: calibration, metrics, planning, statistics, sessions.
//! - [`opencog`]: AtomSpace, MOSES tree and ECAN structures.
//! - [`ggml`]: the only code that touches libggml.
//! - [`model`]: whole GGUF model files: read, type choice, streaming quantization, write.
//! - [`calibrator`]: runs the calibrator executable (llama.cpp) as a child process.
//! - [`capi`]: the `ggml_qat_*` C ABI declared in `include/ggml-qat.h`.

/// cbindgen:ignore
pub mod calibrator;
pub mod capi;
/// cbindgen:ignore
pub mod error;
/// cbindgen:ignore
pub mod ggml;
/// cbindgen:ignore
pub mod model;
/// cbindgen:ignore
pub mod opencog;
/// cbindgen:ignore
pub mod qat;
/// cbindgen:ignore
pub mod quant;
/// cbindgen:ignore
pub mod rng;
