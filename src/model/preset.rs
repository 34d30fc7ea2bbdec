//! llama-quantize's presets and their per-tensor rules
//! (`llama_tensor_get_type` in llama.cpp's src/llama-quant.cpp, written anew
//! here for the presets whose types this crate implements), so sizes match
//! llama-quantize's; and llama.cpp's fallback for rows that do not fit a
//! block.

use super::roles::{layer_of, Category};
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
    /// How the report names it.
    pub fn describe(&self) -> String {
        match self {
            Target::Preset(p) => p.name().to_string(),
            Target::Classes(c) => format!(
                "classes (embedding {}, attention {}, ffn {}, layernorm {})",
                c[0].format().name,
                c[1].format().name,
                c[2].format().name,
                c[3].format().name
            ),
        }
    }

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

/// llama.cpp's `use_more_bits`: the first and last eighth, and every
/// third layer between.
fn use_more_bits(i: i64, n: i64) -> bool {
    let (i, n) = (i as i128, n as i128);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// A tensor as the preset rules see it.
#[derive(Clone, Copy, Debug)]
pub struct RuleTensor<'a> {
    pub name: &'a str,
    pub ne0: u64,
    pub cat: Category,
}

/// The manual types the rules honour (`--output-tensor-type`,
/// `--token-embedding-type`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ManualTypes {
    pub output: Option<QuantType>,
    pub token_embd: Option<QuantType>,
}

/// `llama_tensor_get_type_impl` for the presets of [`Preset`]: the type of
/// tensor `t` given the preset's default `new_type`; advances `c`.
pub fn preset_type(
    facts: &ModelFacts,
    c: &mut Counters,
    ftype: Preset,
    new_type: QuantType,
    t: RuleTensor,
    manual: ManualTypes,
) -> QuantType {
    use Category as C;
    match t.cat {
        C::Output => output_rule(facts, new_type, t.ne0, manual.output),
        C::TokenEmbd if !facts.has_output => output_rule(facts, new_type, t.ne0, manual.output),
        C::TokenEmbd => manual.token_embd.unwrap_or(new_type),
        C::AttnV | C::AttnQkv | C::AttnKvB => {
            let ty = attn_v_rule(facts, c.i_attention_wv as i64, ftype, new_type);
            c.i_attention_wv += 1;
            ty
        }
        C::AttnK if facts.n_expert == 8 => QuantType::Q8_0,
        C::FfnDown => {
            let i = if facts.n_expert > 1 {
                layer_of(t.name)
            } else {
                c.i_ffn_down as i64
            };
            c.i_ffn_down += 1;
            ffn_down_rule(facts, i, ftype, new_type)
        }
        C::AttnOutput => attn_output_rule(facts, ftype, new_type),
        C::FfnGate => {
            c.i_ffn_gate += 1;
            new_type
        }
        C::FfnUp => {
            c.i_ffn_up += 1;
            new_type
        }
        _ => new_type,
    }
}

/// The output tensor (or the tied token embedding).
fn output_rule(
    facts: &ModelFacts,
    new_type: QuantType,
    ne0: u64,
    manual: Option<QuantType>,
) -> QuantType {
    if let Some(t) = manual {
        t
    } else if facts.arch == "falcon" || ne0 % new_type.format().block_size as u64 != 0 {
        QuantType::Q8_0
    } else if new_type != QuantType::Q8_0 {
        QuantType::Q6_K
    } else {
        new_type
    }
}

/// attn_v, fused QKV and attn_kv_b: the `i`-th of them.
fn attn_v_rule(facts: &ModelFacts, i: i64, ftype: Preset, mut new_type: QuantType) -> QuantType {
    use Preset as P;
    use QuantType as T;
    let n = facts.n_attention_wv.min(i64::MAX as u64) as i64;
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
    new_type
}

/// ffn_down of layer (or count) `i`.
fn ffn_down_rule(facts: &ModelFacts, i: i64, ftype: Preset, new_type: QuantType) -> QuantType {
    use Preset as P;
    use QuantType as T;
    let falcon = facts.arch == "falcon";
    let n = facts.n_layer.min(i64::MAX as u64) as i64;
    match ftype {
        P::Q2_K => T::Q3_K,
        P::Q3_K_M if i < n / 16 => T::Q5_K,
        P::Q3_K_M if !falcon || use_more_bits(i, n) => T::Q4_K,
        P::Q3_K_M => T::Q3_K,
        P::Q3_K_L if falcon => T::Q4_K,
        P::Q3_K_L => T::Q5_K,
        P::Q4_K_M if falcon && i < n / 16 => T::Q6_K,
        P::Q4_K_M if falcon && use_more_bits(i, n) => T::Q5_K,
        P::Q4_K_M if falcon => T::Q4_K,
        P::Q4_K_M if use_more_bits(i, n) => T::Q6_K,
        P::IQ4_NL | P::IQ4_XS if i < n / 8 && !facts.has_imatrix => T::Q5_K,
        P::Q5_K_M if use_more_bits(i, n) => T::Q6_K,
        P::Q4_K_S if !falcon && i < n / 8 => T::Q5_K,
        P::Q4_0 if facts.has_imatrix && i < n / 8 => T::Q4_1,
        P::Q5_0 if facts.has_imatrix && i < n / 8 => T::Q5_1,
        _ => new_type,
    }
}

/// attn_output.
fn attn_output_rule(facts: &ModelFacts, ftype: Preset, new_type: QuantType) -> QuantType {
    use Preset as P;
    use QuantType as T;
    if facts.arch == "falcon" {
        return if ftype == P::Q3_K_L {
            T::Q4_K
        } else {
            new_type
        };
    }
    if facts.n_expert == 8 {
        return match ftype {
            P::Q2_K | P::Q3_K_S | P::Q3_K_M | P::IQ4_NL | P::Q4_K_S | P::Q4_K_M | P::IQ4_XS => {
                T::Q5_K
            }
            _ => new_type,
        };
    }
    match ftype {
        P::Q2_K => T::Q3_K,
        P::Q3_K_M => T::Q4_K,
        P::Q3_K_L => T::Q5_K,
        _ => new_type,
    }
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
