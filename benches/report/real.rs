//! Real weights for the protocol report: the embedding and the first
//! encoder layer of all-MiniLM-L6-v2, read from the `.safetensors` file
//! `scripts/fetch-minilm.sh` downloads (or the file `GGML_QAT_REAL_MODEL`
//! names).

use std::path::PathBuf;

/// The tensors used, with the names the report prints: PyTorch's `Linear`
/// weights are `[out, in]` row-major, i.e. ggml rows of `in` elements.
pub const LAYERS: [(&str, &str); 7] = [
    ("word_embd 384x30522", "embeddings.word_embeddings.weight"),
    (
        "attn_q 384x384",
        "encoder.layer.0.attention.self.query.weight",
    ),
    (
        "attn_k 384x384",
        "encoder.layer.0.attention.self.key.weight",
    ),
    (
        "attn_v 384x384",
        "encoder.layer.0.attention.self.value.weight",
    ),
    (
        "attn_out 384x384",
        "encoder.layer.0.attention.output.dense.weight",
    ),
    (
        "ffn_up 384x1536",
        "encoder.layer.0.intermediate.dense.weight",
    ),
    ("ffn_down 1536x384", "encoder.layer.0.output.dense.weight"),
];

/// Where the weights are looked for.
pub fn path() -> PathBuf {
    std::env::var_os("GGML_QAT_REAL_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".deps/models/all-MiniLM-L6-v2.safetensors")
        })
}

/// One F32 matrix: its row length and values.
pub struct Matrix {
    pub ne0: usize,
    pub values: Vec<f32>,
}

/// The matrices of [`LAYERS`], in order; an error says what is missing.
pub fn load() -> Result<Vec<Matrix>, String> {
    let path = path();
    let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let header_len = data
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
        .ok_or("file shorter than a safetensors header")?;
    let header: serde_json::Value = data
        .get(8..8 + header_len)
        .ok_or("truncated safetensors header")
        .and_then(|h| serde_json::from_slice(h).map_err(|_| "bad safetensors header"))?;
    let body = &data[8 + header_len..];
    LAYERS
        .iter()
        .map(|(_, name)| {
            let entry = &header[*name];
            if entry["dtype"] != "F32" {
                return Err(format!("{name}: not an F32 tensor"));
            }
            let numbers = |key: &str| -> Result<Vec<usize>, String> {
                Ok(entry[key]
                    .as_array()
                    .ok_or(format!("{name}: no {key}"))?
                    .iter()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect())
            };
            let (dims, range) = (numbers("shape")?, numbers("data_offsets")?);
            let (&ne0, [begin, end]) = (
                dims.last().ok_or(format!("{name}: empty shape"))?,
                range.as_slice(),
            ) else {
                return Err(format!("{name}: bad data offsets"));
            };
            let bytes = body
                .get(*begin..*end)
                .filter(|b| b.len() == 4 * dims.iter().product::<usize>())
                .ok_or(format!("{name}: data out of the file"))?;
            Ok(Matrix {
                ne0,
                values: bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            })
        })
        .collect()
}
