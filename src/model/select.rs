//! Which type each tensor gets: llama.cpp's tensor names mapped to the
//! ggml-qat layer classes, the tensors llama.cpp never quantizes, and the
//! per-tensor rules of llama-quantize's presets (`llama_tensor_get_type` in
//! llama.cpp's src/llama-quant.cpp, written anew here for the presets whose
//! types this crate implements), so sizes match llama-quantize's.

use crate::qat::layer::LayerClass;
use crate::quant::QuantType;

/// llama.cpp's file types (`enum llama_ftype`) that this crate can produce.
#[allow(non_camel_case_types)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Preset {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 7,
    Q5_0 = 8,
    Q5_1 = 9,
    Q2_K = 10,
    Q3_K_S = 11,
    Q3_K_M = 12,
    Q3_K_L = 13,
    Q4_K_S = 14,
    Q4_K_M = 15,
    Q5_K_S = 16,
    Q5_K_M = 17,
    Q6_K = 18,
    IQ4_NL = 25,
    IQ4_XS = 30,
    BF16 = 32,
}

impl Preset {
    pub const ALL: [Preset; 19] = [
        Preset::F32,
        Preset::F16,
        Preset::Q4_0,
        Preset::Q4_1,
        Preset::Q8_0,
        Preset::Q5_0,
        Preset::Q5_1,
        Preset::Q2_K,
        Preset::Q3_K_S,
        Preset::Q3_K_M,
        Preset::Q3_K_L,
        Preset::Q4_K_S,
        Preset::Q4_K_M,
        Preset::Q5_K_S,
        Preset::Q5_K_M,
        Preset::Q6_K,
        Preset::IQ4_NL,
        Preset::IQ4_XS,
        Preset::BF16,
    ];

    /// llama-quantize's name ("Q4_K_M"), case-insensitive, or the ftype number.
    pub fn parse(s: &str) -> Option<Preset> {
        if let Ok(n) = s.parse::<i32>() {
            return Self::ALL.iter().copied().find(|p| *p as i32 == n);
        }
        Self::ALL
            .iter()
            .copied()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    pub fn name(self) -> &'static str {
        use Preset::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q8_0 => "Q8_0",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q2_K => "Q2_K",
            Q3_K_S => "Q3_K_S",
            Q3_K_M => "Q3_K_M",
            Q3_K_L => "Q3_K_L",
            Q4_K_S => "Q4_K_S",
            Q4_K_M => "Q4_K_M",
            Q5_K_S => "Q5_K_S",
            Q5_K_M => "Q5_K_M",
            Q6_K => "Q6_K",
            IQ4_NL => "IQ4_NL",
            IQ4_XS => "IQ4_XS",
            BF16 => "BF16",
        }
    }

    /// The preset's default tensor type (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> QuantType {
        use Preset as P;
        use QuantType as T;
        match self {
            P::F32 => T::F32,
            P::F16 => T::F16,
            P::BF16 => T::BF16,
            P::Q4_0 => T::Q4_0,
            P::Q4_1 => T::Q4_1,
            P::Q5_0 => T::Q5_0,
            P::Q5_1 => T::Q5_1,
            P::Q8_0 => T::Q8_0,
            P::Q2_K => T::Q2_K,
            P::Q3_K_S | P::Q3_K_M | P::Q3_K_L => T::Q3_K,
            P::Q4_K_S | P::Q4_K_M => T::Q4_K,
            P::Q5_K_S | P::Q5_K_M => T::Q5_K,
            P::Q6_K => T::Q6_K,
            P::IQ4_NL => T::IQ4_NL,
            P::IQ4_XS => T::IQ4_XS,
        }
    }
}

/// What the whole model is quantized to.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A llama-quantize preset (its per-tensor mixture unless `pure`).
    Preset(Preset),
    /// The four class types of a ggml-qat config: embedding, attention,
    /// ffn, layernorm (other 2-D weights take the ffn type).
    Classes([QuantType; 4]),
}

impl Target {
    /// The `general.file_type` value written: the preset's ftype; for
    /// classes, the ftype of the ffn type's plain preset (what most bytes are).
    pub fn file_type(&self) -> u32 {
        match self {
            Target::Preset(p) => *p as u32,
            Target::Classes(c) => Preset::ALL
                .iter()
                .find(|p| p.default_type() == c[2])
                .map_or(1024, |p| *p as u32),
        }
    }
}

/// A type by ggml's name ("q4_K", "Q8_0", "f16", "iq4_nl"), case-insensitive.
pub fn parse_type(s: &str) -> Option<QuantType> {
    QuantType::ALL
        .iter()
        .copied()
        .find(|t| t.format().name.eq_ignore_ascii_case(s))
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

/// Model facts the preset rules read (llama.cpp's hparams).
#[derive(Clone, Debug, Default)]
pub struct ModelFacts {
    pub arch: String,
    pub n_layer: u64,
    pub n_gqa: u64,
    pub n_expert: u64,
    pub has_output: bool,
    pub n_attention_wv: u64,
    pub has_imatrix: bool,
}

/// Counters of the preset rules, advanced tensor by tensor in llama.cpp's
/// order (layer number, then name).
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub i_attention_wv: u64,
    pub i_ffn_down: u64,
    pub i_ffn_gate: u64,
    pub i_ffn_up: u64,
}

fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The layer number of a `blk.N.` name (llama.cpp's sort key), -1 otherwise.
pub fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(-1)
}

/// `llama_tensor_get_type_impl` for the presets of [`Preset`].
#[allow(clippy::too_many_arguments)]
pub fn preset_type(
    facts: &ModelFacts,
    c: &mut Counters,
    ftype: Preset,
    mut new_type: QuantType,
    name: &str,
    ne0: u64,
    cat: Category,
    output_type: Option<QuantType>,
    token_embd_type: Option<QuantType>,
) -> QuantType {
    use Category as C;
    use Preset as P;
    use QuantType as T;
    let falcon = facts.arch == "falcon";
    let n_layer = facts.n_layer as i64;
    let layer_info = |counter: u64| -> i64 {
        if facts.n_expert > 1 {
            layer_of(name)
        } else {
            counter as i64
        }
    };
    if cat == C::Output || (!facts.has_output && cat == C::TokenEmbd) {
        if let Some(t) = output_type {
            new_type = t;
        } else if falcon || ne0 % new_type.format().block_size as u64 != 0 {
            new_type = T::Q8_0;
        } else if new_type != T::Q8_0 {
            new_type = T::Q6_K;
        }
    } else if cat == C::TokenEmbd {
        if let Some(t) = token_embd_type {
            new_type = t;
        }
    } else if matches!(cat, C::AttnV | C::AttnQkv | C::AttnKvB) {
        let i = c.i_attention_wv as i64;
        let n = facts.n_attention_wv as i64;
        match ftype {
            P::Q2_K => {
                new_type = if facts.n_gqa >= 4 { T::Q4_K } else { T::Q3_K };
            }
            P::Q3_K_M => new_type = if i < 2 { T::Q5_K } else { T::Q4_K },
            P::Q3_K_L => new_type = T::Q5_K,
            P::IQ4_NL | P::IQ4_XS if facts.n_gqa >= 4 => new_type = T::Q5_K,
            P::Q4_K_M | P::Q5_K_M if use_more_bits(i, n) => new_type = T::Q6_K,
            P::Q4_K_S if i < 4 => new_type = T::Q5_K,
            _ => {}
        }
        if facts.arch == "llama" && facts.n_layer == 80 && matches!(new_type, T::Q3_K | T::Q4_K) {
            new_type = T::Q5_K; // LLM_TYPE_70B
        }
        if facts.n_expert == 8 {
            new_type = T::Q8_0;
        }
        c.i_attention_wv += 1;
    } else if cat == C::AttnK {
        if facts.n_expert == 8 {
            new_type = T::Q8_0;
        }
    } else if cat == C::FfnDown {
        let i = layer_info(c.i_ffn_down);
        let n = n_layer;
        match ftype {
            P::Q2_K => new_type = T::Q3_K,
            P::Q3_K_M => {
                new_type = if i < n / 16 {
                    T::Q5_K
                } else if !falcon || use_more_bits(i, n) {
                    T::Q4_K
                } else {
                    T::Q3_K
                }
            }
            P::Q3_K_L => new_type = if falcon { T::Q4_K } else { T::Q5_K },
            P::Q4_K_M => {
                if falcon {
                    new_type = if i < n / 16 {
                        T::Q6_K
                    } else if use_more_bits(i, n) {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    };
                } else if use_more_bits(i, n) {
                    new_type = T::Q6_K;
                }
            }
            P::IQ4_NL | P::IQ4_XS if i < n / 8 && !facts.has_imatrix => new_type = T::Q5_K,
            P::Q5_K_M if use_more_bits(i, n) => new_type = T::Q6_K,
            P::Q4_K_S if !falcon && i < n / 8 => new_type = T::Q5_K,
            P::Q4_0 | P::Q5_0 if facts.has_imatrix && i < n / 8 => {
                new_type = if ftype == P::Q4_0 { T::Q4_1 } else { T::Q5_1 };
            }
            _ => {}
        }
        c.i_ffn_down += 1;
    } else if cat == C::AttnOutput {
        if !falcon {
            if facts.n_expert == 8 {
                if matches!(
                    ftype,
                    P::Q2_K | P::Q3_K_S | P::Q3_K_M | P::IQ4_NL | P::Q4_K_S | P::Q4_K_M | P::IQ4_XS
                ) {
                    new_type = T::Q5_K;
                }
            } else {
                match ftype {
                    P::Q2_K => new_type = T::Q3_K,
                    P::Q3_K_M => new_type = T::Q4_K,
                    P::Q3_K_L => new_type = T::Q5_K,
                    _ => {}
                }
            }
        } else if ftype == P::Q3_K_L {
            new_type = T::Q4_K;
        }
    } else if cat == C::AttnQkv {
        // (unreachable: AttnQkv is attention-v-like above, as in llama.cpp)
    } else if cat == C::FfnGate {
        c.i_ffn_gate += 1;
    } else if cat == C::FfnUp {
        c.i_ffn_up += 1;
    }
    new_type
}

/// llama.cpp's `tensor_type_fallback`: the type and, when it changed, why.
pub fn fallback(wanted: QuantType, ne0: u64) -> (QuantType, Option<String>) {
    use QuantType as T;
    let blk = wanted.format().block_size as u64;
    if ne0 % blk == 0 {
        return (wanted, None);
    }
    let mut ty = match wanted {
        T::IQ4_XS => T::IQ4_NL,
        T::Q2_K | T::Q3_K => T::Q4_0,
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        other => other,
    };
    if ne0 % ty.format().block_size as u64 != 0 {
        ty = T::F16;
    }
    let why = format!(
        "ne[0] = {ne0} is not a multiple of {blk} ({}): {} instead",
        wanted.format().name,
        ty.format().name
    );
    (ty, Some(why))
}

/// Whether a ggml type id is block-quantized (not F32/F16/BF16 or other floats/ints).
pub fn is_quantized_id(ty: i32) -> bool {
    !matches!(ty, 0 | 1 | 24..=28 | 30)
}
