//! Questions to a ggml backend.

use super::compute::Backend;
use super::context::Context;
use super::ffi;
use crate::error::{Error, Result};
use crate::quant::QuantType;

/// Whether `backend` can run `ggml_mul_mat(W, X)` with `W` of type `ty`.
pub fn supports_mul_mat(backend: &Backend, ty: QuantType) -> Result<bool> {
    let ctx = Context::new_owned(8 * Context::tensor_cost(0), true)?;
    let k = 256; // a multiple of every block size
    let w = ctx.new_tensor_any(ty.ggml_id(), &[k, 16])?;
    let x = ctx.new_tensor_any(QuantType::F32.ggml_id(), &[k, 4])?;
    let node = unsafe { ffi::ggml_mul_mat(ctx.as_ptr(), w.as_ptr(), x.as_ptr()) };
    if node.is_null() {
        return Err(Error::Ggml("ggml_mul_mat returned NULL".into()));
    }
    Ok(unsafe { ffi::ggml_backend_supports_op(backend.as_ptr(), node) })
}

/// The first of `candidates` whose matrix product `backend` supports.
pub fn first_supported(backend: &Backend, candidates: &[QuantType]) -> Result<QuantType> {
    for &ty in candidates {
        if supports_mul_mat(backend, ty)? {
            return Ok(ty);
        }
    }
    Err(Error::Unsupported(format!(
        "the backend supports none of {:?} for MUL_MAT",
        candidates
    )))
}
