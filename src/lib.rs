//! ggml-qat: data-free, architecture-aware quantization of ggml tensors.
//!
//! Module map (dependencies point one way: `capi → (qat, opencog) → ggml → quant`):
//! - [`quant`]: ggml block formats on plain slices (no FFI).
//! - [`rng`]: seeded counter-based random streams.
//! - [`qat`]: calibration, metrics, planning, statistics, sessions.
//! - [`opencog`]: AtomSpace, MOSES tree and ECAN structures.
//! - [`ggml`]: the only code that touches libggml.
//! - [`capi`]: the `ggml_qat_*` C ABI declared in `include/ggml-qat.h`.

pub mod capi;
pub mod error;
pub mod ggml;
pub mod opencog;
pub mod qat;
pub mod quant;
pub mod rng;
