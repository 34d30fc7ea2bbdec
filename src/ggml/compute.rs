//! Matrix products on a ggml backend: the measured half of the protocol.
//! `Y = ggml_mul_mat(W, X)` with W of any type (ne0 × ne1) and X F32
//! (ne0 × samples); the tensors are copied into a backend buffer, so any
//! backend works.

use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::context::Context;
use super::ffi::{self, GgmlBackendBuffer, GgmlBackendT, GgmlCgraph, GgmlTensor};
use crate::error::{Error, Result};
use crate::quant::QuantType;

/// A ggml backend, owned (freed on drop) or borrowed from the caller. A
/// borrowed backend is held exclusively while this value lives: ggml
/// backends are not safe to compute on from two threads at once, so calls
/// of the library that share a caller's backend run one after the other.
pub struct Backend {
    raw: NonNull<ffi::GgmlBackend>,
    owned: bool,
    _exclusive: Option<MutexGuard<'static, ()>>,
}

/// Locks that serialize the use of callers' backends: a backend's address
/// picks one (two backends may share a lock, which only serializes them
/// needlessly; the address is used only while the caller keeps the backend
/// alive for the call).
static BACKEND_LOCKS: [Mutex<()>; 16] = [const { Mutex::new(()) }; 16];

fn exclusive(raw: NonNull<ffi::GgmlBackend>) -> MutexGuard<'static, ()> {
    let slot = (raw.as_ptr() as usize >> 4) % BACKEND_LOCKS.len();
    BACKEND_LOCKS[slot]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl Backend {
    /// A new CPU backend using `n_threads` threads.
    pub fn cpu(n_threads: usize) -> Result<Backend> {
        let raw = NonNull::new(unsafe { ffi::ggml_backend_cpu_init() })
            .ok_or_else(|| Error::Ggml("ggml_backend_cpu_init failed".into()))?;
        unsafe { ffi::ggml_backend_cpu_set_n_threads(raw.as_ptr(), n_threads.max(1) as i32) };
        Ok(Backend {
            raw,
            owned: true,
            _exclusive: None,
        })
    }

    /// The caller's backend (not freed on drop).
    ///
    /// # Safety
    /// `raw` is a live backend.
    pub unsafe fn borrowed(raw: GgmlBackendT) -> Result<Backend> {
        let raw = NonNull::new(raw).ok_or(Error::Null("backend"))?;
        Ok(Backend {
            raw,
            owned: false,
            _exclusive: Some(exclusive(raw)),
        })
    }

    /// The caller's backend, or a CPU backend when `raw` is NULL.
    ///
    /// # Safety
    /// `raw` is NULL or a live backend.
    pub unsafe fn from_raw_or_cpu(raw: GgmlBackendT, n_threads: usize) -> Result<Backend> {
        match NonNull::new(raw) {
            Some(raw) => Ok(Backend {
                raw,
                owned: false,
                _exclusive: Some(exclusive(raw)),
            }),
            None => Backend::cpu(n_threads),
        }
    }

    pub fn as_ptr(&self) -> GgmlBackendT {
        self.raw.as_ptr()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if self.owned {
            unsafe { ffi::ggml_backend_free(self.raw.as_ptr()) };
        }
    }
}

/// `Y = W X` prepared on a backend, ready to be computed repeatedly.
pub struct MulMat<'b> {
    backend: &'b Backend,
    _ctx: Context,
    buffer: NonNull<GgmlBackendBuffer>,
    graph: *mut GgmlCgraph,
    y: *mut GgmlTensor,
    out_len: usize,
}

impl<'b> MulMat<'b> {
    /// Copies `w` (rows of `ne0` elements of type `w_type`, `ne1` rows) and
    /// `x` (`n_samples` F32 rows of `ne0`) into a buffer of `backend`.
    pub fn new(
        backend: &'b Backend,
        w_type: QuantType,
        w: &[u8],
        ne0: usize,
        ne1: usize,
        x: &[f32],
        n_samples: usize,
    ) -> Result<MulMat<'b>> {
        let row = w_type.format().row_bytes(ne0).ok_or_else(|| {
            Error::invalid(
                "model",
                format!("row of {ne0} does not fit {w_type:?} blocks"),
            )
        })?;
        if w.len() != row * ne1 || x.len() != ne0 * n_samples {
            return Err(Error::invalid(
                "model",
                "weights or inputs have the wrong size",
            ));
        }
        let mem = 4 * Context::tensor_cost(0) + unsafe { ffi::ggml_graph_overhead() };
        let ctx = Context::new_owned(mem, true)?;
        let wt = ctx.new_tensor_any(w_type.ggml_id(), &[ne0 as i64, ne1 as i64])?;
        let xt = ctx.new_tensor_any(QuantType::F32.ggml_id(), &[ne0 as i64, n_samples as i64])?;
        let y = unsafe { ffi::ggml_mul_mat(ctx.as_ptr(), wt.as_ptr(), xt.as_ptr()) };
        if y.is_null() {
            return Err(Error::Ggml("ggml_mul_mat failed".into()));
        }
        if !unsafe { ffi::ggml_backend_supports_op(backend.as_ptr(), y) } {
            return Err(Error::Unsupported(format!(
                "the backend cannot multiply {} weights",
                w_type.format().name
            )));
        }
        let graph = unsafe { ffi::ggml_new_graph(ctx.as_ptr()) };
        unsafe { ffi::ggml_build_forward_expand(graph, y) };
        let buffer = NonNull::new(unsafe {
            ffi::ggml_backend_alloc_ctx_tensors(ctx.as_ptr(), backend.as_ptr())
        })
        .ok_or_else(|| Error::Ggml("cannot allocate a backend buffer for the product".into()))?;
        unsafe {
            ffi::ggml_backend_tensor_set(wt.as_ptr(), w.as_ptr().cast(), 0, w.len());
            ffi::ggml_backend_tensor_set(
                xt.as_ptr(),
                x.as_ptr().cast(),
                0,
                std::mem::size_of_val(x),
            );
        }
        Ok(MulMat {
            backend,
            _ctx: ctx,
            buffer,
            graph,
            y,
            out_len: ne1 * n_samples,
        })
    }

    /// Runs the product once; returns its wall time.
    pub fn compute(&self) -> Result<Duration> {
        let t = Instant::now();
        let status = unsafe { ffi::ggml_backend_graph_compute(self.backend.as_ptr(), self.graph) };
        let dt = t.elapsed();
        if status != 0 {
            return Err(Error::Ggml(format!(
                "ggml_backend_graph_compute failed with status {status}"
            )));
        }
        Ok(dt)
    }

    /// The last result: `n_samples` rows of `ne1` outputs.
    pub fn output(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.out_len];
        unsafe {
            ffi::ggml_backend_tensor_get(self.y, out.as_mut_ptr().cast(), 0, self.out_len * 4)
        };
        out
    }
}

impl Drop for MulMat<'_> {
    fn drop(&mut self) {
        unsafe { ffi::ggml_backend_buffer_free(self.buffer.as_ptr()) };
    }
}

/// Median of durations (the mean of the middle two for an even count).
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    let n = times.len();
    match n {
        0 => Duration::ZERO,
        _ if n % 2 == 1 => times[n / 2],
        _ => (times[n / 2 - 1] + times[n / 2]) / 2,
    }
}
