//! The validated configuration of a session.

use super::layer::LayerClass;
use crate::error::{Error, Result};
use crate::quant::QuantType;

/// A validated configuration; zero-valued numeric fields of the C struct have
/// already been replaced by their defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub embedding_qtype: QuantType,
    pub attention_qtype: QuantType,
    pub ffn_qtype: QuantType,
    pub layernorm_qtype: QuantType,
    /// Blend of KL (weight) and relative output MSE (1 - weight) in sensitivity.
    pub kl_divergence_weight: f32,
    /// Softmax temperature of the KL figures.
    pub temperature: f32,
    /// Layers quantized per progressive step; 0 means all requested layers.
    pub progressive_layers: usize,
    /// Synthetic input samples used to check a layer.
    pub calibration_samples: usize,
    /// Wanted size reduction relative to F32, in [0, 1).
    pub memory_reduction_target: f32,
    /// Minimum top-1 agreement of a quantized layer, in [0, 1].
    pub accuracy_threshold: f32,
    pub enable_atomspace: bool,
    pub enable_moses: bool,
    pub enable_ecan: bool,
}

/// Defaults of the numeric fields (SEED.md's example configuration).
pub const DEFAULT_KL_DIVERGENCE_WEIGHT: f32 = 0.5;
pub const DEFAULT_TEMPERATURE: f32 = 3.0;
pub const DEFAULT_CALIBRATION_SAMPLES: usize = 128;
pub const DEFAULT_MEMORY_REDUCTION_TARGET: f32 = 0.75;
pub const DEFAULT_ACCURACY_THRESHOLD: f32 = 0.98;

impl Default for Config {
    /// SEED.md's table: embeddings Q8_0, attention Q4_K, FFN Q6_K, norms Q8_0.
    fn default() -> Self {
        Config {
            embedding_qtype: QuantType::Q8_0,
            attention_qtype: QuantType::Q4_K,
            ffn_qtype: QuantType::Q6_K,
            layernorm_qtype: QuantType::Q8_0,
            kl_divergence_weight: DEFAULT_KL_DIVERGENCE_WEIGHT,
            temperature: DEFAULT_TEMPERATURE,
            progressive_layers: 0,
            calibration_samples: DEFAULT_CALIBRATION_SAMPLES,
            memory_reduction_target: DEFAULT_MEMORY_REDUCTION_TARGET,
            accuracy_threshold: DEFAULT_ACCURACY_THRESHOLD,
            enable_atomspace: true,
            enable_moses: true,
            enable_ecan: true,
        }
    }
}

/// The raw values of the C struct, before validation.
#[derive(Clone, Debug, PartialEq)]
pub struct RawConfig {
    pub qtypes: [i32; 4],
    pub kl_divergence_weight: f32,
    pub temperature: f32,
    pub progressive_layers: i32,
    pub calibration_samples: i32,
    pub memory_reduction_target: f32,
    pub accuracy_threshold: f32,
    pub enables: [bool; 3],
}

/// The type with ggml id `id` when ggml-qat can produce it; `name` is the
/// argument named in the error.
pub fn producible(name: &'static str, id: i32) -> Result<QuantType> {
    QuantType::from_ggml(id)
        .filter(|t| crate::quant::is_implemented(*t))
        .ok_or_else(|| {
            Error::invalid(
                name,
                format!(
                    "ggml type {id} ({}) cannot be produced by ggml-qat",
                    crate::ggml::tensor::type_name(id)
                ),
            )
        })
}

fn float_or(
    name: &'static str,
    v: f32,
    default: f32,
    ok: impl Fn(f32) -> bool,
    range: &str,
) -> Result<f32> {
    if v.is_nan() {
        return Err(Error::invalid(name, "is NaN"));
    }
    if v == 0.0 {
        return Ok(default);
    }
    if !ok(v) {
        return Err(Error::invalid(name, format!("{v} is outside {range}")));
    }
    Ok(v)
}

impl RawConfig {
    /// Validates and fills defaults. When all four type fields are 0
    /// (`GGML_TYPE_F32`, i.e. left unset) they take the default table;
    /// otherwise each is taken as given (F32, F16, BF16 keep that precision).
    pub fn validate(&self) -> Result<Config> {
        let d = Config::default();
        let [e, a, f, l] = if self.qtypes == [0; 4] {
            [
                d.embedding_qtype,
                d.attention_qtype,
                d.ffn_qtype,
                d.layernorm_qtype,
            ]
        } else {
            [
                producible("embedding_qtype", self.qtypes[0])?,
                producible("attention_qtype", self.qtypes[1])?,
                producible("ffn_qtype", self.qtypes[2])?,
                producible("layernorm_qtype", self.qtypes[3])?,
            ]
        };
        let count = |name: &'static str, v: i32, default: usize| -> Result<usize> {
            match v {
                0 => Ok(default),
                v if v < 0 => Err(Error::invalid(name, format!("{v} is negative"))),
                v => Ok(v as usize),
            }
        };
        Ok(Config {
            embedding_qtype: e,
            attention_qtype: a,
            ffn_qtype: f,
            layernorm_qtype: l,
            kl_divergence_weight: float_or(
                "kl_divergence_weight",
                self.kl_divergence_weight,
                d.kl_divergence_weight,
                |v| (0.0..=1.0).contains(&v),
                "[0, 1]",
            )?,
            temperature: float_or(
                "temperature",
                self.temperature,
                d.temperature,
                |v| v > 0.0 && v.is_finite(),
                "(0, inf)",
            )?,
            progressive_layers: count("progressive_layers", self.progressive_layers, 0)?,
            calibration_samples: count(
                "calibration_samples",
                self.calibration_samples,
                d.calibration_samples,
            )?,
            memory_reduction_target: float_or(
                "memory_reduction_target",
                self.memory_reduction_target,
                d.memory_reduction_target,
                |v| (0.0..1.0).contains(&v),
                "[0, 1)",
            )?,
            accuracy_threshold: float_or(
                "accuracy_threshold",
                self.accuracy_threshold,
                d.accuracy_threshold,
                |v| (0.0..=1.0).contains(&v),
                "[0, 1]",
            )?,
            enable_atomspace: self.enables[0],
            enable_moses: self.enables[1],
            enable_ecan: self.enables[2],
        })
    }
}

impl Config {
    /// The type a layer of `class` is quantized to (before any fallback).
    pub fn qtype_for(&self, class: LayerClass) -> QuantType {
        match class {
            LayerClass::Embedding => self.embedding_qtype,
            LayerClass::Attention => self.attention_qtype,
            LayerClass::Ffn => self.ffn_qtype,
            LayerClass::LayerNorm => self.layernorm_qtype,
            LayerClass::AtomSpace | LayerClass::Ecan => QuantType::Q8_0,
            LayerClass::Moses => QuantType::Q6_K,
        }
    }

    /// Whether the OpenCog structures of `class` may be created.
    pub fn opencog_enabled(&self, class: LayerClass) -> bool {
        match class {
            LayerClass::AtomSpace => self.enable_atomspace,
            LayerClass::Moses => self.enable_moses,
            LayerClass::Ecan => self.enable_ecan,
            _ => true,
        }
    }
}
