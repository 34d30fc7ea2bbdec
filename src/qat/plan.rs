//! Which type a tensor actually gets: llama.cpp's fallback when the row
//! length does not fit the type's block, and precision steps.

use super::config::Config;
use super::layer::LayerClass;
use crate::quant::QuantType;

/// The type llama.cpp's `tensor_type_fallback` uses when `ty`'s block does
/// not divide the row: Q2_K, Q3_K → Q4_0; IQ4_XS → IQ4_NL; Q4_K → Q5_0;
/// Q5_K → Q5_1; Q6_K → Q8_0; the 32-element types → F16.
pub fn fallback(ty: QuantType) -> Option<QuantType> {
    use QuantType::*;
    match ty {
        Q2_K | Q3_K => Some(Q4_0),
        IQ4_XS => Some(IQ4_NL),
        Q4_K => Some(Q5_0),
        Q5_K => Some(Q5_1),
        Q6_K => Some(Q8_0),
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL => Some(F16),
        F32 | F16 | BF16 => None,
    }
}

/// The type a row of `row_len` elements gets when `wanted` is asked for.
pub fn type_for_row(wanted: QuantType, row_len: usize) -> QuantType {
    let mut ty = wanted;
    while row_len % ty.format().block_size != 0 {
        match fallback(ty) {
            Some(next) => ty = next,
            None => break,
        }
    }
    ty
}

/// Why `wanted` cannot hold rows of `row_len`, for the fallback log.
pub fn fallback_reason(wanted: QuantType, row_len: usize) -> String {
    format!(
        "ne[0] = {row_len} is not a multiple of {}",
        wanted.format().block_size
    )
}

/// The next more precise type: Q2_K → Q3_K → Q4_K → Q5_K → Q6_K → Q8_0 →
/// F16 → F32; Q4_0 → Q4_1 → Q5_0 → Q5_1 → Q8_0; IQ4_NL → Q5_0;
/// IQ4_XS → Q5_K; BF16 → F32. `None` for F32.
pub fn raise(ty: QuantType) -> Option<QuantType> {
    use QuantType::*;
    Some(match ty {
        Q2_K => Q3_K,
        Q3_K => Q4_K,
        Q4_K => Q5_K,
        Q5_K => Q6_K,
        Q6_K | Q5_1 => Q8_0,
        Q8_0 => F16,
        Q4_0 => Q4_1,
        Q4_1 | IQ4_NL => Q5_0,
        Q5_0 => Q5_1,
        IQ4_XS => Q5_K,
        F16 | BF16 => F32,
        F32 => return None,
    })
}

/// Whether a tensor of this type already holds block-quantized weights
/// (as opposed to F32/F16/BF16 floats).
pub fn is_block_quantized(ty: QuantType) -> bool {
    !matches!(ty, QuantType::F32 | QuantType::F16 | QuantType::BF16)
}

/// The types a layer class may take, best first: the default type, then
/// wider or more widely supported ones, ending with F16 and F32.
pub fn preference(class: LayerClass) -> Vec<QuantType> {
    use QuantType::*;
    let first = Config::default().qtype_for(class);
    let rest: &[QuantType] = match first {
        Q4_K => &[Q4_0, Q5_K, Q6_K, Q8_0, F16, F32],
        Q6_K => &[Q8_0, F16, F32],
        _ => &[F16, F32],
    };
    std::iter::once(first).chain(rest.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use QuantType::*;

    #[test]
    fn fallback_chain_follows_llama_cpp() {
        assert_eq!(type_for_row(Q4_K, 4096), Q4_K);
        assert_eq!(type_for_row(Q4_K, 96), Q5_0);
        assert_eq!(type_for_row(Q5_K, 96), Q5_1);
        assert_eq!(type_for_row(Q6_K, 96), Q8_0);
        assert_eq!(type_for_row(Q2_K, 96), Q4_0);
        assert_eq!(type_for_row(Q3_K, 96), Q4_0);
        assert_eq!(type_for_row(IQ4_XS, 96), IQ4_NL);
        assert_eq!(type_for_row(Q4_K, 100), F16);
        assert_eq!(type_for_row(Q8_0, 100), F16);
        assert_eq!(type_for_row(F32, 7), F32);
    }
}
