//! Self-generated calibration text: sequences sampled from the model
//! starting from BOS alone, `parallel` of them decoded together in one batch
//! (a unified KV cache shared by the sequences), each with its own sampler
//! seeded from the run's seed and the sequence's number, so a seed gives the
//! same text. A sequence ends at an end-of-generation token or at `seq_len`
//! tokens; a finished sequence is replaced at once (the batch stays full)
//! until enough tokens exist; those still running then are cut there.
//!
//! The statistics are collected while generating: every token is decoded
//! once, in its own sequence's context, with its logits computed (to draw
//! the next one), so the graph callback sees every weight's input for it and
//! no second pass over the generated text is needed. A sequence holds only
//! decoded tokens: the one drawn last, never decoded, is dropped.

use crate::collect::{self, Collector};
use crate::error::{Error, Result};
use crate::evaluate::decode;
use crate::ffi::Token;
use crate::llama::{Batch, Context, ContextParams, Model, Sampler, Sampling};
use crate::sensitivity::Reference;
use std::ffi::c_void;

/// What to generate.
pub struct Params {
    /// Tokens wanted in all (BOS included); generation stops once that
    /// many are decoded.
    pub tokens: usize,
    /// Longest sequence, BOS included.
    pub seq_len: usize,
    pub parallel: usize,
    pub seed: u64,
    pub sampling: Sampling,
    pub threads: i32,
}

/// A sequence in flight.
struct Slot {
    number: usize,
    tokens: Vec<Token>,
    sampler: Sampler,
    /// Its sensitivity unit, if it is one.
    unit: Option<usize>,
}

/// Where the statistics and the reference distributions go.
pub struct Sinks<'a> {
    pub collector: &'a mut Collector,
    pub reference: Option<&'a mut Reference>,
}

/// The sequences in the order they were started, each starting with BOS,
/// every token decoded; `progress(tokens so far)` after every step.
pub fn generate(
    model: &Model,
    p: &Params,
    sinks: &mut Sinks,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<Token>>> {
    if p.seq_len < 2 || p.parallel == 0 {
        return Err(Error::Usage(
            "generation needs a context of 2 or more tokens".into(),
        ));
    }
    let vocab = model.vocab();
    let cp = ContextParams {
        embeddings: false,
        n_ctx: u32::try_from(p.seq_len * p.parallel)
            .map_err(|_| Error::Usage("context too large".into()))?,
        n_batch: p.parallel as u32,
        n_seq: p.parallel as u32,
        threads: p.threads,
    };
    let data = (&mut *sinks.collector as *mut Collector).cast::<c_void>();
    let mut ctx = Context::new(model, &cp, Some((collect::callback, data)))?;
    let mut batch = Batch::new(p.parallel)?;
    let mut slots: Vec<Option<Slot>> = (0..p.parallel).map(|_| None).collect();
    let mut done: Vec<(usize, Vec<Token>)> = Vec::new();
    let (mut decoded, mut started) = (0usize, 0usize);
    let mut reference = sinks.reference.as_deref_mut();
    // What a sensitivity unit reserves: the length a sequence reaches
    // before generation stops (all run side by side), at most seq_len.
    let expected = p.tokens.div_ceil(p.parallel).clamp(2, p.seq_len);
    loop {
        progress(decoded);
        if decoded >= p.tokens {
            break;
        }
        // Every slot busy: a finished sequence is replaced at once.
        for (i, slot) in slots.iter_mut().enumerate().filter(|(_, s)| s.is_none()) {
            ctx.forget(i as i32);
            *slot = Some(Slot {
                number: started,
                tokens: vec![vocab.bos()],
                sampler: Sampler::new(sequence_seed(p.seed, started), &p.sampling)?,
                unit: reference.as_deref_mut().and_then(|r| r.open(expected)),
            });
            started += 1;
        }
        decoded += step(
            &mut ctx,
            &mut batch,
            &mut slots,
            data,
            reference.as_deref_mut(),
        )?;
        for s in slots.iter_mut() {
            let slot = s.as_mut().unwrap();
            let last = *slot.tokens.last().unwrap();
            if vocab.is_eog(last) || slot.tokens.len() > p.seq_len {
                let slot = s.take().unwrap();
                done.push(finish(slot, reference.as_deref_mut(), expected));
            }
        }
    }
    // Sequences still in flight count as they are (cut short).
    for slot in slots.into_iter().flatten() {
        done.push(finish(slot, reference.as_deref_mut(), expected));
    }
    done.sort_by_key(|d| d.0);
    Ok(done
        .into_iter()
        .map(|d| d.1)
        .filter(|t| t.len() > 1)
        .collect())
}

/// A finished sequence: the drawn but never decoded token dropped, its
/// unit closed (it had reserved `reserved` tokens).
fn finish(
    mut slot: Slot,
    reference: Option<&mut Reference>,
    reserved: usize,
) -> (usize, Vec<Token>) {
    slot.tokens.pop();
    if let (Some(r), Some(u)) = (reference, slot.unit) {
        r.close(u, &slot.tokens, reserved);
    }
    (slot.number, slot.tokens)
}

/// One decoding step: the last token of every live sequence (collected),
/// then one new token drawn for each; returns the tokens decoded.
fn step(
    ctx: &mut Context,
    batch: &mut Batch,
    slots: &mut [Option<Slot>],
    data: *mut c_void,
    mut reference: Option<&mut Reference>,
) -> Result<usize> {
    batch.clear();
    for (seq, slot) in slots.iter().enumerate() {
        if let Some(s) = slot {
            batch.add(
                *s.tokens.last().unwrap(),
                s.tokens.len() - 1,
                seq as i32,
                true,
            );
        }
    }
    decode(ctx, batch, data, "generating text")?;
    let mut n = 0;
    for (i, s) in slots.iter_mut().flatten().enumerate() {
        if let (Some(r), Some(u)) = (reference.as_deref_mut(), s.unit) {
            let n_vocab = r.n_vocab();
            r.keep(u, s.tokens.len() - 1, ctx.logits(i, n_vocab)?);
        }
        let t = s.sampler.sample(ctx, i);
        s.tokens.push(t);
        n += 1;
    }
    Ok(n)
}

/// The sampler seed of sequence `k` (a SplitMix64 step of the run's seed;
/// never llama.cpp's "random seed" value 0xFFFFFFFF).
pub fn sequence_seed(seed: u64, k: usize) -> u32 {
    let mut z = seed.wrapping_add((k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let s = (z ^ (z >> 31)) as u32;
    if s == u32::MAX {
        0
    } else {
        s
    }
}
