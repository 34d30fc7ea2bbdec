//! ggml's own GGUF reader (gguf.h in ggml-base), used to check that the
//! files src/model writes read back in ggml exactly as intended.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;

#[repr(C)]
struct GgufContext {
    _opaque: [u8; 0],
}

#[repr(C)]
struct GgufInitParams {
    no_alloc: bool,
    ctx: *mut *mut super::ffi::GgmlContext,
}

extern "C" {
    fn gguf_init_from_file(fname: *const c_char, params: GgufInitParams) -> *mut GgufContext;
    fn gguf_free(ctx: *mut GgufContext);
    fn gguf_get_version(ctx: *const GgufContext) -> u32;
    fn gguf_get_alignment(ctx: *const GgufContext) -> usize;
    fn gguf_get_data_offset(ctx: *const GgufContext) -> usize;
    fn gguf_get_n_kv(ctx: *const GgufContext) -> i64;
    fn gguf_get_key(ctx: *const GgufContext, key_id: i64) -> *const c_char;
    fn gguf_get_n_tensors(ctx: *const GgufContext) -> i64;
    fn gguf_get_tensor_name(ctx: *const GgufContext, id: i64) -> *const c_char;
    fn gguf_get_tensor_offset(ctx: *const GgufContext, id: i64) -> usize;
    fn gguf_get_tensor_type(ctx: *const GgufContext, id: i64) -> c_int;
    fn gguf_get_tensor_size(ctx: *const GgufContext, id: i64) -> usize;
}

/// One tensor as ggml's gguf reader sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    pub ty: i32,
    pub offset: u64,
    pub size: u64,
}

/// What ggml's gguf reader sees in a file (metadata only, no data loaded).
#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub keys: Vec<String>,
    pub tensors: Vec<GgufTensor>,
}

fn s(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Reads `path` with ggml's `gguf_init_from_file`; `None` when ggml refuses it.
/// Only for files this crate wrote or validated (ggml may abort on some
/// corrupt inputs).
pub fn read(path: &Path) -> Option<GgufFile> {
    let c = CString::new(path.to_str()?).ok()?;
    let ctx = unsafe {
        gguf_init_from_file(
            c.as_ptr(),
            GgufInitParams {
                no_alloc: true,
                ctx: std::ptr::null_mut(),
            },
        )
    };
    if ctx.is_null() {
        return None;
    }
    let f = unsafe {
        GgufFile {
            version: gguf_get_version(ctx),
            alignment: gguf_get_alignment(ctx) as u64,
            data_offset: gguf_get_data_offset(ctx) as u64,
            keys: (0..gguf_get_n_kv(ctx))
                .map(|i| s(gguf_get_key(ctx, i)))
                .collect(),
            tensors: (0..gguf_get_n_tensors(ctx))
                .map(|i| GgufTensor {
                    name: s(gguf_get_tensor_name(ctx, i)),
                    ty: gguf_get_tensor_type(ctx, i),
                    offset: gguf_get_tensor_offset(ctx, i) as u64,
                    size: gguf_get_tensor_size(ctx, i) as u64,
                })
                .collect(),
        }
    };
    unsafe { gguf_free(ctx) };
    Some(f)
}
