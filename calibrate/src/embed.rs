//! Embedding models: no language-model head whose next-token distributions
//! could be compared (an encoder such as BERT, with bidirectional
//! attention, or any model with a pooling type of its own). llama.cpp runs
//! them with embeddings on: each calibration sequence is one batch (an
//! encoder sees the whole sequence at once and keeps no cache), every
//! token an output, and the sequence's vector is the pooled embedding the
//! model's own pooling type gives (llama.cpp's default); for a model whose
//! pooling is NONE, the mean of its per-token embeddings, taken here.
//!
//! The statistics are collected in the same graph callback as for other
//! models. The sensitivity of a group is the mean over the scored
//! sequences of 1 − cos(reference pooled embedding, pooled embedding with
//! the group quantized); the reference vectors are kept (f32) while the
//! statistics are collected.
//!
//! Such a model cannot sample text from itself. Data-free, its calibration
//! sequences are tokens drawn uniformly from the vocabulary's normal tokens
//! (no control, byte, unknown or unused token), seeded by `--seed`, framed
//! as the vocabulary frames a text (BOS/CLS first, SEP or EOS last, when it
//! adds them).

use crate::collect::{self, Collector};
use crate::error::{Error, Result};
use crate::evaluate::decode;
use crate::ffi::{self, Token};
use crate::llama::{Batch, Context, ContextParams, Model, Vocab};
use crate::sensitivity::Scorer;
use std::ffi::c_void;

/// The scored sequences and their full-precision pooled embeddings.
pub struct Pooled {
    budget: usize,
    n_embd: usize,
    pooling: i32,
    units: Vec<Vec<Token>>,
    refs: Vec<Vec<f32>>,
}

impl Pooled {
    /// Sequences of at most `budget` tokens in all (at least one), pooled
    /// by `pooling` (`llama_pooling_type`), vectors of `n_embd`.
    pub fn new(budget: usize, n_embd: usize, pooling: i32) -> Result<Pooled> {
        if pooling == ffi::POOLING_RANK {
            return Err(Error::Usage(
                "this model pools by rank (a reranker): its output is a score, not an \
                 embedding to compare; pass --no-sensitivity (without --save-embeddings)"
                    .into(),
            ));
        }
        Ok(Pooled {
            budget,
            n_embd,
            pooling,
            units: Vec::new(),
            refs: Vec::new(),
        })
    }

    /// Whether a sequence of `len` tokens is still scored.
    fn wants(&self, len: usize) -> bool {
        self.units.is_empty() || self.tokens() + len <= self.budget.max(len)
    }

    /// Tokens and sequences scored.
    pub fn tokens(&self) -> usize {
        self.units.iter().map(Vec::len).sum()
    }
    pub fn sequences(&self) -> usize {
        self.units.len()
    }

    /// Writes the reference embeddings to `path` (f32 rows, little-endian).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let bytes: Vec<u8> = self
            .refs
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(path, bytes).map_err(|e| Error::Io(path.into(), e))
    }

    /// Bytes the reference holds.
    pub fn bytes(&self) -> usize {
        self.refs.len() * self.n_embd * 4
    }
}

/// A chunk framed as the vocabulary frames a text: BOS (CLS) first when
/// it adds one, SEP (or else EOS) last when it adds one.
pub fn frame(vocab: Vocab, chunk: &mut [Token]) {
    if vocab.add_bos() && vocab.bos() >= 0 {
        chunk[0] = vocab.bos();
    }
    let last = if vocab.add_sep() {
        vocab.sep()
    } else if vocab.add_eos() {
        vocab.eos()
    } else {
        -1
    };
    if last >= 0 && chunk.len() > 1 {
        *chunk.last_mut().unwrap() = last;
    }
}

/// `n` sequences of `len` tokens drawn uniformly from the normal tokens of
/// the vocabulary (splitmix64 from `seed`: the same seed, the same tokens),
/// each framed by [`frame`].
pub fn draw(vocab: Vocab, n: usize, len: usize, seed: u64) -> Result<Vec<Vec<Token>>> {
    let normal: Vec<Token> = (0..vocab.n_tokens() as Token)
        .filter(|&t| vocab.is_normal(t))
        .collect();
    if normal.is_empty() {
        return Err(Error::Usage(
            "the vocabulary has no normal token to draw calibration text from; pass -f TEXT".into(),
        ));
    }
    let mut state = seed ^ 0x6a09_e667_f3bc_c908;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let seqs = (0..n)
        .map(|_| {
            let mut s: Vec<Token> = (0..len)
                .map(|_| normal[(((next() >> 32) * normal.len() as u64) >> 32) as usize])
                .collect();
            frame(vocab, &mut s);
            s
        })
        .collect();
    Ok(seqs)
}

/// A context decoding one whole sequence of up to `len` tokens per batch,
/// embeddings on.
fn context<'m>(
    model: &'m Model,
    len: usize,
    threads: i32,
    cb: Option<(ffi::EvalCallback, *mut c_void)>,
) -> Result<Context<'m>> {
    let cp = ContextParams {
        embeddings: true,
        n_ctx: len.max(2) as u32,
        n_batch: len.max(1) as u32,
        n_seq: 1,
        threads,
    };
    Context::new(model, &cp, cb)
}

/// Fills `batch` with `seq` (sequence 0, every token an output).
fn fill(batch: &mut Batch, seq: &[Token]) {
    batch.clear();
    for (k, &t) in seq.iter().enumerate() {
        batch.add(t, k, 0, true);
    }
}

/// The pooled embedding of the sequence just decoded (`n` tokens) into
/// `out`: llama.cpp's pooled vector, or with pooling NONE the mean of the
/// per-token embeddings.
fn pooled(
    ctx: &mut Context,
    pooling: i32,
    n: usize,
    n_embd: usize,
    out: &mut Vec<f32>,
) -> Result<()> {
    out.clear();
    if pooling != ffi::POOLING_NONE {
        let v = ctx.pooled(0, n_embd).ok_or_else(|| {
            Error::Statistics("llama.cpp gave no pooled embedding for the sequence".into())
        })?;
        out.extend_from_slice(v);
        return Ok(());
    }
    let mut sum = vec![0f64; n_embd];
    for i in 0..n {
        for (s, &x) in sum.iter_mut().zip(ctx.embedding(i, n_embd)?) {
            *s += f64::from(x);
        }
    }
    out.extend(sum.iter().map(|&s| (s / n.max(1) as f64) as f32));
    Ok(())
}

/// Evaluates every sequence (one batch each) with the collector on,
/// keeping the reference embeddings of the first ones; `progress(sequences
/// done)` after each.
pub fn evaluate(
    model: &Model,
    seqs: &[Vec<Token>],
    threads: i32,
    collector: &mut Collector,
    mut reference: Option<&mut Pooled>,
    progress: &mut dyn FnMut(usize),
) -> Result<()> {
    let len = seqs.iter().map(Vec::len).max().unwrap_or(1);
    let data = (collector as *mut Collector).cast::<c_void>();
    let mut ctx = context(model, len, threads, Some((collect::callback, data)))?;
    let mut batch = Batch::new(len)?;
    let mut vec = Vec::new();
    for (i, seq) in seqs.iter().enumerate() {
        ctx.clear();
        fill(&mut batch, seq);
        decode(
            &mut ctx,
            &batch,
            data,
            "evaluating the calibration sequences",
        )?;
        if let Some(r) = reference.as_deref_mut().filter(|r| r.wants(seq.len())) {
            pooled(&mut ctx, r.pooling, seq.len(), r.n_embd, &mut vec)?;
            check_finite(&vec)?;
            r.units.push(seq.clone());
            r.refs.push(vec.clone());
        }
        progress(i + 1);
    }
    Ok(())
}

fn check_finite(v: &[f32]) -> Result<()> {
    if v.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    Err(Error::Statistics("non-finite pooled embedding".into()))
}

/// 1 − cos(a, b), in f64; two zero vectors are equal (0), one zero vector
/// is as far as an orthogonal one (1).
pub fn one_minus_cos(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    match (aa > 0.0, bb > 0.0) {
        (false, false) => 0.0,
        (true, true) => (1.0 - ab / (aa * bb).sqrt()).max(0.0),
        _ => 1.0,
    }
}

/// The 1 − cosine scorer: each scored sequence decoded again, alone.
pub struct Cosine<'m, 'r> {
    ctx: Context<'m>,
    batch: Batch,
    r: &'r Pooled,
    vec: Vec<f32>,
}

impl<'m, 'r> Cosine<'m, 'r> {
    pub fn new(model: &'m Model, threads: i32, r: &'r Pooled) -> Result<Self> {
        let len = r.units.iter().map(Vec::len).max().unwrap_or(1);
        Ok(Cosine {
            ctx: context(model, len, threads, None)?,
            batch: Batch::new(len)?,
            r,
            vec: Vec::new(),
        })
    }
}

impl Scorer for Cosine<'_, '_> {
    /// Mean over the scored sequences of 1 − cos(reference, now).
    fn score(&mut self) -> Result<f64> {
        if self.r.units.is_empty() {
            return Err(Error::Statistics(
                "no reference embeddings to score against".into(),
            ));
        }
        let mut sum = 0f64;
        for (seq, reference) in self.r.units.iter().zip(&self.r.refs) {
            self.ctx.clear();
            fill(&mut self.batch, seq);
            self.ctx
                .decode(&self.batch, "scoring a sensitivity probe")?;
            pooled(
                &mut self.ctx,
                self.r.pooling,
                seq.len(),
                self.r.n_embd,
                &mut self.vec,
            )?;
            check_finite(&self.vec)?;
            sum += one_minus_cos(reference, &self.vec);
        }
        Ok(sum / self.r.units.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::one_minus_cos;

    #[test]
    fn cosine_distance() {
        assert!(one_minus_cos(&[1.0, 2.0], &[2.0, 4.0]) < 1e-15);
        assert!(one_minus_cos(&[1.0, 2.0], &[1.0, 2.0]) < 1e-15);
        assert!((one_minus_cos(&[1.0, 0.0], &[0.0, 3.0]) - 1.0).abs() < 1e-12);
        assert!((one_minus_cos(&[1.0, 0.0], &[-1.0, 0.0]) - 2.0).abs() < 1e-12);
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let d = one_minus_cos(&[1.0, 0.0], &[1.0, 1.0]);
        assert!((d - (1.0 - s)).abs() < 1e-7, "{d}");
        assert_eq!(one_minus_cos(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
        assert_eq!(one_minus_cos(&[0.0, 0.0], &[1.0, 0.0]), 1.0);
    }
}
