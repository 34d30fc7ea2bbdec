//! The only code that touches libggml: raw declarations ([`ffi`]), the C shim
//! that reads ggml's structs, and safe wrappers for tensors, contexts and
//! ggml's own reference quantizers.

pub mod backend;
pub mod compute;
pub mod context;
pub mod ffi;
pub mod gguf;
pub mod reference;
pub mod tensor;
pub mod tensor_rows;

pub use context::Context;
pub use tensor::{NewTensor, Tensor};
pub use tensor_rows::TensorRows;
