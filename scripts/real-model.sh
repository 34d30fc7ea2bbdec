#!/usr/bin/env sh
# The real-model check (not in the default test run; a few minutes): Gemma 3
# 270M from PyPI, its F16 copy made by ggml-qat-quantize, then F16 -> Q4_K_M,
# Q8_0 and Q4_0 with ggml-qat-quantize and with llama.cpp's llama-quantize
# (built once into .deps/ by build-llama-tools.sh): file sizes side by side,
# every tensor compared with the gguf Python package (compare-gguf.py), and
# the whole files compared byte for byte (llama-quantize's header comes from
# ggml's gguf code), and each of our outputs run in llama-perplexity to the end.
# Usage: scripts/real-model.sh [THREADS]
set -eu
. "$(dirname "$0")/env.sh"
cd "$root"
threads=${1:-2}
bin=$(scripts/build-llama-tools.sh)
cargo build -j "$jobs" --release --bin ggml-qat-quantize >&2
tool="$root/target/release/ggml-qat-quantize"
work="$root/target/real-model"
mkdir -p "$work"
f16=$(scripts/gemma3-f16.sh "$tool")
status=0
for t in Q4_K_M Q8_0 Q4_0; do
    ours="$work/gemma-3-270m-$t.ggml-qat.gguf"
    theirs="$work/gemma-3-270m-$t.llama.gguf"
    "$tool" -q "$f16" "$ours" "$t" "$threads" | tail -3
    "$bin/llama-quantize" "$f16" "$theirs" "$t" "$threads" >/dev/null 2>&1
    a=$(stat -c %s "$ours"); b=$(stat -c %s "$theirs")
    echo "$t: ggml-qat-quantize $a bytes, llama-quantize $b bytes"
    python3 scripts/compare-gguf.py "$ours" "$theirs" --ignore-kv || status=1
    # llama-quantize writes its header with ggml's gguf code; Gemma's tensor
    # order (layer, then name) is the input's, so the whole files are equal:
    # a difference fails the check.
    if cmp "$ours" "$theirs"; then echo "$t: whole files byte-identical"; else echo "$t: FILES DIFFER"; status=1; fi
    scripts/perplexity.sh "$ours" || status=1
    rm -f "$theirs"
done
exit $status
