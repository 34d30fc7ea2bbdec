//! Whole matrices quantized from a source that hands out its rows piece by
//! piece: the one driver behind [`super::quantize_rows`] and the tensor API.
//!
//! A matrix is cut into pieces of about [`PIECE_ELEMENTS`] values: several
//! whole rows, or, for rows longer than that and no importance matrix, a
//! block-aligned segment of one row (blocks are quantized independently;
//! with an importance matrix ggml's quantizers use statistics of the whole
//! row, so a piece is then at least one row). Each thread reads a piece from
//! the source (borrowed, or converted into a buffer of its own that is
//! reused for its next pieces), checks it for non-finite values while it is
//! in the cache, and quantizes it. The extra memory is one piece per thread,
//! whatever the matrix's size and the source's type.

use std::cell::Cell;
use std::convert::Infallible;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{parallel, row_geometry, QuantError, QuantType, STREAM_MIN_BYTES};

/// Values per piece of work: enough to amortize the hand-over between
/// threads, small enough to stay in the per-core cache and to balance.
pub const PIECE_ELEMENTS: usize = 65536;

/// A piece of a matrix: rows `row..row + nrows`, columns `cols` of each
/// (all columns when `nrows > 1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub row: usize,
    pub nrows: usize,
    pub cols: Range<usize>,
}

impl Piece {
    /// Number of values in the piece.
    pub fn len(&self) -> usize {
        self.nrows * self.cols.len()
    }

    /// Whether the piece holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the values of a matrix come from, a piece at a time.
pub trait RowSource: Sync {
    /// Why a piece could not be read.
    type Error: Send;

    /// Values per row.
    fn row_len(&self) -> usize;

    /// Number of rows.
    fn nrows(&self) -> usize;

    /// The piece's values as F32, row after row: borrowed when they are
    /// stored so, otherwise written into `buf` (which has room for
    /// `piece.len()` values without reallocating).
    fn read<'s>(&'s self, piece: &Piece, buf: &'s mut Vec<f32>) -> Result<&'s [f32], Self::Error>;

    /// Whether [`RowSource::read`] writes into its buffer for this piece
    /// (false when the values are borrowed).
    fn converts(&self, _piece: &Piece) -> bool {
        true
    }
}

/// A matrix already in memory as F32 rows.
pub struct SliceRows<'a> {
    pub values: &'a [f32],
    pub row_len: usize,
}

impl RowSource for SliceRows<'_> {
    type Error = Infallible;

    fn row_len(&self) -> usize {
        self.row_len
    }

    fn nrows(&self) -> usize {
        self.values.len() / self.row_len.max(1)
    }

    fn read<'s>(&'s self, piece: &Piece, _buf: &'s mut Vec<f32>) -> Result<&'s [f32], Infallible> {
        let start = piece.row * self.row_len + piece.cols.start;
        let len = (piece.nrows - 1) * self.row_len + piece.cols.len();
        Ok(&self.values[start..start + len])
    }

    fn converts(&self, _piece: &Piece) -> bool {
        false
    }
}

/// Why [`quantize_from`] failed.
#[derive(Debug, PartialEq)]
pub enum FromError<E> {
    /// The type, the shapes or the imatrix do not fit.
    Quant(QuantError),
    /// The source could not deliver a piece.
    Source(E),
    /// The value at `index` (in logical row-major order) is NaN or infinite.
    NonFinite { index: usize, value: f32 },
}

impl<E> From<QuantError> for FromError<E> {
    fn from(e: QuantError) -> Self {
        FromError::Quant(e)
    }
}

/// Whether [`quantize_from`] refuses non-finite values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finite {
    /// Check each piece before quantizing it; the first bad value (lowest
    /// index) is reported after the other pieces are done.
    Check,
    /// Quantize whatever the values are (ggml's behaviour).
    Trust,
}

/// The pieces of a matrix of `nrows` rows of `row_len`, in order. Rows
/// longer than [`PIECE_ELEMENTS`] are cut into segments of whole blocks of
/// `block` values when `split_rows` is set.
pub fn pieces(nrows: usize, row_len: usize, block: usize, split_rows: bool) -> Vec<Piece> {
    if row_len == 0 || nrows == 0 {
        return Vec::new();
    }
    if row_len <= PIECE_ELEMENTS || !split_rows {
        let per = (PIECE_ELEMENTS / row_len).max(1);
        return (0..nrows)
            .step_by(per)
            .map(|row| Piece {
                row,
                nrows: per.min(nrows - row),
                cols: 0..row_len,
            })
            .collect();
    }
    let seg = (PIECE_ELEMENTS / block).max(1) * block;
    (0..nrows)
        .flat_map(|row| {
            (0..row_len).step_by(seg).map(move |c| Piece {
                row,
                nrows: 1,
                cols: c..(c + seg).min(row_len),
            })
        })
        .collect()
}

thread_local! {
    /// Each thread's conversion buffer, kept between pieces and calls.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Buffers larger than this are released after each piece instead of kept
/// for the thread's next call (a piece is larger only for long rows with an
/// importance matrix).
const KEEP_SCRATCH_BYTES: usize = 4 * PIECE_ELEMENTS * std::mem::size_of::<f32>();

/// Runs `f` with this thread's conversion buffer, grown fallibly to hold
/// `len` values.
fn with_scratch<R, E>(len: usize, f: impl FnOnce(&mut Vec<f32>) -> R) -> Result<R, FromError<E>> {
    let mut buf = SCRATCH.with(|c| c.take());
    buf.clear();
    if buf.try_reserve_exact(len).is_err() {
        return Err(FromError::Quant(QuantError::Alloc {
            bytes: len.saturating_mul(std::mem::size_of::<f32>()),
        }));
    }
    let r = f(&mut buf);
    if buf.capacity() * std::mem::size_of::<f32>() <= KEEP_SCRATCH_BYTES {
        SCRATCH.with(|c| c.set(buf));
    }
    Ok(r)
}

/// Index of the first NaN or infinite value of `x`. Scans blocks of values
/// with a branch-free test the compiler vectorizes (an all-ones exponent
/// plus one carries into the sign bit), with AVX2 where the CPU has it,
/// then looks inside the block that has one.
pub fn first_non_finite(x: &[f32]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { first_non_finite_avx2(x) };
    }
    first_non_finite_portable(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn first_non_finite_avx2(x: &[f32]) -> Option<usize> {
    use std::arch::x86_64::*;
    // 32 values per step: an exponent of all ones compares equal to the
    // mask; four independent accumulators keep both load ports busy.
    let exp = _mm256_set1_epi32(0x7f80_0000);
    let steps = x.len() / 32;
    let p = x.as_ptr();
    let mut acc = [_mm256_setzero_si256(); 4];
    for i in 0..steps {
        for (k, a) in acc.iter_mut().enumerate() {
            let v = _mm256_loadu_si256(p.add(i * 32 + k * 8).cast());
            *a = _mm256_or_si256(*a, _mm256_cmpeq_epi32(_mm256_and_si256(v, exp), exp));
        }
    }
    let any = _mm256_or_si256(
        _mm256_or_si256(acc[0], acc[1]),
        _mm256_or_si256(acc[2], acc[3]),
    );
    if _mm256_testz_si256(any, any) == 0 {
        // Found in the vector part: locate it (rare, so plainly).
        return x.iter().position(|v| !v.is_finite());
    }
    first_non_finite_portable(&x[steps * 32..]).map(|i| steps * 32 + i)
}

#[inline(always)]
fn first_non_finite_portable(x: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    const BLOCK: usize = 512;
    let mut base = 0;
    for c in x.chunks(BLOCK) {
        let mut acc = [0u32; 8];
        let lanes = c.chunks_exact(8);
        let tail = lanes.remainder();
        for l in lanes {
            for k in 0..8 {
                acc[k] |= (l[k].to_bits() & EXP).wrapping_add(0x0080_0000);
            }
        }
        let mut any = acc.iter().fold(0, |a, &b| a | b);
        any |= tail
            .iter()
            .fold(0, |a, v| a | (v.to_bits() & EXP).wrapping_add(0x0080_0000));
        if any & 0x8000_0000 != 0 {
            return c.iter().position(|v| !v.is_finite()).map(|i| base + i);
        }
        base += c.len();
    }
    None
}

/// Values quantized and then checked at a time (for formats whose
/// quantizer does not check itself): whole blocks of about 2 KiB of F32,
/// which stay in the L1 cache between the two, for the fast 32-value block
/// formats (measured on Q8_0, 32 MiB, before it checked itself: checking
/// whole rows of 4096 values afterwards cost 40%, parts of 1024 values 9%,
/// of 256 values 6%); whole rows for the 256-value block formats, whose
/// quantizers are slow enough that a check from L2 is lost in their time
/// while each extra call costs them (Q3_K: +28% in parts of 512), and with
/// an importance matrix (statistics of the whole row).
fn check_part(block: usize, imatrix: bool) -> usize {
    if imatrix || block >= 256 {
        usize::MAX
    } else {
        (512 / block).max(1) * block
    }
}

/// Quantize the matrix of `src` into `dst` as `ty`, pieces in parallel on
/// the current rayon pool (see the module doc). Same bytes as
/// `ggml_quantize_chunk(ty, values, dst, 0, nrows, row_len, imatrix)`. With
/// [`Finite::Check`] nothing non-finite is quantized and the first bad value
/// is reported; `dst` is then partly written.
pub fn quantize_from<S: RowSource>(
    ty: QuantType,
    src: &S,
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
    finite: Finite,
) -> Result<(), FromError<S::Error>> {
    let row_len = src.row_len();
    let nrows = src.nrows();
    let (f, row_bytes) = row_geometry(ty, row_len)?;
    if dst.len() != nrows * row_bytes {
        return Err(QuantError::BadLength {
            got: dst.len(),
            want: nrows * row_bytes,
        }
        .into());
    }
    if let Some(w) = imatrix {
        if w.len() != row_len {
            return Err(QuantError::BadImatrix {
                got: w.len(),
                want: row_len,
            }
            .into());
        }
    }
    let streaming = dst.len() >= STREAM_MIN_BYTES;
    let quantize_row = f
        .quantize_row_streaming
        .filter(|_| streaming)
        .unwrap_or(f.quantize_row);
    let pieces = pieces(nrows, row_len, f.block_size, imatrix.is_none());
    // Each piece's destination: its rows' bytes, or the segment's blocks.
    let mut items = Vec::with_capacity(pieces.len());
    let mut rest = dst;
    for p in pieces {
        let bytes = p.nrows * p.cols.len() / f.block_size * f.block_bytes;
        let (d, r) = std::mem::take(&mut rest).split_at_mut(bytes);
        rest = r;
        items.push((p, d));
    }
    // The first failure by position: (index of the first value of its
    // piece, the error). Its position is also kept in an atomic, so the
    // pieces check it without taking the lock.
    let failed: Mutex<Option<(usize, FromError<S::Error>)>> = Mutex::new(None);
    let first_failed_at = AtomicUsize::new(usize::MAX);
    let fail = |at: usize, e: FromError<S::Error>| {
        let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.as_ref().map_or(true, |(first, _)| at < *first) {
            *f = Some((at, e));
            first_failed_at.fetch_min(at, Ordering::Relaxed);
        }
    };
    let earlier_failure = |at: usize| first_failed_at.load(Ordering::Relaxed) < at;
    parallel::for_each_item(items, |(p, d): (Piece, &mut [u8])| {
        let at = p.row * row_len + p.cols.start;
        if earlier_failure(at) {
            return;
        }
        let need = if src.converts(&p) { p.len() } else { 0 };
        let done = with_scratch(need, |buf| -> Result<(), FromError<S::Error>> {
            let values = src.read(&p, buf).map_err(FromError::Source)?;
            let w = imatrix.map(|w| &w[p.cols.clone()]);
            let width = p.cols.len();
            let seg_bytes = d.len() / p.nrows;
            for (k, (s, d)) in values
                .chunks(width)
                .zip(d.chunks_mut(seg_bytes))
                .enumerate()
            {
                if finite == Finite::Trust {
                    quantize_row(s, d, w);
                    continue;
                }
                // Checked right after quantizing, a few KiB at a time, while
                // the values are still in the L1 cache: a separate pass
                // would read them from memory once more. A bad part's bytes
                // are garbage; the caller gets the error instead of the
                // output. With an importance matrix the row stays whole.
                if let (Some(checked), None) = (f.quantize_row_checked, w) {
                    // The quantizer checks in its own pass over the row.
                    if !checked(s, d, streaming) {
                        let i = first_non_finite(s).unwrap_or(0);
                        return Err(FromError::NonFinite {
                            index: at + k * row_len + i,
                            value: s[i],
                        });
                    }
                    continue;
                }
                let part = check_part(f.block_size, w.is_some()).min(width);
                let part_bytes = part / f.block_size * f.block_bytes;
                for (j, (s, d)) in s.chunks(part).zip(d.chunks_mut(part_bytes)).enumerate() {
                    quantize_row(s, d, w);
                    if let Some(i) = first_non_finite(s) {
                        // Logical index: pieces of several rows span whole
                        // rows, a segment lies in one row.
                        return Err(FromError::NonFinite {
                            index: at + k * row_len + j * part + i,
                            value: s[i],
                        });
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = done.and_then(|r| r) {
            fail(at, e);
        }
    });
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{format, quantize_rows};

    #[test]
    fn pieces_cover_the_matrix_once_in_order() {
        for (nrows, row_len, block, split) in [
            (7, 4096, 32, true),
            (3, 65536 * 3 + 256, 256, true),
            (3, 65536 * 3 + 256, 256, false),
            (100, 1, 1, true),
            (1, 200_000, 32, true),
        ] {
            let ps = pieces(nrows, row_len, block, split);
            let mut next = 0;
            for p in &ps {
                assert_eq!(p.row * row_len + p.cols.start, next);
                assert!(p.nrows == 1 || p.cols == (0..row_len));
                assert_eq!(p.cols.start % block, 0);
                next += p.len();
                if split {
                    assert!(p.len() <= PIECE_ELEMENTS.max(row_len.min(PIECE_ELEMENTS)) + block);
                }
            }
            assert_eq!(next, nrows * row_len);
        }
    }

    #[test]
    fn first_non_finite_finds_the_first() {
        let mut x = vec![1.0f32; 1000];
        assert_eq!(first_non_finite(&x), None);
        for (i, v) in [
            (999, f32::NAN),
            (300, f32::INFINITY),
            (5, f32::NEG_INFINITY),
        ] {
            x[i] = v;
            assert_eq!(first_non_finite(&x), Some(i));
        }
        x[5] = f32::MAX;
        assert_eq!(first_non_finite(&x), Some(300));
    }

    /// A source that converts everything and can fail on a given piece.
    struct Converted<'a> {
        values: &'a [f32],
        row_len: usize,
        fail_at_row: Option<usize>,
    }

    impl RowSource for Converted<'_> {
        type Error = String;
        fn row_len(&self) -> usize {
            self.row_len
        }
        fn nrows(&self) -> usize {
            self.values.len() / self.row_len
        }
        fn read<'s>(&'s self, p: &Piece, buf: &'s mut Vec<f32>) -> Result<&'s [f32], String> {
            if self
                .fail_at_row
                .is_some_and(|r| (p.row..p.row + p.nrows).contains(&r))
            {
                return Err(format!("row {}", p.row));
            }
            let cap = buf.capacity();
            for r in p.row..p.row + p.nrows {
                let row = &self.values[r * self.row_len..][..self.row_len];
                buf.extend_from_slice(&row[p.cols.clone()]);
            }
            assert_eq!(buf.capacity(), cap, "the driver reserved too little");
            Ok(buf)
        }
    }

    fn values(n: usize) -> Vec<f32> {
        let mut r = crate::rng::TestRng(11);
        (0..n)
            .map(|_| (r.next() >> 40) as f32 / 1e6 - 8.0)
            .collect()
    }

    #[test]
    fn converted_sources_give_the_bytes_of_slices() {
        for (ty, row_len, nrows) in [
            (QuantType::Q4_K, 256 * 300, 3),
            (QuantType::Q8_0, 4096, 40),
            (QuantType::Q6_K, 256, 600),
        ] {
            let v = values(row_len * nrows);
            let bytes = format(ty).row_bytes(row_len).unwrap() * nrows;
            let mut want = vec![0u8; bytes];
            quantize_rows(ty, &v, row_len, &mut want, None).unwrap();
            let mut got = vec![0u8; bytes];
            let src = Converted {
                values: &v,
                row_len,
                fail_at_row: None,
            };
            quantize_from(ty, &src, &mut got, None, Finite::Check).unwrap();
            assert!(want == got, "{ty:?}");
            // With an importance matrix the rows stay whole.
            let w: Vec<f32> = (0..row_len).map(|i| 1.0 + (i % 7) as f32).collect();
            quantize_rows(ty, &v, row_len, &mut want, Some(&w)).unwrap();
            quantize_from(ty, &src, &mut got, Some(&w), Finite::Check).unwrap();
            assert!(want == got, "{ty:?} with imatrix");
        }
    }

    #[test]
    fn the_first_bad_value_and_the_first_failure_are_reported() {
        let row_len = 4096;
        let mut v = values(row_len * 64);
        v[40 * row_len + 7] = f32::INFINITY;
        v[10 * row_len + 3] = f32::NAN;
        let mut dst = vec![0u8; format(QuantType::Q8_0).row_bytes(row_len).unwrap() * 64];
        let src = SliceRows {
            values: &v,
            row_len,
        };
        match quantize_from(QuantType::Q8_0, &src, &mut dst, None, Finite::Check) {
            Err(FromError::NonFinite { index, value }) => {
                assert_eq!(index, 10 * row_len + 3);
                assert!(value.is_nan());
            }
            other => panic!("{other:?}"),
        }
        assert!(quantize_from(QuantType::Q8_0, &src, &mut dst, None, Finite::Trust).is_ok());
        // Formats whose quantizer checks in its own pass (F16, BF16, the
        // legacy formats), on both store paths (plain, and streaming for
        // large outputs), and one that is checked after quantizing.
        let checked_types = QuantType::ALL
            .into_iter()
            .filter(|&t| format(t).quantize_row_checked.is_some());
        assert_eq!(checked_types.clone().count(), 7);
        for ty in checked_types.chain([QuantType::IQ4_NL, QuantType::Q4_K]) {
            for rows in [64, 2100] {
                let mut w = values(row_len * rows);
                w[(rows - 3) * row_len + 4093] = f32::NEG_INFINITY;
                w[(rows - 5) * row_len + 17] = f32::NAN;
                let mut dst = vec![0u8; format(ty).row_bytes(row_len).unwrap() * rows];
                let src = SliceRows {
                    values: &w,
                    row_len,
                };
                match quantize_from(ty, &src, &mut dst, None, Finite::Check) {
                    Err(FromError::NonFinite { index, .. }) => {
                        assert_eq!(index, (rows - 5) * row_len + 17, "{ty:?} {rows}")
                    }
                    other => panic!("{ty:?} {rows}: {other:?}"),
                }
                w[(rows - 5) * row_len + 17] = 1.0;
                w[(rows - 3) * row_len + 4093] = 2.0;
                let src = SliceRows {
                    values: &w,
                    row_len,
                };
                quantize_from(ty, &src, &mut dst, None, Finite::Check).unwrap();
                let mut want = vec![0u8; dst.len()];
                quantize_rows(ty, &w, row_len, &mut want, None).unwrap();
                assert!(want == dst, "{ty:?} {rows}");
            }
        }
        let failing = Converted {
            values: &v,
            row_len,
            fail_at_row: Some(5),
        };
        assert_eq!(
            quantize_from(QuantType::Q8_0, &failing, &mut dst, None, Finite::Check),
            Err(FromError::Source("row 0".into()))
        );
    }
}
