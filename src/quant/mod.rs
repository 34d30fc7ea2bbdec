//! ggml block formats on plain slices: no FFI, no ggml.
//!
//! Every format is described by a [`Format`]: its ggml type id, elements per
//! block, bytes per block, and a row quantizer and dequantizer that produce
//! exactly the bytes (and floats) ggml's own reference code produces.
//! [`format`] is the registry; [`quantize_rows`] and [`dequantize_rows`]
//! apply a format to whole matrices, one row per task, in parallel.

pub mod block;
mod cpu;
pub(crate) mod dequant;
pub mod float;
pub mod iq4;
pub mod kquants;
pub mod legacy;
mod parallel;
pub use parallel::{for_each_item as for_each_piece, on_this_thread};
pub mod rows;
pub mod search;

/// ggml type ids of the formats this crate knows; values equal `enum ggml_type`.
#[allow(non_camel_case_types)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum QuantType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    IQ4_NL = 20,
    IQ4_XS = 23,
    BF16 = 30,
}

impl QuantType {
    /// Every type the registry knows, F32 included.
    pub const ALL: [QuantType; 15] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
        QuantType::IQ4_NL,
        QuantType::IQ4_XS,
        QuantType::BF16,
    ];

    /// The type with this ggml id, if this crate implements it.
    pub fn from_ggml(id: i32) -> Option<QuantType> {
        Self::ALL.iter().copied().find(|t| *t as i32 == id)
    }

    /// The ggml id (`enum ggml_type` value).
    pub fn ggml_id(self) -> i32 {
        self as i32
    }

    /// The registry entry of this type.
    pub fn format(self) -> &'static Format {
        format(self)
    }
}

/// Quantize one row: `src.len()` is a multiple of the block size, `dst.len()`
/// is `src.len() / block_size * block_bytes`; `imatrix`, when given, has one
/// non-negative importance weight per element of the row.
pub type QuantizeRowFn = fn(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>);

/// Quantize one row without imatrix, with non-temporal stores when the
/// flag says so; false when some input value is NaN or infinite (the bytes
/// are then written all the same).
pub type CheckedQuantizeRowFn = fn(src: &[f32], dst: &mut [u8], streaming: bool) -> bool;

/// Dequantize one row: the inverse shapes of [`QuantizeRowFn`].
pub type DequantizeRowFn = fn(src: &[u8], dst: &mut [f32]);

/// A block format: geometry and its two row functions.
#[derive(Debug)]
pub struct Format {
    pub ty: QuantType,
    /// ggml's name of the type (`"q4_K"`, `"f16"`, ...).
    pub name: &'static str,
    /// Elements per block.
    pub block_size: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    pub quantize_row: QuantizeRowFn,
    /// The same quantizer writing with non-temporal stores, for outputs of
    /// at least [`STREAM_MIN_BYTES`] (see `dequantize_row_streaming`);
    /// `None` where streaming does not pay.
    pub quantize_row_streaming: Option<QuantizeRowFn>,
    /// The quantizer (plain, or streaming with `true`) that also tells
    /// whether every input value was finite, checked in its own pass over
    /// the data (no imatrix): used where a separate check would cost as
    /// much as the conversion (F16, BF16). `None`: checked separately.
    pub quantize_row_checked: Option<CheckedQuantizeRowFn>,
    pub dequantize_row: DequantizeRowFn,
    /// The same dequantizer writing with non-temporal stores, which skip
    /// reading the destination into the caches: used for outputs of at
    /// least [`STREAM_MIN_BYTES`], where the plain one is memory bound.
    /// `None` where streaming does not pay.
    pub dequantize_row_streaming: Option<DequantizeRowFn>,
}

/// Outputs of at least this many bytes are written with the formats'
/// streaming (non-temporal) row functions: far beyond the per-core caches,
/// so the output would not stay cached anyway, and the plain stores' reads
/// of the destination would cost memory bandwidth.
pub const STREAM_MIN_BYTES: usize = 16 << 20;

impl Format {
    /// Bytes of one row of `n` elements, or `None` when `n` is not a multiple
    /// of the block size.
    pub fn row_bytes(&self, n: usize) -> Option<usize> {
        if n % self.block_size != 0 {
            return None;
        }
        (n / self.block_size).checked_mul(self.block_bytes)
    }
}

fn all_formats() -> impl Iterator<Item = &'static Format> {
    float::FORMATS
        .iter()
        .chain(legacy::FORMATS)
        .chain(kquants::FORMATS)
        .chain(iq4::FORMATS)
}

/// The registry entry of `ty`.
///
/// # Panics
/// When a family module has not registered `ty` (a bug caught by the tests).
pub fn format(ty: QuantType) -> &'static Format {
    all_formats()
        .find(|f| f.ty == ty)
        .unwrap_or_else(|| panic!("format {ty:?} is not registered"))
}

/// Whether `ty` has a registered implementation.
pub fn is_implemented(ty: QuantType) -> bool {
    all_formats().any(|f| f.ty == ty)
}

/// Why a whole-matrix quantization could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("row length {n_per_row} is not a multiple of the {ty:?} block size {block}")]
    RowNotBlockAligned {
        ty: QuantType,
        n_per_row: usize,
        block: usize,
    },
    #[error("buffer of {got} elements/bytes where {want} were expected")]
    BadLength { got: usize, want: usize },
    #[error("importance matrix has {got} weights, one per column ({want}) is needed")]
    BadImatrix { got: usize, want: usize },
    #[error("{ty:?} is not implemented")]
    NotImplemented { ty: QuantType },
    #[error("cannot allocate {bytes} bytes for converting rows")]
    Alloc { bytes: usize },
}

/// `ty`'s registry entry and the bytes of one row of `n_per_row` elements.
fn row_geometry(ty: QuantType, n_per_row: usize) -> Result<(&'static Format, usize), QuantError> {
    let f = all_formats()
        .find(|f| f.ty == ty)
        .ok_or(QuantError::NotImplemented { ty })?;
    let row_bytes =
        f.row_bytes(n_per_row)
            .filter(|_| n_per_row > 0)
            .ok_or(QuantError::RowNotBlockAligned {
                ty,
                n_per_row,
                block: f.block_size,
            })?;
    Ok((f, row_bytes))
}

/// Quantize `src` (rows of `n_per_row` floats) into `dst`, rows in parallel on
/// the current rayon pool. Same bytes as
/// `ggml_quantize_chunk(ty, src, dst, 0, nrows, n_per_row, imatrix)`.
/// Outputs of [`STREAM_MIN_BYTES`] or more are written with the format's
/// streaming quantizer when it has one (same bytes).
pub fn quantize_rows(
    ty: QuantType,
    src: &[f32],
    n_per_row: usize,
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    let (_, _) = row_geometry(ty, n_per_row)?;
    if src.len() % n_per_row != 0 {
        return Err(QuantError::BadLength {
            got: src.len(),
            want: src.len().div_ceil(n_per_row) * n_per_row,
        });
    }
    let source = rows::SliceRows {
        values: src,
        row_len: n_per_row,
    };
    rows::quantize_from(ty, &source, dst, imatrix, rows::Finite::Trust).map_err(|e| match e {
        rows::FromError::Quant(e) => e,
        rows::FromError::Source(never) => match never {},
        rows::FromError::NonFinite { .. } => unreachable!("values are not checked here"),
    })
}

/// Dequantize `src` (rows of `n_per_row` elements of type `ty`) into `dst`,
/// rows in parallel on the current rayon pool. Outputs of
/// [`STREAM_MIN_BYTES`] or more are written with the format's streaming
/// dequantizer when it has one (same values).
pub fn dequantize_rows(
    ty: QuantType,
    src: &[u8],
    n_per_row: usize,
    dst: &mut [f32],
) -> Result<(), QuantError> {
    let (f, row_bytes) = row_geometry(ty, n_per_row)?;
    if dst.len() % n_per_row != 0 || src.len() != dst.len() / n_per_row * row_bytes {
        return Err(QuantError::BadLength {
            got: src.len(),
            want: dst.len() / n_per_row * row_bytes,
        });
    }
    let dequantize_row = f
        .dequantize_row_streaming
        .filter(|_| std::mem::size_of_val(dst) >= STREAM_MIN_BYTES)
        .unwrap_or(f.dequantize_row);
    let rows = rows_per_task(n_per_row);
    let pieces = src
        .chunks(rows * row_bytes)
        .zip(dst.chunks_mut(rows * n_per_row))
        .collect();
    // Rows are whole blocks, so a piece of rows is one run of blocks for the
    // row dequantizer (and one store fence for the streaming one).
    parallel::for_each_item(pieces, |(s, d): (&[u8], &mut [f32])| dequantize_row(s, d));
    Ok(())
}

/// Rows per piece of parallel work: enough (~64k elements) to amortize the
/// hand-over, small enough to balance the threads.
fn rows_per_task(n_per_row: usize) -> usize {
    (65536 / n_per_row.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in QuantType::ALL {
            assert_eq!(QuantType::from_ggml(t.ggml_id()), Some(t));
        }
        assert_eq!(QuantType::from_ggml(4), None);
        assert_eq!(QuantType::from_ggml(-1), None);
    }

    /// Pseudo-random bytes.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut r = crate::rng::TestRng(0x9E37_79B9_7F4A_7C15 ^ seed);
        (0..n).map(|_| r.next() as u8).collect()
    }

    #[test]
    fn streaming_dequantizers_write_the_plain_values() {
        for f in all_formats() {
            let Some(streaming) = f.dequantize_row_streaming else {
                continue;
            };
            // Random blocks: NaN/Inf scales and every code pattern occur.
            let nblocks = 300;
            let src = bytes(nblocks * f.block_bytes, f.ty as u64);
            let n = nblocks * f.block_size;
            let mut want = vec![0f32; n];
            (f.dequantize_row)(&src, &mut want);
            // Aligned (streamed) and misaligned (plain fallback) outputs.
            let mut buf = vec![0f32; n + 8];
            for offset in 0..4 {
                buf.iter_mut().for_each(|v| *v = 7.0);
                streaming(&src, &mut buf[offset..offset + n]);
                assert!(
                    want.iter()
                        .zip(&buf[offset..])
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{:?} at offset {offset}",
                    f.ty
                );
                assert!(buf[..offset]
                    .iter()
                    .chain(&buf[offset + n..])
                    .all(|&v| v == 7.0));
            }
        }
    }

    #[test]
    fn streaming_quantizers_write_the_plain_bytes() {
        for f in all_formats() {
            let Some(streaming) = f.quantize_row_streaming else {
                continue;
            };
            // Random bit patterns: NaNs, infinities and subnormals occur.
            let n = 300 * f.block_size;
            let src: Vec<f32> = bytes(4 * n, f.ty as u64)
                .chunks(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let row_bytes = f.row_bytes(n).unwrap();
            let mut want = vec![0u8; row_bytes];
            (f.quantize_row)(&src, &mut want, None);
            // Aligned (streamed) and misaligned (plain fallback) outputs.
            let mut buf = vec![0u8; row_bytes + 32];
            for offset in [0, 1, 2, 8, 16] {
                buf.fill(0xA5);
                streaming(&src, &mut buf[offset..offset + row_bytes], None);
                assert!(
                    want == buf[offset..offset + row_bytes],
                    "{:?} at offset {offset}",
                    f.ty
                );
                assert!(buf[..offset]
                    .iter()
                    .chain(&buf[offset + row_bytes..])
                    .all(|&v| v == 0xA5));
            }
        }
    }

    #[test]
    fn large_outputs_quantize_like_small_ones() {
        // At least STREAM_MIN_BYTES of output: the streaming path.
        let n_per_row = 4096;
        for f in all_formats().filter(|f| f.quantize_row_streaming.is_some()) {
            let row_bytes = f.row_bytes(n_per_row).unwrap();
            let rows = STREAM_MIN_BYTES / row_bytes + 3;
            let mut r = crate::rng::TestRng(7);
            let src: Vec<f32> = (0..rows * n_per_row)
                .map(|_| (r.next() >> 40) as f32 - 8e6)
                .collect();
            let mut got = vec![0u8; rows * row_bytes];
            quantize_rows(f.ty, &src, n_per_row, &mut got, None).unwrap();
            let mut want = vec![0u8; row_bytes];
            for (i, (s, g)) in src.chunks(n_per_row).zip(got.chunks(row_bytes)).enumerate() {
                (f.quantize_row)(s, &mut want, None);
                assert!(want == g, "{:?} row {i}", f.ty);
            }
        }
    }

    #[test]
    fn large_outputs_dequantize_like_small_ones() {
        // At least STREAM_MIN_BYTES of output: the streaming path.
        let n_per_row = 4096;
        let rows = STREAM_MIN_BYTES / 4 / n_per_row + 3;
        for f in all_formats() {
            let row_bytes = f.row_bytes(n_per_row).unwrap();
            let src = bytes(rows * row_bytes, 99);
            let mut got = vec![0f32; rows * n_per_row];
            dequantize_rows(f.ty, &src, n_per_row, &mut got).unwrap();
            let mut want = vec![0f32; n_per_row];
            for (r, (s, g)) in src.chunks(row_bytes).zip(got.chunks(n_per_row)).enumerate() {
                (f.dequantize_row)(s, &mut want);
                assert!(
                    want.iter().zip(g).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{:?} row {r}",
                    f.ty
                );
            }
        }
    }
}
