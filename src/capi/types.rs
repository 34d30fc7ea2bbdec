//! The C-visible types of `ggml-qat.h`, with exactly the original layouts.
#![allow(non_camel_case_types)]

use std::ffi::c_int;

use crate::error::{Error, Result};
use crate::qat::stats::Stats;
use crate::qat::LayerClass;

pub use crate::ggml::ffi::{GgmlBackendT, GgmlContext, GgmlTensor, GgmlType};

/// A C `bool` as it arrives: any byte, read as `!= 0`.
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CBool(pub u8);

impl CBool {
    pub fn get(self) -> bool {
        self.0 != 0
    }
}

impl From<bool> for CBool {
    fn from(b: bool) -> Self {
        CBool(b as u8)
    }
}

/// QAT configuration. Numeric fields left 0 take their default (listed per
/// field). When all four type fields are 0 (GGML_TYPE_F32, i.e. unset) they
/// take the default table; otherwise each is used as given, and F32, F16 and
/// BF16 mean "keep at this precision". ggml_qat_default_config() returns the
/// defaults.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ggml_qat_config_t {
    /// Type of embedding layers (default GGML_TYPE_Q8_0).
    pub embedding_qtype: GgmlType,
    /// Type of attention layers (default GGML_TYPE_Q4_K).
    pub attention_qtype: GgmlType,
    /// Type of feed-forward layers (default GGML_TYPE_Q6_K).
    pub ffn_qtype: GgmlType,
    /// Type of normalization layers (default GGML_TYPE_Q8_0).
    pub layernorm_qtype: GgmlType,
    /// In [0, 1] (default 0.5): weight of KL against relative output MSE in
    /// layer sensitivity.
    pub kl_divergence_weight: f32,
    /// Softmax temperature of KL figures, > 0 (default 3.0).
    pub temperature: f32,
    /// Layers quantized per progressive step; 0 (default): all requested.
    pub progressive_layers: c_int,
    /// Synthetic input samples used to check a layer (default 128).
    pub calibration_samples: c_int,
    /// Wanted size reduction relative to F32, in [0, 1) (default 0.75).
    pub memory_reduction_target: f32,
    /// Minimum top-1 agreement of a quantized layer, in [0, 1] (default 0.98).
    pub accuracy_threshold: f32,
    /// ggml_qat_create_atomspace() works only when true.
    pub enable_atomspace: CBool,
    /// ggml_qat_create_moses_tree() works only when true.
    pub enable_moses: CBool,
    /// ggml_qat_create_ecan() works only when true.
    pub enable_ecan: CBool,
}

/// The class of a layer; selects its quantization type.
#[repr(C)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GgmlQatLayerType {
    /// Token embeddings: config embedding_qtype.
    GGML_QAT_LAYER_EMBEDDING = 0,
    /// Attention projections: config attention_qtype.
    GGML_QAT_LAYER_ATTENTION = 1,
    /// Feed-forward weights: config ffn_qtype.
    GGML_QAT_LAYER_FFN = 2,
    /// Normalization weights: config layernorm_qtype.
    GGML_QAT_LAYER_LAYERNORM = 3,
    /// AtomSpace truth values: Q8_0.
    GGML_QAT_LAYER_ATOMSPACE = 4,
    /// MOSES program weights: Q6_K.
    GGML_QAT_LAYER_MOSES = 5,
    /// ECAN importance values: Q8_0.
    GGML_QAT_LAYER_ECAN = 6,
}

/// `ggml_qat_layer_type_t` as it arrives from C: any int, validated.
#[repr(transparent)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LayerTypeArg(pub c_int);

impl LayerTypeArg {
    pub fn class(self, name: &'static str) -> Result<LayerClass> {
        LayerClass::from_c(self.0).ok_or_else(|| {
            Error::invalid(
                name,
                format!("{} is not a ggml_qat_layer_type_t value (0 to 6)", self.0),
            )
        })
    }
}

/// Quantization statistics. Sizes are in MiB (ggml_nbytes / 2^20).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct ggml_qat_stats_t {
    pub original_size_mb: f32,
    pub quantized_size_mb: f32,
    /// quantized_size_mb / original_size_mb.
    pub compression_ratio: f32,
    /// Share of samples whose top-1 output agrees with the original's.
    pub accuracy_retention: f32,
    /// Mean per-sample KL divergence of the output distributions.
    pub kl_divergence_loss: f32,
    /// Measured original time / quantized time.
    pub inference_speedup: f32,
}

impl From<Stats> for ggml_qat_stats_t {
    fn from(s: Stats) -> Self {
        ggml_qat_stats_t {
            original_size_mb: s.original_size_mb,
            quantized_size_mb: s.quantized_size_mb,
            compression_ratio: s.compression_ratio,
            accuracy_retention: s.accuracy_retention,
            kl_divergence_loss: s.kl_divergence_loss,
            inference_speedup: s.inference_speedup,
        }
    }
}

/// An AtomSpace: truth values on the 8-bit grid k/255, atom types, and
/// hypergraph connections. Free with ggml_qat_free_atomspace().
#[repr(C)]
#[derive(Debug)]
pub struct ggml_qat_atomspace_t {
    /// n_atoms truth values in [0, 1], multiples of 1/255.
    pub truth_values: *mut f32,
    /// n_atoms atom types in [0, 10).
    pub atom_types: *mut i64,
    /// 2 * n_connections atom indices: connection i links entries 2i and 2i+1.
    pub connections: *mut i64,
    pub n_atoms: c_int,
    pub n_connections: c_int,
}

/// A MOSES program tree (binary, node 0 is the root). Free with
/// ggml_qat_free_moses_tree().
#[repr(C)]
#[derive(Debug)]
pub struct ggml_qat_moses_tree_t {
    /// n_nodes weights on the 6-bit grid -4 + 8k/63.
    pub weights: *mut f32,
    /// n_nodes operation codes in [0, 8).
    pub operations: *mut c_int,
    /// 2 * n_nodes entries: left and right child of each node, or -1.
    pub connections: *mut c_int,
    pub n_nodes: c_int,
}

/// ECAN attention values. Free with ggml_qat_free_ecan().
#[repr(C)]
#[derive(Debug)]
pub struct ggml_qat_ecan_t {
    /// n_elements short-term importances in [0, 1], multiples of 1/255.
    pub sti_values: *mut f32,
    /// n_elements long-term importances in [0, 1], multiples of 1/255.
    pub lti_values: *mut f32,
    /// n_elements positive scores summing to 1 (8-bit relative to the max).
    pub attention_scores: *mut f32,
    pub n_elements: c_int,
}
