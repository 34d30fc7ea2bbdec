//! Self-generated calibration text: sequences sampled from the model
//! starting from BOS alone, `parallel` of them decoded together in one batch
//! (a unified KV cache shared by the sequences), each with its own sampler
//! seeded from the run's seed and the sequence's number, so a seed gives the
//! same text. A sequence ends at an end-of-generation token or at `seq_len`
//! tokens; a finished sequence is replaced at once (the batch stays full)
//! until enough tokens exist; those still running then are cut there.

use crate::error::{Error, Result};
use crate::ffi::Token;
use crate::llama::{Batch, Context, ContextParams, Model, Sampler, Sampling};

/// What to generate.
pub struct Params {
    /// Tokens wanted in all (BOS included); generation stops once reached.
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
}

/// The generated sequences in the order they were started, each starting
/// with BOS; `progress(tokens so far)` is called after every step.
pub fn generate(
    model: &Model,
    p: &Params,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<Token>>> {
    if p.seq_len < 2 || p.parallel == 0 {
        return Err(Error::Usage(
            "generation needs a context of 2 or more tokens".into(),
        ));
    }
    let vocab = model.vocab();
    let cp = ContextParams {
        n_ctx: u32::try_from(p.seq_len * p.parallel)
            .map_err(|_| Error::Usage("context too large".into()))?,
        n_batch: p.parallel as u32,
        n_seq: p.parallel as u32,
        threads: p.threads,
    };
    let mut ctx = Context::new(model, &cp, None)?;
    let mut batch = Batch::new(p.parallel)?;
    let mut slots: Vec<Option<Slot>> = (0..p.parallel).map(|_| None).collect();
    let mut done: Vec<(usize, Vec<Token>)> = Vec::new();
    let (mut finished, mut started) = (0usize, 0usize);
    loop {
        let live: usize = slots.iter().flatten().map(|s| s.tokens.len()).sum();
        progress(finished + live);
        if finished + live >= p.tokens {
            break;
        }
        // Every slot busy: a finished sequence is replaced at once.
        for (i, slot) in slots.iter_mut().enumerate().filter(|(_, s)| s.is_none()) {
            ctx.forget(i as i32);
            *slot = Some(Slot {
                number: started,
                tokens: vec![vocab.bos()],
                sampler: Sampler::new(sequence_seed(p.seed, started), &p.sampling)?,
            });
            started += 1;
        }
        step(&mut ctx, &mut batch, &mut slots)?;
        for s in slots.iter_mut() {
            let slot = s.as_mut().unwrap();
            let last = *slot.tokens.last().unwrap();
            if vocab.is_eog(last) || slot.tokens.len() >= p.seq_len {
                let mut slot = s.take().unwrap();
                if vocab.is_eog(last) {
                    slot.tokens.pop();
                }
                finished += slot.tokens.len();
                done.push((slot.number, slot.tokens));
            }
        }
    }
    // Sequences still in flight count as they are (cut short).
    done.extend(slots.into_iter().flatten().map(|s| (s.number, s.tokens)));
    done.sort_by_key(|d| d.0);
    Ok(done
        .into_iter()
        .map(|d| d.1)
        .filter(|t| t.len() > 1)
        .collect())
}

/// One decoding step: the last token of every live sequence, then one new
/// token drawn for each.
fn step(ctx: &mut Context, batch: &mut Batch, slots: &mut [Option<Slot>]) -> Result<()> {
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
    ctx.decode(batch, "generating text")?;
    for (i, s) in slots.iter_mut().flatten().enumerate() {
        let t = s.sampler.sample(ctx, i);
        s.tokens.push(t);
    }
    Ok(())
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
