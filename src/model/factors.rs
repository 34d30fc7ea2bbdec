//! The planner's role and depth factors: how much a tensor's relative
//! squared error costs the model, by role and by depth; and which factors
//! a plan used, and where they came from ([`FactorsUsed`]).

use std::path::Path;

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use crate::model::roles::Category;

/// The roles a factors file names, by llama.cpp's tensor names.
const ROLE_NAMES: [(&str, Category); 12] = [
    ("token_embd", Category::TokenEmbd),
    ("output", Category::Output),
    ("attn_q", Category::AttnQ),
    ("attn_k", Category::AttnK),
    ("attn_v", Category::AttnV),
    ("attn_qkv", Category::AttnQkv),
    ("attn_kv_b", Category::AttnKvB),
    ("attn_output", Category::AttnOutput),
    ("ffn_gate", Category::FfnGate),
    ("ffn_up", Category::FfnUp),
    ("ffn_down", Category::FfnDown),
    ("other", Category::Other),
];

/// How much relative squared error costs, by role and depth.
///
/// - `roles`: the mean KL divergence of the model per unit of mean relative
///   squared error when every tensor of the role (and no other) is
///   quantized; a tensor's share is its role's factor divided by the number
///   of tensors in the role.
/// - `depth`: the mean KL divergence with every tensor of the first, middle
///   and last third of the blocks quantized; a block's factor is its
///   third's figure over the mean of the three.
///
/// The default was measured on Gemma 3 270M, each group at Q4_0, 12 chunks
/// of 512 tokens of a text disjoint from the evaluation text
/// (scripts/measure-roles.sh, which also writes such a file for its model).
/// Roles Gemma lacks take the nearest measured one: `output` that of the
/// tied token embeddings, fused QKV the mean of Q, K and V, `attn_kv_b`
/// that of V, other tensors that of attn_output (the median).
#[derive(Clone, Debug, PartialEq)]
pub struct Factors {
    pub roles: [f64; 12],
    pub depth: [f64; 3],
}

impl Default for Factors {
    fn default() -> Factors {
        let (q, k, v) = (1.69, 1.67, 7.01);
        Factors {
            roles: [
                7.87,
                7.87,
                q,
                k,
                v,
                (q + k + v) / 3.0,
                v,
                3.25,
                2.91,
                5.73,
                7.12,
                3.25,
            ],
            depth: [0.127598, 0.098814, 0.087137],
        }
    }
}

impl Factors {
    /// Reads a factors file: lines `ROLE VALUE` (ROLE one of token_embd,
    /// output, attn_q, attn_k, attn_v, attn_qkv, attn_kv_b, attn_output,
    /// ffn_gate, ffn_up, ffn_down, other) and `depth FIRST MIDDLE LAST`;
    /// `#` starts a comment. What the file does not name keeps its default.
    pub fn parse(text: &str) -> Result<Factors, String> {
        let mut f = Factors::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let key = words.next().unwrap_or("");
            let values: Vec<f64> = words
                .map(|w| w.parse::<f64>().ok().filter(|x| x.is_finite() && *x > 0.0))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    format!("line {}: positive numbers expected after '{key}'", n + 1)
                })?;
            if key == "depth" {
                f.depth = values
                    .as_slice()
                    .try_into()
                    .map_err(|_| format!("line {}: depth takes 3 numbers", n + 1))?;
                continue;
            }
            let i =
                role_index(key).ok_or_else(|| format!("line {}: unknown role '{key}'", n + 1))?;
            match values[..] {
                [x] => f.roles[i] = x,
                _ => return Err(format!("line {}: {key} takes 1 number", n + 1)),
            }
        }
        Ok(f)
    }

    /// The factor of a role (before dividing by the tensors in it).
    pub fn role(&self, cat: Category) -> f64 {
        let i = ROLE_NAMES.iter().position(|(_, c)| *c == cat).unwrap_or(11);
        self.roles[i]
    }

    /// The depth factor of block `layer` of `n_layer` (1 outside blocks).
    pub fn depth(&self, layer: i64, n_layer: i64) -> f64 {
        if layer < 0 || n_layer <= 0 {
            return 1.0;
        }
        let mean = self.depth.iter().sum::<f64>() / 3.0;
        let third = ((3 * layer.min(n_layer - 1)) / n_layer) as usize;
        self.depth[third.min(2)] / mean
    }
}

/// The index in [`Factors::roles`] of the role named `name` (a factors
/// file's vocabulary: token_embd, output, attn_q, ..., other).
pub fn role_index(name: &str) -> Option<usize> {
    ROLE_NAMES.iter().position(|(n, _)| *n == name)
}

/// In the report: `{"roles": {NAME: VALUE, ...}, "depth": [F, M, L]}`.
impl Serialize for Factors {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Roles<'a>(&'a [f64; 12]);
        impl Serialize for Roles<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(ROLE_NAMES.iter().map(|(n, _)| *n).zip(self.0))
            }
        }
        let mut st = s.serialize_struct("Factors", 2)?;
        st.serialize_field("roles", &Roles(&self.roles))?;
        st.serialize_field("depth", &self.depth)?;
        st.end()
    }
}

/// The factors a plan used and where they came from (in the report).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FactorsUsed {
    /// "default", "factors file" or "calibration file".
    pub source: &'static str,
    /// The calibration file given, if any (also when it had no factors
    /// and the default ones were used).
    pub calibration_file: Option<String>,
    /// What the calibration file says of its measurement: the type the
    /// roles were quantized to, the measure ("kl-divergence" or
    /// "1-cosine"), the tokens evaluated.
    pub probe_type: Option<String>,
    pub measure: Option<String>,
    pub tokens: Option<u32>,
    #[serde(flatten)]
    pub values: Factors,
}

impl FactorsUsed {
    /// The factors of a plan: those given (`--plan-factors`), else the
    /// calibration file's (`calibrated`), else the default; `calibration`
    /// is the calibration file given, if any.
    pub fn choose(
        given: Option<&Factors>,
        calibrated: Option<FactorsUsed>,
        calibration: Option<&Path>,
    ) -> FactorsUsed {
        let file = calibration.map(|p| p.display().to_string());
        match (given, calibrated) {
            (Some(f), _) => FactorsUsed {
                source: "factors file",
                calibration_file: file,
                values: f.clone(),
                ..FactorsUsed::default()
            },
            (None, Some(c)) => FactorsUsed {
                calibration_file: file,
                ..c
            },
            (None, None) => FactorsUsed {
                source: "default",
                calibration_file: file,
                ..FactorsUsed::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_file_overrides_what_it_names() {
        let d = Factors::default();
        let f =
            Factors::parse("# measured\nattn_v 20 # more\n\ndepth 3 2 1\nffn_up\t0.5\n").unwrap();
        assert_eq!(f.role(Category::AttnV), 20.0);
        assert_eq!(f.role(Category::FfnUp), 0.5);
        assert_eq!(f.role(Category::AttnQ), d.role(Category::AttnQ));
        assert_eq!(f.depth, [3.0, 2.0, 1.0]);
        assert_eq!(f.depth(0, 18), 1.5);
        assert_eq!(f.depth(17, 18), 0.5);
        assert_eq!(f.depth(-1, 18), 1.0);
        assert_eq!(Factors::parse("").unwrap(), d);
        for (bad, want) in [
            ("attn_x 1", "unknown role 'attn_x'"),
            ("attn_v", "takes 1 number"),
            ("attn_v 1 2", "takes 1 number"),
            ("attn_v -1", "positive numbers"),
            ("attn_v nan", "positive numbers"),
            ("depth 1 2", "depth takes 3"),
        ] {
            let e = Factors::parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
            assert!(e.starts_with("line 1:"), "{e}");
        }
    }
}
