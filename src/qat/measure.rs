//! Measured figures: a layer run as `Y = W X` with ggml on a backend, the
//! original against the quantized weights (validation), and timing against
//! an F32 copy (benchmark). Nothing here is estimated.

use std::time::Duration;

use super::calibration::fill_normal;
use super::check::{check_finite, checked_values};
use super::config::Config;
use super::metrics;
use super::stats::{BenchmarkTimes, Stats};
use super::threads::Threads;
use crate::error::{Error, Result};
use crate::ggml::compute::{median, Backend, MulMat};
use crate::ggml::tensor_rows::{try_vec, try_with_capacity};
use crate::ggml::Tensor;
use crate::quant::{self, QuantType};
use crate::rng::Stream;

const MIB: f64 = 1024.0 * 1024.0;
/// The most timed repetitions a benchmark runs (its timings are kept in
/// memory, and INT_MAX repetitions would never end).
pub const MAX_BENCHMARK_ITERATIONS: usize = 1_000_000;
/// Timed repetitions of each product in a validation (after one warm-up).
pub const VALIDATION_RUNS: usize = 5;

/// A weight matrix as bytes of a type ggml can multiply.
pub struct Weights {
    pub ty: QuantType,
    pub bytes: Vec<u8>,
    pub ne0: usize,
    pub ne1: usize,
}

impl Weights {
    /// The tensor's data as it is (a contiguous host tensor of an
    /// implemented type); rows are ne[1] * ne[2] * ne[3].
    pub fn of(t: &Tensor) -> Result<Weights> {
        let ty = t.quant_type()?;
        let data = t.bytes()?;
        let mut bytes = try_with_capacity(data.len(), "a copy of the weights")?;
        bytes.extend_from_slice(data);
        Ok(Weights {
            ty,
            bytes,
            ne0: t.row_len(),
            ne1: t.nrows(),
        })
    }

    /// An F32 copy of the tensor's values.
    pub fn f32_of(t: &Tensor) -> Result<Weights> {
        let values = t.values()?;
        let mut bytes = try_with_capacity(values.len() * 4, "an F32 copy of the model")?;
        bytes.extend(values.iter().flat_map(|v| v.to_ne_bytes()));
        Ok(Weights {
            ty: QuantType::F32,
            bytes,
            ne0: t.row_len(),
            ne1: t.nrows(),
        })
    }

    /// `values` (rows of `ne0`) quantized to `ty`.
    pub fn quantized(ty: QuantType, values: &[f32], ne0: usize) -> Result<Weights> {
        let f = ty.format();
        let row = f
            .row_bytes(ne0)
            .ok_or_else(|| Error::invalid("model", format!("row of {ne0} does not fit {ty:?}")))?;
        let ne1 = values.len() / ne0;
        let mut bytes = try_vec(row * ne1, "quantized weights")?;
        quant::quantize_rows(ty, values, ne0, &mut bytes, None)?;
        Ok(Weights {
            ty,
            bytes,
            ne0,
            ne1,
        })
    }

    fn mul_mat<'b>(&self, backend: &'b Backend, x: &[f32], n_samples: usize) -> Result<MulMat<'b>> {
        MulMat::new(
            backend,
            self.ty,
            &self.bytes,
            self.ne0,
            self.ne1,
            x,
            n_samples,
        )
    }
}

/// Outputs and timings of two weight matrices on the same inputs.
pub struct Comparison {
    /// `n_samples` rows of `ne1` outputs each.
    pub y_a: Vec<f32>,
    pub y_b: Vec<f32>,
    pub time_a: Duration,
    pub time_b: Duration,
}

/// Runs `a·X` and `b·X` on `backend`: one warm-up each, then `runs` timed
/// repetitions, interleaved so both see the same machine state; medians.
pub fn compare(
    backend: &Backend,
    a: &Weights,
    b: &Weights,
    x: &[f32],
    n_samples: usize,
    runs: usize,
) -> Result<Comparison> {
    let ma = a.mul_mat(backend, x, n_samples)?;
    let mb = b.mul_mat(backend, x, n_samples)?;
    ma.compute()?;
    mb.compute()?;
    let (mut ta, mut tb) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        ta.push(ma.compute()?);
        tb.push(mb.compute()?);
    }
    Ok(Comparison {
        y_a: ma.output(),
        y_b: mb.output(),
        time_a: median(ta),
        time_b: median(tb),
    })
}

/// The CPU backend measurements run on, with as many threads as `threads`.
pub fn cpu_backend(threads: &Threads) -> Result<Backend> {
    Backend::cpu(threads.count())
}

/// Inputs for measuring a layer of rows of `ne0`: `test_data` when given
/// (its values, as F32), else `calibration_samples` synthetic N(0,1) rows
/// from the stream `next_stream` gives (called only then).
pub fn inputs(
    config: &Config,
    threads: &Threads,
    ne0: usize,
    test_data: Option<&Tensor>,
    next_stream: impl FnOnce() -> Stream,
) -> Result<(Vec<f32>, usize)> {
    match test_data {
        Some(x) => given_inputs(ne0, x),
        None => synthetic_inputs(config, threads, ne0, next_stream()),
    }
}

/// The values of `x` (rows of `ne0`), as F32 in a buffer of their own, and
/// its number of rows.
pub fn given_inputs(ne0: usize, x: &Tensor) -> Result<(Vec<f32>, usize)> {
    if x.row_len() != ne0 {
        return Err(Error::invalid(
            "test_data",
            format!(
                "ne[0] = {} differs from the model's ne[0] = {ne0}",
                x.row_len()
            ),
        ));
    }
    let values = match checked_values(x)? {
        std::borrow::Cow::Owned(v) => v,
        std::borrow::Cow::Borrowed(b) => {
            let mut v = try_with_capacity(b.len(), "a copy of the test data")?;
            v.extend_from_slice(b);
            v
        }
    };
    Ok((values, x.nrows()))
}

/// `calibration_samples` rows of `ne0` N(0,1) values drawn from `stream`.
pub fn synthetic_inputs(
    config: &Config,
    threads: &Threads,
    ne0: usize,
    stream: Stream,
) -> Result<(Vec<f32>, usize)> {
    let n = config.calibration_samples;
    // calibration_samples may be anything up to INT_MAX: allocate
    // fallibly, so an impossible size is an error, not an abort.
    let len = ne0.checked_mul(n).ok_or_else(|| {
        Error::invalid(
            "calibration_samples",
            format!("{n} samples of {ne0} values overflow"),
        )
    })?;
    let mut x = try_vec(
        len,
        "synthetic calibration samples (config calibration_samples)",
    )?;
    threads.run_pieces(|| fill_normal(&mut x, &stream, 0.0, 1.0));
    Ok((x, n))
}

/// Both models as the same linear layer on the CPU backend: sizes, KL of
/// the per-sample output distributions at the config temperature, top-1
/// agreement, and the measured speedup (median of several runs). The
/// inputs are `test_data`, or synthetic ones from `next_stream`'s stream.
pub fn validate(
    config: &Config,
    threads: &Threads,
    original: &Tensor,
    quantized: &Tensor,
    test_data: Option<&Tensor>,
    next_stream: impl FnOnce() -> Stream,
) -> Result<Stats> {
    if original.ne() != quantized.ne() {
        return Err(Error::invalid(
            "quantized_model",
            format!(
                "shape {:?} differs from the original's {:?}",
                quantized.ne(),
                original.ne()
            ),
        ));
    }
    // Non-finite weights would only give NaN figures: refuse them.
    check_finite(original)?;
    check_finite(quantized)?;
    let a = Weights::of(original)?;
    let b = Weights::of(quantized)?;
    let (x, n) = inputs(config, threads, a.ne0, test_data, next_stream)?;
    let backend = cpu_backend(threads)?;
    let c = compare(&backend, &a, &b, &x, n, VALIDATION_RUNS)?;
    let t = config.temperature as f64;
    let (kl, agree) = threads.run(|| {
        (
            metrics::mean_kl(&c.y_a, &c.y_b, a.ne1, t),
            metrics::top1_agreement(&c.y_a, &c.y_b, a.ne1),
        )
    });
    let (so, sq) = (original.nbytes() as f64, quantized.nbytes() as f64);
    Ok(Stats {
        original_size_mb: (so / MIB) as f32,
        quantized_size_mb: (sq / MIB) as f32,
        compression_ratio: (sq / so) as f32,
        accuracy_retention: agree as f32,
        kl_divergence_loss: kl as f32,
        inference_speedup: (c.time_a.as_secs_f64() / c.time_b.as_secs_f64().max(1e-12)) as f32,
    })
}

/// `Y = model · test_input` on `backend` `iterations` times after a
/// warm-up, and the same with an F32 copy of the model: both median times
/// (their ratio is [`BenchmarkTimes::speedup`]).
pub fn benchmark(
    backend: &Backend,
    model: &Tensor,
    test_input: &Tensor,
    iterations: usize,
) -> Result<BenchmarkTimes> {
    if iterations == 0 || iterations > MAX_BENCHMARK_ITERATIONS {
        return Err(Error::invalid(
            "n_iterations",
            format!("{iterations} (must be 1 to {MAX_BENCHMARK_ITERATIONS})"),
        ));
    }
    let m = Weights::of(model)?;
    let f = Weights::f32_of(model)?;
    let (x, n) = given_inputs(m.ne0, test_input)?;
    let c = compare(backend, &f, &m, &x, n, iterations)?;
    Ok(BenchmarkTimes {
        f32_seconds: c.time_a.as_secs_f64(),
        model_seconds: c.time_b.as_secs_f64(),
        iterations,
    })
}
