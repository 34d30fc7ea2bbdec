//! The figures a session keeps: the six of `ggml_qat_stats_t`, a
//! benchmark's absolute times, and the running totals of what was
//! quantized (with the fallback log) they are computed from.

use crate::ggml::Tensor;
use crate::quant::QuantType;

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

/// The absolute figures of the latest benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BenchmarkTimes {
    pub f32_seconds: f64,
    pub model_seconds: f64,
    pub iterations: usize,
}

impl BenchmarkTimes {
    /// The median F32 time over the median model time.
    pub fn speedup(&self) -> f64 {
        self.f32_seconds / self.model_seconds.max(1e-12)
    }
}

/// One tensor made from another, as the statistics count it.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    /// The source's name ("" when unnamed).
    pub name: String,
    pub original_bytes: u64,
    pub quantized_bytes: u64,
    /// The type asked for.
    pub wanted: QuantType,
    /// ggml's name of the type it got.
    pub got: &'static str,
    /// Why it got another type than `wanted`, if it did.
    pub why: Option<String>,
}

impl Quantized {
    /// `dst`, made from `src` when `wanted` was asked for.
    pub fn of(src: &Tensor, dst: &Tensor, wanted: QuantType, why: Option<String>) -> Quantized {
        Quantized {
            name: src.name(),
            original_bytes: src.nbytes() as u64,
            quantized_bytes: dst.nbytes() as u64,
            wanted,
            got: dst.quant_type().map(|t| t.format().name).unwrap_or("?"),
            why,
        }
    }
}

/// Everything quantized so far, with the latest measured figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub original_bytes: u64,
    pub quantized_bytes: u64,
    /// The latest validation's figures (sizes not used).
    pub measured: Stats,
    pub benchmark: BenchmarkTimes,
    /// One line per tensor that fell back to another type than its class's.
    pub fallbacks: Vec<String>,
}

impl Totals {
    /// Counts `q` and notes why its type differs from the one asked for
    /// when it does.
    pub fn add(&mut self, q: &Quantized) {
        self.original_bytes += q.original_bytes;
        self.quantized_bytes += q.quantized_bytes;
        if let Some(why) = &q.why {
            self.fallbacks.push(format!(
                "{}: {} -> {} ({why})",
                display_name(&q.name),
                q.wanted.format().name,
                q.got
            ));
        }
    }

    /// Sizes of everything counted so far, with the latest measured figures.
    pub fn stats(&self) -> Stats {
        let mut s = self.measured;
        s.original_size_mb = (self.original_bytes as f64 / MIB) as f32;
        s.quantized_size_mb = (self.quantized_bytes as f64 / MIB) as f32;
        s.compression_ratio = if self.original_bytes == 0 {
            0.0
        } else {
            (self.quantized_bytes as f64 / self.original_bytes as f64) as f32
        };
        s
    }
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "(unnamed)"
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, orig: u64, quant: u64, why: Option<&str>) -> Quantized {
        Quantized {
            name: name.into(),
            original_bytes: orig,
            quantized_bytes: quant,
            wanted: QuantType::Q4_K,
            got: "q5_0",
            why: why.map(String::from),
        }
    }

    #[test]
    fn totals_sum_sizes_and_log_fallbacks() {
        let mut t = Totals::default();
        assert_eq!(t.stats(), Stats::default());
        t.measured.accuracy_retention = 0.5;
        t.add(&q("a", 4 << 20, 1 << 20, None));
        t.add(&q(
            "",
            4 << 20,
            2 << 20,
            Some("ne[0] = 96 is not a multiple of 256"),
        ));
        let s = t.stats();
        assert_eq!(s.original_size_mb, 8.0);
        assert_eq!(s.quantized_size_mb, 3.0);
        assert_eq!(s.compression_ratio, 0.375);
        assert_eq!(s.accuracy_retention, 0.5);
        assert_eq!(
            t.fallbacks,
            ["(unnamed): q4_K -> q5_0 (ne[0] = 96 is not a multiple of 256)"]
        );
    }

    #[test]
    fn speedup_is_f32_time_over_model_time() {
        let b = BenchmarkTimes {
            f32_seconds: 3.0,
            model_seconds: 1.5,
            iterations: 4,
        };
        assert_eq!(b.speedup(), 2.0);
    }
}
