"""Writes a tiny BERT-architecture GGUF (an embedding model: no language-model
head) with random weights for the calibrator's tests: 3 blocks, n_embd 64,
4 heads, 128 positions, a WordPiece ("bert") vocabulary of 5 specials
([PAD] [UNK] [CLS] [SEP] [MASK]) and a few words and letters, with the keys
llama.cpp's `bert` loader reads (non-causal attention, token type count,
pooling type) and the tensors it needs (token, type and position
embeddings, their norm, per block q/k/v/output with biases, the two layer
norms, the feed-forward up/down with biases).

With --round-trip ROLE, every block's ROLE weight (attn_v, ffn_up, …) is
written as its round trip through Q4_0 (gguf-py's reference quantizer and
dequantizer), F32: the model the calibrator's probe of that role makes in
memory, for an independent check of its figure.

Usage: python3 tiny_bert.py OUT.gguf [--pooling mean|cls|none|rank] [--seed S]
       [--round-trip ROLE]
(needs the gguf and numpy packages: scripts/fetch-gguf-py.sh)."""

import argparse

import numpy as np
import gguf

EMBD, HEADS, FF, LAYERS, CTX = 64, 4, 128, 3, 128
WORDS = ["the", "a", "of", "and", "to", "in", "is", "model", "weight", "token",
         "quant", "layer", "text", "run", "data", "bit", "small", "random",
         "values", "matrix"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POOLING = {"none": gguf.PoolingType.NONE, "mean": gguf.PoolingType.MEAN,
           "cls": gguf.PoolingType.CLS, "rank": gguf.PoolingType.RANK}


def vocab():
    """WordPiece pieces in llama.cpp's phantom-space form: "\u2581w" starts a
    word, "w" continues one (as convert_hf_to_gguf.py writes BERT vocabs)."""
    tokens = list(SPECIALS)
    types = [gguf.TokenType.CONTROL] * len(SPECIALS)
    types[1] = gguf.TokenType.UNKNOWN
    for w in WORDS:
        tokens.append("\u2581" + w)
        types.append(gguf.TokenType.NORMAL)
    for c in "abcdefghijklmnopqrstuvwxyz.,":
        for piece in ("\u2581" + c, c):
            if piece in tokens:
                continue
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--pooling", choices=sorted(POOLING), default="mean")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--round-trip", default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    tokens, types = vocab()
    w = gguf.GGUFWriter(a.out, "bert")
    w.add_context_length(CTX)
    w.add_embedding_length(EMBD)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(POOLING[a.pooling])
    w.add_token_type_count(2)
    w.add_tokenizer_model("bert")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_pad_token_id(0)
    w.add_unk_token_id(1)
    w.add_bos_token_id(2)
    w.add_sep_token_id(3)
    w.add_mask_token_id(4)
    w.add_add_bos_token(True)
    w.add_add_sep_token(True)

    def t(name, *shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        if a.round_trip and name.startswith("blk.") and name.endswith(f".{a.round_trip}.weight"):
            q4 = gguf.GGMLQuantizationType.Q4_0
            x = gguf.quants.dequantize(gguf.quants.quantize(x, q4), q4).astype(np.float32)
        w.add_tensor(name, x)

    def norm(name):
        w.add_tensor(name + ".weight", (1 + 0.1 * rng.standard_normal(EMBD)).astype(np.float32))
        w.add_tensor(name + ".bias", (0.1 * rng.standard_normal(EMBD)).astype(np.float32))

    t("token_embd.weight", len(tokens), EMBD, scale=1.0)
    t("token_types.weight", 2, EMBD, scale=0.1)
    t("position_embd.weight", CTX, EMBD, scale=0.1)
    norm("token_embd_norm")
    for i in range(LAYERS):
        p = f"blk.{i}."
        for name, rows in (("attn_q", EMBD), ("attn_k", EMBD), ("attn_v", EMBD),
                           ("attn_output", EMBD), ("ffn_up", FF)):
            t(p + name + ".weight", rows, EMBD)
            t(p + name + ".bias", rows, scale=0.1)
        t(p + "ffn_down.weight", EMBD, FF)
        t(p + "ffn_down.bias", EMBD, scale=0.1)
        norm(p + "attn_output_norm")
        norm(p + "layer_output_norm")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
