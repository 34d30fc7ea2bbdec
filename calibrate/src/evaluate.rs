//! Runs the calibration tokens through the model in chunks of the context
//! size, as llama-imatrix does: a fresh KV cache per chunk, the chunk's first
//! token replaced by BOS when the model adds one, every position's output
//! requested (so the last layer sees every token), one graph evaluation per
//! chunk; the `Collector` gathers the statistics in the callback.

use crate::collect::{self, Collector};
use crate::error::{Error, Result};
use crate::ffi::Token;
use crate::llama::{Batch, Context, ContextParams, Model};
use std::ffi::c_void;

/// Evaluates `tokens.len() / ctx_size` whole chunks; `progress(chunks done)`
/// after each. Returns the number of chunks.
pub fn evaluate(
    model: &Model,
    tokens: &[Token],
    ctx_size: usize,
    threads: i32,
    collector: &mut Collector,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let n_chunks = tokens.len() / ctx_size;
    let cp = ContextParams {
        n_ctx: ctx_size as u32,
        n_batch: ctx_size as u32,
        n_seq: 1,
        threads,
    };
    let data = (collector as *mut Collector).cast::<c_void>();
    let mut ctx = Context::new(model, &cp, Some((collect::callback, data)))?;
    let vocab = model.vocab();
    let mut batch = Batch::new(ctx_size)?;
    for (i, chunk) in tokens.chunks_exact(ctx_size).enumerate() {
        ctx.clear();
        batch.clear();
        for (k, &t) in chunk.iter().enumerate() {
            let t = if k == 0 && vocab.add_bos() {
                vocab.bos()
            } else {
                t
            };
            batch.add(t, k, 0, true);
        }
        // SAFETY: llama.cpp calls the callback only inside decode; no
        // other reference to the collector is used meanwhile.
        unsafe { (*data.cast::<Collector>()).begin_eval() };
        unsafe { (*data.cast::<Collector>()).active = true };
        let r = ctx.decode(&batch, "evaluating the calibration tokens");
        let c = unsafe { &mut *data.cast::<Collector>() };
        c.active = false;
        if let Some(e) = c.error.take() {
            return Err(Error::Statistics(e));
        }
        r?;
        progress(i + 1);
    }
    Ok(n_chunks)
}
