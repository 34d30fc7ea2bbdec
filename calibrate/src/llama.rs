//! Safe wrappers over libllama: the model, its vocabulary, contexts,
//! batches and samplers. The only module that calls llama.cpp.

use crate::error::{Error, Result};
use crate::ffi::{self, EvalCallback, Token};
use std::ffi::{c_void, CStr, CString};
use std::io::Read;
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Once;

/// Routes llama.cpp's log through the shim (silent unless `verbose`) and
/// initialises its backends, once per process.
pub fn init(verbose: bool) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe { ffi::qc_init(verbose) });
}

/// Makes a fatal assert inside llama.cpp or ggml end the process with a
/// message and exit status 1, and SIGINT, SIGTERM or SIGHUP end it by that
/// signal, each removing `cleanup` (the temporary output) first.
pub fn on_fatal(cleanup: &Path) {
    let c = CString::new(cleanup.as_os_str().as_encoded_bytes()).unwrap_or_default();
    unsafe { ffi::qc_on_fatal(c.as_ptr()) }
}

/// A second file those handlers remove (the report's temporary file).
pub fn cleanup_also(path: &Path) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
    unsafe { ffi::qc_cleanup_also(c.as_ptr()) }
}

/// The last error llama.cpp or ggml logged.
pub fn last_log() -> String {
    unsafe { CStr::from_ptr(ffi::qc_last_log_error()) }
        .to_string_lossy()
        .into_owned()
}

/// True when the linked llama.cpp can offload layers to a GPU.
pub fn gpu_offload() -> bool {
    unsafe { ffi::llama_supports_gpu_offload() }
}

/// A loaded model.
pub struct Model(NonNull<ffi::LlamaModel>);

impl Model {
    /// Loads a GGUF model; a file that is not GGUF is refused before
    /// llama.cpp sees it.
    /// `writable`: the weights in memory of their own, so that
    /// [`crate::probe`] may overwrite them (no mmap).
    pub fn load(path: &Path, n_gpu_layers: i32, writable: bool) -> Result<Model> {
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::NotGguf(path.into()),
                _ => Error::Io(path.into(), e),
            })?;
        if &magic != b"GGUF" {
            return Err(Error::NotGguf(path.into()));
        }
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Usage(format!("{}: path holds a NUL byte", path.display())))?;
        let ptr = unsafe { ffi::qc_model_load(c.as_ptr(), n_gpu_layers, writable) };
        NonNull::new(ptr)
            .map(Model)
            .ok_or_else(|| Error::ModelLoad(path.into(), last_log()))
    }

    /// How the model runs: its attention and pooling, as a context with
    /// llama.cpp's defaults sees them.
    pub fn kind(&self) -> Result<Kind> {
        let (mut causal, mut pooling) = (true, 0i32);
        if !unsafe { ffi::qc_model_kind(self.0.as_ptr(), &mut causal, &mut pooling) } {
            return Err(Error::Context("n_ctx 8, embeddings".into(), last_log()));
        }
        Ok(Kind { causal, pooling })
    }

    /// Length of an output embedding (pooled or per token).
    pub fn n_embd_out(&self) -> usize {
        unsafe { ffi::llama_model_n_embd_out(self.0.as_ptr()) }.max(0) as usize
    }

    /// Positions the model was trained on (an encoder's position table).
    pub fn n_ctx_train(&self) -> usize {
        unsafe { ffi::llama_model_n_ctx_train(self.0.as_ptr()) }.max(0) as usize
    }

    pub fn vocab(&self) -> Vocab<'_> {
        Vocab {
            ptr: unsafe { ffi::llama_model_get_vocab(self.0.as_ptr()) },
            _m: PhantomData,
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        unsafe { ffi::llama_model_free(self.0.as_ptr()) }
    }
}

/// A model's attention and pooling (`llama_pooling_type`).
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    pub causal: bool,
    pub pooling: i32,
}

impl Kind {
    /// An embedding model: bidirectional attention (an encoder, whose
    /// outputs are no next-token distributions), or a pooling type of its
    /// own (the model is meant to be read as a pooled vector).
    pub fn is_embedding(&self) -> bool {
        !self.causal || self.pooling != ffi::POOLING_NONE
    }
}

/// A model's vocabulary.
#[derive(Clone, Copy)]
pub struct Vocab<'m> {
    ptr: *const ffi::LlamaVocab,
    _m: PhantomData<&'m Model>,
}

impl Vocab<'_> {
    pub fn bos(&self) -> Token {
        unsafe { ffi::llama_vocab_bos(self.ptr) }
    }
    pub fn eos(&self) -> Token {
        unsafe { ffi::llama_vocab_eos(self.ptr) }
    }
    pub fn sep(&self) -> Token {
        unsafe { ffi::llama_vocab_sep(self.ptr) }
    }
    pub fn add_eos(&self) -> bool {
        unsafe { ffi::llama_vocab_get_add_eos(self.ptr) }
    }
    pub fn add_sep(&self) -> bool {
        unsafe { ffi::llama_vocab_get_add_sep(self.ptr) }
    }
    /// Whether `t` is a normal text token (not control, byte, unknown or
    /// unused).
    pub fn is_normal(&self, t: Token) -> bool {
        let a = unsafe { ffi::llama_vocab_get_attr(self.ptr, t) };
        a & ffi::TOKEN_ATTR_NORMAL != 0 && a & ffi::TOKEN_ATTR_SPECIAL == 0
    }
    pub fn is_eog(&self, t: Token) -> bool {
        unsafe { ffi::llama_vocab_is_eog(self.ptr, t) }
    }
    /// Tokens in the vocabulary (the length of a row of logits).
    pub fn n_tokens(&self) -> usize {
        unsafe { ffi::llama_vocab_n_tokens(self.ptr) }.max(0) as usize
    }
    pub fn add_bos(&self) -> bool {
        unsafe { ffi::llama_vocab_get_add_bos(self.ptr) }
    }

    /// Tokens of `text`, with BOS when the model adds it (special tokens in
    /// the text are not parsed, as llama-imatrix does by default).
    pub fn tokenize(&self, text: &str, what: &str) -> Result<Vec<Token>> {
        let len = i32::try_from(text.len())
            .map_err(|_| Error::Tokenize(format!("{what} (over 2 GiB)")))?;
        let mut out = vec![0; text.len() + 2];
        for _ in 0..2 {
            let cap = i32::try_from(out.len()).unwrap_or(i32::MAX);
            let n = unsafe {
                ffi::llama_tokenize(
                    self.ptr,
                    text.as_ptr().cast(),
                    len,
                    out.as_mut_ptr(),
                    cap,
                    true,
                    false,
                )
            };
            if n >= 0 {
                out.truncate(n as usize);
                return Ok(out);
            }
            if n == i32::MIN {
                break;
            }
            out.resize(n.unsigned_abs() as usize, 0);
        }
        Err(Error::Tokenize(what.to_string()))
    }

    /// The text of `tokens`, special tokens left out.
    pub fn detokenize(&self, tokens: &[Token]) -> String {
        let mut buf = vec![0u8; tokens.len() * 8 + 16];
        for _ in 0..2 {
            let n = unsafe {
                ffi::llama_detokenize(
                    self.ptr,
                    tokens.as_ptr(),
                    tokens.len() as i32,
                    buf.as_mut_ptr().cast(),
                    buf.len().min(i32::MAX as usize) as i32,
                    true,
                    false,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return String::from_utf8_lossy(&buf).into_owned();
            }
            buf.resize(n.unsigned_abs() as usize, 0);
        }
        String::new()
    }
}

/// Shape of a context: every batch is one micro-batch of at most `n_batch`
/// tokens; `n_seq` sequences share a unified KV cache of `n_ctx` cells.
pub struct ContextParams {
    /// Outputs embeddings (every token of a batch an output; pooled as the
    /// model's pooling type says) rather than logits only.
    pub embeddings: bool,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_seq: u32,
    pub threads: i32,
}

/// A llama.cpp context on a model, optionally with an evaluation callback.
pub struct Context<'m> {
    ptr: NonNull<ffi::LlamaContext>,
    _m: PhantomData<&'m Model>,
}

impl<'m> Context<'m> {
    /// `cb` must stay valid while the context lives (the caller keeps it).
    pub fn new(
        model: &'m Model,
        p: &ContextParams,
        cb: Option<(EvalCallback, *mut c_void)>,
    ) -> Result<Self> {
        let (f, data) = match cb {
            Some((f, d)) => (Some(f), d),
            None => (None, std::ptr::null_mut()),
        };
        let ptr = unsafe {
            ffi::qc_context_new(
                model.0.as_ptr(),
                p.n_ctx,
                p.n_batch,
                p.n_seq,
                p.threads,
                p.embeddings,
                f,
                data,
            )
        };
        let what = format!(
            "n_ctx {}, batch {}, {} sequences",
            p.n_ctx, p.n_batch, p.n_seq
        );
        NonNull::new(ptr)
            .map(|ptr| Context {
                ptr,
                _m: PhantomData,
            })
            .ok_or_else(|| Error::Context(what, last_log()))
    }

    pub fn decode(&mut self, batch: &Batch, what: &'static str) -> Result<()> {
        match unsafe { ffi::qc_decode(self.ptr.as_ptr(), batch.0.as_ptr()) } {
            0 => Ok(()),
            2 => Err(Error::Cancelled),
            s => Err(Error::Decode(s, what, last_log())),
        }
    }

    /// The logits of batch row `i` (a token added with `output`), `n_vocab` long.
    pub fn logits(&mut self, i: usize, n_vocab: usize) -> Result<&[f32]> {
        let p = unsafe { ffi::llama_get_logits_ith(self.ptr.as_ptr(), i as i32) };
        if p.is_null() {
            return Err(Error::Statistics(format!("no logits for batch row {i}")));
        }
        // SAFETY: llama.cpp keeps n_vocab logits per output row until the next decode.
        Ok(unsafe { std::slice::from_raw_parts(p, n_vocab) })
    }

    /// The pooled embedding of sequence `seq` (`n` floats), or `None` when
    /// the context does not pool.
    pub fn pooled(&mut self, seq: i32, n: usize) -> Option<&[f32]> {
        let p = unsafe { ffi::llama_get_embeddings_seq(self.ptr.as_ptr(), seq) };
        // SAFETY: llama.cpp keeps n_embd_out floats per sequence until the next decode.
        (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p, n) })
    }

    /// The embedding of batch row `i` (`n` floats).
    pub fn embedding(&mut self, i: usize, n: usize) -> Result<&[f32]> {
        let p = unsafe { ffi::llama_get_embeddings_ith(self.ptr.as_ptr(), i as i32) };
        if p.is_null() {
            return Err(Error::Statistics(format!("no embedding for batch row {i}")));
        }
        // SAFETY: as for `pooled`, per output row.
        Ok(unsafe { std::slice::from_raw_parts(p, n) })
    }

    /// Forgets every sequence.
    pub fn clear(&mut self) {
        unsafe { ffi::llama_memory_clear(ffi::llama_get_memory(self.ptr.as_ptr()), true) }
    }

    /// Forgets one sequence.
    pub fn forget(&mut self, seq: i32) {
        unsafe { ffi::llama_memory_seq_rm(ffi::llama_get_memory(self.ptr.as_ptr()), seq, -1, -1) };
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        unsafe { ffi::llama_free(self.ptr.as_ptr()) }
    }
}

/// A batch of tokens, each for one sequence.
pub struct Batch(NonNull<ffi::Batch>);

impl Batch {
    pub fn new(cap: usize) -> Result<Batch> {
        let cap = i32::try_from(cap.max(1)).map_err(|_| Error::Usage("batch too large".into()))?;
        NonNull::new(unsafe { ffi::qc_batch_new(cap) })
            .map(Batch)
            .ok_or_else(|| Error::Usage("out of memory for a batch".into()))
    }
    pub fn clear(&mut self) {
        unsafe { ffi::qc_batch_clear(self.0.as_ptr()) }
    }
    /// Adds a token at `pos` of `seq`; `output` asks for its logits.
    pub fn add(&mut self, token: Token, pos: usize, seq: i32, output: bool) {
        let added = unsafe { ffi::qc_batch_add(self.0.as_ptr(), token, pos as i32, seq, output) };
        assert!(added, "batch capacity is sized by its callers");
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        unsafe { ffi::qc_batch_free(self.0.as_ptr()) }
    }
}

/// How tokens are drawn: temperature, optional top-k / top-p.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    pub temp: f32,
    pub top_k: i32,
    pub top_p: f32,
}

/// A seeded sampler chain.
pub struct Sampler(NonNull<ffi::LlamaSampler>);

impl Sampler {
    pub fn new(seed: u32, s: &Sampling) -> Result<Sampler> {
        NonNull::new(unsafe { ffi::qc_sampler_new(seed, s.temp, s.top_k, s.top_p) })
            .map(Sampler)
            .ok_or_else(|| Error::Usage("llama.cpp could not create a sampler".into()))
    }
    /// Draws the next token from the logits of batch row `idx`.
    pub fn sample(&mut self, ctx: &mut Context, idx: usize) -> Token {
        unsafe { ffi::llama_sampler_sample(self.0.as_ptr(), ctx.ptr.as_ptr(), idx as i32) }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        unsafe { ffi::llama_sampler_free(self.0.as_ptr()) }
    }
}
