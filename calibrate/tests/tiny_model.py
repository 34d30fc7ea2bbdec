"""Writes a tiny llama-architecture GGUF with random weights for the
calibrator's tests: 2 blocks, n_embd 64, 4 heads (2 KV heads), an SPM
("llama") vocabulary of 3 specials, the 256 byte tokens and a few words.
With --experts E, the feed-forward is a mixture of E experts (2 used), so
MUL_MAT_ID is exercised.

Usage: python3 tiny_model.py OUT.gguf [--experts E] [--seed S] [--layers N]
(needs the gguf and numpy packages: scripts/fetch-gguf-py.sh)."""

import argparse

import numpy as np
import gguf

EMBD, HEADS, HEADS_KV, FF, LAYERS, CTX = 64, 4, 2, 128, 2, 512
WORDS = ["the", "a", "of", "and", "to", "in", "is", "model", "weight", "token",
         "quant", "layer", "text", "run", "data", "bit"]


def vocab():
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
    for w in WORDS:
        for piece in ("\u2581" + w, w):
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
    for c in "bcdefghijklmnopqrstuvwxyz.,":
        tokens.append(c)
        types.append(gguf.TokenType.NORMAL)
    tokens.append("\u2581")
    types.append(gguf.TokenType.NORMAL)
    scores = [0.0] * 259 + [float(len(t)) for t in tokens[259:]]
    return tokens, scores, types


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--experts", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--duplicate-token", action="store_true",
                    help="a vocabulary llama.cpp refuses (asserts on)")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    tokens, scores, types = vocab()
    if a.duplicate_token:
        tokens[-1] = tokens[-2]
    w = gguf.GGUFWriter(a.out, "llama")
    w.add_context_length(CTX)
    w.add_embedding_length(EMBD)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS_KV)
    w.add_rope_dimension_count(EMBD // HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    if a.experts:
        w.add_expert_count(a.experts)
        w.add_expert_used_count(2)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)

    def t(name, *shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    t("token_embd.weight", len(tokens), EMBD, scale=1.0)
    w.add_tensor("output_norm.weight", np.ones(EMBD, dtype=np.float32))
    t("output.weight", len(tokens), EMBD)
    hd = EMBD // HEADS
    for i in range(a.layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(EMBD)).astype(np.float32))
        t(p + "attn_q.weight", EMBD, EMBD)
        t(p + "attn_k.weight", HEADS_KV * hd, EMBD)
        t(p + "attn_v.weight", HEADS_KV * hd, EMBD)
        t(p + "attn_output.weight", EMBD, EMBD)
        w.add_tensor(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(EMBD)).astype(np.float32))
        if a.experts:
            t(p + "ffn_gate_inp.weight", a.experts, EMBD)
            t(p + "ffn_gate_exps.weight", a.experts, FF, EMBD)
            t(p + "ffn_up_exps.weight", a.experts, FF, EMBD)
            t(p + "ffn_down_exps.weight", a.experts, EMBD, FF)
        else:
            t(p + "ffn_gate.weight", FF, EMBD)
            t(p + "ffn_up.weight", FF, EMBD)
            t(p + "ffn_down.weight", EMBD, FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
