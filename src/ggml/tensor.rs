//! A checked view of a caller's `struct ggml_tensor`.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use super::ffi::{self, GgmlTensor, TensorInfo};
use super::tensor_rows::TensorRows;
use crate::error::{Error, Result};
use crate::quant::{self, QuantType};

/// A non-NULL ggml tensor whose fields were read through the shim.
#[derive(Clone, Copy, Debug)]
pub struct Tensor {
    raw: NonNull<GgmlTensor>,
    info: TensorInfo,
}

impl Tensor {
    /// Wraps `ptr`; `what` names the argument in error messages.
    ///
    /// # Safety
    /// `ptr` is NULL or points to a live `struct ggml_tensor`.
    pub unsafe fn from_raw(ptr: *const GgmlTensor, what: &'static str) -> Result<Tensor> {
        let raw = NonNull::new(ptr as *mut GgmlTensor).ok_or(Error::Null(what))?;
        let mut info = std::mem::MaybeUninit::<TensorInfo>::uninit();
        ffi::qat_shim_tensor_info(raw.as_ptr(), info.as_mut_ptr());
        let t = Tensor {
            raw,
            info: info.assume_init(),
        };
        if t.info.ne.iter().any(|&n| n <= 0) {
            return Err(Error::Tensor(format!(
                "tensor '{}' has shape {:?}: every dimension must be at least 1",
                t.name(),
                t.info.ne
            )));
        }
        if t.info
            .ne
            .iter()
            .try_fold(1i64, |a, &n| a.checked_mul(n))
            .is_none()
        {
            return Err(Error::Tensor(format!(
                "tensor '{}' has too many elements",
                t.name()
            )));
        }
        Ok(t)
    }

    /// Wraps an optional tensor argument: `None` for NULL.
    ///
    /// # Safety
    /// As [`Tensor::from_raw`].
    pub unsafe fn from_raw_opt(
        ptr: *const GgmlTensor,
        what: &'static str,
    ) -> Result<Option<Tensor>> {
        if ptr.is_null() {
            return Ok(None);
        }
        Tensor::from_raw(ptr, what).map(Some)
    }

    pub fn as_ptr(&self) -> *mut GgmlTensor {
        self.raw.as_ptr()
    }

    /// The ggml type id.
    pub fn type_id(&self) -> i32 {
        self.info.ty
    }

    /// The type, when this crate implements it.
    pub fn quant_type(&self) -> Result<QuantType> {
        QuantType::from_ggml(self.info.ty)
            .filter(|t| quant::is_implemented(*t))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "tensor '{}' has ggml type {} ({}), which ggml-qat does not implement",
                    self.name(),
                    self.info.ty,
                    type_name(self.info.ty)
                ))
            })
    }

    /// `ne[0..4]`.
    pub fn ne(&self) -> [i64; 4] {
        self.info.ne
    }

    /// Number of dimensions as `ggml_n_dims` counts them (at least 1).
    pub fn n_dims(&self) -> usize {
        (1..4)
            .rev()
            .find(|&i| self.info.ne[i] > 1)
            .map_or(1, |i| i + 1)
    }

    /// Elements per row (`ne[0]`).
    pub fn row_len(&self) -> usize {
        self.info.ne[0] as usize
    }

    /// Rows (`ne[1] * ne[2] * ne[3]`).
    pub fn nrows(&self) -> usize {
        (self.info.ne[1] * self.info.ne[2] * self.info.ne[3]) as usize
    }

    /// Total elements.
    pub fn nelements(&self) -> usize {
        self.row_len() * self.nrows()
    }

    /// `ggml_nbytes`.
    pub fn nbytes(&self) -> usize {
        unsafe { ffi::ggml_nbytes(self.raw.as_ptr()) }
    }

    /// The tensor's name (empty when unnamed).
    pub fn name(&self) -> String {
        let p = unsafe { ffi::ggml_get_name(self.raw.as_ptr()) };
        if p.is_null() {
            return String::new();
        }
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Sets the name (truncated by ggml to its maximum length): for
    /// [`NewTensor::set_name`] only, a view does not change its tensor.
    fn set_name(&self, name: &str) {
        let c = CString::new(name.replace('\0', "")).unwrap_or_default();
        unsafe { ffi::ggml_set_name(self.raw.as_ptr(), c.as_ptr()) };
    }

    /// Raw data pointer (may be NULL).
    pub fn data_ptr(&self) -> *mut u8 {
        self.info.data.cast()
    }

    /// Whether the data lives in host memory we may read and write.
    pub fn has_host_data(&self) -> bool {
        !self.info.data.is_null()
            && (self.info.buffer.is_null()
                || unsafe { ffi::ggml_backend_buffer_is_host(self.info.buffer.cast()) })
    }

    fn check_host_data(&self) -> Result<()> {
        if self.info.data.is_null() {
            return Err(Error::Tensor(format!(
                "tensor '{}' has no data (allocated in a no_alloc context?)",
                self.name()
            )));
        }
        if !self.has_host_data() {
            return Err(Error::Tensor(format!(
                "tensor '{}' lives in a non-host backend buffer; copy it to host memory first",
                self.name()
            )));
        }
        Ok(())
    }

    /// Whether rows are stored one after the other without gaps.
    pub fn is_contiguous(&self) -> bool {
        let Ok(ty) = self.quant_type() else {
            return false;
        };
        let f = ty.format();
        let Some(row) = f.row_bytes(self.row_len()) else {
            return false;
        };
        let nb = self.info.nb;
        let ne = self.info.ne;
        nb[0] as usize == f.block_bytes
            && nb[1] as usize == row
            && nb[2] == nb[1] * ne[1] as u64
            && nb[3] == nb[2] * ne[2] as u64
    }

    /// Strides in bytes (`nb[0..4]`).
    pub fn nb(&self) -> [u64; 4] {
        self.info.nb
    }

    /// The values of this tensor as a [`TensorRows`] source: checks that the
    /// data is in host memory, that the type is implemented, and that each
    /// row's blocks are stored together (any strides for F32, F16, BF16).
    pub fn rows(&self) -> Result<TensorRows<'_>> {
        self.check_host_data()?;
        let ty = self.quant_type()?;
        let f = ty.format();
        let n = self.row_len();
        if f.row_bytes(n).is_none() {
            return Err(Error::Tensor(format!(
                "tensor '{}': row of {n} is not a multiple of the {} block size {}",
                self.name(),
                f.name,
                f.block_size
            )));
        }
        if self.info.nb[0] as usize != f.block_bytes && f.block_size != 1 {
            return Err(Error::Tensor(format!(
                "tensor '{}' is a view whose {} blocks are not stored together",
                self.name(),
                f.name
            )));
        }
        // SAFETY: host data (checked) of an implemented type laid out by
        // ggml's ne and nb, each row's blocks together (checked); the
        // caller does not write a source tensor during a call.
        Ok(unsafe {
            TensorRows::from_parts(
                self.data_ptr(),
                ty,
                self.info.ne,
                self.info.nb,
                self.is_contiguous(),
            )
        })
    }

    /// The logical values as F32, row after row, dequantizing when needed,
    /// in a new buffer (allocated fallibly: the error names its size).
    pub fn read_f32(&self) -> Result<Vec<f32>> {
        self.rows()?.to_vec()
    }

    /// The logical values as F32: borrowed for contiguous F32 tensors whose
    /// data is 4-byte aligned, converted otherwise (see
    /// [`Tensor::read_f32`]).
    pub fn values(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        let rows = self.rows()?;
        match rows.borrowed_all() {
            Some(v) => Ok(std::borrow::Cow::Borrowed(v)),
            None => rows.to_vec().map(std::borrow::Cow::Owned),
        }
    }

    /// The data bytes of a contiguous tensor.
    pub fn bytes(&self) -> Result<&[u8]> {
        self.check_contiguous_host_data()?;
        Ok(unsafe { std::slice::from_raw_parts(self.data_ptr(), self.nbytes()) })
    }

    fn check_contiguous_host_data(&self) -> Result<()> {
        self.check_host_data()?;
        if !self.is_contiguous() {
            return Err(Error::Tensor(format!(
                "tensor '{}' is not contiguous",
                self.name()
            )));
        }
        Ok(())
    }
}

/// A tensor just created by [`super::Context::new_tensor`], whose data no
/// one else has seen: the only way to write a tensor's bytes. It is neither
/// `Copy` nor `Clone` and gives no [`Tensor`] view before
/// [`NewTensor::finish`], so while a slice from [`NewTensor::bytes_mut`]
/// lives, the borrow checker keeps every other reference to the data away.
#[derive(Debug)]
pub struct NewTensor(Tensor);

impl NewTensor {
    /// Wraps a tensor `ggml_new_tensor` just returned (data in host memory,
    /// not yet known to anyone else).
    pub(super) fn new(t: Tensor) -> NewTensor {
        NewTensor(t)
    }

    /// The data, writable (a contiguous host tensor).
    pub fn bytes_mut(&mut self) -> Result<&mut [u8]> {
        self.0.check_contiguous_host_data()?;
        // SAFETY: the data is `nbytes` bytes of host memory owned by the
        // ggml context, and `self` (borrowed mutably) is the only handle
        // on it: `NewTensor` is not `Copy`/`Clone` and hands out no view.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.0.data_ptr(), self.0.nbytes()) })
    }

    /// The data of an F32 tensor as values, writable.
    pub fn f32_mut(&mut self) -> Result<&mut [f32]> {
        if self.0.type_id() != QuantType::F32.ggml_id() {
            return Err(Error::Tensor(format!(
                "tensor '{}' is not F32",
                self.0.name()
            )));
        }
        let bytes = self.bytes_mut()?;
        if bytes.as_ptr().align_offset(std::mem::align_of::<f32>()) != 0 {
            return Err(Error::Tensor("F32 data is not 4-byte aligned".into()));
        }
        // SAFETY: aligned, borrowed exclusively from `bytes`, and any 4
        // bytes are a valid f32.
        Ok(unsafe {
            std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<f32>(), bytes.len() / 4)
        })
    }

    /// Sets the name (truncated by ggml to its maximum length).
    pub fn set_name(&mut self, name: &str) {
        self.0.set_name(name)
    }

    /// `ne[0..4]`.
    pub fn ne(&self) -> [i64; 4] {
        self.0.ne()
    }

    /// Total elements.
    pub fn nelements(&self) -> usize {
        self.0.nelements()
    }

    /// `ggml_nbytes`.
    pub fn nbytes(&self) -> usize {
        self.0.nbytes()
    }

    /// The tensor, once written, as a read-only view.
    pub fn finish(self) -> Tensor {
        self.0
    }
}

/// ggml's name of a type id ("unknown" for ids ggml does not know).
pub fn type_name(id: i32) -> String {
    let p = unsafe { ffi::qat_shim_type_name(id) };
    if p.is_null() {
        return "unknown".into();
    }
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
