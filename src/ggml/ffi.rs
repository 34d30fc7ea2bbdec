//! Raw declarations of the ggml functions and shim functions we call.
//! Nothing outside `src/ggml/` uses these directly.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};

/// Opaque `struct ggml_tensor` (fields are read through the shim only).
#[repr(C)]
pub struct GgmlTensor {
    _opaque: [u8; 0],
}

/// Opaque `struct ggml_context`.
#[repr(C)]
pub struct GgmlContext {
    _opaque: [u8; 0],
}

/// Opaque `struct ggml_backend`.
#[repr(C)]
pub struct GgmlBackend {
    _opaque: [u8; 0],
}

/// `ggml_backend_t`.
pub type GgmlBackendT = *mut GgmlBackend;

/// Opaque `struct ggml_cgraph`.
#[repr(C)]
pub struct GgmlCgraph {
    _opaque: [u8; 0],
}

/// Opaque `struct ggml_backend_buffer`.
#[repr(C)]
pub struct GgmlBackendBuffer {
    _opaque: [u8; 0],
}

/// Opaque `struct ggml_backend_device`.
#[repr(C)]
pub struct GgmlBackendDevice {
    _opaque: [u8; 0],
}

/// `enum ggml_type` as it arrives from C: any int, validated before use.
#[repr(transparent)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GgmlType(pub c_int);

/// What the shim reads out of a `struct ggml_tensor`.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct TensorInfo {
    pub ty: i32,
    pub op: i32,
    pub ne: [i64; 4],
    pub nb: [u64; 4],
    pub data: *mut c_void,
    pub buffer: *mut c_void,
    pub view_src: *mut c_void,
}

extern "C" {
    // shim.c
    pub fn qat_shim_tensor_info(t: *const GgmlTensor, out: *mut TensorInfo);
    pub fn qat_shim_init(mem_size: usize, no_alloc: bool) -> *mut GgmlContext;
    pub fn qat_shim_mem_align() -> usize;
    pub fn qat_shim_max_name() -> usize;
    pub fn qat_shim_type_name(ty: i32) -> *const c_char;
    pub fn qat_shim_to_float(ty: i32, src: *const c_void, dst: *mut f32, n: i64) -> bool;
    pub fn qat_shim_type_geometry(ty: i32, blck_size: *mut i64, type_size: *mut usize) -> bool;

    // ggml.h
    pub fn ggml_free(ctx: *mut GgmlContext);
    pub fn ggml_new_tensor(
        ctx: *mut GgmlContext,
        ty: c_int,
        n_dims: c_int,
        ne: *const i64,
    ) -> *mut GgmlTensor;
    pub fn ggml_get_name(t: *const GgmlTensor) -> *const c_char;
    pub fn ggml_set_name(t: *mut GgmlTensor, name: *const c_char) -> *mut GgmlTensor;
    pub fn ggml_nbytes(t: *const GgmlTensor) -> usize;
    pub fn ggml_get_mem_size(ctx: *const GgmlContext) -> usize;
    pub fn ggml_get_mem_buffer(ctx: *const GgmlContext) -> *mut c_void;
    pub fn ggml_used_mem(ctx: *const GgmlContext) -> usize;
    pub fn ggml_get_no_alloc(ctx: *mut GgmlContext) -> bool;
    pub fn ggml_tensor_overhead() -> usize;
    pub fn ggml_graph_overhead() -> usize;
    pub fn ggml_quantize_chunk(
        ty: c_int,
        src: *const f32,
        dst: *mut c_void,
        start: i64,
        nrows: i64,
        n_per_row: i64,
        imatrix: *const f32,
    ) -> usize;
    pub fn ggml_mul_mat(
        ctx: *mut GgmlContext,
        a: *mut GgmlTensor,
        b: *mut GgmlTensor,
    ) -> *mut GgmlTensor;
    pub fn ggml_new_graph(ctx: *mut GgmlContext) -> *mut GgmlCgraph;
    pub fn ggml_view_2d(
        ctx: *mut GgmlContext,
        a: *mut GgmlTensor,
        ne0: i64,
        ne1: i64,
        nb1: usize,
        offset: usize,
    ) -> *mut GgmlTensor;
    pub fn ggml_build_forward_expand(graph: *mut GgmlCgraph, t: *mut GgmlTensor);

    // ggml-cpu.h
    pub fn ggml_graph_compute_with_ctx(
        ctx: *mut GgmlContext,
        graph: *mut GgmlCgraph,
        n_threads: c_int,
    ) -> c_int;

    // ggml-backend.h
    pub fn ggml_backend_buffer_is_host(buffer: *mut GgmlBackendBuffer) -> bool;
    pub fn ggml_backend_buffer_free(buffer: *mut GgmlBackendBuffer);
    pub fn ggml_backend_free(backend: GgmlBackendT);
    pub fn ggml_backend_name(backend: GgmlBackendT) -> *const c_char;
    pub fn ggml_backend_tensor_set(
        t: *mut GgmlTensor,
        data: *const c_void,
        offset: usize,
        size: usize,
    );
    pub fn ggml_backend_tensor_get(
        t: *const GgmlTensor,
        data: *mut c_void,
        offset: usize,
        size: usize,
    );
    pub fn ggml_backend_graph_compute(backend: GgmlBackendT, graph: *mut GgmlCgraph) -> c_int;

    // ggml-alloc.h
    pub fn ggml_backend_alloc_ctx_tensors(
        ctx: *mut GgmlContext,
        backend: GgmlBackendT,
    ) -> *mut GgmlBackendBuffer;

    // ggml-cpu.h
    pub fn ggml_backend_cpu_init() -> GgmlBackendT;
    pub fn ggml_backend_cpu_set_n_threads(backend: GgmlBackendT, n_threads: c_int);
    pub fn ggml_backend_supports_op(backend: GgmlBackendT, op: *const GgmlTensor) -> bool;
    pub fn ggml_backend_get_device(backend: GgmlBackendT) -> *mut GgmlBackendDevice;
    pub fn ggml_backend_dev_type(dev: *mut GgmlBackendDevice) -> c_int;
}
