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
//!   better of it and the search, with the writer's column weights), `a`
//!   the tensor's imatrix entry or ones ([`measure`]). Where it is not
//!   exactly what the writer writes: under `optimize`, the writer keeps
//!   or replaces ggml's bytes per chunk of rows (bounded by the buffer
//!   size), the sample as one chunk per expert, so the kept bytes may
//!   differ on the rows not sampled; a type equal to the source's is
//!   copied, error 0 (the source is the reference).
//! - Predicted model error of a plan: `Σ_t f(role_t) · E_t(type_t)`, where
//!   `f` is the role's and depth's factor ([`Factors`]: the default, a
//!   factors file's, or a calibration file's; [`FactorsUsed`] in the
//!   report says which).
//! - Search: on each tensor's lower convex hull of (bytes, weighted error),
//!   the upgrade saving the most error per byte first while it fits; then
//!   any single change that still fits and lowers the error. The preset's
//!   plan is kept when it fits and is predicted no worse.

use std::time::Instant;

use serde::Serialize;

use super::assign::{Assignment, Origin};
use super::gram::Grams;
use super::imatrix::Imatrix;
use super::preset;
use super::roles::{self, Category};
use super::source::{Source, TensorRef};
use super::weights::ColumnWeights;
use super::ModelError;
use crate::ggml::tensor::type_name;
use crate::quant::QuantType;

mod allocate;
mod measure;

pub use super::factors::{Factors, FactorsUsed};
pub use super::params::{SizeTarget, TypeRule};
pub use measure::measure;

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
    /// The role and depth factors used, and where they came from.
    pub factors: FactorsUsed,
}

/// What the planner needs besides the model and its assignment.
pub struct Inputs<'a> {
    /// The workers that measure.
    pub pool: &'a rayon::ThreadPool,
    /// Header bytes of every output file.
    pub header_bytes: u64,
    pub imatrix: Option<&'a Imatrix>,
    pub rules: &'a [TypeRule],
    pub optimize: bool,
    /// The writer's `norm_importance` (the search's weights).
    pub norm_importance: bool,
    pub target: SizeTarget,
    pub factors: &'a FactorsUsed,
    /// The calibration file's Gram matrices (`optimize` only): a tensor
    /// that has one is measured on its Gram objective.
    pub grams: Option<&'a Grams>,
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

/// The planner's result: per tensor (`[shard][index]`) the candidates and
/// prediction of the free ones, and the summary.
pub struct Planned {
    pub plans: Vec<Vec<Option<TensorPlan>>>,
    pub summary: PlanSummary,
}

/// One tensor as the planner sees it.
struct Item {
    r: TensorRef,
    preset: i32,
    free: bool,
}

/// Plans the types of the free tensors of `a` (their origin becomes
/// [`Origin::Planned`] where the type changes). `progress` gets each
/// measured tensor's index and name; false cancels.
pub fn plan(
    src: &Source,
    a: &mut Assignment,
    inp: &Inputs,
    progress: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Planned, ModelError> {
    let start = Instant::now();
    let items: Vec<Item> = src
        .tensors()
        .map(|(r, _)| {
            let x = &a[r.shard][r.index];
            Item {
                r,
                preset: x.ty,
                free: x.free,
            }
        })
        .collect();
    let scale = Scale::new(src, &items, inp)?;
    let mut measured = measure_free(src, &items, inp, &scale, progress)?;
    let (pick, kept_preset) = decide(&measured, &scale)?;
    let mut types: Vec<i32> = items.iter().map(|it| it.preset).collect();
    for ((&i, o), j) in measured.free.iter().zip(&measured.options).zip(&pick) {
        types[i] = o.opts[*j].ty;
        if let Some(p) = measured.plans[i].as_mut() {
            p.predicted_error = o.opts[*j].error;
        }
    }
    let mut summary = scale.summary(src, &items, &types, inp);
    summary.n_planned = measured.free.len();
    summary.sampled_values = measured.sampled_values;
    summary.preset_error = total_error(&measured.options, &measured.preset_pick);
    summary.chosen_error = total_error(&measured.options, &pick);
    summary.kept_preset = kept_preset;
    summary.factors = inp.factors.clone();
    summary.seconds = start.elapsed().as_secs_f64();
    let mut plans: Vec<Vec<Option<TensorPlan>>> = a.iter().map(|s| vec![None; s.len()]).collect();
    for ((it, ty), p) in items.iter().zip(types).zip(measured.plans.iter_mut()) {
        let x = &mut a[it.r.shard][it.r.index];
        if x.ty != ty {
            x.ty = ty;
            x.origin = Origin::Planned;
        }
        plans[it.r.shard][it.r.index] = p.take();
    }
    Ok(Planned { plans, summary })
}

fn align(n: u64, a: u64) -> u64 {
    n.div_ceil(a.max(1)) * a.max(1)
}

/// Sizes in the target's units, and the budget left for the free tensors.
struct Scale {
    file_target: bool,
    n_weights: u64,
    /// The budget for the free tensors.
    budget: u64,
    /// Bytes the plan does not change (and the headers).
    fixed: u64,
    /// Why a target may be out of reach.
    kept_quantized: &'static str,
    header_bytes: u64,
}

impl Scale {
    fn new(src: &Source, items: &[Item], inp: &Inputs) -> Result<Scale, ModelError> {
        let file_target = matches!(inp.target, SizeTarget::FileBytes(_));
        let mut s = Scale {
            file_target,
            n_weights: items.iter().map(|it| src.info(it.r).nelements()).sum(),
            budget: 0,
            fixed: 0,
            kept_quantized: "",
            header_bytes: inp.header_bytes,
        };
        s.fixed = items
            .iter()
            .filter(|it| !it.free)
            .map(|it| s.cost(src, it.r, it.preset))
            .sum::<u64>()
            + if file_target { inp.header_bytes } else { 0 };
        let budget = match inp.target {
            SizeTarget::FileBytes(b) => b,
            SizeTarget::BitsPerWeight(x) => (x * s.n_weights as f64 / 8.0).floor() as u64,
        };
        // Sources already quantized are not planned without allow_requantize.
        if items.iter().any(|it| {
            let ty = src.info(it.r).ty;
            !it.free && it.preset == ty && preset::is_quantized_id(ty)
        }) {
            s.kept_quantized =
                " (tensors already quantized keep their type unless requantizing is allowed)";
        }
        s.budget = budget.checked_sub(s.fixed).ok_or_else(|| {
            ModelError::Invalid(format!(
                "target size: the tensors the preset leaves as they are (and the headers) already take {} bytes, more than the target{}",
                s.fixed, s.kept_quantized
            ))
        })?;
        Ok(s)
    }

    /// The cost of `r` at type `ty`: file bytes (aligned) or data bytes.
    fn cost(&self, src: &Source, r: TensorRef, ty: i32) -> u64 {
        let raw = src.info(r).nbytes_as(ty);
        if self.file_target {
            align(raw, src.shards[r.shard].header.alignment)
        } else {
            raw
        }
    }

    /// Both plans' file bytes and bpw.
    fn summary(&self, src: &Source, items: &[Item], types: &[i32], inp: &Inputs) -> PlanSummary {
        let figures = |tys: &mut dyn Iterator<Item = i32>| -> (u64, f64) {
            let (mut raw, mut file) = (0u64, self.header_bytes);
            for (it, t) in items.iter().zip(tys) {
                let b = src.info(it.r).nbytes_as(t);
                raw += b;
                file += align(b, src.shards[it.r.shard].header.alignment);
            }
            (file, 8.0 * raw as f64 / self.n_weights.max(1) as f64)
        };
        let (preset_file_bytes, preset_bpw) = figures(&mut items.iter().map(|it| it.preset));
        let (chosen_file_bytes, chosen_bpw) = figures(&mut types.iter().copied());
        PlanSummary {
            target: match inp.target {
                SizeTarget::FileBytes(b) => format!("file bytes {b}"),
                SizeTarget::BitsPerWeight(x) => format!("bpw {x}"),
            },
            preset_file_bytes,
            preset_bpw,
            chosen_file_bytes,
            chosen_bpw,
            ..PlanSummary::default()
        }
    }
}

/// The free tensors' options and plans.
struct Measured {
    /// Item indices of the free tensors.
    free: Vec<usize>,
    options: Vec<Options>,
    /// Per item (free ones only).
    plans: Vec<Option<TensorPlan>>,
    /// The preset's option of each free tensor.
    preset_pick: Vec<usize>,
    sampled_values: u64,
}

/// Measures every free tensor's candidates.
fn measure_free(
    src: &Source,
    items: &[Item],
    inp: &Inputs,
    scale: &Scale,
    progress: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Measured, ModelError> {
    let roles: Vec<Category> = items
        .iter()
        .map(|it| roles::category(&src.info(it.r).name))
        .collect();
    let n_layer = items
        .iter()
        .map(|it| roles::layer_of(&src.info(it.r).name) + 1)
        .max()
        .unwrap_or(0);
    let mut m = Measured {
        free: Vec::new(),
        options: Vec::new(),
        plans: (0..items.len()).map(|_| None).collect(),
        preset_pick: Vec::new(),
        sampled_values: 0,
    };
    for (i, it) in items.iter().enumerate() {
        if !it.free {
            continue;
        }
        let t = src.info(it.r);
        if !progress(i, &t.name) {
            return Err(ModelError::Cancelled);
        }
        let in_role = roles
            .iter()
            .zip(items)
            .filter(|(&r, it)| r == roles[i] && it.free)
            .count();
        let f = &inp.factors.values;
        let factor =
            f.role(roles[i]) / in_role.max(1) as f64 * f.depth(roles::layer_of(&t.name), n_layer);
        let (plan, opts) = measure_one(src, it, inp, scale, factor)?;
        m.sampled_values += plan.sampled_rows * t.ne[0];
        m.preset_pick.push(
            opts.opts
                .iter()
                .position(|x| x.ty == it.preset)
                .expect("preset type is a candidate"),
        );
        m.free.push(i);
        m.options.push(opts);
        m.plans[i] = Some(plan);
    }
    Ok(m)
}

/// The candidates of one free tensor: offered types whose block divides
/// its rows, plus the preset's type; measured, cheapest first.
fn measure_one(
    src: &Source,
    it: &Item,
    inp: &Inputs,
    scale: &Scale,
    factor: f64,
) -> Result<(TensorPlan, Options), ModelError> {
    let t = src.info(it.r);
    let offered: &[QuantType] = inp
        .rules
        .iter()
        .find(|r| r.pattern.as_ref().map_or(true, |p| p.is_match(&t.name)))
        .map_or(&DEFAULT_TYPES, |r| &r.types);
    let mut tys: Vec<QuantType> = offered
        .iter()
        .copied()
        .filter(|q| t.ne[0] % q.format().block_size as u64 == 0)
        .collect();
    if let Some(p) = QuantType::from_ggml(it.preset) {
        if !tys.contains(&p) {
            tys.push(p);
        }
    }
    let w = ColumnWeights::load(src, it.r, inp.imatrix, inp.optimize && inp.norm_importance)?;
    let gram = match inp.grams {
        Some(g) if inp.optimize => inp.pool.install(|| g.factor_of(t))?,
        _ => None,
    };
    let (rows, errors) = inp
        .pool
        .install(|| measure(src, it.r, &w, &tys, inp.optimize, gram.as_deref()))?;
    let mut cands: Vec<Candidate> = tys
        .iter()
        .zip(&errors)
        .map(|(q, &e)| Candidate {
            ty: q.format().name.to_string(),
            type_id: q.ggml_id(),
            bytes: t.nbytes_as(q.ggml_id()),
            error: e,
        })
        .collect();
    cands.sort_by_key(|c| (c.bytes, c.type_id));
    let opts = cands
        .iter()
        .map(|c| Opt {
            ty: c.type_id,
            cost: scale.cost(src, it.r, c.type_id),
            error: factor * c.error,
        })
        .collect();
    let plan = TensorPlan {
        preset_type: type_name(it.preset),
        factor,
        sampled_rows: rows,
        candidates: cands,
        predicted_error: 0.0,
    };
    Ok((plan, Options { opts }))
}

/// The choice within the budget, and whether it is the preset's (kept
/// when it fits and is predicted no worse).
fn decide(m: &Measured, scale: &Scale) -> Result<(Vec<usize>, bool), ModelError> {
    let pick = allocate::allocate(&m.options, scale.budget).ok_or_else(|| {
        let least: u64 = m
            .options
            .iter()
            .map(|o| o.opts.iter().map(|x| x.cost).min().unwrap_or(0))
            .sum();
        ModelError::Invalid(format!(
            "target size: the smallest plan needs {} {}, more than the target allows{}",
            least + scale.fixed,
            if scale.file_target {
                "file bytes"
            } else {
                "tensor bytes"
            },
            scale.kept_quantized
        ))
    })?;
    let preset_cost: u64 = m
        .options
        .iter()
        .zip(&m.preset_pick)
        .map(|(o, &j)| o.opts[j].cost)
        .sum();
    if preset_cost <= scale.budget
        && total_error(&m.options, &m.preset_pick) <= total_error(&m.options, &pick)
    {
        return Ok((m.preset_pick.clone(), true));
    }
    Ok((pick, false))
}

fn total_error(options: &[Options], pick: &[usize]) -> f64 {
    options
        .iter()
        .zip(pick)
        .map(|(o, &j)| o.opts[j].error)
        .sum()
}
