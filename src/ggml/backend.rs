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
    first_supported_or_none(backend, candidates)?.ok_or_else(|| {
        Error::Unsupported(format!(
            "the backend supports none of {:?} for MUL_MAT",
            candidates
        ))
    })
}

fn first_supported_or_none(
    backend: &Backend,
    candidates: &[QuantType],
) -> Result<Option<QuantType>> {
    for &ty in candidates {
        if supports_mul_mat(backend, ty)? {
            return Ok(Some(ty));
        }
    }
    Ok(None)
}

/// The kind of device a backend runs on (`enum ggml_backend_dev_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Gpu,
    IntegratedGpu,
    /// An accelerator used together with the CPU backend (BLAS, AMX):
    /// ggml's scheduler runs on the CPU what it does not support.
    Accelerator,
    /// A device wrapping several others (tensor parallelism).
    Meta,
    /// A backend without a device, or a kind newer than this library.
    Unknown,
}

/// The kind of device behind `backend`.
pub fn device_kind(backend: &Backend) -> DeviceKind {
    // SAFETY: `backend` is live; a backend without a device gives NULL.
    let dev = unsafe { ffi::ggml_backend_get_device(backend.as_ptr()) };
    if dev.is_null() {
        return DeviceKind::Unknown;
    }
    // SAFETY: `dev` is the backend's live device.
    match unsafe { ffi::ggml_backend_dev_type(dev) } {
        0 => DeviceKind::Cpu,
        1 => DeviceKind::Gpu,
        2 => DeviceKind::IntegratedGpu,
        3 => DeviceKind::Accelerator,
        4 => DeviceKind::Meta,
        _ => DeviceKind::Unknown,
    }
}

/// The type to store a layer in for `backend`: the first of `preference`
/// its matrix product supports. An accelerator (BLAS, AMX) works beside
/// the CPU backend, which runs what the accelerator refuses, so when it
/// supports none of them the CPU backend is asked instead.
pub fn optimal_type(backend: &Backend, preference: &[QuantType]) -> Result<QuantType> {
    let kind = device_kind(backend);
    let cpu = || first_supported_or_none(&Backend::cpu(1)?, preference);
    choose(kind, first_supported_or_none(backend, preference)?, cpu)?.ok_or_else(|| {
        Error::Unsupported(format!(
            "the backend ({kind:?} device) supports none of {preference:?} for MUL_MAT"
        ))
    })
}

/// [`optimal_type`]'s decision from the device's answer and, for an
/// accelerator that had none, the CPU backend's.
fn choose(
    kind: DeviceKind,
    on_device: Option<QuantType>,
    on_cpu: impl FnOnce() -> Result<Option<QuantType>>,
) -> Result<Option<QuantType>> {
    match (on_device, kind) {
        (Some(ty), _) => Ok(Some(ty)),
        (None, DeviceKind::Accelerator) => on_cpu(),
        (None, _) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_backend_is_a_cpu_device() {
        assert_eq!(device_kind(&Backend::cpu(1).unwrap()), DeviceKind::Cpu);
    }

    #[test]
    fn only_an_accelerator_falls_back_to_the_cpu() {
        let cpu = || Ok(Some(QuantType::Q4_K));
        let q8 = Some(QuantType::Q8_0);
        for kind in [
            DeviceKind::Cpu,
            DeviceKind::Gpu,
            DeviceKind::IntegratedGpu,
            DeviceKind::Accelerator,
            DeviceKind::Meta,
            DeviceKind::Unknown,
        ] {
            // What the device supports always wins.
            assert_eq!(choose(kind, q8, cpu).unwrap(), q8);
            let fallback = choose(kind, None, cpu).unwrap();
            if kind == DeviceKind::Accelerator {
                assert_eq!(fallback, Some(QuantType::Q4_K));
            } else {
                assert_eq!(fallback, None, "{kind:?}");
            }
        }
    }
}
