//! (placeholder: being written)

use super::Format;

/// Formats registered by this module.
pub static FORMATS: &[Format] = &[];
