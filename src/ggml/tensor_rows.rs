//! A caller's tensor read as F32 rows, a piece at a time: the one way this
//! crate reads tensor data. Contiguous F32 data at a 4-byte aligned address
//! is borrowed; anything else (F16, BF16, quantized types, views with
//! strides, data at an odd address) is converted a piece at a time into the
//! reader's buffer through the byte-level row dequantizers, which never
//! assume alignment. Memory therefore stays bounded by a piece per thread.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::quant::rows::{Piece, RowSource};
use crate::quant::{Format, QuantType};

/// Values read from callers' tensors since the process started (every
/// piece counts, borrowed or converted). Lets tests check that an entry
/// point reads its inputs exactly once.
static ELEMENTS_READ: AtomicU64 = AtomicU64::new(0);

/// Number of tensor values read by [`TensorRows`] in this process so far.
pub fn elements_read() -> u64 {
    ELEMENTS_READ.load(Ordering::Relaxed)
}

/// A host tensor of an implemented type whose rows can be read (see the
/// module doc), made by [`super::Tensor::rows`].
pub struct TensorRows<'t> {
    /// The first byte of the data, laid out by `ne` and `nb`.
    data: *const u8,
    ne: [i64; 4],
    nb: [u64; 4],
    format: &'static Format,
    row_len: usize,
    nrows: usize,
    /// The whole data as contiguous, aligned F32 values, when it is so.
    f32_data: Option<&'t [f32]>,
    _data: PhantomData<&'t [u8]>,
}

impl<'t> TensorRows<'t> {
    /// The rows of data of type `ty` at `data`, shape `ne`, strides `nb`.
    ///
    /// # Safety
    /// `data` is host memory holding that data, each row's blocks stored
    /// together (`nb[0]` is the block size, or any stride for one value per
    /// block), `contiguous` says whether rows follow each other without
    /// gaps, and no one writes the data during `'t` (the API's contract for
    /// source tensors).
    pub(super) unsafe fn from_parts(
        data: *const u8,
        ty: QuantType,
        ne: [i64; 4],
        nb: [u64; 4],
        contiguous: bool,
    ) -> TensorRows<'t> {
        let row_len = ne[0] as usize;
        let nrows = (ne[1] * ne[2] * ne[3]) as usize;
        let aligned = data as usize % std::mem::align_of::<f32>() == 0;
        let f32_data = (ty == QuantType::F32 && contiguous && aligned).then(|| {
            // SAFETY: a contiguous host F32 tensor of row_len * nrows values
            // at a 4-byte aligned address, not written during 't.
            unsafe { std::slice::from_raw_parts(data as *const f32, row_len * nrows) }
        });
        TensorRows {
            data,
            ne,
            nb,
            format: ty.format(),
            row_len,
            nrows,
            f32_data,
            _data: PhantomData,
        }
    }

    /// All values, borrowed, when the tensor is contiguous aligned F32.
    pub fn borrowed_all(&self) -> Option<&'t [f32]> {
        let v = self.f32_data?;
        ELEMENTS_READ.fetch_add(v.len() as u64, Ordering::Relaxed);
        Some(v)
    }

    /// All values in a new buffer, allocated fallibly.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let mut out = try_with_capacity(self.row_len * self.nrows, "the tensor's values as F32")?;
        if let Some(v) = self.borrowed_all() {
            out.extend_from_slice(v);
            return Ok(out);
        }
        let all = Piece {
            row: 0,
            nrows: self.nrows,
            cols: 0..self.row_len,
        };
        let Ok(_) = self.read(&all, &mut out);
        Ok(out)
    }

    /// Index and value of the first NaN or infinite value, read a piece of
    /// rows at a time (no copy of the whole tensor).
    pub fn first_non_finite(&self) -> Result<Option<(usize, f32)>> {
        let mut buf = Vec::new();
        for p in crate::quant::rows::pieces(self.nrows, self.row_len, 1, false) {
            if self.converts(&p) && buf.try_reserve(p.len()).is_err() {
                return Err(Error::Alloc {
                    bytes: p.len() * std::mem::size_of::<f32>(),
                    what: "a piece of rows".into(),
                });
            }
            let Ok(v) = self.read(&p, &mut buf);
            if let Some(i) = crate::quant::rows::first_non_finite(v) {
                return Ok(Some((p.row * self.row_len + i, v[i])));
            }
        }
        Ok(None)
    }

    /// The address of logical row `r` (ggml's `ne[1..4]` order).
    fn row_ptr(&self, r: usize) -> *const u8 {
        let [_, n1, n2, _] = self.ne;
        let nb = self.nb;
        let (n1, n2) = (n1 as usize, n2 as usize);
        let (i1, i2, i3) = (r % n1, (r / n1) % n2, r / (n1 * n2));
        let offset = i1 as u64 * nb[1] + i2 as u64 * nb[2] + i3 as u64 * nb[3];
        // SAFETY: r < nrows, so the offset lies inside the tensor's data.
        unsafe { self.data.add(offset as usize) }
    }
}

/// An empty vector with room for `n` values, or an error naming the bytes
/// that could not be had (instead of an abort).
pub fn try_with_capacity<T>(n: usize, what: &str) -> Result<Vec<T>> {
    let bytes = n.saturating_mul(std::mem::size_of::<T>());
    let mut v = Vec::new();
    if bytes > isize::MAX as usize || v.try_reserve_exact(n).is_err() {
        return Err(Error::Alloc {
            bytes,
            what: what.to_string(),
        });
    }
    Ok(v)
}

/// A vector of `n` default values, allocated as [`try_with_capacity`].
pub fn try_vec<T: Clone + Default>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = try_with_capacity(n, what)?;
    v.resize(n, T::default());
    Ok(v)
}

// SAFETY: `read` only reads the tensor's data through its pointer and the
// shape and strides given at construction; the API's contract is that a
// caller does not change a source tensor during a call, so reads from
// several threads at once are plain reads of shared memory.
unsafe impl Sync for TensorRows<'_> {}

impl RowSource for TensorRows<'_> {
    type Error = Infallible;

    fn row_len(&self) -> usize {
        self.row_len
    }

    fn nrows(&self) -> usize {
        self.nrows
    }

    fn converts(&self, _piece: &Piece) -> bool {
        self.f32_data.is_none()
    }

    fn read<'s>(&'s self, p: &Piece, buf: &'s mut Vec<f32>) -> Result<&'s [f32], Infallible> {
        ELEMENTS_READ.fetch_add(p.len() as u64, Ordering::Relaxed);
        if let Some(v) = self.f32_data {
            let start = p.row * self.row_len + p.cols.start;
            return Ok(&v[start..start + (p.nrows - 1) * self.row_len + p.cols.len()]);
        }
        let f = self.format;
        let width = p.cols.len();
        buf.clear();
        buf.resize(p.len(), 0.0);
        let nb0 = self.nb[0] as usize;
        for (r, dst) in (p.row..p.row + p.nrows).zip(buf.chunks_mut(width)) {
            let row = self.row_ptr(r);
            if nb0 == f.block_bytes {
                let first = p.cols.start / f.block_size * f.block_bytes;
                let len = width / f.block_size * f.block_bytes;
                // SAFETY: whole blocks of this row, inside the tensor's data;
                // the dequantizers read bytes (alignment 1).
                let src = unsafe { std::slice::from_raw_parts(row.add(first), len) };
                (f.dequantize_row)(src, dst);
            } else {
                // A strided view of a 1-value-per-block type.
                for (i, d) in p.cols.clone().zip(dst.iter_mut()) {
                    // SAFETY: element i of this row, inside the tensor's data.
                    let src =
                        unsafe { std::slice::from_raw_parts(row.add(i * nb0), f.block_bytes) };
                    (f.dequantize_row)(src, std::slice::from_mut(d));
                }
            }
        }
        Ok(buf)
    }
}
