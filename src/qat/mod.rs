//! The QAT protocol on safe Rust types: configuration, layer classes and
//! type planning (fallbacks), calibration data, metrics, and the session
//! state behind a `ggml_qat_context_t`.

pub mod calibration;
pub mod config;
pub mod layer;
pub mod measure;
pub mod metrics;
pub mod plan;
pub mod progressive;
pub mod sensitivity;
pub mod session;

pub use config::Config;
pub use layer::LayerClass;
pub use session::Session;
