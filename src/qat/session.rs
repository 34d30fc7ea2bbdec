//! The state behind a `ggml_qat_context_t`: the validated configuration, the
//! seeded generator, running statistics, and the tensor-level operations.
//! Every method takes `&self` and is safe to call from several threads.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::calibration::fill_normal;
use super::config::Config;
use super::layer::LayerClass;
use super::measure::BenchmarkTimes;
use super::metrics;
use super::plan;
use crate::error::{Error, Result};
use crate::ggml::{Context, NewTensor, Tensor};
use crate::quant::rows::{Finite, FromError};
use crate::quant::{self, QuantType};
use crate::rng::{SeedSequence, Stream};

/// The most worker threads a session may ask for (rayon itself would start
/// up to 65535).
pub const MAX_THREADS: usize = 1024;

/// The seed a new context starts from.
pub const DEFAULT_SEED: u64 = 12345;

const MIB: f64 = 1024.0 * 1024.0;

/// The six figures of `ggml_qat_stats_t`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    pub original_size_mb: f32,
    pub quantized_size_mb: f32,
    pub compression_ratio: f32,
    pub accuracy_retention: f32,
    pub kl_divergence_loss: f32,
    pub inference_speedup: f32,
}

#[derive(Default)]
struct Totals {
    original_bytes: u64,
    quantized_bytes: u64,
    measured: Stats,
    benchmark: BenchmarkTimes,
    fallbacks: Vec<String>,
}

/// One QAT session (a `ggml_qat_context_t`).
pub struct Session {
    config: Config,
    /// The seed the generator last started from.
    seed: std::sync::atomic::AtomicU64,
    seeds: Mutex<SeedSequence>,
    totals: Mutex<Totals>,
    pool: RwLock<Option<Arc<rayon::ThreadPool>>>,
}

/// The process that first used rayon's global pool through a session.
static GLOBAL_POOL_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// A pool for a forked child of the process whose global pool the
/// sessions used (`None` in that process itself), made once per process.
fn forked_child_pool() -> Option<Arc<rayon::ThreadPool>> {
    static CHILD: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let pid = std::process::id();
    if *GLOBAL_POOL_PID.get_or_init(|| pid) == pid {
        return None;
    }
    let mut child = lock(&CHILD);
    match &*child {
        Some((p, pool)) if *p == pid => Some(pool.clone()),
        _ => {
            // A pool inherited from another process has no threads here:
            // forget it rather than drop it (dropping signals them).
            if let Some(old) = child.take() {
                std::mem::forget(old);
            }
            let pool = rayon::ThreadPoolBuilder::new().build().ok().map(Arc::new)?;
            *child = Some((pid, pool.clone()));
            Some(pool)
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    pub fn new(config: Config) -> Session {
        Session {
            config,
            seed: std::sync::atomic::AtomicU64::new(DEFAULT_SEED),
            seeds: Mutex::new(SeedSequence::new(DEFAULT_SEED)),
            totals: Mutex::new(Totals::default()),
            pool: RwLock::new(None),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Restarts the generator from `seed`.
    pub fn set_seed(&self, seed: u64) {
        let mut seeds = lock(&self.seeds);
        *seeds = SeedSequence::new(seed);
        self.seed.store(seed, std::sync::atomic::Ordering::Relaxed);
    }

    /// A stream that depends only on the current seed and `key`, not on the
    /// calls made before (for decisions that must be reproducible per
    /// layer, such as the progressive gate's synthetic inputs).
    pub fn keyed_stream(&self, key: u64) -> Stream {
        Stream::keyed(self.seed.load(std::sync::atomic::Ordering::Relaxed), key)
    }

    /// The next random stream of this session.
    pub fn next_stream(&self) -> Stream {
        lock(&self.seeds).next_stream()
    }

    /// Uses `n` worker threads (at most [`MAX_THREADS`]) for this session's
    /// parallel work; 0 returns to the global pool (sized by
    /// `RAYON_NUM_THREADS` or the CPU count).
    pub fn set_n_threads(&self, n: usize) -> Result<()> {
        if n > MAX_THREADS {
            return Err(Error::invalid(
                "n_threads",
                format!("{n} (must be at most {MAX_THREADS})"),
            ));
        }
        let pool = if n == 0 {
            None
        } else {
            let p = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| Error::Ggml(format!("cannot start {n} threads: {e}")))?;
            Some(Arc::new(p))
        };
        *self.pool.write().unwrap_or_else(|e| e.into_inner()) = pool;
        Ok(())
    }

    /// Runs `f` on this session's thread pool.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.pool() {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// This session's pool: its own, or none for rayon's global pool —
    /// unless this process is a fork of the one that started the global
    /// pool, whose threads did not survive the fork (using it would wait
    /// for them forever): then a pool of this process's own.
    fn pool(&self) -> Option<Arc<rayon::ThreadPool>> {
        let own = self.pool.read().unwrap_or_else(|e| e.into_inner()).clone();
        own.or_else(forked_child_pool)
    }

    /// Runs `f`, whose parallel work goes through the piece drivers of
    /// [`crate::quant`] only (`for_each_piece`), on this session's threads:
    /// on a one-thread session it runs on the calling thread (handing a
    /// call over to a pool's single thread and waking it costs tens of
    /// microseconds, more than a small tensor's whole quantization).
    pub fn run_pieces<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.pool() {
            Some(p) if p.current_num_threads() == 1 => quant::on_this_thread(f),
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Sizes of everything quantized so far, with the latest measured figures.
    pub fn stats(&self) -> Stats {
        let t = lock(&self.totals);
        let mut s = t.measured;
        s.original_size_mb = (t.original_bytes as f64 / MIB) as f32;
        s.quantized_size_mb = (t.quantized_bytes as f64 / MIB) as f32;
        s.compression_ratio = if t.original_bytes == 0 {
            0.0
        } else {
            (t.quantized_bytes as f64 / t.original_bytes as f64) as f32
        };
        s
    }

    /// Records measured figures (accuracy, KL, speedup) for [`Session::stats`].
    pub fn record_measurement(&self, s: Stats) {
        lock(&self.totals).measured = s;
    }

    /// Records the absolute figures of a benchmark.
    pub fn record_benchmark(&self, b: BenchmarkTimes) {
        lock(&self.totals).benchmark = b;
    }

    /// The absolute figures of the latest benchmark (zeros before any).
    pub fn benchmark_times(&self) -> BenchmarkTimes {
        lock(&self.totals).benchmark
    }

    /// One line per tensor that fell back to another type than its class's.
    pub fn fallbacks(&self) -> Vec<String> {
        lock(&self.totals).fallbacks.clone()
    }

    /// A new F32 tensor of `shape` in `gctx`, filled with Normal(mean, std).
    pub fn calibration_data(
        &self,
        gctx: &Context,
        shape: &[i64],
        mean: f32,
        std: f32,
    ) -> Result<Tensor> {
        if !mean.is_finite() {
            return Err(Error::invalid("mean", format!("{mean} is not finite")));
        }
        if !(std.is_finite() && std >= 0.0) {
            return Err(Error::invalid(
                "std",
                format!("{std} is not a finite value >= 0"),
            ));
        }
        if mean.abs() as f64 + super::calibration::MAX_ABS_NORMAL * std as f64 > f32::MAX as f64 {
            return Err(Error::invalid(
                "std",
                format!("mean {mean} and std {std} give values beyond the F32 range"),
            ));
        }
        let mut t = gctx.new_tensor(QuantType::F32.ggml_id(), shape)?;
        let stream = self.next_stream();
        let out = t.f32_mut()?;
        self.run_pieces(|| fill_normal(out, &stream, mean, std));
        Ok(t.finish())
    }

    /// The type a tensor of `class` with rows of `row_len` gets.
    pub fn planned_type(&self, class: LayerClass, row_len: usize) -> QuantType {
        plan::type_for_row(self.config.qtype_for(class), row_len)
    }

    /// The logical values of `src` as F32 (borrowed when it is contiguous
    /// aligned F32, else converted into a fallibly allocated buffer),
    /// refusing non-finite data (the error names the first bad element).
    pub fn checked_values<'t>(&self, src: &'t Tensor) -> Result<std::borrow::Cow<'t, [f32]>> {
        let values = src.values()?;
        if let Some(index) = quant::rows::first_non_finite(&values) {
            return Err(Error::NonFinite {
                tensor: src.name(),
                index,
                value: values[index],
            });
        }
        Ok(values)
    }

    /// Refuses `t` when it holds a non-finite value (the error names the
    /// first), reading it a piece of rows at a time.
    pub fn check_finite(&self, t: &Tensor) -> Result<()> {
        match t.rows()?.first_non_finite()? {
            Some((index, value)) => Err(Error::NonFinite {
                tensor: t.name(),
                index,
                value,
            }),
            None => Ok(()),
        }
    }

    /// A new tensor of `gctx` of type `ty` with the shape and name of `src`.
    pub fn new_like(&self, gctx: &Context, src: &Tensor, ty: QuantType) -> Result<NewTensor> {
        let mut dst = gctx.new_tensor(ty.ggml_id(), &src.ne()[..src.n_dims()])?;
        dst.set_name(&src.name());
        Ok(dst)
    }

    /// Counts `dst` (made from `src`) in the statistics and notes why its
    /// type differs from `wanted` when it does.
    pub fn record_quantized(
        &self,
        src: &Tensor,
        dst: &Tensor,
        wanted: QuantType,
        why: Option<String>,
    ) {
        let mut t = lock(&self.totals);
        t.original_bytes += src.nbytes() as u64;
        t.quantized_bytes += dst.nbytes() as u64;
        let ty = dst.quant_type().map(|t| t.format().name).unwrap_or("?");
        if let Some(why) = why {
            t.fallbacks.push(format!(
                "{}: {} -> {} ({why})",
                display_name(&src.name()),
                wanted.format().name,
                ty
            ));
        }
    }

    /// Whether `t` already holds block-quantized weights (known from its
    /// type alone: nothing is remembered about tensors between calls).
    pub fn is_quantized(&self, t: &Tensor) -> bool {
        t.quant_type().is_ok_and(plan::is_block_quantized)
    }

    /// `src` quantized to its class's type (after fallback) as a new tensor
    /// of `gctx` with the same shape and name.
    pub fn quantize_layer(
        &self,
        gctx: &Context,
        src: &Tensor,
        class: LayerClass,
    ) -> Result<Tensor> {
        self.quantize_as(gctx, src, self.config.qtype_for(class))
    }

    /// `src` quantized to `wanted` (after fallback) as a new tensor of
    /// `gctx` with the same shape and name.
    ///
    /// The source is read a piece of rows at a time (converted to F32 in a
    /// per-thread buffer unless it is contiguous aligned F32), checked for
    /// non-finite values and quantized while in the cache: one pass over
    /// the data, extra memory bounded by a piece per thread. Non-finite
    /// data is found during that pass: the error is returned after the
    /// result tensor was created, so its space in `gctx` stays used.
    pub fn quantize_as(&self, gctx: &Context, src: &Tensor, wanted: QuantType) -> Result<Tensor> {
        let rows = src.rows()?;
        let row_len = src.row_len();
        let ty = plan::type_for_row(wanted, row_len);
        let mut dst = self.new_like(gctx, src, ty)?;
        let out = dst.bytes_mut()?;
        self.run_pieces(|| quant::rows::quantize_from(ty, &rows, out, None, Finite::Check))
            .map_err(|e| match e {
                FromError::Quant(e) => Error::Quant(e),
                FromError::Source(never) => match never {},
                FromError::NonFinite { index, value } => Error::NonFinite {
                    tensor: src.name(),
                    index,
                    value,
                },
            })?;
        let dst = dst.finish();
        let why = (ty != wanted).then(|| plan::fallback_reason(wanted, row_len));
        self.record_quantized(src, &dst, wanted, why);
        Ok(dst)
    }

    /// `src` quantized to its class's type (after fallback) with the
    /// output-aware search of [`super::optimize`]: the block parameters
    /// minimize ‖(W − Ŵ)X‖² on `calibration` (rows of ne[0] = `src`'s ne[0]),
    /// or the weight-space error without inputs. Never worse than ggml's
    /// quantizer on those inputs; an ordinary tensor of the same type and size.
    pub fn quantize_optimized(
        &self,
        gctx: &Context,
        src: &Tensor,
        class: LayerClass,
        calibration: Option<&Tensor>,
    ) -> Result<Tensor> {
        let wanted = self.config.qtype_for(class);
        let values = self.checked_values(src)?;
        let row_len = src.row_len();
        let ty = plan::type_for_row(wanted, row_len);
        let x = calibration
            .map(|x| self.inputs(row_len, Some(x)))
            .transpose()?;
        let bytes = self.run(|| {
            super::optimize::quantize_output_aware(
                ty,
                &values,
                row_len,
                x.as_ref().map(|(x, _)| x.as_slice()),
                x.as_ref().map_or(0, |(_, n)| *n),
            )
        })?;
        let mut dst = self.new_like(gctx, src, ty)?;
        dst.bytes_mut()?.copy_from_slice(&bytes);
        let dst = dst.finish();
        let why = (ty != wanted).then(|| plan::fallback_reason(wanted, row_len));
        self.record_quantized(src, &dst, wanted, why);
        Ok(dst)
    }

    /// Mean over rows of KL(softmax(original/T) ‖ softmax(quantized/T)).
    pub fn kl_divergence(
        &self,
        original: &Tensor,
        quantized: &Tensor,
        temperature: f32,
    ) -> Result<f64> {
        if original.ne() != quantized.ne() {
            return Err(Error::invalid(
                "quantized",
                format!(
                    "shape {:?} differs from the original's {:?}",
                    quantized.ne(),
                    original.ne()
                ),
            ));
        }
        let (p, q) = (original.rows()?, quantized.rows()?);
        self.run_pieces(|| metrics::mean_kl_rows(&p, &q, temperature as f64))
            .map_err(|e| match e {
                metrics::KlError::NonFinite {
                    which,
                    index,
                    value,
                } => Error::NonFinite {
                    tensor: [original, quantized][which].name(),
                    index,
                    value,
                },
                metrics::KlError::Alloc { bytes } => Error::Alloc {
                    bytes,
                    what: "a piece of rows".into(),
                },
            })
    }

    /// Exact bytes the tensors take once quantized by this session (fallback
    /// included); block-quantized tensors count as they are.
    pub fn estimate_memory(&self, tensors: &[Tensor], classes: &[LayerClass]) -> Result<usize> {
        let mut total = 0usize;
        for (t, &class) in tensors.iter().zip(classes) {
            let bytes = match t.quant_type()? {
                ty if plan::is_block_quantized(ty) => t.nbytes(),
                _ => Context::data_bytes(self.planned_type(class, t.row_len()).ggml_id(), &t.ne())?,
            };
            total = total
                .checked_add(bytes)
                .ok_or_else(|| Error::invalid("tensors", "total size overflows size_t"))?;
        }
        Ok(total)
    }
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "(unnamed)"
    } else {
        name
    }
}
