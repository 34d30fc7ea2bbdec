//! ggml-qat: data-free, architecture-aware quantization of ggml tensors.
//!
//! Module map (dependencies point one way: `capi → (qat, opencog, ggml) → quant`):
//! - [`quant`]: ggml block formats on plain slices (no FFI).
//! - [`qat`]: calibration, metrics, planning, statistics.
//! - [`opencog`]: AtomSpace, MOSES tree and ECAN structures.
//! - [`ggml`]: the only code that touches libggml.
//! - [`capi`]: the `ggml_qat_*` C ABI declared in `include/ggml-qat.h`.

pub mod error;
pub mod ggml;
pub mod quant;
