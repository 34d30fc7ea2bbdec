//! [`quantize_model`]: the stages of a conversion, wired in order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::assign::{self, Assignment};
use super::calibration;
use super::convert::{self, Converted, Job, Settings};
use super::factors::FactorsUsed;
use super::gguf::DataWriter;
use super::gram::Grams;
use super::imatrix::{self, Imatrix};
use super::layout::{self, OutFile};
use super::params::{Checked, Params, What};
use super::planner::{self, Planned};
use super::report::{Progress, Report};
use super::sink::{self, TempOut};
use super::source::Source;
use super::weights::{self, ColumnWeights};
use super::ModelError;
use crate::quant::QuantType;

/// Quantizes the GGUF model `input` into `output` (see [`Params`]).
/// `progress` is called as the work advances; returning false cancels (no
/// output remains).
pub fn quantize_model(
    input: &Path,
    output: &Path,
    params: &Params,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Report, ModelError> {
    let start = Instant::now();
    let p = params.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(p.threads)
        .build()
        .map_err(|e| ModelError::Invalid(format!("cannot start {} threads: {e}", p.threads)))?;
    // The paths as given first, then with every shard and output known.
    let given: &[&Path] = if p.how.dry_run { &[] } else { &[output] };
    sink::check_paths(&[input], given, p.report.json_path.as_deref())?;
    let src = Source::open(input, p.what.keep_split)?;
    let (imatrix, calibrated, grams) = load_importance(&src, p.what)?;
    let mut a = assign::assign(&src, &p, imatrix.is_some())?;
    let paths = layout::output_paths(&src, output, p.what.keep_split);
    check_paths(&src, &paths, &p)?;
    let planned = match p.what.size_target {
        Some(target) => {
            let how = Planning {
                target,
                imatrix: imatrix.as_ref(),
                calibrated,
                grams: grams.as_ref(),
            };
            Some(plan(&src, &mut a, &p, &pool, how, progress)?)
        }
        None => None,
    };
    let files = layout::layout(&src, &a, &paths, p.what.target.file_type());
    let mut report = Report::begin(input, &src, &paths, &p, planned.as_ref());
    let mut sinks = Vec::new();
    let mut converted = Vec::new();
    for f in &files {
        let imp = (imatrix.as_ref(), grams.as_ref());
        let (c, s) = write_file(&src, f, &a, &p, &pool, imp, &report, progress)?;
        converted.push(c);
        sinks.extend(s);
    }
    report.add_tensors(&src, &files, &a, &converted, planned);
    report.finish(start);
    if let Some(path) = &p.report.json_path {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| ModelError::Invalid(format!("report: {e}")))?;
        sink::write_report(path, json.as_bytes())?;
    }
    for s in sinks {
        s.commit()?;
    }
    let (_, _, total) = report.position(&src, usize::MAX);
    progress(&Progress {
        index: report.count,
        count: report.count,
        name: "",
        bytes_done: total,
        bytes_total: total,
    });
    Ok(report)
}

/// Nothing is written over an input, a device, a folder or each other:
/// checked before any work.
fn check_paths(src: &Source, outputs: &[PathBuf], p: &Checked) -> Result<(), ModelError> {
    let inputs: Vec<&Path> = src.shards.iter().map(|s| s.path.as_path()).collect();
    let outputs: Vec<&Path> = if p.how.dry_run {
        Vec::new()
    } else {
        outputs.iter().map(|o| o.as_path()).collect()
    };
    sink::check_paths(&inputs, &outputs, p.report.json_path.as_deref())
}

/// What a run reads besides the model: the importance matrix, the
/// calibration file's factors and Gram matrices.
type Importance = (Option<Imatrix>, Option<FactorsUsed>, Option<Grams>);

/// The importance matrix (`imatrix`, or the calibration file's diagonal),
/// checked against the model, the calibration file's factors, and under
/// `optimize` its Gram matrices.
fn load_importance(src: &Source, w: &What) -> Result<Importance, ModelError> {
    let (im, factors, grams) = match (&w.calibration, &w.imatrix) {
        (Some(path), _) => {
            let c = calibration::load(path, w.optimize)?;
            (c.imatrix, c.factors, c.grams)
        }
        (None, Some(path)) => (imatrix::load(path)?, None, None),
        (None, None) => return Ok((None, None, None)),
    };
    weights::check_imatrix(&im, src)?;
    if let Some(g) = &grams {
        g.check(src)?;
    }
    Ok((Some(im), factors, grams))
}

/// What the planner takes besides the model and the parameters.
struct Planning<'a> {
    target: planner::SizeTarget,
    imatrix: Option<&'a Imatrix>,
    /// The calibration file's factors, if it has them.
    calibrated: Option<FactorsUsed>,
    /// Its Gram matrices (`optimize`).
    grams: Option<&'a Grams>,
}

/// The size planner over the assignment.
fn plan(
    src: &Source,
    a: &mut Assignment,
    p: &Checked,
    pool: &rayon::ThreadPool,
    how: Planning,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Planned, ModelError> {
    if src.shards.len() > 1 && !p.what.keep_split {
        return Err(ModelError::Invalid(
            "a size target on a split model needs --keep-split (the size is that of all output shards)".into(),
        ));
    }
    let factors = FactorsUsed::choose(
        p.what.plan_factors.as_ref(),
        how.calibrated,
        p.what.calibration.as_deref(),
    );
    let inputs = planner::Inputs {
        pool,
        header_bytes: layout::header_bytes(src, a, p.what.target.file_type()),
        imatrix: how.imatrix,
        rules: &p.plan_rules,
        optimize: p.what.optimize,
        norm_importance: p.what.norm_importance,
        target: how.target,
        factors: &factors,
        grams: how.grams,
    };
    let count = src.tensors().count();
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
    planner::plan(src, a, &inputs, &mut cb)
}

/// Writes one output file into a temporary file beside it (nothing on a
/// dry run); returns what each tensor measured and the file to commit.
#[allow(clippy::too_many_arguments)]
fn write_file(
    src: &Source,
    f: &OutFile,
    a: &Assignment,
    p: &Checked,
    pool: &rayon::ThreadPool,
    (imatrix, grams): (Option<&Imatrix>, Option<&Grams>),
    report: &Report,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<(Vec<Converted>, Option<TempOut>), ModelError> {
    let tensors = &src.shards[f.shard].header.tensors;
    if p.how.dry_run {
        return Ok((vec![Converted::default(); tensors.len()], None));
    }
    let jobs = jobs(src, f, a, p, imatrix)?;
    let mut out = TempOut::create(&f.path)?;
    let w = DataWriter::new(out.file()?, &f.header, f.alignment)
        .map_err(|e| ModelError::io(&out.tmp, "cannot write", e))?;
    let set = Settings {
        pool,
        max_buffer: p.how.max_buffer,
        measure_error: p.report.measure_error,
        optimize: p.what.optimize,
        grams,
    };
    let (first, before, total) = report.position(src, f.shard);
    let mut cb = |j: usize, n: u64| {
        progress(&Progress {
            index: first + j + 1,
            count: report.count,
            name: &tensors[j].name,
            bytes_done: before[j] + n,
            bytes_total: total,
        })
    };
    let (done, w) = convert::convert_file(src, f, &jobs, &set, w, &mut cb)?;
    if w.written != f.file_bytes {
        return Err(ModelError::Invalid(format!(
            "{}: {} bytes written where the layout has {} (a bug: please report it)",
            f.path.display(),
            w.written,
            f.file_bytes
        )));
    }
    w.finish()
        .map_err(|e| ModelError::io(&out.tmp, "cannot write", e))?;
    Ok((done, Some(out)))
}

/// What each tensor of `f` becomes.
fn jobs<'a>(
    src: &Source,
    f: &OutFile,
    a: &Assignment,
    p: &Checked,
    imatrix: Option<&'a Imatrix>,
) -> Result<Vec<Job<'a>>, ModelError> {
    let norm = p.what.optimize && p.what.norm_importance;
    src.tensors()
        .filter(|(r, _)| r.shard == f.shard)
        .map(|(r, t)| {
            let ty = a[r.shard][r.index].ty;
            let to = (ty != t.ty).then(|| QuantType::from_ggml(ty).expect("checked when assigned"));
            let weights = ColumnWeights::load(src, r, imatrix, norm && to.is_some())?;
            Ok(Job { r, to, weights })
        })
        .collect()
}
