//! This model's planner factors, measured: the KL divergence of its next-
//! token distributions when one role alone, or one depth third alone, is
//! quantized to the probe type, against the full-precision distributions
//! of the same calibration tokens (what `scripts/measure-roles.sh` measures
//! with llama-perplexity, here in process through the same libllama).
//!
//! The reference log-probabilities are taken during the statistics pass (it
//! computes every position's logits anyway) at every `stride`-th position
//! of the first chunks, and kept as f16: `positions × n_vocab × 2` bytes.
//! Each probe evaluates those chunks again, asking logits only there.

use crate::error::{Error, Result};
use crate::ffi::{self, Token};
use crate::llama::{Batch, Context, ContextParams, Model};
use crate::probe::Weights;

/// Which positions are scored, and the reference distributions there.
pub struct Reference {
    pub chunks: usize,
    pub ctx: usize,
    pub stride: usize,
    n_vocab: usize,
    /// log p per position, f16, in position order.
    logp: Vec<u16>,
    scratch: Vec<f32>,
    stored: Vec<f32>,
}

impl Reference {
    pub fn new(chunks: usize, ctx: usize, stride: usize, n_vocab: usize) -> Reference {
        Reference {
            chunks,
            ctx,
            stride: stride.max(1),
            n_vocab,
            logp: Vec::new(),
            scratch: Vec::new(),
            stored: Vec::new(),
        }
    }

    /// Whether position `k` of a chunk is scored (never the first).
    pub fn scored(&self, k: usize) -> bool {
        k % self.stride == self.stride - 1 && k > 0
    }

    /// Positions scored in all.
    pub fn positions(&self) -> usize {
        self.chunks * (1..self.ctx).filter(|&k| self.scored(k)).count()
    }

    /// Bytes the reference will hold.
    pub fn bytes(&self) -> usize {
        self.positions() * self.n_vocab * 2
    }

    /// Keeps the distribution at position `k` of chunk `chunk` (called in
    /// order during the statistics pass).
    pub fn keep(&mut self, chunk: usize, k: usize, logits: &[f32]) {
        if chunk >= self.chunks || !self.scored(k) {
            return;
        }
        log_softmax(logits, &mut self.scratch);
        let at = self.logp.len();
        self.logp.resize(at + self.n_vocab, 0);
        unsafe {
            ffi::ggml_fp32_to_fp16_row(
                self.scratch.as_ptr(),
                self.logp[at..].as_mut_ptr(),
                self.n_vocab as i64,
            )
        };
    }

    /// KL(reference ‖ logits) at scored position number `i`.
    fn kld(&mut self, i: usize, logits: &[f32]) -> f64 {
        log_softmax(logits, &mut self.scratch);
        let n = self.n_vocab;
        self.stored.resize(n, 0.0);
        let p = &mut self.stored;
        unsafe {
            ffi::ggml_fp16_to_fp32_row(self.logp[i * n..].as_ptr(), p.as_mut_ptr(), n as i64)
        };
        // f16 rounding leaves exp(log p) summing to 1 only within ~1e-3:
        // renormalised, the reference is a distribution again and the
        // divergence has no first-order rounding term.
        let lse = log_sum_exp(p);
        let mut kl = 0f64;
        for (&lp, &lq) in p.iter().zip(&self.scratch) {
            let lp = lp as f64 - lse;
            kl += lp.exp() * (lp - lq as f64);
        }
        kl.max(0.0)
    }
}

/// log Σ exp(x).
fn log_sum_exp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
    max as f64 + sum.ln()
}

/// `out` = log softmax(`x`).
fn log_softmax(x: &[f32], out: &mut Vec<f32>) {
    let lse = log_sum_exp(x);
    out.clear();
    out.extend(x.iter().map(|&v| (v as f64 - lse) as f32));
}

/// Scores the model as it now is: the mean KL divergence over the scored
/// positions of the first `r.chunks` chunks of `tokens`.
pub fn score(
    ctx: &mut Context,
    model: &Model,
    tokens: &[Token],
    step: usize,
    r: &mut Reference,
) -> Result<f64> {
    let vocab = model.vocab();
    let mut batch = Batch::new(step)?;
    let (mut sum, mut n) = (0f64, 0usize);
    for chunk in tokens.chunks_exact(r.ctx).take(r.chunks) {
        ctx.clear();
        for start in (0..r.ctx).step_by(step) {
            batch.clear();
            let end = (start + step).min(r.ctx);
            for (k, &t) in chunk.iter().enumerate().take(end).skip(start) {
                let t = if k == 0 && vocab.add_bos() {
                    vocab.bos()
                } else {
                    t
                };
                batch.add(t, k, 0, r.scored(k));
            }
            ctx.decode(&batch, "scoring a sensitivity probe")?;
            for k in start..end {
                if !r.scored(k) {
                    continue;
                }
                let logits = ctx.logits(k - start, r.n_vocab)?.to_vec();
                sum += r.kld(n, &logits);
                n += 1;
            }
        }
    }
    if n == 0 || n * r.n_vocab != r.logp.len() {
        return Err(Error::Statistics(
            "no reference distributions to score against".into(),
        ));
    }
    Ok(sum / n as f64)
}

/// What one group measured.
pub struct Group {
    /// A role's name, or `depth0`..`depth2`.
    pub name: String,
    /// Mean over its tensors of the relative squared error at the probe type.
    pub nsr: f64,
    /// Mean KL divergence with the group alone at the probe type.
    pub kld: f64,
}

/// The groups to probe: each role present, then each depth third, as
/// indices into `w.list`.
pub fn groups(w: &Weights) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, t) in w.list.iter().enumerate() {
        match out.iter_mut().find(|g| g.0 == t.role) {
            Some(g) => g.1.push(i),
            None => out.push((t.role.to_string(), vec![i])),
        }
    }
    for third in 0..3 {
        let members: Vec<usize> = (0..w.list.len())
            .filter(|&i| w.third(&w.list[i]) == Some(third))
            .collect();
        if !members.is_empty() && w.n_layer >= 3 {
            out.push((format!("depth{third}"), members));
        }
    }
    out
}

/// How the probes run.
pub struct Probe<'a> {
    pub model: &'a Model,
    pub tokens: &'a [Token],
    pub step: usize,
    pub threads: i32,
    pub probe_type: i32,
}

/// Measures every group: quantize it, score, restore.
pub fn measure(
    p: &Probe,
    w: &Weights,
    r: &mut Reference,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Group>> {
    let cp = ContextParams {
        n_ctx: r.ctx as u32,
        n_batch: p.step as u32,
        n_seq: 1,
        threads: p.threads,
    };
    let mut ctx = Context::new(p.model, &cp, None)?;
    let mut out = Vec::new();
    for (done, (name, members)) in groups(w).into_iter().enumerate() {
        let mut nsr = 0f64;
        for &i in &members {
            nsr += w.quantize(i, p.probe_type)?;
        }
        let kld = score(&mut ctx, p.model, p.tokens, p.step, r);
        for &i in &members {
            w.restore(i)?;
        }
        out.push(Group {
            name,
            nsr: nsr / members.len() as f64,
            kld: kld?,
        });
        progress(done + 1);
    }
    Ok(out)
}
