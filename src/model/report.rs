//! What a conversion did: per tensor and in total, as printed by the
//! command line, returned to C and written as JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::assign::{Assignment, Origin};
use super::convert::{Converted, Objective};
use super::layout::OutFile;
use super::params::Checked;
use super::planner::{PlanSummary, Planned, TensorPlan};
use super::source::Source;
use crate::ggml::tensor::type_name;

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
    /// Where the type came from: "kept", "preset", "fallback", "manual"
    /// or "planned".
    pub origin: &'static str,
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
    /// Tensors in the files written (for the progress).
    #[serde(skip)]
    pub count: usize,
}

impl Report {
    /// The report's frame: paths, target, threads, the plan's summary.
    pub fn begin(
        input: &Path,
        src: &Source,
        paths: &[PathBuf],
        p: &Checked,
        planned: Option<&Planned>,
    ) -> Report {
        Report {
            input: input.display().to_string(),
            outputs: paths.iter().map(|p| p.display().to_string()).collect(),
            target: p.what.target.describe(),
            dry_run: p.how.dry_run,
            threads: p.threads,
            plan: planned.map(|x| x.summary.clone()),
            count: src
                .selected
                .iter()
                .map(|&i| src.shards[i].header.tensors.len())
                .sum(),
            ..Report::default()
        }
    }

    /// Where shard `shard`'s tensors stand in the progress: the index of
    /// its first, the source bytes before each, and the total.
    pub fn position(&self, src: &Source, shard: usize) -> (usize, Vec<u64>, u64) {
        let mut first = 0;
        let mut before = Vec::new();
        let mut done = 0u64;
        for &i in &src.selected {
            for t in &src.shards[i].header.tensors {
                if i == shard {
                    before.push(done);
                } else if i < shard {
                    first += 1;
                }
                done += t.nbytes;
            }
        }
        (first, before, done)
    }

    /// One entry per tensor of the files written, and the totals.
    pub fn add_tensors(
        &mut self,
        src: &Source,
        files: &[OutFile],
        a: &Assignment,
        converted: &[Vec<Converted>],
        mut planned: Option<Planned>,
    ) {
        for (f, conv) in files.iter().zip(converted) {
            let h = &src.shards[f.shard].header;
            self.file_bytes_in += h.file_len;
            self.file_bytes_out += f.file_bytes;
            for (i, t) in h.tensors.iter().enumerate() {
                let x = &a[f.shard][i];
                let fallback = match &x.origin {
                    Origin::Fallback(why) => Some(why.clone()),
                    _ => None,
                };
                let plan = planned.as_mut().and_then(|p| p.plans[f.shard][i].take());
                let bytes_out = f.tensors[i].nbytes;
                self.n_elements += t.nelements();
                self.bytes_in += t.nbytes;
                self.bytes_out += bytes_out;
                self.n_fallback += usize::from(fallback.is_some());
                self.tensors.push(TensorReport {
                    name: t.name.clone(),
                    class: x.class,
                    shape: t.ne[..t.n_dims as usize].to_vec(),
                    source_type: type_name(t.ty),
                    chosen_type: type_name(x.ty),
                    source_type_id: t.ty,
                    chosen_type_id: x.ty,
                    origin: x.origin.name(),
                    fallback,
                    bytes_in: t.nbytes,
                    bytes_out,
                    rel_rmse: conv[i].rel_rmse,
                    objective: conv[i].objective,
                    plan,
                });
            }
        }
    }

    /// Bits per weight, time and memory.
    pub fn finish(&mut self, start: Instant) {
        let n = self.n_elements.max(1) as f64;
        self.bits_per_weight_in = self.bytes_in as f64 * 8.0 / n;
        self.bits_per_weight_out = self.bytes_out as f64 * 8.0 / n;
        self.seconds = start.elapsed().as_secs_f64();
        self.peak_rss_bytes = super::peak_rss().unwrap_or(0);
    }
}
