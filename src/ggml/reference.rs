//! ggml's own quantizers and dequantizers, for differential tests and
//! benchmarks: the reference our kernels must equal byte for byte.

use super::ffi;
use crate::quant::QuantType;

/// `ggml_quantize_chunk(ty, src, dst, 0, nrows, n_per_row, imatrix)`.
///
/// # Panics
/// When `src.len() != nrows * n_per_row`, the imatrix length is not
/// `n_per_row`, or `n_per_row` is not a multiple of the block size (ggml
/// would abort).
pub fn quantize_chunk(
    ty: QuantType,
    src: &[f32],
    nrows: usize,
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Vec<u8> {
    assert_eq!(src.len(), nrows * n_per_row, "src length");
    if let Some(w) = imatrix {
        assert_eq!(w.len(), n_per_row, "imatrix length");
    }
    let (blck, size) = geometry(ty);
    assert_eq!(n_per_row % blck, 0, "row not a multiple of the block size");
    let mut dst = vec![0u8; nrows * n_per_row / blck * size];
    let written = unsafe {
        ffi::ggml_quantize_chunk(
            ty.ggml_id(),
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            nrows as i64,
            n_per_row as i64,
            imatrix.map_or(std::ptr::null(), |w| w.as_ptr()),
        )
    };
    assert_eq!(
        written,
        dst.len(),
        "ggml_quantize_chunk wrote an unexpected size"
    );
    dst
}

/// ggml's `to_float` of `ty`: `n` elements from `src`.
///
/// # Panics
/// When `src` is not exactly the bytes of `n` elements or ggml has no
/// dequantizer for `ty`.
pub fn to_float(ty: QuantType, src: &[u8], n: usize) -> Vec<f32> {
    let (blck, size) = geometry(ty);
    assert_eq!(n % blck, 0, "n not a multiple of the block size");
    assert_eq!(src.len(), n / blck * size, "src length");
    let mut dst = vec![0f32; n];
    let ok = unsafe {
        ffi::qat_shim_to_float(
            ty.ggml_id(),
            src.as_ptr().cast(),
            dst.as_mut_ptr(),
            n as i64,
        )
    };
    assert!(ok, "ggml has no to_float for {ty:?}");
    dst
}

/// ggml's (block size, bytes per block) of `ty`.
pub fn geometry(ty: QuantType) -> (usize, usize) {
    type_geometry(ty.ggml_id()).expect("ggml knows every QuantType")
}

/// ggml's (block size, bytes per block) of any type id, `None` for ids ggml
/// does not know.
pub fn type_geometry(id: i32) -> Option<(usize, usize)> {
    let (mut blck, mut size) = (0i64, 0usize);
    let ok = unsafe { ffi::qat_shim_type_geometry(id, &mut blck, &mut size) };
    (ok && blck > 0).then_some((blck as usize, size))
}
