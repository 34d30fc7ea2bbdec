//! A checked view of a caller's `struct ggml_context`, and owned scratch
//! contexts for our own computations.

use std::ptr::NonNull;

use super::ffi::{self, GgmlContext};
use super::reference::type_geometry;
use super::tensor::{type_name, NewTensor, Tensor};
use crate::error::{Error, Result};

/// A non-NULL ggml context (borrowed from the caller or owned).
#[derive(Debug)]
pub struct Context {
    raw: NonNull<GgmlContext>,
    owned: bool,
}

impl Context {
    /// Wraps a caller's context; `what` names the argument in messages.
    ///
    /// # Safety
    /// `ptr` is NULL or a live context from `ggml_init`.
    pub unsafe fn from_raw(ptr: *mut GgmlContext, what: &'static str) -> Result<Context> {
        let raw = NonNull::new(ptr).ok_or(Error::Null(what))?;
        Ok(Context { raw, owned: false })
    }

    /// A new context of `mem_size` bytes that is freed on drop; a `no_alloc`
    /// context holds tensor metadata only.
    pub fn new_owned(mem_size: usize, no_alloc: bool) -> Result<Context> {
        let raw = unsafe { ffi::qat_shim_init(mem_size, no_alloc) };
        let raw = NonNull::new(raw)
            .ok_or_else(|| Error::Ggml(format!("ggml_init could not allocate {mem_size} bytes")))?;
        Ok(Context { raw, owned: true })
    }

    pub fn as_ptr(&self) -> *mut GgmlContext {
        self.raw.as_ptr()
    }

    /// Bytes still free in the context's memory pool.
    pub fn free_bytes(&self) -> usize {
        let p = self.raw.as_ptr();
        unsafe { ffi::ggml_get_mem_size(p).saturating_sub(ffi::ggml_used_mem(p)) }
    }

    /// Bytes `ggml_new_tensor` would take from the pool for a tensor of
    /// `data_bytes` data (an upper bound, alignment included).
    pub fn tensor_cost(data_bytes: usize) -> usize {
        let align = unsafe { ffi::qat_shim_mem_align() };
        unsafe { ffi::ggml_tensor_overhead() }.saturating_add(data_bytes.saturating_add(2 * align))
    }

    /// Bytes of the data of a tensor of type `ty` and shape `ne`, or an error
    /// when the type is unknown, a dimension is not positive, the row is not
    /// a whole number of blocks, or the size overflows.
    pub fn data_bytes(ty: i32, ne: &[i64]) -> Result<usize> {
        let (blck, size) = type_geometry(ty)
            .ok_or_else(|| Error::Unsupported(format!("ggml type {ty} is not a known type")))?;
        if ne.is_empty() || ne.len() > 4 {
            return Err(Error::invalid(
                "n_dims",
                format!("{} (must be 1 to 4)", ne.len()),
            ));
        }
        if let Some(bad) = ne.iter().find(|&&n| n <= 0) {
            return Err(Error::invalid(
                "shape",
                format!("dimension {bad} (must be at least 1)"),
            ));
        }
        if ne[0] as usize % blck != 0 {
            return Err(Error::invalid(
                "shape",
                format!(
                    "ne[0] = {} is not a multiple of the {} block size {blck}",
                    ne[0],
                    type_name(ty)
                ),
            ));
        }
        (ne[0] as usize / blck)
            .checked_mul(size)
            .and_then(|row| {
                ne[1..]
                    .iter()
                    .try_fold(row, |acc, &n| acc.checked_mul(n as usize))
            })
            .filter(|&b| b <= isize::MAX as usize / 2)
            .ok_or_else(|| Error::invalid("shape", format!("{ne:?} is too large")))
    }

    /// Whether tensors created here get no data (`no_alloc`).
    pub fn is_no_alloc(&self) -> bool {
        unsafe { ffi::ggml_get_no_alloc(self.raw.as_ptr()) }
    }

    /// `ggml_new_tensor` of a tensor that must hold data, after checking
    /// everything it would abort on: the type, the shape, that the context
    /// allocates data, and that it has room. The result is the only handle
    /// that writes its data.
    pub fn new_tensor(&self, ty: i32, ne: &[i64]) -> Result<NewTensor> {
        self.require_alloc()?;
        self.new_tensor_any(ty, ne).map(NewTensor::new)
    }

    /// Refuses a `no_alloc` context, where a result could get no data.
    fn require_alloc(&self) -> Result<()> {
        if self.is_no_alloc() {
            return Err(Error::invalid(
                "ggml_ctx",
                "the ggml context is no_alloc: the result needs data; pass a context that allocates",
            ));
        }
        Ok(())
    }

    /// The data bytes of a tensor of type `ty` and shape `ne`, after
    /// checking that the pool has room for it (its data too unless the
    /// context is `no_alloc`).
    fn room_for(&self, ty: i32, ne: &[i64]) -> Result<usize> {
        let bytes = Self::data_bytes(ty, ne)?;
        let need = Self::tensor_cost(if self.is_no_alloc() { 0 } else { bytes });
        let free = self.free_bytes();
        if need > free {
            return Err(Error::NoRoom { need, free });
        }
        Ok(bytes)
    }

    /// The free pool memory where ggml will put the data of the next tensor
    /// created here, when a tensor of type `ty` and shape `ne` fits: ggml
    /// places a new object at the end of the used part of the pool, its
    /// data right after the object header and tensor struct
    /// (`ggml_tensor_overhead()` bytes). Writing there first and creating
    /// the tensor only once the data is complete leaves the context
    /// untouched on failure. The caller must check afterwards that the
    /// tensor's data pointer is this address (another ggml could lay its
    /// pool out differently) and write it again otherwise.
    ///
    /// # Safety
    /// Nothing else may create tensors in this context until the tensor
    /// is created (ggml contexts are single-threaded anyway).
    #[allow(clippy::mut_from_ref)] // free pool memory, owned by no tensor
    pub unsafe fn next_tensor_data(&self, ty: i32, ne: &[i64]) -> Result<&mut [u8]> {
        self.require_alloc()?;
        let bytes = self.room_for(ty, ne)?;
        let p = self.raw.as_ptr();
        let base = ffi::ggml_get_mem_buffer(p) as *mut u8;
        if base.is_null() {
            return Err(Error::Ggml("the ggml context has no memory pool".into()));
        }
        let start = ffi::ggml_used_mem(p) + ffi::ggml_tensor_overhead();
        // SAFETY: start + bytes <= used + tensor_cost(bytes) <= mem_size:
        // inside the pool, past every object.
        Ok(std::slice::from_raw_parts_mut(base.add(start), bytes))
    }

    /// `ggml_new_tensor` after checking the type, the shape and the room;
    /// in a `no_alloc` context the tensor has no data (a backend buffer
    /// gets it, written through the backend).
    pub fn new_tensor_any(&self, ty: i32, ne: &[i64]) -> Result<Tensor> {
        self.room_for(ty, ne)?;
        let t =
            unsafe { ffi::ggml_new_tensor(self.raw.as_ptr(), ty, ne.len() as i32, ne.as_ptr()) };
        unsafe { Tensor::from_raw(t, "new tensor") }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if self.owned {
            unsafe { ffi::ggml_free(self.raw.as_ptr()) };
        }
    }
}
