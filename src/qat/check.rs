//! The protocol refuses non-finite data: a tensor's values as F32 once
//! checked, or the check alone, each naming the first bad element.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::ggml::Tensor;
use crate::quant;

/// The logical values of `src` as F32 (borrowed when it is contiguous
/// aligned F32, else converted into a fallibly allocated buffer),
/// refusing non-finite data (the error names the first bad element).
pub fn checked_values(src: &Tensor) -> Result<Cow<'_, [f32]>> {
    let values = src.values()?;
    if let Some(index) = quant::rows::first_non_finite(&values) {
        return Err(Error::NonFinite {
            tensor: src.name(),
            index,
            value: values[index],
        });
    }
    Ok(values)
}

/// Refuses `t` when it holds a non-finite value (the error names the
/// first), reading it a piece of rows at a time.
pub fn check_finite(t: &Tensor) -> Result<()> {
    match t.rows()?.first_non_finite()? {
        Some((index, value)) => Err(Error::NonFinite {
            tensor: t.name(),
            index,
            value,
        }),
        None => Ok(()),
    }
}
