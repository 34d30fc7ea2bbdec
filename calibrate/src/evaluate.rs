//! Runs the text's calibration tokens through the model in chunks of the
//! context size, as llama-imatrix does: a fresh KV cache per chunk, the chunk's first
//! token replaced by BOS when the model adds one, every position's output
//! requested (so the last layer sees every token). A chunk is decoded in
//! steps of `ubatch` tokens (llama-imatrix with `-b` below `-c`), each one
//! graph evaluation; the `Collector` gathers the statistics in the callback,
//! and the sensitivity `Reference` keeps the distributions it will score.

use crate::collect::{self, Collector};
use crate::error::{Error, Result};
use crate::ffi::Token;
use crate::llama::{Batch, Context, ContextParams, Model};
use crate::sensitivity::Reference;
use std::ffi::c_void;

/// Chunk size, step size, threads.
pub struct Shape {
    pub ctx: usize,
    pub ubatch: usize,
    pub threads: i32,
}

/// Evaluates `tokens.len() / ctx` whole chunks; `progress(chunks done)`
/// after each. Returns the number of chunks.
pub fn evaluate(
    model: &Model,
    tokens: &[Token],
    shape: &Shape,
    collector: &mut Collector,
    mut reference: Option<&mut Reference>,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let (ctx_size, step) = (shape.ctx, shape.ubatch.clamp(1, shape.ctx));
    let cp = ContextParams {
        embeddings: false,
        n_ctx: ctx_size as u32,
        n_batch: step as u32,
        n_seq: 1,
        threads: shape.threads,
    };
    let data = (collector as *mut Collector).cast::<c_void>();
    let mut ctx = Context::new(model, &cp, Some((collect::callback, data)))?;
    let vocab = model.vocab();
    let n_vocab = vocab.n_tokens();
    let mut batch = Batch::new(step)?;
    for (i, chunk) in tokens.chunks_exact(ctx_size).enumerate() {
        ctx.clear();
        let mut chunk = chunk.to_vec();
        if vocab.add_bos() {
            chunk[0] = vocab.bos();
        }
        let unit = reference.as_deref_mut().and_then(|r| r.open(ctx_size));
        for start in (0..ctx_size).step_by(step) {
            batch.clear();
            for (k, &t) in chunk.iter().enumerate().skip(start).take(step) {
                batch.add(t, k, 0, true);
            }
            decode(&mut ctx, &batch, data, "evaluating the calibration tokens")?;
            if let (Some(r), Some(u)) = (reference.as_deref_mut(), unit) {
                for k in start..(start + step).min(ctx_size) {
                    r.keep(u, k, ctx.logits(k - start, n_vocab)?);
                }
            }
        }
        if let (Some(r), Some(u)) = (reference.as_deref_mut(), unit) {
            r.close(u, &chunk, ctx_size);
        }
        progress(i + 1);
    }
    Ok(tokens.len() / ctx_size)
}

/// One step with the collector switched on; its failure comes first.
pub fn decode(
    ctx: &mut Context,
    batch: &Batch,
    data: *mut c_void,
    what: &'static str,
) -> Result<()> {
    // SAFETY: llama.cpp calls the callback only inside decode, and no other
    // reference to the collector is used meanwhile.
    unsafe {
        (*data.cast::<Collector>()).begin_eval();
        (*data.cast::<Collector>()).active = true;
    }
    let r = ctx.decode(batch, what);
    let c = unsafe { &mut *data.cast::<Collector>() };
    c.active = false;
    if let Some(e) = c.error.take() {
        return Err(Error::Statistics(e));
    }
    r
}

/// Every model weight one small evaluation reads, by name (the tensors as
/// llama.cpp holds them, for the sensitivity probes).
pub fn weights_read(model: &Model) -> Result<std::collections::BTreeMap<String, usize>> {
    let mut found = std::collections::BTreeMap::<String, usize>::new();
    let cp = ContextParams {
        embeddings: false,
        n_ctx: 8,
        n_batch: 2,
        n_seq: 1,
        threads: 1,
    };
    let data = (&mut found as *mut std::collections::BTreeMap<String, usize>).cast::<c_void>();
    let mut ctx = Context::new(model, &cp, Some((crate::probe::scan, data)))?;
    let mut batch = Batch::new(2)?;
    let bos = model.vocab().bos();
    for k in 0..2 {
        batch.add(bos, k, 0, true);
    }
    ctx.decode(&batch, "finding the model's weights")?;
    drop(ctx);
    Ok(found)
}
