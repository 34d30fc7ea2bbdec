//! The size planner (`--target-size`, `--target-bpw`): a type per tensor
//! that meets a size with the least predicted model error.
//!
//! - Which tensors: those the preset quantizes and no manual option fixes
//!   (`--tensor-type`, `--token-embedding-type`, `--output-tensor-type`);
//!   everything the preset leaves as it is stays so.
//! - Candidates: the given types whose block divides the tensor's rows
//!   (llama.cpp's fallback rule: a type that does not fit is not offered),
//!   plus the preset's own choice.
//! - Measured, per tensor and candidate, on an evenly spaced sample of the
//!   tensor's rows (about [`SAMPLE_VALUES`] values): the relative squared
//!   error `E = Σ a_j (w − ŵ)² / Σ a_j w²` of the bytes the writer would
//!   produce (ggml's quantizer with the imatrix, or under `optimize` the
//!   better of it and the search), `a` the tensor's imatrix entry or ones.
//! - Predicted model error of a plan: `Σ_t f(role_t) · E_t(type_t)`, where
//!   `f` is the role's and depth's factor ([`Factors`]).
//! - Search: on each tensor's lower convex hull of (bytes, weighted error),
//!   the upgrade saving the most error per byte first while it fits; then
//!   any single change that still fits and lowers the error. The preset's
//!   plan is kept when it fits and is predicted no worse.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::chunk;
use super::gguf::{self, Header, TensorInfo};
use super::imatrix::Imatrix;
use super::select::{self, Category};
use super::ModelError;
use crate::quant::{self, QuantType};

/// About this many values of each tensor are quantized per candidate.
pub const SAMPLE_VALUES: usize = 1 << 18;

/// The types offered when none are given: every block type llama.cpp loads
/// that this crate writes.
pub const DEFAULT_TYPES: [QuantType; 12] = [
    QuantType::Q2_K,
    QuantType::Q3_K,
    QuantType::IQ4_XS,
    QuantType::IQ4_NL,
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q4_K,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q5_K,
    QuantType::Q6_K,
    QuantType::Q8_0,
];

/// The size to meet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SizeTarget {
    /// Whole output file(s), headers and padding included.
    FileBytes(u64),
    /// Bits per weight as llama.cpp counts them: 8 × tensor data bytes /
    /// weights, over every tensor.
    BitsPerWeight(f64),
}

/// One measured candidate of a tensor.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    #[serde(rename = "type")]
    pub ty: String,
    pub type_id: i32,
    /// Tensor data bytes.
    pub bytes: u64,
    /// Relative squared error on the sample (imatrix-weighted when given).
    pub error: f64,
}

/// The plan of one tensor (in the JSON report).
#[derive(Clone, Debug, Serialize)]
pub struct TensorPlan {
    pub preset_type: String,
    /// The role's factor: the tensor's error counts this much.
    pub factor: f64,
    pub sampled_rows: u64,
    pub candidates: Vec<Candidate>,
    /// The chosen candidate's error × factor.
    pub predicted_error: f64,
}

/// The plan as a whole: the preset's figures and the chosen ones, both
/// as measured and predicted before writing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlanSummary {
    /// "file bytes N" or "bpw X".
    pub target: String,
    pub n_planned: usize,
    pub sampled_values: u64,
    pub preset_file_bytes: u64,
    pub preset_bpw: f64,
    pub preset_error: f64,
    pub chosen_file_bytes: u64,
    pub chosen_bpw: f64,
    pub chosen_error: f64,
    /// The preset's plan fitted and was predicted no worse: kept.
    pub kept_preset: bool,
    pub seconds: f64,
}

/// One tensor of the model, as the planner sees it.
pub struct Item<'a> {
    pub shard: usize,
    pub info: &'a TensorInfo,
    /// The preset's type (ggml id).
    pub preset: i32,
    /// Whether the planner may choose its type.
    pub free: bool,
}

/// The types the planner may give the tensors whose name matches
/// `pattern` (searched in the name; `None`: every tensor). The first rule
/// that matches a tensor applies; with none, [`DEFAULT_TYPES`].
#[derive(Clone, Debug)]
pub struct TypeRule {
    pub pattern: Option<regex::Regex>,
    pub types: Vec<QuantType>,
}

/// What the planner needs besides the tensors.
pub struct Inputs<'a> {
    pub shards: &'a [(PathBuf, Header)],
    /// Header bytes of every output file.
    pub header_bytes: u64,
    pub imatrix: Option<&'a Imatrix>,
    pub rules: &'a [TypeRule],
    pub optimize: bool,
    pub target: SizeTarget,
    pub factors: &'a Factors,
}

/// The roles a factors file names, by llama.cpp's tensor names.
const ROLE_NAMES: [(&str, Category); 12] = [
    ("token_embd", Category::TokenEmbd),
    ("output", Category::Output),
    ("attn_q", Category::AttnQ),
    ("attn_k", Category::AttnK),
    ("attn_v", Category::AttnV),
    ("attn_qkv", Category::AttnQkv),
    ("attn_kv_b", Category::AttnKvB),
    ("attn_output", Category::AttnOutput),
    ("ffn_gate", Category::FfnGate),
    ("ffn_up", Category::FfnUp),
    ("ffn_down", Category::FfnDown),
    ("other", Category::Other),
];

/// How much relative squared error costs, by role and depth.
///
/// - `roles`: the mean KL divergence of the model per unit of mean relative
///   squared error when every tensor of the role (and no other) is
///   quantized; a tensor's share is its role's factor divided by the number
///   of tensors in the role.
/// - `depth`: the mean KL divergence with every tensor of the first, middle
///   and last third of the blocks quantized; a block's factor is its
///   third's figure over the mean of the three.
///
/// The default was measured on Gemma 3 270M, each group at Q4_0, 12 chunks
/// of 512 tokens of a text disjoint from the evaluation text
/// (scripts/measure-roles.sh, which also writes such a file for its model).
/// Roles Gemma lacks take the nearest measured one: `output` that of the
/// tied token embeddings, fused QKV the mean of Q, K and V, `attn_kv_b`
/// that of V, other tensors that of attn_output (the median).
#[derive(Clone, Debug, PartialEq)]
pub struct Factors {
    pub roles: [f64; 12],
    pub depth: [f64; 3],
}

impl Default for Factors {
    fn default() -> Factors {
        let (q, k, v) = (1.69, 1.67, 7.01);
        Factors {
            roles: [
                7.87,
                7.87,
                q,
                k,
                v,
                (q + k + v) / 3.0,
                v,
                3.25,
                2.91,
                5.73,
                7.12,
                3.25,
            ],
            depth: [0.127598, 0.098814, 0.087137],
        }
    }
}

impl Factors {
    /// Reads a factors file: lines `ROLE VALUE` (ROLE one of token_embd,
    /// output, attn_q, attn_k, attn_v, attn_qkv, attn_kv_b, attn_output,
    /// ffn_gate, ffn_up, ffn_down, other) and `depth FIRST MIDDLE LAST`;
    /// `#` starts a comment. What the file does not name keeps its default.
    pub fn parse(text: &str) -> Result<Factors, String> {
        let mut f = Factors::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let key = words.next().unwrap_or("");
            let values: Vec<f64> = words
                .map(|w| w.parse::<f64>().ok().filter(|x| x.is_finite() && *x > 0.0))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    format!("line {}: positive numbers expected after '{key}'", n + 1)
                })?;
            if key == "depth" {
                f.depth = values
                    .as_slice()
                    .try_into()
                    .map_err(|_| format!("line {}: depth takes 3 numbers", n + 1))?;
                continue;
            }
            let i = ROLE_NAMES
                .iter()
                .position(|(name, _)| *name == key)
                .ok_or_else(|| format!("line {}: unknown role '{key}'", n + 1))?;
            match values[..] {
                [x] => f.roles[i] = x,
                _ => return Err(format!("line {}: {key} takes 1 number", n + 1)),
            }
        }
        Ok(f)
    }

    /// The factor of a role (before dividing by the tensors in it).
    pub fn role(&self, cat: Category) -> f64 {
        let i = ROLE_NAMES.iter().position(|(_, c)| *c == cat).unwrap_or(11);
        self.roles[i]
    }

    /// The depth factor of block `layer` of `n_layer` (1 outside blocks).
    pub fn depth(&self, layer: i64, n_layer: i64) -> f64 {
        if layer < 0 || n_layer <= 0 {
            return 1.0;
        }
        let mean = self.depth.iter().sum::<f64>() / 3.0;
        let third = ((3 * layer.min(n_layer - 1)) / n_layer) as usize;
        self.depth[third.min(2)] / mean
    }
}

fn align(n: u64, a: u64) -> u64 {
    n.div_ceil(a.max(1)) * a.max(1)
}

/// One option of a free tensor.
#[derive(Clone, Copy, Debug)]
struct Opt {
    /// ggml type id.
    ty: i32,
    /// Bytes in target units (file bytes aligned, or tensor data bytes).
    cost: u64,
    /// Measured error × the tensor's factor.
    error: f64,
}

/// The options of one free tensor, cheapest first.
struct Options {
    opts: Vec<Opt>,
}

/// The planner's result.
pub struct Chosen {
    /// A type per item (ggml ids, in item order).
    pub types: Vec<i32>,
    /// Per item: the candidates and prediction (free items only).
    pub plans: Vec<Option<TensorPlan>>,
    pub summary: PlanSummary,
}

/// Chooses a type per item. `progress` gets each measured tensor's index
/// and name; false cancels.
pub fn choose(
    pool: &rayon::ThreadPool,
    items: &[Item],
    inp: &Inputs,
    progress: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Chosen, ModelError> {
    let start = Instant::now();
    let file_target = matches!(inp.target, SizeTarget::FileBytes(_));
    let alignment = |it: &Item| inp.shards[it.shard].1.alignment;
    let n_weights: u64 = items.iter().map(|it| it.info.nelements()).sum();
    let nbytes = |it: &Item, ty: i32| it.info.nbytes_as(ty);
    let cost = |it: &Item, raw: u64| {
        if file_target {
            align(raw, alignment(it))
        } else {
            raw
        }
    };
    // Bytes that do not depend on the plan, in target units.
    let fixed: u64 = items
        .iter()
        .filter(|it| !it.free)
        .map(|it| cost(it, nbytes(it, it.preset)))
        .sum::<u64>()
        + if file_target { inp.header_bytes } else { 0 };
    let budget: u64 = match inp.target {
        SizeTarget::FileBytes(b) => b,
        SizeTarget::BitsPerWeight(x) => (x * n_weights as f64 / 8.0).floor() as u64,
    };
    // Why a target may be out of reach: sources already quantized are not
    // planned without allow_requantize.
    let kept_quantized = if items
        .iter()
        .any(|it| !it.free && it.preset == it.info.ty && select::is_quantized_id(it.info.ty))
    {
        " (tensors already quantized keep their type unless requantizing is allowed)"
    } else {
        ""
    };
    let budget = budget.checked_sub(fixed).ok_or_else(|| {
        ModelError::Invalid(format!(
            "target size: the tensors the preset leaves as they are (and the headers) already take {fixed} bytes, more than the target{kept_quantized}"
        ))
    })?;

    // Measure every free tensor's candidates.
    let files: Vec<File> = inp
        .shards
        .iter()
        .map(|(p, _)| File::open(p).map_err(|e| ModelError::io(p, "cannot open", e)))
        .collect::<Result<_, _>>()?;
    let roles: Vec<Category> = items
        .iter()
        .map(|it| select::category(&it.info.name))
        .collect();
    let role_count = |c: Category| {
        roles
            .iter()
            .zip(items)
            .filter(|(&r, it)| r == c && it.free)
            .count()
            .max(1)
    };
    let n_layer = items
        .iter()
        .map(|it| select::layer_of(&it.info.name) + 1)
        .max()
        .unwrap_or(0);
    // The free items' indices, their options and plans (item order).
    let mut free: Vec<usize> = Vec::new();
    let mut options: Vec<Options> = Vec::new();
    let mut plans: Vec<Option<TensorPlan>> = (0..items.len()).map(|_| None).collect();
    let mut sampled_values = 0u64;
    for (i, it) in items.iter().enumerate() {
        if !it.free {
            continue;
        }
        if !progress(i, &it.info.name) {
            return Err(ModelError::Cancelled);
        }
        let offered: &[QuantType] = inp
            .rules
            .iter()
            .find(|r| {
                r.pattern
                    .as_ref()
                    .map_or(true, |p| p.is_match(&it.info.name))
            })
            .map_or(&DEFAULT_TYPES, |r| &r.types);
        let mut tys: Vec<QuantType> = offered
            .iter()
            .copied()
            .filter(|t| it.info.ne[0] % t.format().block_size as u64 == 0)
            .collect();
        if let Some(p) = QuantType::from_ggml(it.preset) {
            if !tys.contains(&p) {
                tys.push(p);
            }
        }
        let (path, h) = &inp.shards[it.shard];
        let im = inp.imatrix.and_then(|m| m.get(&it.info.name));
        let (rows, errors) =
            pool.install(|| measure(&files[it.shard], path, h, it.info, im, &tys, inp.optimize))?;
        sampled_values += rows * it.info.ne[0];
        let factor = inp.factors.role(roles[i]) / role_count(roles[i]) as f64
            * inp.factors.depth(select::layer_of(&it.info.name), n_layer);
        let mut cands: Vec<Candidate> = tys
            .iter()
            .zip(&errors)
            .map(|(t, &e)| Candidate {
                ty: t.format().name.to_string(),
                type_id: t.ggml_id(),
                bytes: nbytes(it, t.ggml_id()),
                error: e,
            })
            .collect();
        cands.sort_by_key(|c| (c.bytes, c.type_id));
        let opts = cands
            .iter()
            .map(|c| Opt {
                ty: c.type_id,
                cost: cost(it, c.bytes),
                error: factor * c.error,
            })
            .collect();
        free.push(i);
        options.push(Options { opts });
        plans[i] = Some(TensorPlan {
            preset_type: crate::ggml::tensor::type_name(it.preset),
            factor,
            sampled_rows: rows,
            candidates: cands,
            predicted_error: 0.0,
        });
    }

    // The preset's plan, on the same scale.
    let preset_pick: Vec<usize> = free
        .iter()
        .zip(&options)
        .map(|(&i, o)| {
            o.opts
                .iter()
                .position(|x| x.ty == items[i].preset)
                .expect("preset type is a candidate")
        })
        .collect();
    let mut pick = allocate(&options, budget).ok_or_else(|| {
        let least: u64 = options
            .iter()
            .map(|o| o.opts.iter().map(|x| x.cost).min().unwrap_or(0))
            .sum();
        ModelError::Invalid(format!(
            "target size: the smallest plan needs {} {}, more than the target allows{}",
            least + fixed,
            if file_target {
                "file bytes"
            } else {
                "tensor bytes"
            },
            kept_quantized
        ))
    })?;
    fn picked<'a>(options: &'a [Options], pick: &'a [usize]) -> impl Iterator<Item = Opt> + 'a {
        options.iter().zip(pick).map(|(o, &j)| o.opts[j])
    }
    let preset_cost: u64 = picked(&options, &preset_pick).map(|o| o.cost).sum();
    let preset_error: f64 = picked(&options, &preset_pick).map(|o| o.error).sum();
    let mut kept_preset = false;
    if preset_cost <= budget
        && preset_error <= picked(&options, &pick).map(|o| o.error).sum::<f64>()
    {
        pick = preset_pick;
        kept_preset = true;
    }

    // Types in item order, and the figures in both units.
    let mut types: Vec<i32> = items.iter().map(|it| it.preset).collect();
    for (&i, o) in free.iter().zip(picked(&options, &pick)) {
        types[i] = o.ty;
        if let Some(p) = plans[i].as_mut() {
            p.predicted_error = o.error;
        }
    }
    let figures = |tys: &[i32]| -> (u64, f64) {
        let raw: u64 = items.iter().zip(tys).map(|(it, &t)| nbytes(it, t)).sum();
        let file: u64 = items
            .iter()
            .zip(tys)
            .map(|(it, &t)| align(nbytes(it, t), alignment(it)))
            .sum::<u64>()
            + inp.header_bytes;
        (file, 8.0 * raw as f64 / n_weights.max(1) as f64)
    };
    let preset_types: Vec<i32> = items.iter().map(|it| it.preset).collect();
    let (preset_file_bytes, preset_bpw) = figures(&preset_types);
    let (chosen_file_bytes, chosen_bpw) = figures(&types);
    let summary = PlanSummary {
        target: match inp.target {
            SizeTarget::FileBytes(b) => format!("file bytes {b}"),
            SizeTarget::BitsPerWeight(x) => format!("bpw {x}"),
        },
        n_planned: free.len(),
        sampled_values,
        preset_file_bytes,
        preset_bpw,
        preset_error,
        chosen_file_bytes,
        chosen_bpw,
        chosen_error: picked(&options, &pick).map(|o| o.error).sum(),
        kept_preset,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Chosen {
        types,
        plans,
        summary,
    })
}

/// The least-error choice (index into each tensor's options) whose costs
/// sum to at most `budget`, or None when even the cheapest do not fit: the
/// better of an exact knapsack on costs rounded up to units of the budget
/// and the greedy search on convex hulls, each then completed by single
/// changes that still fit.
fn allocate(items: &[Options], budget: u64) -> Option<Vec<usize>> {
    let greedy = allocate_greedy(items, budget)?;
    let err = |p: &[usize]| -> f64 { items.iter().zip(p).map(|(o, &j)| o.opts[j].error).sum() };
    match allocate_knapsack(items, budget) {
        Some(k) if err(&k) < err(&greedy) => Some(k),
        _ => Some(greedy),
    }
}

/// Multiple-choice knapsack by dynamic programming over the budget in at
/// most 2^15 units (costs rounded up, so the result fits), memory bounded
/// to 64 MiB of choices.
fn allocate_knapsack(items: &[Options], budget: u64) -> Option<Vec<usize>> {
    let n = items.len();
    if n == 0 {
        return Some(Vec::new());
    }
    let units = (1usize << 15).min((1usize << 26) / n).max(64);
    let unit = budget.div_ceil(units as u64).max(1);
    let cap = (budget / unit) as usize;
    let cost = |c: u64| c.div_ceil(unit) as usize;
    const NONE: u8 = u8::MAX;
    let mut best = vec![f64::INFINITY; cap + 1];
    best[0] = 0.0;
    let mut choice = vec![NONE; n * (cap + 1)];
    for (i, o) in items.iter().enumerate() {
        let mut next = vec![f64::INFINITY; cap + 1];
        let row = &mut choice[i * (cap + 1)..(i + 1) * (cap + 1)];
        for (j, opt) in o.opts.iter().enumerate().take(NONE as usize) {
            let c = cost(opt.cost);
            for u in c..=cap {
                let e = best[u - c] + opt.error;
                if e < next[u] {
                    next[u] = e;
                    row[u] = j as u8;
                }
            }
        }
        best = next;
    }
    let (mut u, _) = best
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_finite())
        .min_by(|a, b| a.1.partial_cmp(b.1).unwrap_or(std::cmp::Ordering::Equal))?;
    let mut pick = vec![0usize; n];
    for i in (0..n).rev() {
        let j = choice[i * (cap + 1) + u];
        if j == NONE {
            return None;
        }
        pick[i] = j as usize;
        u -= cost(items[i].opts[pick[i]].cost);
    }
    let used: u64 = items.iter().zip(&pick).map(|(o, &j)| o.opts[j].cost).sum();
    improve(items, budget, &mut pick, used);
    Some(pick)
}

/// Greedy upgrades on each item's lower convex hull, the most error saved
/// per byte first, while they fit.
fn allocate_greedy(items: &[Options], budget: u64) -> Option<Vec<usize>> {
    // Cheapest option of each (lowest error among equal costs).
    let mut pick: Vec<usize> = items
        .iter()
        .map(|o| {
            (0..o.opts.len())
                .min_by(|&a, &b| {
                    (o.opts[a].cost, o.opts[a].error)
                        .partial_cmp(&(o.opts[b].cost, o.opts[b].error))
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .unwrap_or(0)
        })
        .collect();
    let mut used: u64 = items.iter().zip(&pick).map(|(o, &j)| o.opts[j].cost).sum();
    if used > budget {
        return None;
    }
    // Lower convex hulls of (cost, error) from the cheapest option.
    let hulls: Vec<Vec<usize>> = items.iter().zip(&pick).map(|(o, &j)| hull(o, j)).collect();
    let mut at: Vec<usize> = vec![0; items.len()];
    // Greedy on the hulls: the best error saved per byte first.
    let slope = |i: usize, k: usize| -> Option<f64> {
        let h = &hulls[i];
        let (a, b) = (&items[i].opts[h[k]], &items[i].opts[*h.get(k + 1)?]);
        Some((a.error - b.error) / (b.cost - a.cost).max(1) as f64)
    };
    let mut active: Vec<usize> = (0..items.len()).filter(|&i| hulls[i].len() > 1).collect();
    while !active.is_empty() {
        let (pos, &i) = active
            .iter()
            .enumerate()
            .max_by(|a, b| {
                slope(*a.1, at[*a.1])
                    .partial_cmp(&slope(*b.1, at[*b.1]))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .expect("not empty");
        let h = &hulls[i];
        let (from, to) = (&items[i].opts[h[at[i]]], &items[i].opts[h[at[i] + 1]]);
        let extra = to.cost - from.cost;
        if used + extra <= budget {
            used += extra;
            at[i] += 1;
            pick[i] = h[at[i]];
            if at[i] + 1 >= h.len() {
                active.swap_remove(pos);
            }
        } else {
            active.swap_remove(pos);
        }
    }
    improve(items, budget, &mut pick, used);
    Some(pick)
}

/// Any single change that fits and lowers the error, the largest gain
/// first, until none is left. `used`: the cost of `pick`.
fn improve(items: &[Options], budget: u64, pick: &mut [usize], mut used: u64) {
    loop {
        let mut best: Option<(usize, usize, f64)> = None;
        for (i, o) in items.iter().enumerate() {
            let cur = &o.opts[pick[i]];
            for (j, c) in o.opts.iter().enumerate() {
                if c.error < cur.error && used - cur.cost + c.cost <= budget {
                    let gain = cur.error - c.error;
                    if best.map_or(true, |b| gain > b.2) {
                        best = Some((i, j, gain));
                    }
                }
            }
        }
        let Some((i, j, _)) = best else { break };
        used = used - items[i].opts[pick[i]].cost + items[i].opts[j].cost;
        pick[i] = j;
    }
}

/// The lower convex hull of an item's (cost, error) points from `start`:
/// indices with strictly rising cost and falling error, convex.
fn hull(o: &Options, start: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..o.opts.len())
        .filter(|&j| {
            o.opts[j].cost >= o.opts[start].cost && o.opts[j].error < o.opts[start].error
                || j == start
        })
        .collect();
    idx.sort_by(|&a, &b| {
        (o.opts[a].cost, o.opts[a].error)
            .partial_cmp(&(o.opts[b].cost, o.opts[b].error))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut h: Vec<usize> = Vec::new();
    for j in idx {
        let p = (o.opts[j].cost as f64, o.opts[j].error);
        if let Some(&last) = h.last() {
            // Same cost or no lower error: not on the hull.
            if o.opts[last].cost == o.opts[j].cost || o.opts[j].error >= o.opts[last].error {
                continue;
            }
        }
        while h.len() >= 2 {
            let a = &o.opts[h[h.len() - 2]];
            let b = &o.opts[h[h.len() - 1]];
            let (ax, ay, bx, by) = (a.cost as f64, a.error, b.cost as f64, b.error);
            // b is above the segment a → p: drop it.
            if (by - ay) * (p.0 - ax) >= (p.1 - ay) * (bx - ax) {
                h.pop();
            } else {
                break;
            }
        }
        h.push(j);
    }
    h
}

/// Quantizes an evenly spaced sample of `t`'s rows to each of `tys`;
/// returns the number of rows sampled and each type's relative squared
/// error. Runs on the current rayon pool.
fn measure(
    file: &File,
    path: &Path,
    h: &Header,
    t: &TensorInfo,
    im: Option<&Vec<f32>>,
    tys: &[QuantType],
    optimize: bool,
) -> Result<(u64, Vec<f64>), ModelError> {
    let row_len = t.ne[0] as usize;
    let nrows = t.nrows() as usize;
    let from = QuantType::from_ggml(t.ty).ok_or_else(|| {
        ModelError::Invalid(format!(
            "tensor '{}': cannot convert from type {}",
            t.name,
            crate::ggml::tensor::type_name(t.ty)
        ))
    })?;
    if nrows == 0 || row_len == 0 {
        return Ok((0, vec![0.0; tys.len()]));
    }
    let want = SAMPLE_VALUES.div_ceil(row_len).clamp(1, nrows);
    let picked: Vec<usize> = (0..want).map(|k| k * nrows / want).collect();
    let src_row = (t.nbytes / nrows as u64) as usize;
    let mut raw = vec![0u8; src_row];
    let mut x = vec![0f32; want * row_len];
    for (k, &r) in picked.iter().enumerate() {
        gguf::read_at(
            file,
            h.data_offset + t.offset + (r * src_row) as u64,
            &mut raw,
        )
        .map_err(|e| ModelError::io(path, "cannot read", e))?;
        quant::dequantize_rows(from, &raw, row_len, &mut x[k * row_len..(k + 1) * row_len])?;
    }
    // Rows grouped by expert (the imatrix entry is per expert).
    let per_expert = (t.ne[1] as usize).max(1);
    let mut groups: Vec<(usize, usize, usize)> = Vec::new(); // (first, count, expert)
    for (k, &r) in picked.iter().enumerate() {
        let e = r / per_expert;
        match groups.last_mut() {
            Some(g) if g.2 == e => g.1 += 1,
            _ => groups.push((k, 1, e)),
        }
    }
    let weights =
        |e: usize| -> Option<&[f32]> { im.and_then(|v| v.get(e * row_len..(e + 1) * row_len)) };
    let mut signal = 0f64;
    for &(first, count, e) in &groups {
        let a = weights(e);
        for row in x[first * row_len..(first + count) * row_len].chunks(row_len) {
            signal += row
                .iter()
                .enumerate()
                .map(|(j, &w)| a.map_or(1.0, |a| a[j] as f64) * (w as f64) * (w as f64))
                .sum::<f64>();
        }
    }
    if !signal.is_finite() {
        return Err(ModelError::Format(format!(
            "tensor '{}' holds non-finite values (NaN or Inf)",
            t.name
        )));
    }
    let mut errors = Vec::with_capacity(tys.len());
    for &ty in tys {
        let dst_row = ty.format().row_bytes(row_len).unwrap_or(0);
        let mut err = 0f64;
        for &(first, count, e) in &groups {
            let xs = &x[first * row_len..(first + count) * row_len];
            let mut dst = vec![0u8; count * dst_row];
            let a = weights(e);
            let in_tensor = |err| ModelError::Invalid(format!("tensor '{}': {err}", t.name));
            // Under optimize the search already measured the bytes it kept.
            err += match chunk::quantize_chunk(ty, xs, row_len, &mut dst, a, a, optimize)
                .map_err(in_tensor)?
            {
                Some(searched) => searched.kept,
                None => crate::qat::optimize::weighted_error(ty, &dst, xs, row_len, a)
                    .map_err(in_tensor)?,
            };
        }
        errors.push(if signal > 0.0 { err / signal } else { 0.0 });
    }
    Ok((want as u64, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator.
    fn next(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// Random tensors with options of rising cost and (mostly) falling
    /// error, some dominated.
    fn instance(seed: u64, n: usize) -> Vec<Options> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                let k = 2 + (next(&mut s) % 4) as usize;
                let mut c = 10 + next(&mut s) % 50;
                let mut e = 1.0 + (next(&mut s) % 1000) as f64 / 100.0;
                let opts = (0..k)
                    .map(|j| {
                        let o = Opt {
                            ty: j as i32,
                            cost: c,
                            error: e,
                        };
                        c += 1 + next(&mut s) % 40;
                        // now and then an option that saves nothing
                        if next(&mut s) % 5 != 0 {
                            e *= 0.1 + (next(&mut s) % 80) as f64 / 100.0;
                        }
                        o
                    })
                    .collect();
                Options { opts }
            })
            .collect()
    }

    fn brute(items: &[Options], budget: u64) -> f64 {
        let mut best = f64::INFINITY;
        let mut idx = vec![0usize; items.len()];
        loop {
            let cost: u64 = items.iter().zip(&idx).map(|(o, &j)| o.opts[j].cost).sum();
            if cost <= budget {
                let err: f64 = items.iter().zip(&idx).map(|(o, &j)| o.opts[j].error).sum();
                best = best.min(err);
            }
            let mut k = 0;
            loop {
                if k == idx.len() {
                    return best;
                }
                idx[k] += 1;
                if idx[k] < items[k].opts.len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }

    #[test]
    fn allocation_fits_and_reaches_the_exhaustive_optimum() {
        let mut worst = 1.0f64;
        for seed in 1..200u64 {
            let inst = instance(seed, 5);
            let items = &inst[..];
            let least: u64 = items.iter().map(|o| o.opts[0].cost).sum();
            let most: u64 = items.iter().map(|o| o.opts.last().unwrap().cost).sum();
            assert!(allocate(items, least - 1).is_none(), "below the least plan");
            for frac in [0.0, 0.2, 0.5, 0.8, 1.0] {
                let budget = least + ((most - least) as f64 * frac) as u64;
                let pick = allocate(items, budget).expect("the least plan fits");
                let cost: u64 = items.iter().zip(&pick).map(|(o, &j)| o.opts[j].cost).sum();
                assert!(cost <= budget, "seed {seed}: {cost} > {budget}");
                let err: f64 = items.iter().zip(&pick).map(|(o, &j)| o.opts[j].error).sum();
                let opt = brute(items, budget);
                assert!(err >= opt - 1e-12);
                worst = worst.max(err / opt);
            }
        }
        // The knapsack on rounded costs: at the optimum here (units far
        // smaller than the costs).
        assert!(worst < 1.0 + 1e-9, "worst ratio to the optimum {worst}");
    }

    #[test]
    fn factors_file_overrides_what_it_names() {
        let d = Factors::default();
        let f =
            Factors::parse("# measured\nattn_v 20 # more\n\ndepth 3 2 1\nffn_up\t0.5\n").unwrap();
        assert_eq!(f.role(Category::AttnV), 20.0);
        assert_eq!(f.role(Category::FfnUp), 0.5);
        assert_eq!(f.role(Category::AttnQ), d.role(Category::AttnQ));
        assert_eq!(f.depth, [3.0, 2.0, 1.0]);
        assert_eq!(f.depth(0, 18), 1.5);
        assert_eq!(f.depth(17, 18), 0.5);
        assert_eq!(f.depth(-1, 18), 1.0);
        assert_eq!(Factors::parse("").unwrap(), d);
        for (bad, want) in [
            ("attn_x 1", "unknown role 'attn_x'"),
            ("attn_v", "takes 1 number"),
            ("attn_v 1 2", "takes 1 number"),
            ("attn_v -1", "positive numbers"),
            ("attn_v nan", "positive numbers"),
            ("depth 1 2", "depth takes 3"),
        ] {
            let e = Factors::parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
            assert!(e.starts_with("line 1:"), "{e}");
        }
    }

    #[test]
    fn hull_is_convex_and_falling() {
        for seed in 1..100u64 {
            for o in instance(seed, 3) {
                let h = hull(&o, 0);
                assert_eq!(h[0], 0);
                for w in h.windows(2) {
                    assert!(o.opts[w[1]].cost > o.opts[w[0]].cost);
                    assert!(o.opts[w[1]].error < o.opts[w[0]].error);
                }
                for w in h.windows(3) {
                    let s1 = (o.opts[w[0]].error - o.opts[w[1]].error)
                        / (o.opts[w[1]].cost - o.opts[w[0]].cost) as f64;
                    let s2 = (o.opts[w[1]].error - o.opts[w[2]].error)
                        / (o.opts[w[2]].cost - o.opts[w[1]].cost) as f64;
                    assert!(s1 > s2, "slopes must fall: {s1} {s2}");
                }
            }
        }
    }
}
