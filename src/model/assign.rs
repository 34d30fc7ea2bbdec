//! The type of every tensor before any planning: the preset's rules (or the
//! ggml-qat classes), the manual options and llama.cpp's fallbacks, one
//! [`Assigned`] per tensor and shard, each saying where its type came from.

use super::params::Checked;
use super::preset::{self, Counters, ManualTypes, ModelFacts, RuleTensor, Target};
use super::roles::{self, Category};
use super::source::{Source, TensorRef};
use super::ModelError;
use crate::ggml::tensor::type_name;
use crate::qat::layer::LayerClass;
use crate::quant::QuantType;

/// Where a tensor's type came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// Left as it is (llama.cpp never quantizes it, or the preset keeps it).
    Kept,
    /// The preset's rules (or the class's type).
    Preset,
    /// The wanted type does not fit the rows: llama.cpp's fallback, and why.
    Fallback(String),
    /// `--tensor-type`, `--output-tensor-type`, `--token-embedding-type`.
    Manual,
    /// The size planner.
    Planned,
}

impl Origin {
    /// The report's name of the origin.
    pub fn name(&self) -> &'static str {
        match self {
            Origin::Kept => "kept",
            Origin::Preset => "preset",
            Origin::Fallback(_) => "fallback",
            Origin::Manual => "manual",
            Origin::Planned => "planned",
        }
    }
}

/// The type of one tensor.
#[derive(Clone, Debug)]
pub struct Assigned {
    /// ggml type id.
    pub ty: i32,
    pub origin: Origin,
    /// Quantized by the preset and fixed by no manual option: the size
    /// planner may change it.
    pub free: bool,
    pub class: &'static str,
}

/// A type per tensor: `[shard][index]`.
pub type Assignment = Vec<Vec<Assigned>>;

/// The type of every tensor of `src`; counters advance in llama.cpp's
/// order (layer number, then name).
pub fn assign(src: &Source, p: &Checked, has_imatrix: bool) -> Result<Assignment, ModelError> {
    let facts = model_facts(src, has_imatrix);
    let mut order: Vec<(TensorRef, i64, &str)> = src
        .tensors()
        .map(|(r, t)| (r, roles::layer_of(&t.name), t.name.as_str()))
        .collect();
    order.sort_by(|a, b| (a.1, a.2).cmp(&(b.1, b.2)));
    let mut counters = Counters::default();
    let mut out: Vec<Vec<Option<Assigned>>> = src
        .shards
        .iter()
        .map(|s| vec![None; s.header.tensors.len()])
        .collect();
    for (r, _, _) in order {
        let a = assign_one(src, r, p, &facts, &mut counters)?;
        out[r.shard][r.index] = Some(a);
    }
    Ok(out
        .into_iter()
        .map(|v| v.into_iter().map(|a| a.expect("every tensor")).collect())
        .collect())
}

/// llama.cpp's hparams that the rules read.
fn model_facts(src: &Source, has_imatrix: bool) -> ModelFacts {
    let meta = src.meta();
    let n_head = meta.arch_u64("attention.head_count").unwrap_or(0);
    let n_head_kv = meta.arch_u64("attention.head_count_kv").unwrap_or(n_head);
    let cats = || src.tensors().map(|(_, t)| roles::category(&t.name));
    ModelFacts {
        n_layer: meta.arch_u64("block_count").unwrap_or(0),
        n_gqa: n_head.checked_div(n_head_kv).unwrap_or(0),
        n_expert: meta.arch_u64("expert_count").unwrap_or(0),
        has_output: cats().any(|c| c == Category::Output),
        n_attention_wv: cats()
            .filter(|c| matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB))
            .count() as u64,
        has_imatrix,
        arch: meta.arch(),
    }
}

/// The type of one tensor, checked to be one this crate converts to.
fn assign_one(
    src: &Source,
    r: TensorRef,
    p: &Checked,
    facts: &ModelFacts,
    counters: &mut Counters,
) -> Result<Assigned, ModelError> {
    let t = src.info(r);
    let class = roles::classify(&t.name, t.ggml_n_dims());
    let allowed =
        roles::allows_quantization(&t.name, t.ggml_n_dims(), &facts.arch, !p.what.leave_output);
    let (ty, origin, free) = if allowed {
        rule_type(p, facts, counters, &t.name, t.ne[0], class)
    } else {
        (None, Origin::Kept, false)
    };
    let ty = ty.map_or(t.ty, |q| q.ggml_id());
    check_conversion(&t.name, t.ty, ty, p.what.allow_requantize)?;
    let origin = if ty == t.ty && origin == Origin::Preset {
        Origin::Kept
    } else {
        origin
    };
    Ok(Assigned {
        ty,
        origin,
        // Already block-quantized sources change type only with
        // allow_requantize, as in the preset's own plan.
        free: free
            && preset::is_quantized_id(ty)
            && (p.what.allow_requantize || !preset::is_quantized_id(t.ty)),
        class: roles::class_name(class),
    })
}

/// The type the options and rules give a quantizable tensor (`None`: keep
/// it), where it came from, and whether the planner may change it.
fn rule_type(
    p: &Checked,
    facts: &ModelFacts,
    counters: &mut Counters,
    name: &str,
    ne0: u64,
    class: Option<LayerClass>,
) -> (Option<QuantType>, Origin, bool) {
    let cat = roles::category(name);
    let w = p.what;
    let manual_cat = match cat {
        Category::TokenEmbd => w.token_embd_type,
        Category::Output => w.output_type,
        _ => None,
    };
    if let Some(m) = manual_cat {
        return with_fallback(m, ne0, Origin::Manual, false);
    }
    let (default_type, preset) = match &w.target {
        Target::Preset(p) => (p.default_type(), Some(*p)),
        Target::Classes(c) => (class_type(c, class), None),
    };
    if preset.is_some() && !preset::is_quantized_id(default_type.ggml_id()) {
        return (Some(default_type), Origin::Preset, false);
    }
    if let Some((_, m)) = p.overrides.iter().find(|(re, _)| re.is_match(name)) {
        return with_fallback(*m, ne0, Origin::Manual, false);
    }
    let Some(preset) = preset else {
        return with_fallback(default_type, ne0, Origin::Preset, false);
    };
    let ty = if w.pure {
        default_type
    } else {
        let t = RuleTensor { name, ne0, cat };
        let manual = ManualTypes {
            output: w.output_type,
            token_embd: w.token_embd_type,
        };
        preset::preset_type(facts, counters, preset, default_type, t, manual)
    };
    with_fallback(ty, ne0, Origin::Preset, true)
}

/// `ty`, or llama.cpp's fallback when its blocks do not divide the rows.
fn with_fallback(
    ty: QuantType,
    ne0: u64,
    origin: Origin,
    free: bool,
) -> (Option<QuantType>, Origin, bool) {
    match preset::fallback(ty, ne0) {
        (fb, Some(why)) => (Some(fb), Origin::Fallback(why), free),
        (t, None) => (Some(t), origin, free),
    }
}

/// The type of a ggml-qat layer class (other tensors: the ffn type).
fn class_type(c: &[QuantType; 4], class: Option<LayerClass>) -> QuantType {
    match class {
        Some(LayerClass::Embedding) => c[0],
        Some(LayerClass::Attention) => c[1],
        Some(LayerClass::LayerNorm) => c[3],
        _ => c[2],
    }
}

/// A type change must be one this crate performs.
fn check_conversion(
    name: &str,
    from: i32,
    to: i32,
    allow_requantize: bool,
) -> Result<(), ModelError> {
    if to == from {
        return Ok(());
    }
    let fail = |why: String| Err(ModelError::Invalid(format!("tensor '{name}': {why}")));
    if QuantType::from_ggml(to).is_none() {
        return fail(format!("target type {} is not implemented", type_name(to)));
    }
    if QuantType::from_ggml(from).is_none() {
        return fail(format!(
            "cannot convert from type {} (not implemented here)",
            type_name(from)
        ));
    }
    if preset::is_quantized_id(from) && !allow_requantize {
        return fail(format!(
            "requantizing from type {} is disabled (use --allow-requantize)",
            type_name(from)
        ));
    }
    Ok(())
}
