//! OpenCog-style structures as safe Rust, filled with synthetic data from a
//! seeded stream and quantized as SEED.md describes (round-to-nearest on
//! fixed grids).

pub mod atomspace;
pub mod ecan;
pub mod moses;

pub use atomspace::AtomSpace;
pub use ecan::Ecan;
pub use moses::MosesTree;

use crate::error::{Error, Result};

/// The largest element count any OpenCog structure accepts (2^26).
pub const MAX_ELEMENTS: usize = 1 << 26;

/// Rounds `v`, clamped to [0, 1], to the nearest point of the 8-bit grid k/255.
pub fn quantize_unit_u8(v: f32) -> f32 {
    (v.clamp(0.0, 1.0) * 255.0).round() / 255.0
}

/// Validates a C count: at least `min`, at most [`MAX_ELEMENTS`].
pub(crate) fn count(name: &'static str, v: i32, min: i32) -> Result<usize> {
    if v < min {
        return Err(Error::invalid(
            name,
            format!("{v} (must be at least {min})"),
        ));
    }
    if v as usize > MAX_ELEMENTS {
        return Err(Error::invalid(
            name,
            format!("{v} (must be at most {MAX_ELEMENTS})"),
        ));
    }
    Ok(v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_grid_rounds_to_nearest() {
        assert_eq!(quantize_unit_u8(0.0), 0.0);
        assert_eq!(quantize_unit_u8(1.0), 1.0);
        assert_eq!(quantize_unit_u8(0.5), 128.0 / 255.0);
        assert_eq!(quantize_unit_u8(0.1 / 255.0), 0.0);
        assert_eq!(quantize_unit_u8(0.6 / 255.0), 1.0 / 255.0);
    }
}
