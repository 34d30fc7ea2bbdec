//! The state behind a `ggml_qat_context_t`: the validated configuration,
//! the seeded generator, the threads, and the running statistics. The
//! operations are the protocol's plain functions ([`super::tensors`],
//! [`super::measure`], [`super::sensitivity`], [`super::progressive`]);
//! each method here hands them this state and counts what they made.
//! Every method takes `&self` and is safe to call from several threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::config::Config;
use super::layer::LayerClass;
use super::stats::{BenchmarkTimes, Quantized, Stats, Totals};
use super::threads::Threads;
use super::{measure, progressive, sensitivity, tensors};
use crate::error::Result;
use crate::ggml::compute::Backend;
use crate::ggml::{Context, Tensor};
use crate::quant::QuantType;
use crate::rng::{SeedSequence, Stream};

pub use super::threads::MAX_THREADS;

/// The seed a new context starts from.
pub const DEFAULT_SEED: u64 = 12345;

/// One QAT session (a `ggml_qat_context_t`).
pub struct Session {
    config: Config,
    /// The seed the generator last started from.
    seed: AtomicU64,
    seeds: Mutex<SeedSequence>,
    totals: Mutex<Totals>,
    pool: RwLock<Option<Arc<rayon::ThreadPool>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    pub fn new(config: Config) -> Session {
        Session {
            config,
            seed: AtomicU64::new(DEFAULT_SEED),
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
        self.seed.store(seed, Ordering::Relaxed);
    }

    /// The seed the generator last started from: streams keyed by it
    /// depend on it alone, not on the calls made before (for decisions
    /// that must be reproducible per layer, such as the progressive gate's
    /// synthetic inputs).
    pub fn seed(&self) -> u64 {
        self.seed.load(Ordering::Relaxed)
    }

    /// The next random stream of this session.
    pub fn next_stream(&self) -> Stream {
        lock(&self.seeds).next_stream()
    }

    /// Uses `n` worker threads (at most [`MAX_THREADS`]) for this session's
    /// parallel work; 0 returns to the global pool (sized by
    /// `RAYON_NUM_THREADS` or the CPU count).
    pub fn set_n_threads(&self, n: usize) -> Result<()> {
        let pool = Threads::pool(n)?;
        *self.pool.write().unwrap_or_else(|e| e.into_inner()) = pool;
        Ok(())
    }

    /// The threads this session's work runs on.
    pub fn threads(&self) -> Threads {
        Threads::new(self.pool.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Sizes of everything quantized so far, with the latest measured figures.
    pub fn stats(&self) -> Stats {
        lock(&self.totals).stats()
    }

    /// Counts a tensor made by this session in the statistics.
    pub fn record(&self, made: &Quantized) {
        lock(&self.totals).add(made)
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

    /// A new F32 tensor of `shape` in `gctx`, filled with Normal(mean, std)
    /// from this session's generator ([`tensors::calibration_data`]).
    pub fn calibration_data(
        &self,
        gctx: &Context,
        shape: &[i64],
        mean: f32,
        std: f32,
    ) -> Result<Tensor> {
        let next = || self.next_stream();
        tensors::calibration_data(&self.threads(), gctx, shape, mean, std, next)
    }

    /// `src` quantized to its class's type (after fallback), counted
    /// ([`tensors::quantize_as`]).
    pub fn quantize_layer(
        &self,
        gctx: &Context,
        src: &Tensor,
        class: LayerClass,
    ) -> Result<Tensor> {
        self.quantize_as(gctx, src, self.config.qtype_for(class))
    }

    /// `src` quantized to `wanted` (after fallback), counted
    /// ([`tensors::quantize_as`]).
    pub fn quantize_as(&self, gctx: &Context, src: &Tensor, wanted: QuantType) -> Result<Tensor> {
        let (dst, made) = tensors::quantize_as(&self.threads(), gctx, src, wanted)?;
        self.record(&made);
        Ok(dst)
    }

    /// `src` quantized to its class's type (after fallback) with the
    /// output-aware search, counted ([`tensors::quantize_optimized`]).
    pub fn quantize_optimized(
        &self,
        gctx: &Context,
        src: &Tensor,
        class: LayerClass,
        calibration: Option<&Tensor>,
    ) -> Result<Tensor> {
        let wanted = self.config.qtype_for(class);
        let (dst, made) =
            tensors::quantize_optimized(&self.threads(), gctx, src, wanted, calibration)?;
        self.record(&made);
        Ok(dst)
    }

    /// Mean over rows of KL(softmax(original/T) ‖ softmax(quantized/T))
    /// ([`tensors::kl_divergence`]).
    pub fn kl_divergence(
        &self,
        original: &Tensor,
        quantized: &Tensor,
        temperature: f32,
    ) -> Result<f64> {
        tensors::kl_divergence(&self.threads(), original, quantized, temperature)
    }

    /// Exact bytes the tensors take once quantized by this session
    /// ([`tensors::estimate_memory`]).
    pub fn estimate_memory(&self, tensors: &[Tensor], classes: &[LayerClass]) -> Result<usize> {
        tensors::estimate_memory(&self.config, tensors, classes)
    }

    /// Inputs for measuring a layer of rows of `ne0`: `test_data`, or
    /// synthetic ones from this session's generator ([`measure::inputs`]).
    pub fn inputs(&self, ne0: usize, test_data: Option<&Tensor>) -> Result<(Vec<f32>, usize)> {
        let next = || self.next_stream();
        measure::inputs(&self.config, &self.threads(), ne0, test_data, next)
    }

    /// The CPU backend this session measures on (its thread count).
    pub fn cpu_backend(&self) -> Result<Backend> {
        measure::cpu_backend(&self.threads())
    }

    /// Both models measured as the same linear layer, the figures kept for
    /// [`Session::stats`] ([`measure::validate`]).
    pub fn validate(
        &self,
        original: &Tensor,
        quantized: &Tensor,
        test_data: Option<&Tensor>,
    ) -> Result<Stats> {
        let next = || self.next_stream();
        let stats = measure::validate(
            &self.config,
            &self.threads(),
            original,
            quantized,
            test_data,
            next,
        )?;
        self.record_measurement(stats);
        Ok(stats)
    }

    /// The measured speedup of `model` over its F32 copy on `backend`, the
    /// times kept for [`Session::benchmark_times`] ([`measure::benchmark`]).
    pub fn benchmark(
        &self,
        backend: &Backend,
        model: &Tensor,
        test_input: &Tensor,
        iterations: usize,
    ) -> Result<f64> {
        let times = measure::benchmark(backend, model, test_input, iterations)?;
        self.record_benchmark(times);
        Ok(times.speedup())
    }

    /// Output error of `layer` quantized to `ty` ([`sensitivity::layer_error`]).
    pub fn layer_error(&self, layer: &Tensor, ty: QuantType) -> Result<sensitivity::OutputError> {
        sensitivity::layer_error(
            &self.config,
            &self.threads(),
            &|| self.next_stream(),
            layer,
            ty,
        )
    }

    /// Blended output error per MiB saved ([`sensitivity::sensitivity`]).
    pub fn sensitivity(&self, layer: &Tensor, ty: QuantType) -> Result<f64> {
        sensitivity::sensitivity(
            &self.config,
            &self.threads(),
            &|| self.next_stream(),
            layer,
            ty,
        )
    }

    /// A type per layer meeting `memory_reduction_target`
    /// ([`sensitivity::plan_mixed_precision`]).
    pub fn plan_mixed_precision(&self, layers: &[Tensor]) -> Result<Vec<QuantType>> {
        sensitivity::plan_mixed_precision(
            &self.config,
            &self.threads(),
            &|| self.next_stream(),
            layers,
        )
    }

    /// Brings `layers[0..=current]` to their quantized form, counting each
    /// replaced layer ([`progressive::progressive`]); returns how many.
    pub fn progressive(
        &self,
        gctx: &Context,
        layers: &mut [*mut crate::ggml::ffi::GgmlTensor],
        classes: &[LayerClass],
        current: usize,
    ) -> Result<usize> {
        // The gate's inputs are keyed by the seed; the generator still
        // advances by one stream per layer to be gated, as it did when the
        // gate drew from it, so the calls after this one draw as before.
        for &p in layers.iter().take(current + 1) {
            if unsafe { Tensor::from_raw(p, "layers[i]") }.is_ok_and(|t| !tensors::is_quantized(&t))
            {
                let _ = self.next_stream();
            }
        }
        let (config, threads, seed) = (&self.config, &self.threads(), self.seed());
        let made = progressive::progressive(config, threads, seed, gctx, layers, classes, current)?;
        for m in &made {
            self.record(m);
        }
        Ok(made.len())
    }
}
