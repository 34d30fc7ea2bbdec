//! This model's planner factors, measured: the KL divergence of its next-
//! token distributions when one role alone, or one depth third alone, is
//! quantized to the probe type, against the full-precision distributions
//! of the same calibration tokens (what `scripts/measure-roles.sh` measures
//! with llama-perplexity, here in process through the same libllama).
//! An embedding model is scored by `embed.rs` instead (1 − cosine of the
//! pooled embeddings); the groups and the probe loop are shared
//! ([`Scorer`]).
//!
//! The reference log-probabilities are taken while the statistics are
//! collected (every position's logits are computed then anyway) at every
//! `stride`-th position of the first units — text chunks, then generated
//! sequences — up to a token budget, and kept as f16 (`positions × n_vocab
//! × 2` bytes). Each probe evaluates those units again, each alone from its
//! first token, asking logits only there.

use crate::error::{Error, Result};
use crate::ffi::{self, Token};
use crate::llama::{Batch, Context, ContextParams, Model};
use crate::probe::Weights;

/// The scored units (a text chunk, or a generated sequence, evaluated from
/// its first token), the positions scored in each, and the reference
/// distributions there.
pub struct Reference {
    pub stride: usize,
    n_vocab: usize,
    /// Tokens the units may hold in all, and those promised to open units.
    budget: usize,
    reserved: usize,
    units: Vec<Unit>,
    /// log p per kept row, f16.
    logp: Vec<u16>,
    scratch: Vec<f32>,
    stored: Vec<f32>,
}

/// One unit: its tokens (as evaluated) and its rows by position.
struct Unit {
    tokens: Vec<Token>,
    rows: Vec<(usize, usize)>,
}

impl Reference {
    /// Units of at most `budget` tokens in all, scored every `stride`-th position.
    pub fn new(budget: usize, stride: usize, n_vocab: usize) -> Reference {
        Reference {
            stride: stride.max(1),
            n_vocab,
            budget,
            reserved: 0,
            units: Vec::new(),
            logp: Vec::new(),
            scratch: Vec::new(),
            stored: Vec::new(),
        }
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Whether position `k` of a unit is scored (never the first).
    pub fn scored(&self, k: usize) -> bool {
        k % self.stride == self.stride - 1 && k > 0
    }

    /// A new unit of up to `max_len` tokens, if the budget has room.
    pub fn open(&mut self, max_len: usize) -> Option<usize> {
        if self.reserved + max_len > self.budget.max(max_len) && !self.units.is_empty() {
            return None;
        }
        self.reserved += max_len;
        self.units.push(Unit {
            tokens: Vec::new(),
            rows: Vec::new(),
        });
        Some(self.units.len() - 1)
    }

    /// Closes unit `u` with the tokens evaluated, giving back what it did
    /// not use of its `max_len`.
    pub fn close(&mut self, u: usize, tokens: &[Token], max_len: usize) {
        self.reserved = self.reserved + tokens.len() - max_len.min(self.reserved + tokens.len());
        self.units[u].tokens = tokens.to_vec();
        self.units[u].rows.retain(|r| r.0 < tokens.len());
    }

    /// Tokens and positions of the closed units.
    pub fn tokens(&self) -> usize {
        self.units.iter().map(|u| u.tokens.len()).sum()
    }
    pub fn positions(&self) -> usize {
        self.units.iter().map(|u| u.rows.len()).sum()
    }

    /// Bytes the reference holds.
    pub fn bytes(&self) -> usize {
        self.logp.len() * 2
    }

    /// Keeps the distribution at position `k` of unit `u`, if scored.
    pub fn keep(&mut self, u: usize, k: usize, logits: &[f32]) {
        if !self.scored(k) {
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
        self.units[u].rows.push((k, at / self.n_vocab));
    }

    /// KL(reference ‖ logits) at kept row `row`.
    fn kld(&mut self, row: usize, logits: &[f32]) -> f64 {
        log_softmax(logits, &mut self.scratch);
        let n = self.n_vocab;
        self.stored.resize(n, 0.0);
        let p = &mut self.stored;
        unsafe {
            ffi::ggml_fp16_to_fp32_row(self.logp[row * n..].as_ptr(), p.as_mut_ptr(), n as i64)
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

/// Scores the model as it now is: the mean KL divergence over every kept
/// row, each unit evaluated alone from its first token.
pub fn score(ctx: &mut Context, n_vocab: usize, step: usize, r: &mut Reference) -> Result<f64> {
    let mut batch = Batch::new(step)?;
    let (mut sum, mut n) = (0f64, 0usize);
    for u in 0..r.units.len() {
        let rows = std::mem::take(&mut r.units[u].rows);
        let tokens = std::mem::take(&mut r.units[u].tokens);
        ctx.clear();
        let mut next = rows.iter().peekable();
        for start in (0..tokens.len()).step_by(step) {
            let end = (start + step).min(tokens.len());
            batch.clear();
            for (k, &t) in tokens.iter().enumerate().take(end).skip(start) {
                batch.add(t, k, 0, rows.iter().any(|r| r.0 == k));
            }
            ctx.decode(&batch, "scoring a sensitivity probe")?;
            while let Some(&&(k, row)) = next.peek().filter(|r| r.0 < end) {
                let logits = ctx.logits(k - start, n_vocab)?.to_vec();
                sum += r.kld(row, &logits);
                n += 1;
                next.next();
            }
        }
        r.units[u].rows = rows;
        r.units[u].tokens = tokens;
    }
    if n == 0 {
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
    /// The measure with the group alone at the probe type: the mean KL
    /// divergence, or for an embedding model the mean 1 − cosine
    /// ([`Measure`]; the name is the file's key, `ggml_qat.sensitivity.kld`).
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

/// What a probe's figure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Mean KL divergence of the next-token distributions (a model with a
    /// language-model head).
    Kld,
    /// Mean 1 − cosine of the pooled embeddings (an embedding model).
    OneMinusCos,
}

impl Measure {
    /// The name the file (`ggml_qat.factors.measure`), the report and the
    /// summary give it.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Kld => "kl-divergence",
            Measure::OneMinusCos => "1-cosine",
        }
    }
}

/// Scores the model as it now is against its full-precision reference.
pub trait Scorer {
    fn score(&mut self) -> Result<f64>;
}

/// The KL divergence scorer: a context of the longest unit, the kept
/// distributions.
pub struct Kld<'m, 'r> {
    ctx: Context<'m>,
    n_vocab: usize,
    step: usize,
    r: &'r mut Reference,
}

impl<'m, 'r> Kld<'m, 'r> {
    pub fn new(model: &'m Model, step: usize, threads: i32, r: &'r mut Reference) -> Result<Self> {
        let longest = r.units.iter().map(|u| u.tokens.len()).max().unwrap_or(1);
        let cp = ContextParams {
            embeddings: false,
            n_ctx: longest.max(2) as u32,
            n_batch: step as u32,
            n_seq: 1,
            threads,
        };
        Ok(Kld {
            ctx: Context::new(model, &cp, None)?,
            n_vocab: model.vocab().n_tokens(),
            step,
            r,
        })
    }
}

impl Scorer for Kld<'_, '_> {
    fn score(&mut self) -> Result<f64> {
        score(&mut self.ctx, self.n_vocab, self.step, self.r)
    }
}

/// Measures every group (quantize it to `probe_type`, score, restore),
/// then the model as restored: that last figure is the measure's floor
/// (f16 reference rounding, batch shapes), near zero unless a restore
/// failed.
pub fn measure(
    w: &Weights,
    probe_type: i32,
    scorer: &mut dyn Scorer,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<Group>, f64)> {
    let mut out = Vec::new();
    for (done, (name, members)) in groups(w).into_iter().enumerate() {
        let mut nsr = 0f64;
        for &i in &members {
            nsr += w.quantize(i, probe_type)?;
        }
        let kld = scorer.score();
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
    let floor = scorer.score()?;
    Ok((out, floor))
}
