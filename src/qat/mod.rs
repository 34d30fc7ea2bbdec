//! The QAT protocol as plain functions over plain data (a configuration,
//! the threads to run on, a seed or random stream, a backend, tensors and
//! slices): configuration, layer classes and type planning (fallbacks),
//! calibration data, metrics, the operations on tensors, measurement,
//! sensitivity and the mixed-precision plan, progressive quantization, and
//! the optimized quantizer. [`Session`], the state behind a
//! `ggml_qat_context_t`, holds what those functions read between calls and
//! counts what they made.

pub mod calibration;
pub mod check;
pub mod config;
pub mod layer;
pub mod measure;
pub mod metrics;
pub mod optimize;
pub mod plan;
pub mod progressive;
pub mod sensitivity;
pub mod session;
pub mod stats;
pub mod tensors;
pub mod threads;

pub use config::Config;
pub use layer::LayerClass;
pub use session::Session;
