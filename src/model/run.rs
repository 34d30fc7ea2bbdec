//! The streaming quantization of a whole GGUF file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::chunk;
use super::gguf::{self, Header, Kv, OutTensor};
use super::imatrix::{self, Imatrix};
use super::planner::{self, PlanSummary, SizeTarget, TensorPlan};
use super::select::{self, Category, Counters, ModelFacts, Target};
use super::sink::{check_output, TempOut};
use super::ModelError;
use crate::quant::{self, QuantType};

/// What to do with a model.
#[derive(Clone, Debug)]
pub struct Params {
    pub target: Target,
    /// The preset's default type for every quantizable tensor (no mixture).
    pub pure: bool,
    /// `(regex, type)`: the first pattern found in a tensor's name wins.
    pub overrides: Vec<(String, QuantType)>,
    pub output_type: Option<QuantType>,
    pub token_embd_type: Option<QuantType>,
    /// Keep `output.weight` as it is.
    pub leave_output: bool,
    pub imatrix: Option<PathBuf>,
    pub allow_requantize: bool,
    /// Sizes and types only; nothing is written.
    pub dry_run: bool,
    /// 0: all cores.
    pub threads: usize,
    /// Bound on the chunk buffers (bytes); at least one row is processed.
    pub max_buffer: usize,
    /// Quantize every shard of a split model, each to its own output shard.
    pub keep_split: bool,
    /// Measure each tensor's relative RMS error (dequantizing the output).
    pub measure_error: bool,
    /// Every quantized tensor through the output-aware search
    /// ([`crate::qat::optimize::quantize_weighted`]): weighted by the
    /// tensor's imatrix entry when one is given, plain weight-space error
    /// otherwise. Chunk by chunk, the result is kept only when its error on
    /// that objective is not above ggml's bytes for the same type (the bytes
    /// written without `optimize`), which are kept otherwise.
    pub optimize: bool,
    /// Under `optimize`, for tensors without an imatrix entry: weight each
    /// input column by the square of the RMS-norm weight that scales it
    /// (`attn_norm` for attn_q/k/v, `ffn_norm` for ffn_gate/up,
    /// `output_norm` for output), read from the model itself; plain
    /// weight-space error for the other tensors (or when false, the
    /// default). Measured on Gemma 3 270M Q4_0 (scripts/eval-kld.sh), this
    /// objective gives a higher mean KLD than the plain one, and even than
    /// ggml's bytes: kept as an option for other models, off by default.
    pub norm_importance: bool,
    /// Plan the types to meet this size ([`super::planner`]): the preset
    /// then only says which tensors are left as they are.
    pub size_target: Option<SizeTarget>,
    /// The types the planner may choose: `(pattern, types)`, the first
    /// pattern found in a tensor's name wins, `None` matches every tensor;
    /// no match (or empty): [`planner::DEFAULT_TYPES`].
    pub plan_types: Vec<(Option<String>, Vec<QuantType>)>,
    /// The planner's role and depth factors ([`planner::Factors`]).
    pub plan_factors: planner::Factors,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            target: Target::Preset(select::Preset::Q4_K_M),
            pure: false,
            overrides: Vec::new(),
            output_type: None,
            token_embd_type: None,
            leave_output: false,
            imatrix: None,
            allow_requantize: false,
            dry_run: false,
            threads: 0,
            max_buffer: 32 << 20,
            keep_split: false,
            measure_error: true,
            optimize: false,
            norm_importance: false,
            size_target: None,
            plan_types: Vec::new(),
            plan_factors: planner::Factors::default(),
        }
    }
}

/// Where the work stands, for a progress display.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub index: usize,
    pub count: usize,
    pub name: &'a str,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// One tensor of the report.
#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub class: &'static str,
    pub shape: Vec<u64>,
    pub source_type: String,
    pub chosen_type: String,
    pub source_type_id: i32,
    pub chosen_type_id: i32,
    /// Why the type differs from the one the rules asked for.
    pub fallback: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// ||x - dequant(quant(x))|| / ||x|| over the tensor (None when copied,
    /// dry run, or not measured).
    pub rel_rmse: Option<f64>,
    /// With `optimize`: the objective (Σ d_i·(w_i − ŵ_i)², `d` the imatrix
    /// entry, else the norm's importance, else ones) of ggml's bytes and of
    /// the bytes written, over the whole tensor.
    pub objective: Option<Objective>,
    /// Under a size target: the candidates measured and the prediction.
    pub plan: Option<TensorPlan>,
}

/// A tensor's objective under `--optimize`: ggml's bytes against ours.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Objective {
    /// The column weights of the objective: "imatrix" (the tensor's
    /// imatrix entry), "norm" (the squared RMS-norm weight scaling its
    /// inputs, [`Params::norm_importance`]) or "none" (plain squared error).
    pub weights: &'static str,
    pub ggml: f64,
    pub ours: f64,
    /// Rows where the search's result was kept over ggml's (chunks where
    /// it was not better keep ggml's bytes whole).
    pub rows_changed: u64,
}

impl Objective {
    /// Relative reduction of the objective: 1 − ours/ggml (0 when equal).
    pub fn gain(&self) -> f64 {
        if self.ggml > 0.0 {
            1.0 - self.ours / self.ggml
        } else {
            0.0
        }
    }
}

/// What was done.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub input: String,
    pub outputs: Vec<String>,
    pub target: String,
    pub dry_run: bool,
    pub threads: usize,
    pub tensors: Vec<TensorReport>,
    pub n_elements: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Sizes of the whole files (headers and padding included).
    pub file_bytes_in: u64,
    pub file_bytes_out: u64,
    pub bits_per_weight_in: f64,
    pub bits_per_weight_out: f64,
    pub n_fallback: usize,
    pub seconds: f64,
    pub peak_rss_bytes: u64,
    /// Under a size target: the preset's and the chosen plan's figures.
    pub plan: Option<PlanSummary>,
}

/// The tensor plan: chosen type per tensor.
struct Plan {
    ty: i32,
    /// Quantized by the preset and fixed by no manual option: the size
    /// planner may change it.
    free: bool,
    class: &'static str,
    fallback: Option<String>,
}

/// A split set: `prefix-00001-of-00003.gguf` → its shard paths.
fn split_paths(path: &Path) -> Option<Vec<PathBuf>> {
    let s = path.to_str()?;
    let stem = s.strip_suffix(".gguf")?;
    let (head, count) = stem.rsplit_once("-of-")?;
    let (prefix, _no) = head.rsplit_once('-')?;
    let n: usize = count.parse().ok()?;
    if count.len() != 5 || n == 0 {
        return None;
    }
    Some(
        (1..=n)
            .map(|i| PathBuf::from(format!("{prefix}-{i:05}-of-{n:05}.gguf")))
            .collect(),
    )
}

fn type_name(ty: i32) -> String {
    crate::ggml::tensor::type_name(ty)
}

/// Quantizes the GGUF model `input` into `output` (see [`Params`]).
/// `progress` is called before each tensor and after each chunk; returning
/// false cancels (no output remains).
pub fn quantize_model(
    input: &Path,
    output: &Path,
    params: &Params,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Report, ModelError> {
    let start = Instant::now();
    let threads = if params.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        params.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| ModelError::Invalid(format!("cannot start {threads} threads: {e}")))?;

    let header = gguf::read_header(input)?;
    // The shards of a split set: all are read for the plan (llama.cpp counts
    // layers over the whole model), the given one (or all with keep_split)
    // is quantized.
    let split_count = header
        .kv("split.count")
        .and_then(|k| k.as_u64())
        .unwrap_or(0);
    let mut shards: Vec<(PathBuf, Header)> = Vec::new();
    let mut selected: Vec<usize> = Vec::new();
    match split_paths(input).filter(|p| split_count > 1 && p.len() as u64 == split_count) {
        Some(paths) => {
            for p in paths {
                if p == input {
                    selected.push(shards.len());
                    shards.push((p, header.clone()));
                } else if p.exists() {
                    let h = gguf::read_header(&p)?;
                    if params.keep_split {
                        selected.push(shards.len());
                    }
                    shards.push((p, h));
                } else if params.keep_split {
                    return Err(ModelError::Invalid(format!(
                        "--keep-split: shard {} of the set is missing",
                        p.display()
                    )));
                }
            }
            if params.keep_split {
                selected.sort();
            }
        }
        None => {
            if params.keep_split && split_count > 1 {
                return Err(ModelError::Invalid(format!(
                    "--keep-split: {} is not named NAME-0000i-of-0000N.gguf",
                    input.display()
                )));
            }
            shards.push((input.to_path_buf(), header.clone()));
            selected.push(0);
        }
    }
    // Model facts from the shard holding general.architecture.
    let meta = shards
        .iter()
        .map(|(_, h)| h)
        .find(|h| h.kv("general.architecture").is_some())
        .unwrap_or(&header);

    let imatrix: Option<Imatrix> = params.imatrix.as_deref().map(imatrix::load).transpose()?;

    // Every tensor of the set, for the plan.
    let all: Vec<(usize, &gguf::TensorInfo)> = shards
        .iter()
        .enumerate()
        .flat_map(|(i, (_, h))| h.tensors.iter().map(move |t| (i, t)))
        .collect();
    if let Some(im) = &imatrix {
        check_imatrix(im, &all)?;
    }
    let mut plans = plan(meta, &all, params, imatrix.is_some())?;

    // Output paths: one per selected shard.
    let outputs: Vec<PathBuf> = if params.keep_split && shards.len() > 1 {
        let s = output.to_string_lossy();
        let prefix = s.strip_suffix(".gguf").unwrap_or(&s);
        let n = shards.len();
        selected
            .iter()
            .map(|&i| PathBuf::from(format!("{prefix}-{:05}-of-{n:05}.gguf", i + 1)))
            .collect()
    } else {
        vec![output.to_path_buf()]
    };
    if !params.dry_run {
        for (o, &i) in outputs.iter().zip(&selected) {
            check_output(&shards[i].0, o)?;
            for (p, _) in &shards {
                check_output(p, o)?;
            }
        }
    }

    // Under a size target, the planner replaces the preset's types.
    let mut tensor_plans: Vec<Option<TensorPlan>> = Vec::new();
    let mut plan_summary = None;
    if let Some(target) = params.size_target {
        if matches!(params.target, Target::Classes(_)) {
            return Err(ModelError::Invalid(
                "a size target needs a llama-quantize preset as the type (its rules say which tensors stay as they are), not classes".into(),
            ));
        }
        if shards.len() > 1 && !params.keep_split {
            return Err(ModelError::Invalid(
                "a size target on a split model needs --keep-split (the size is that of all output shards)".into(),
            ));
        }
        // Header sizes do not depend on the types chosen.
        let header_bytes: u64 = shards
            .iter()
            .enumerate()
            .map(|(si, (_, h))| {
                let first = all.iter().position(|(s, _)| *s == si).unwrap_or(0);
                let out = out_tensors(h, &plans[first..first + h.tensors.len()]);
                gguf::encode_header(&output_kvs(h, shards.len(), params), &out, h.alignment)
                    .0
                    .len() as u64
            })
            .sum();
        let items: Vec<planner::Item> = all
            .iter()
            .zip(&plans)
            .map(|((s, t), p)| planner::Item {
                shard: *s,
                info: t,
                preset: p.ty,
                free: p.free,
            })
            .collect();
        let rules = params
            .plan_types
            .iter()
            .map(|(p, types)| {
                Ok(planner::TypeRule {
                    pattern: p
                        .as_deref()
                        .map(regex::Regex::new)
                        .transpose()
                        .map_err(|e| ModelError::Invalid(format!("--plan-types pattern: {e}")))?,
                    types: types.clone(),
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let inputs = planner::Inputs {
            shards: &shards,
            header_bytes,
            imatrix: imatrix.as_ref(),
            rules: &rules,
            optimize: params.optimize,
            target,
            factors: &params.plan_factors,
        };
        let count = all.len();
        let mut cb = |i: usize, name: &str| {
            let label = format!("plan: {name}");
            progress(&Progress {
                index: i + 1,
                count,
                name: &label,
                bytes_done: 0,
                bytes_total: 0,
            })
        };
        let chosen = planner::choose(&pool, &items, &inputs, &mut cb)?;
        for (p, ty) in plans.iter_mut().zip(chosen.types) {
            if p.ty != ty {
                p.ty = ty;
                p.fallback = None;
            }
        }
        tensor_plans = chosen.plans;
        plan_summary = Some(chosen.summary);
    }

    let mut report = Report {
        input: input.display().to_string(),
        outputs: outputs.iter().map(|p| p.display().to_string()).collect(),
        target: match &params.target {
            Target::Preset(p) => p.name().to_string(),
            Target::Classes(c) => format!(
                "classes (embedding {}, attention {}, ffn {}, layernorm {})",
                c[0].format().name,
                c[1].format().name,
                c[2].format().name,
                c[3].format().name
            ),
        },
        dry_run: params.dry_run,
        threads,
        plan: plan_summary,
        ..Report::default()
    };

    let count: usize = selected.iter().map(|&i| shards[i].1.tensors.len()).sum();
    let bytes_total: u64 = selected
        .iter()
        .flat_map(|&i| shards[i].1.tensors.iter().map(|t| t.nbytes))
        .sum();
    let mut done = Progress {
        index: 0,
        count,
        name: "",
        bytes_done: 0,
        bytes_total,
    };
    let mut index = 0usize;
    let mut bytes_done = 0u64;
    for (out_path, &si) in outputs.iter().zip(&selected) {
        let (in_path, h) = &shards[si];
        let first = all.iter().position(|(s, _)| *s == si).unwrap_or(0);
        let shard_plans = &plans[first..first + h.tensors.len()];
        let kvs = output_kvs(h, shards.len(), params);
        let out_tensors = out_tensors(h, shard_plans);
        let (head_bytes, _offsets) = gguf::encode_header(&kvs, &out_tensors, h.alignment);
        report.file_bytes_in += h.file_len;
        report.file_bytes_out += out_tensors
            .iter()
            .map(|t| t.nbytes.div_ceil(h.alignment) * h.alignment)
            .sum::<u64>()
            + head_bytes.len() as u64;

        let mut sink = if params.dry_run {
            None
        } else {
            Some(TempOut::create(out_path)?)
        };
        let mut writer = match &mut sink {
            Some(s) => Some(
                gguf::DataWriter::new(s.file()?, &head_bytes, h.alignment)
                    .map_err(|e| ModelError::io(&s.tmp, "cannot write", e))?,
            ),
            None => None,
        };
        let infile = File::open(in_path).map_err(|e| ModelError::io(in_path, "cannot open", e))?;
        for ((t, p), o) in h.tensors.iter().zip(shard_plans).zip(&out_tensors) {
            index += 1;
            done.index = index;
            done.name = &t.name;
            done.bytes_done = bytes_done;
            if !progress(&done) {
                return Err(ModelError::Cancelled);
            }
            let mut tr = TensorReport {
                name: t.name.clone(),
                class: p.class,
                shape: t.ne[..t.n_dims as usize].to_vec(),
                source_type: type_name(t.ty),
                chosen_type: type_name(p.ty),
                source_type_id: t.ty,
                chosen_type_id: p.ty,
                fallback: p.fallback.clone(),
                bytes_in: t.nbytes,
                bytes_out: o.nbytes,
                rel_rmse: None,
                objective: None,
                plan: tensor_plans.get_mut(index - 1).and_then(|p| p.take()),
            };
            if let Some(w) = writer.as_mut() {
                let in_off = h.data_offset + t.offset;
                let im = imatrix.as_ref().and_then(|m| m.get(&t.name));
                let norm =
                    if im.is_none() && params.optimize && params.norm_importance && p.ty != t.ty {
                        norm_importance(&pool, &infile, in_path, h, t)?
                    } else {
                        None
                    };
                let tmp = &sink.as_ref().unwrap().tmp;
                let mut chunk_cb = |n: u64| -> bool {
                    done.bytes_done = bytes_done + n;
                    progress(&done)
                };
                (tr.rel_rmse, tr.objective) = convert_tensor(
                    &pool,
                    &infile,
                    in_path,
                    in_off,
                    t,
                    p.ty,
                    im,
                    norm.as_ref(),
                    w,
                    tmp,
                    params,
                    &mut chunk_cb,
                )?;
                w.pad()
                    .map_err(|e| ModelError::io(tmp, "cannot write", e))?;
            }
            bytes_done += t.nbytes;
            report.n_elements += t.nelements();
            report.bytes_in += t.nbytes;
            report.bytes_out += o.nbytes;
            report.n_fallback += usize::from(p.fallback.is_some());
            report.tensors.push(tr);
        }
        if let (Some(w), Some(s)) = (writer, sink.as_mut()) {
            let written = w.written;
            let f = w
                .finish()
                .map_err(|e| ModelError::io(&s.tmp, "cannot write", e))?;
            drop(f);
            debug_assert_eq!(written, report.file_bytes_out.min(written));
        }
        if let Some(s) = sink {
            s.commit()?;
        }
    }
    done.bytes_done = bytes_total;
    done.index = count;
    done.name = "";
    progress(&done);
    let n = report.n_elements.max(1) as f64;
    report.bits_per_weight_in = report.bytes_in as f64 * 8.0 / n;
    report.bits_per_weight_out = report.bytes_out as f64 * 8.0 / n;
    report.seconds = start.elapsed().as_secs_f64();
    report.peak_rss_bytes = super::peak_rss().unwrap_or(0);
    Ok(report)
}

/// The tensor infos written for shard `h` under its `plans`.
fn out_tensors(h: &Header, plans: &[Plan]) -> Vec<OutTensor> {
    h.tensors
        .iter()
        .zip(plans)
        .map(|(t, p)| OutTensor {
            name: t.name.clone(),
            ne: t.ne,
            ty: p.ty,
            nbytes: t.nbytes_as(p.ty),
        })
        .collect()
}

/// The key/values written for shard `h`: the input's, with the
/// quantization version and file type set on the shard holding the model's
/// metadata.
fn output_kvs(h: &Header, n_shards: usize, params: &Params) -> Vec<Kv> {
    let mut kvs: Vec<Kv> = h.kvs.clone();
    if h.kv("general.architecture").is_some() || n_shards == 1 {
        set_kv(&mut kvs, Kv::u32("general.quantization_version", 2));
        set_kv(
            &mut kvs,
            Kv::u32("general.file_type", params.target.file_type()),
        );
    }
    kvs
}

/// Sets `kv`, as ggml's gguf_set_val_*: an existing key is removed and the
/// new value appended.
fn set_kv(kvs: &mut Vec<Kv>, kv: Kv) {
    kvs.retain(|k| k.key != kv.key);
    kvs.push(kv);
}

/// The imatrix must belong to this model: some names in common and every
/// common name of the right size.
fn check_imatrix(im: &Imatrix, all: &[(usize, &gguf::TensorInfo)]) -> Result<(), ModelError> {
    let mut common = 0;
    for (_, t) in all {
        if let Some(v) = im.get(&t.name) {
            common += 1;
            let want = t.ne[0] * t.ne[2];
            if v.len() as u64 != want && select::category(&t.name) != Category::TokenEmbd {
                return Err(ModelError::Imatrix(format!(
                    "entry '{}' has {} weights, the tensor needs {want} (ne[0] * experts): an imatrix of another model?",
                    t.name,
                    v.len()
                )));
            }
        }
    }
    if common == 0 {
        return Err(ModelError::Imatrix(format!(
            "none of its {} entries names a tensor of this model: an imatrix of another model?",
            im.len()
        )));
    }
    Ok(())
}

/// The chosen type of every tensor, in the given order; counters advance in
/// llama.cpp's order (layer number, then name).
fn plan(
    meta: &Header,
    all: &[(usize, &gguf::TensorInfo)],
    params: &Params,
    has_imatrix: bool,
) -> Result<Vec<Plan>, ModelError> {
    let arch = meta.arch();
    let n_head = meta.arch_u64("attention.head_count").unwrap_or(0);
    let n_head_kv = meta.arch_u64("attention.head_count_kv").unwrap_or(n_head);
    let facts = ModelFacts {
        n_layer: meta.arch_u64("block_count").unwrap_or(0),
        n_gqa: n_head.checked_div(n_head_kv).unwrap_or(0),
        n_expert: meta.arch_u64("expert_count").unwrap_or(0),
        has_output: all.iter().any(|(_, t)| t.name == "output.weight"),
        n_attention_wv: all
            .iter()
            .filter(|(_, t)| {
                matches!(
                    select::category(&t.name),
                    Category::AttnV | Category::AttnQkv | Category::AttnKvB
                )
            })
            .count() as u64,
        has_imatrix,
        arch: arch.clone(),
    };
    let overrides = params
        .overrides
        .iter()
        .map(|(p, t)| {
            regex::Regex::new(p)
                .map(|r| (r, *t))
                .map_err(|e| ModelError::Invalid(format!("--tensor-type pattern '{p}': {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, tb) = (all[a].1, all[b].1);
        (select::layer_of(&ta.name), &ta.name).cmp(&(select::layer_of(&tb.name), &tb.name))
    });
    let mut counters = Counters::default();
    let mut out: Vec<Option<Plan>> = (0..all.len()).map(|_| None).collect();
    for i in order {
        let t = all[i].1;
        let n_dims = t.ggml_n_dims();
        let class = select::classify(&t.name, n_dims);
        let cat = select::category(&t.name);
        let mut fallback = None;
        let mut free = false;
        let allowed = select::allows_quantization(&t.name, n_dims, &arch, !params.leave_output);
        let ty = if !allowed {
            t.ty
        } else if let (Some(tt), Category::TokenEmbd) = (params.token_embd_type, cat) {
            tt.ggml_id()
        } else if let (Some(tt), Category::Output) = (params.output_type, cat) {
            tt.ggml_id()
        } else {
            let (default_type, preset) = match &params.target {
                Target::Preset(p) => (p.default_type(), Some(*p)),
                Target::Classes(c) => (
                    match class {
                        Some(crate::qat::layer::LayerClass::Embedding) => c[0],
                        Some(crate::qat::layer::LayerClass::Attention) => c[1],
                        Some(crate::qat::layer::LayerClass::LayerNorm) => c[3],
                        _ => c[2],
                    },
                    None,
                ),
            };
            let mut new_type = default_type;
            if select::is_quantized_id(default_type.ggml_id()) || preset.is_none() {
                let manual = overrides
                    .iter()
                    .find(|(r, _)| r.is_match(&t.name))
                    .map(|o| o.1);
                free = manual.is_none() && preset.is_some();
                if let Some(m) = manual {
                    new_type = m;
                } else if let (false, Some(p)) = (params.pure, preset) {
                    new_type = select::preset_type(
                        &facts,
                        &mut counters,
                        p,
                        new_type,
                        &t.name,
                        t.ne[0],
                        cat,
                        params.output_type,
                        params.token_embd_type,
                    );
                }
                let (fb, why) = select::fallback(new_type, t.ne[0]);
                new_type = fb;
                fallback = why;
            }
            new_type.ggml_id()
        };
        if ty != t.ty && QuantType::from_ggml(ty).is_none() {
            return Err(ModelError::Invalid(format!(
                "tensor '{}': target type {} is not implemented",
                t.name,
                type_name(ty)
            )));
        }
        if ty != t.ty {
            if QuantType::from_ggml(t.ty).is_none() {
                return Err(ModelError::Invalid(format!(
                    "tensor '{}': cannot convert from type {} (not implemented here)",
                    t.name,
                    type_name(t.ty)
                )));
            }
            if select::is_quantized_id(t.ty) && !params.allow_requantize {
                return Err(ModelError::Invalid(format!(
                    "tensor '{}': requantizing from type {} is disabled (use --allow-requantize)",
                    t.name,
                    type_name(t.ty)
                )));
            }
        }
        out[i] = Some(Plan {
            ty,
            // Already block-quantized sources change type only with
            // allow_requantize, as in the preset's own plan.
            free: free
                && select::is_quantized_id(ty)
                && (params.allow_requantize || !select::is_quantized_id(t.ty)),
            class: select::class_name(class),
            fallback,
        });
    }
    Ok(out.into_iter().map(|p| p.unwrap()).collect())
}

/// The RMS norm whose weight scales the inputs of `t` (same block), by
/// llama.cpp's tensor names.
fn norm_name(name: &str) -> Option<String> {
    if name == "output.weight" {
        return Some("output_norm.weight".into());
    }
    let rest = name.strip_prefix("blk.")?;
    let (blk, role) = rest.split_once('.')?;
    let norm = match role {
        "attn_q.weight" | "attn_k.weight" | "attn_v.weight" | "attn_qkv.weight" => "attn_norm",
        "ffn_gate.weight" | "ffn_up.weight" | "ffn_gate_exps.weight" | "ffn_up_exps.weight" => {
            "ffn_norm"
        }
        _ => return None,
    };
    Some(format!("blk.{blk}.{norm}.weight"))
}

/// Data-free column importance of `t`: the square of the norm weight that
/// scales its inputs (floored at 1e-3 of its mean), repeated per expert;
/// `None` when the model has no such 1-D float tensor of the right width.
fn norm_importance(
    pool: &rayon::ThreadPool,
    infile: &File,
    in_path: &Path,
    h: &gguf::Header,
    t: &gguf::TensorInfo,
) -> Result<Option<Vec<f32>>, ModelError> {
    let Some(name) = norm_name(&t.name) else {
        return Ok(None);
    };
    let Some(nt) = h.tensors.iter().find(|x| x.name == name) else {
        return Ok(None);
    };
    let n = t.ne[0] as usize;
    let ty = QuantType::from_ggml(nt.ty);
    if nt.ne[0] != t.ne[0]
        || nt.nrows() != 1
        || !matches!(ty, Some(QuantType::F32 | QuantType::F16 | QuantType::BF16))
    {
        return Ok(None);
    }
    let mut raw = vec![0u8; nt.nbytes as usize];
    gguf::read_at(infile, h.data_offset + nt.offset, &mut raw)
        .map_err(|e| ModelError::io(in_path, "cannot read", e))?;
    let mut v = vec![0f32; n];
    pool.install(|| quant::dequantize_rows(ty.unwrap(), &raw, n, &mut v))?;
    let mut d: Vec<f32> = v.iter().map(|x| x * x).collect();
    let mean = d.iter().map(|&x| x as f64).sum::<f64>() / n.max(1) as f64;
    if !mean.is_finite() || mean <= 0.0 {
        return Ok(None);
    }
    let floor = (1e-3 * mean) as f32;
    for x in &mut d {
        *x = x.max(floor);
    }
    let experts = if t.n_dims >= 3 { t.ne[2] as usize } else { 1 };
    Ok(Some(d.repeat(experts.max(1))))
}

/// Streams one tensor: chunks of rows read, converted to F32, quantized,
/// written. Returns the measured relative RMS error when converted, and the
/// objective figures under `params.optimize`.
#[allow(clippy::too_many_arguments)]
fn convert_tensor<'a>(
    pool: &rayon::ThreadPool,
    infile: &File,
    in_path: &Path,
    in_off: u64,
    t: &gguf::TensorInfo,
    to: i32,
    im: Option<&'a Vec<f32>>,
    norm: Option<&'a Vec<f32>>,
    w: &mut gguf::DataWriter,
    tmp: &Path,
    params: &Params,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<(Option<f64>, Option<Objective>), ModelError> {
    let row_len = t.ne[0] as usize;
    let nrows = t.nrows() as usize;
    if t.nbytes == 0 {
        return Ok((None, None));
    }
    let src_row = (t.nbytes / nrows as u64) as usize;
    let wio = |e| ModelError::io(tmp, "cannot write", e);
    let rio = |e| ModelError::io(in_path, "cannot read", e);
    if to == t.ty {
        // Copied as it is, in slabs of whole rows.
        let rows = (params.max_buffer / src_row).max(1);
        let mut buf = vec![0u8; rows.min(nrows) * src_row];
        let mut r = 0;
        while r < nrows {
            let n = rows.min(nrows - r);
            let b = &mut buf[..n * src_row];
            gguf::read_at(infile, in_off + (r * src_row) as u64, b).map_err(rio)?;
            w.write(b).map_err(wio)?;
            r += n;
            if !progress((r * src_row) as u64) {
                return Err(ModelError::Cancelled);
            }
        }
        return Ok((None, None));
    }
    let from = QuantType::from_ggml(t.ty).expect("checked in plan");
    let to = QuantType::from_ggml(to).expect("checked in plan");
    let dst_row = to
        .format()
        .row_bytes(row_len)
        .ok_or_else(|| ModelError::Invalid(format!("tensor '{}': bad row length", t.name)))?;
    let per_row =
        src_row + 4 * row_len + dst_row + if params.measure_error { 4 * row_len } else { 0 };
    let mut rows = (params.max_buffer / per_row).max(1).min(nrows);
    // An imatrix is per expert (ne[1] rows each): chunks stay inside one.
    let rows_per_expert = t.ne[1] as usize;
    if im.is_some() || norm.is_some() {
        rows = rows.min(rows_per_expert.max(1));
    }
    let mut src = vec![
        0u8;
        if from == QuantType::F32 {
            0
        } else {
            rows * src_row
        }
    ];
    let mut f32buf = vec![0f32; rows * row_len];
    let mut dst = vec![0u8; rows * dst_row];
    let mut back = vec![
        0f32;
        if params.measure_error {
            rows * row_len
        } else {
            0
        }
    ];
    let (mut err2, mut sum2) = (0f64, 0f64);
    let optimize = params.optimize;
    let mut objective: Option<Objective> = None;
    let mut r = 0;
    while r < nrows {
        let mut n = rows.min(nrows - r);
        if (im.is_some() || norm.is_some()) && rows_per_expert > 0 {
            n = n.min(rows_per_expert - r % rows_per_expert);
        }
        let x = &mut f32buf[..n * row_len];
        let off = in_off + (r * src_row) as u64;
        if from == QuantType::F32 {
            // SAFETY: any bytes are a valid f32; the slice covers x exactly.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut u8, x.len() * 4) };
            gguf::read_at(infile, off, bytes).map_err(rio)?;
        } else {
            let s = &mut src[..n * src_row];
            gguf::read_at(infile, off, s).map_err(rio)?;
            pool.install(|| quant::dequantize_rows(from, s, row_len, x))?;
        }
        let slice = |v: &'a Vec<f32>| -> Option<&'a [f32]> {
            let e = r.checked_div(rows_per_expert).unwrap_or(0);
            let s = e * row_len;
            v.get(s..s + row_len)
        };
        let imrow = im.and_then(slice);
        // The search's weights: the imatrix, else the norm's importance.
        let wrow = imrow.or_else(|| norm.and_then(slice));
        let d = &mut dst[..n * dst_row];
        let searched = pool
            .install(|| chunk::quantize_chunk(to, x, row_len, d, imrow, wrow, optimize))
            .map_err(|e| ModelError::Invalid(format!("tensor '{}': {e}", t.name)))?;
        if let Some(sr) = searched {
            let o = objective.get_or_insert(Objective {
                weights: if imrow.is_some() {
                    "imatrix"
                } else if wrow.is_some() {
                    "norm"
                } else {
                    "none"
                },
                ggml: 0.0,
                ours: 0.0,
                rows_changed: 0,
            });
            o.ggml += sr.ggml;
            o.ours += sr.kept;
            o.rows_changed += sr.rows_changed;
        }
        if params.measure_error {
            let b = &mut back[..n * row_len];
            pool.install(|| quant::dequantize_rows(to, d, row_len, b))?;
            let (e, s) = pool.install(|| error_sums(x, b));
            if !s.is_finite() {
                return Err(ModelError::Format(format!(
                    "tensor '{}' holds non-finite values (NaN or Inf) in rows {r}..{}",
                    t.name,
                    r + n
                )));
            }
            err2 += e;
            sum2 += s;
        }
        w.write(d).map_err(wio)?;
        r += n;
        if !progress((r * src_row) as u64) {
            return Err(ModelError::Cancelled);
        }
    }
    let rel = params.measure_error.then(|| {
        if sum2 > 0.0 {
            (err2 / sum2).sqrt()
        } else {
            0.0
        }
    });
    Ok((rel, objective))
}

/// Σ(x - y)² and Σx², in parallel.
fn error_sums(x: &[f32], y: &[f32]) -> (f64, f64) {
    use rayon::prelude::*;
    x.par_chunks(1 << 16)
        .zip(y.par_chunks(1 << 16))
        .map(|(a, b)| {
            let (mut e, mut s) = (0f64, 0f64);
            for (&p, &q) in a.iter().zip(b) {
                let d = (p - q) as f64;
                e += d * d;
                s += (p as f64) * (p as f64);
            }
            (e, s)
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}
