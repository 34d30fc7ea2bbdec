//! The checks llama.cpp makes on a model's metadata when it loads it
//! (`llama_model_loader`, `llm_load_hparams`), on the shard that holds
//! the metadata: a known architecture, a sane layer count and width.

use super::Header;
use crate::model::ModelError;

/// llama.cpp's `LLAMA_MAX_LAYERS`.
pub const MAX_LAYERS: u64 = 512;

/// The architecture names llama.cpp knows (`LLM_ARCH_NAMES` in
/// src/llama-arch.cpp of the llama.cpp tree vendored in llama-cpp-python
/// 0.3.36; "clip" is the multimodal projector llama-quantize also takes).
pub const KNOWN_ARCHITECTURES: &[&str] = &[
    "clip",
    "llama",
    "llama4",
    "deci",
    "falcon",
    "grok",
    "gpt2",
    "gptj",
    "gptneox",
    "mpt",
    "baichuan",
    "starcoder",
    "refact",
    "bert",
    "modern-bert",
    "nomic-bert",
    "nomic-bert-moe",
    "neo-bert",
    "jina-bert-v2",
    "jina-bert-v3",
    "eurobert",
    "bloom",
    "stablelm",
    "qwen",
    "qwen2",
    "qwen2moe",
    "qwen2vl",
    "qwen3",
    "qwen3moe",
    "qwen3next",
    "qwen3vl",
    "qwen3vlmoe",
    "qwen35",
    "qwen35moe",
    "qwen4exp",
    "phi2",
    "phi3",
    "phimoe",
    "plamo",
    "plamo2",
    "plamo3",
    "codeshell",
    "orion",
    "internlm2",
    "minicpm",
    "minicpm3",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3n",
    "gemma4",
    "gemma4-assistant",
    "gemma-embedding",
    "starcoder2",
    "mamba",
    "mamba2",
    "maple",
    "jamba",
    "falcon-h1",
    "xverse",
    "command-r",
    "cohere2",
    "cohere2moe",
    "dbrx",
    "olmo",
    "olmo2",
    "olmoe",
    "muse-glimmer",
    "openelm",
    "arctic",
    "deepseek",
    "deepseek2",
    "deepseek2-ocr",
    "deepseek32",
    "deepseek4",
    "chatglm",
    "glm4",
    "glm4moe",
    "glm-dsa",
    "bitnet",
    "t5",
    "t5encoder",
    "jais",
    "jais2",
    "nemotron",
    "nemotron_h",
    "nemotron_h_moe",
    "exaone",
    "exaone4",
    "exaone-moe",
    "rwkv6",
    "rwkv6qwen2",
    "rwkv7",
    "arwkv7",
    "granite",
    "granitemoe",
    "granitehybrid",
    "graniteswitch",
    "granite_swa",
    "chameleon",
    "wavtokenizer-dec",
    "plm",
    "bailingmoe",
    "bailingmoe2",
    "bailingmoe3",
    "dots1",
    "dots3note",
    "arcee",
    "afmoe",
    "laguna",
    "ernie4_5",
    "ernie4_5-moe",
    "hunyuan-moe",
    "hunyuan-dense",
    "hunyuan_vl",
    "hy_v3",
    "hy_v4",
    "smollm3",
    "gpt-oss",
    "lfm2",
    "lfm2moe",
    "dream",
    "smallthinker",
    "llada",
    "llada-moe",
    "seed_oss",
    "grovemoe",
    "apertus",
    "minimax-01",
    "hrm_text",
    "minimax-m2",
    "minimax-m3",
    "cogvlm",
    "rnd1",
    "pangu-embedded",
    "mistral3",
    "eagle3",
    "dflash",
    "mistral4",
    "paddleocr",
    "mimo2",
    "step35",
    "spark2_5",
    "llama-embed",
    "maincoder",
    "kimi-linear",
    "kimi-k3",
    "glm5-next",
    "talkie",
    "mellum",
    "nanbeige",
    "qwen3tts",
    "pockettts",
];

/// Refuses the metadata llama.cpp would refuse to load: no
/// `general.architecture`, an empty or unknown one, `{arch}.block_count`
/// missing, 0 or above [`MAX_LAYERS`], `{arch}.embedding_length` missing
/// or 0. Call it on the header holding the metadata (split shards after
/// the first may have none); `read_header` makes the structural checks.
pub fn check_model_header(h: &Header, path: &std::path::Path) -> Result<(), ModelError> {
    let fail = |what: String| ModelError::Format(format!("{}: {what}", path.display()));
    let key = "general.architecture";
    let arch = match h.kv(key) {
        None => return Err(fail(format!("no {key}: not a model llama.cpp can load"))),
        Some(kv) => kv
            .as_str()
            .ok_or_else(|| fail(format!("{key} is not a string")))?,
    };
    if arch.is_empty() {
        return Err(fail(format!("{key} is empty")));
    }
    if !KNOWN_ARCHITECTURES.contains(&arch) {
        return Err(fail(format!("{key} '{arch}' is unknown to llama.cpp")));
    }
    if arch == "clip" {
        return Ok(()); // a projector: its keys are clip.vision.*, clip.audio.*
    }
    let get = |suffix: &str| {
        let k = format!("{arch}.{suffix}");
        let v = h.kv(&k).map(|kv| kv.as_u64());
        (k, v)
    };
    match get("block_count") {
        (_, Some(Some(n))) if (1..=MAX_LAYERS).contains(&n) => {}
        (k, Some(Some(n))) => {
            return Err(fail(format!("{k} is {n} (1..{MAX_LAYERS} allowed)")));
        }
        (k, Some(None)) => return Err(fail(format!("{k} is not an unsigned integer"))),
        (k, None) => return Err(fail(format!("no {k}"))),
    }
    match get("embedding_length") {
        (_, Some(Some(n))) if n > 0 => Ok(()),
        (k, Some(Some(_))) => Err(fail(format!("{k} is 0"))),
        (k, Some(None)) => Err(fail(format!("{k} is not an unsigned integer"))),
        (k, None) => Err(fail(format!("no {k}"))),
    }
}
