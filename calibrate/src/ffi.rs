//! Extern declarations: the llama.h and gguf.h functions called directly
//! (plain arguments only), and the shim (`shim.c`) for everything that
//! touches a struct's fields.

use std::ffi::{c_char, c_void};

/// Opaque llama.cpp and ggml handles.
#[repr(C)]
pub struct LlamaModel {
    _p: [u8; 0],
}
#[repr(C)]
pub struct LlamaContext {
    _p: [u8; 0],
}
#[repr(C)]
pub struct LlamaVocab {
    _p: [u8; 0],
}
#[repr(C)]
pub struct LlamaSampler {
    _p: [u8; 0],
}
#[repr(C)]
pub struct LlamaMemory {
    _p: [u8; 0],
}
#[repr(C)]
pub struct GgmlTensor {
    _p: [u8; 0],
}
#[repr(C)]
pub struct GgmlContext {
    _p: [u8; 0],
}
#[repr(C)]
pub struct GgufContext {
    _p: [u8; 0],
}
/// The shim's batch (a `llama_batch` and its capacity).
#[repr(C)]
pub struct Batch {
    _p: [u8; 0],
}

pub type Token = i32;

/// `ggml_backend_sched_eval_callback`.
pub type EvalCallback =
    unsafe extern "C" fn(t: *mut GgmlTensor, ask: bool, data: *mut c_void) -> bool;

/// `llama_token_attr` bits: a token text may be made of.
pub const TOKEN_ATTR_NORMAL: i32 = 1 << 2;
/// `llama_token_attr` bits that exclude a token from drawn text (unknown,
/// unused, control, byte).
pub const TOKEN_ATTR_SPECIAL: i32 = 1 | (1 << 1) | (1 << 3) | (1 << 5);

/// `llama_pooling_type`.
pub const POOLING_NONE: i32 = 0;
pub const POOLING_RANK: i32 = 4;

/// `GGUF_TYPE_FLOAT32`.
pub const GGUF_TYPE_FLOAT32: i32 = 6;
/// `GGML_MAX_SRC`.
pub const MAX_SRC: usize = 10;

pub const OP_MUL_MAT: i32 = 1;
pub const OP_MUL_MAT_ID: i32 = 2;

/// A matrix product node as the shim describes it (`qc_node_t`).
#[repr(C)]
pub struct Node {
    pub op: i32,
    pub weight: bool,
    pub f32_rows: bool,
    pub host: bool,
    pub name: *const c_char,
    pub w_ne: [i64; 4],
    pub src1: *const GgmlTensor,
    pub ne: [i64; 4],
    pub nb: [u64; 4],
    pub data: *const c_void,
    pub ids: *const GgmlTensor,
    pub ids_ne: [i64; 2],
    pub ids_nb: [u64; 2],
}

extern "C" {
    pub fn qc_init(verbose: bool);
    pub fn qc_last_log_error() -> *const c_char;
    pub fn qc_on_fatal(path: *const c_char);
    pub fn qc_cleanup_also(path: *const c_char);
    pub fn qc_model_load(path: *const c_char, n_gpu_layers: i32, writable: bool)
        -> *mut LlamaModel;
    pub fn qc_context_new(
        model: *mut LlamaModel,
        n_ctx: u32,
        n_batch: u32,
        n_seq: u32,
        n_threads: i32,
        embeddings: bool,
        cb: Option<EvalCallback>,
        cb_data: *mut c_void,
    ) -> *mut LlamaContext;
    pub fn qc_model_kind(model: *mut LlamaModel, causal: *mut bool, pooling: *mut i32) -> bool;
    pub fn qc_batch_new(cap: i32) -> *mut Batch;
    pub fn qc_batch_free(b: *mut Batch);
    pub fn qc_batch_clear(b: *mut Batch);
    pub fn qc_batch_add(b: *mut Batch, token: Token, pos: i32, seq: i32, output: bool) -> bool;
    pub fn qc_decode(ctx: *mut LlamaContext, b: *const Batch) -> i32;
    pub fn qc_sampler_new(seed: u32, temp: f32, top_k: i32, top_p: f32) -> *mut LlamaSampler;
    pub fn qc_node(t: *const GgmlTensor, out: *mut Node) -> bool;
    pub fn qc_nbytes(t: *const GgmlTensor) -> usize;
    pub fn qc_tensor_read(t: *const GgmlTensor, dst: *mut c_void, n: usize) -> bool;
    pub fn qc_weight_srcs(t: *const GgmlTensor, out: *mut *const GgmlTensor, max: i32) -> i32;
    pub fn qc_tensor_desc(t: *const GgmlTensor, ty: *mut i32, ne: *mut i64) -> *const c_char;
    pub fn qc_tensor_get(t: *const GgmlTensor, dst: *mut c_void, off: usize, n: usize) -> bool;
    pub fn qc_tensor_set(t: *mut GgmlTensor, src: *const c_void, off: usize, n: usize) -> bool;
    pub fn qc_type_from_name(name: *const c_char) -> i32;
    pub fn qc_type_name(ty: i32) -> *const c_char;
    pub fn qc_block_size(ty: i32) -> i64;
    pub fn qc_type_quantizable(ty: i32) -> bool;
    pub fn qc_row_size(ty: i32, n: i64) -> usize;
    pub fn qc_to_f32(ty: i32, src: *const c_void, dst: *mut f32, n: i64) -> bool;
    pub fn qc_from_f32(
        ty: i32,
        src: *const f32,
        dst: *mut c_void,
        nrows: i64,
        n_per_row: i64,
    ) -> usize;
    pub fn qc_gguf_open(path: *const c_char) -> *mut GgufContext;
    pub fn qc_gguf_tensor_at(
        g: *const GgufContext,
        name: *const c_char,
        offset: *mut u64,
        size: *mut u64,
    ) -> bool;
    pub fn qc_gguf_split_count(g: *const GgufContext) -> i32;
    pub fn qc_meta_context(n_tensors: usize) -> *mut GgmlContext;
    pub fn qc_add_f32(
        gguf: *mut GgufContext,
        ctx: *mut GgmlContext,
        name: *const c_char,
        ne0: i64,
        ne1: i64,
    ) -> bool;

    pub fn llama_model_free(model: *mut LlamaModel);
    pub fn llama_free(ctx: *mut LlamaContext);
    pub fn llama_model_get_vocab(model: *const LlamaModel) -> *const LlamaVocab;
    pub fn llama_supports_gpu_offload() -> bool;
    pub fn llama_get_memory(ctx: *const LlamaContext) -> *mut LlamaMemory;
    pub fn llama_memory_clear(mem: *mut LlamaMemory, data: bool);
    pub fn llama_memory_seq_rm(mem: *mut LlamaMemory, seq: i32, p0: i32, p1: i32) -> bool;
    pub fn llama_vocab_bos(vocab: *const LlamaVocab) -> Token;
    pub fn llama_vocab_eos(vocab: *const LlamaVocab) -> Token;
    pub fn llama_vocab_sep(vocab: *const LlamaVocab) -> Token;
    pub fn llama_vocab_get_add_eos(vocab: *const LlamaVocab) -> bool;
    pub fn llama_vocab_get_add_sep(vocab: *const LlamaVocab) -> bool;
    pub fn llama_vocab_get_attr(vocab: *const LlamaVocab, token: Token) -> i32;
    pub fn llama_model_n_ctx_train(model: *const LlamaModel) -> i32;
    pub fn llama_model_n_embd_out(model: *const LlamaModel) -> i32;
    pub fn llama_get_embeddings_ith(ctx: *mut LlamaContext, i: i32) -> *mut f32;
    pub fn llama_get_embeddings_seq(ctx: *mut LlamaContext, seq: i32) -> *mut f32;
    pub fn llama_vocab_n_tokens(vocab: *const LlamaVocab) -> i32;
    pub fn llama_get_logits_ith(ctx: *mut LlamaContext, i: i32) -> *mut f32;
    pub fn llama_split_path(
        path: *mut c_char,
        maxlen: usize,
        prefix: *const c_char,
        split_no: i32,
        split_count: i32,
    ) -> i32;
    pub fn llama_split_prefix(
        prefix: *mut c_char,
        maxlen: usize,
        path: *const c_char,
        split_no: i32,
        split_count: i32,
    ) -> i32;
    pub fn llama_vocab_is_eog(vocab: *const LlamaVocab, token: Token) -> bool;
    pub fn llama_vocab_get_add_bos(vocab: *const LlamaVocab) -> bool;
    pub fn llama_tokenize(
        vocab: *const LlamaVocab,
        text: *const c_char,
        text_len: i32,
        tokens: *mut Token,
        n_tokens_max: i32,
        add_special: bool,
        parse_special: bool,
    ) -> i32;
    pub fn llama_detokenize(
        vocab: *const LlamaVocab,
        tokens: *const Token,
        n_tokens: i32,
        text: *mut c_char,
        text_len_max: i32,
        remove_special: bool,
        unparse_special: bool,
    ) -> i32;
    pub fn llama_sampler_sample(smpl: *mut LlamaSampler, ctx: *mut LlamaContext, idx: i32)
        -> Token;
    pub fn llama_sampler_free(smpl: *mut LlamaSampler);

    pub fn ggml_free(ctx: *mut GgmlContext);
    pub fn ggml_fp32_to_fp16_row(src: *const f32, dst: *mut u16, n: i64);
    pub fn ggml_fp16_to_fp32_row(src: *const u16, dst: *mut f32, n: i64);
    pub fn gguf_init_empty() -> *mut GgufContext;
    pub fn gguf_free(ctx: *mut GgufContext);
    pub fn gguf_set_val_str(ctx: *mut GgufContext, key: *const c_char, val: *const c_char);
    pub fn gguf_set_val_u32(ctx: *mut GgufContext, key: *const c_char, val: u32);
    pub fn gguf_set_arr_str(
        ctx: *mut GgufContext,
        key: *const c_char,
        data: *const *const c_char,
        n: usize,
    );
    pub fn gguf_get_meta_size(ctx: *const GgufContext) -> usize;
    pub fn gguf_get_meta_data(ctx: *const GgufContext, data: *mut c_void);
    pub fn gguf_get_tensor_offset(ctx: *const GgufContext, tensor_id: i64) -> usize;
    pub fn gguf_get_alignment(ctx: *const GgufContext) -> usize;
    pub fn gguf_set_arr_data(
        ctx: *mut GgufContext,
        key: *const c_char,
        ty: i32,
        data: *const c_void,
        n: usize,
    );
}
