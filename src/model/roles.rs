//! Tensor names → roles, in one place: llama.cpp's tensor categories
//! (`tensor_get_category`), the block a tensor belongs to, the ggml-qat
//! layer class, which tensors llama.cpp ever quantizes, and the RMS norm that
//! scales a weight's inputs.

use crate::qat::layer::LayerClass;

/// llama.cpp's tensor categories (`tensor_get_category`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

/// The category of a tensor name.
pub fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        AttnQkv
    } else if name.contains("attn_kv_b.weight") {
        AttnKvB
    } else if name.contains("attn_v.weight") {
        AttnV
    } else if name.contains("attn_k.weight") {
        AttnK
    } else if name.contains("attn_q.weight") {
        AttnQ
    } else if name.contains("attn_output.weight") {
        AttnOutput
    } else if name.contains("ffn_up") {
        FfnUp
    } else if name.contains("ffn_gate") {
        FfnGate
    } else if name.contains("ffn_down") {
        FfnDown
    } else {
        Other
    }
}

/// The layer number of a `blk.N.` name (llama.cpp's sort key), -1 otherwise
/// (also for numbers beyond `u32`, which no model has).
pub fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse::<u32>().ok())
        .map_or(-1, i64::from)
}

/// The ggml-qat layer class of a llama.cpp tensor name; `None` for tensors
/// outside the four classes (biases, convolutions, ...).
pub fn classify(name: &str, n_dims: u32) -> Option<LayerClass> {
    let n = name;
    if n.contains("norm") {
        return Some(LayerClass::LayerNorm);
    }
    if n.starts_with("token_embd")
        || n.starts_with("per_layer_token_embd")
        || n.starts_with("output.")
        || n == "output"
    {
        return Some(LayerClass::Embedding);
    }
    if n.contains("attn_q")
        || n.contains("attn_k")
        || n.contains("attn_v")
        || n.contains("attn_output")
        || n.contains("attn_qkv")
        || n.contains("attn_out")
    {
        return Some(LayerClass::Attention);
    }
    if n.contains("ffn_up") || n.contains("ffn_gate") || n.contains("ffn_down") {
        return Some(LayerClass::Ffn);
    }
    if n_dims < 2 {
        return Some(LayerClass::LayerNorm);
    }
    None
}

/// A class's display name.
pub fn class_name(c: Option<LayerClass>) -> &'static str {
    match c {
        Some(LayerClass::Embedding) => "embedding",
        Some(LayerClass::Attention) => "attention",
        Some(LayerClass::Ffn) => "ffn",
        Some(LayerClass::LayerNorm) => "layernorm",
        Some(_) => "other",
        None => "other",
    }
}

/// llama.cpp's `tensor_allows_quantization` (for `only_copy` false).
pub fn allows_quantization(name: &str, n_dims: u32, arch: &str, quantize_output: bool) -> bool {
    if n_dims < 2 || !name.ends_with("weight") {
        return false;
    }
    const NEVER: &[&str] = &[
        "_norm.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
    ];
    if NEVER.iter().any(|p| name.contains(p)) {
        return false;
    }
    if !quantize_output && name == "output.weight" {
        return false;
    }
    if name == "position_embd.weight" || name == "token_types.weight" {
        return false;
    }
    if arch == "glm5-next" || arch == "glm5_next" {
        const GLM: &[&str] = &[
            "hc_",
            "indexer.attn_q_b",
            "indexer.attn_k",
            "indexer.proj",
            "indexer_compressor_gate",
            "indexer_compressor_ape",
            "ssm_f_a.weight",
            "ssm_f_b.weight",
            "ssm_g_a.weight",
            "ssm_g_b.weight",
            "ssm_beta.weight",
            "attn_kv_a_mqa.weight",
            "attn_k_b.weight",
            "attn_v_b.weight",
        ];
        if GLM.iter().any(|p| name.contains(p)) {
            return false;
        }
    }
    true
}

/// The RMS norm whose weight scales the inputs of `name` (same block), by
/// llama.cpp's tensor names.
pub fn norm_name(name: &str) -> Option<String> {
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
