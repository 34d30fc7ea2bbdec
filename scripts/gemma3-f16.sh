#!/usr/bin/env sh
# The F16 copy of Gemma 3 270M (its Q4_K_M download, scripts/fetch-gemma3.sh),
# made once in target/gemma3/ by llama.cpp's llama-quantize (built by
# scripts/build-llama-tools.sh) and cross-checked: ggml-qat-quantize's own
# F16 of the same download must be byte-identical, else the script fails.
# The reference of eval-kld.sh, measure-roles.sh and real-model.sh.
# Usage: scripts/gemma3-f16.sh TOOL   (TOOL: a ggml-qat-quantize binary;
# prints the path of the F16 .gguf)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
tool=$1
q4=$("$root/scripts/fetch-gemma3.sh")
dir="$root/target/gemma3"
f16="$dir/gemma-3-270m-f16.gguf"
if [ ! -f "$f16" ]; then
    mkdir -p "$dir"
    bin=$("$root/scripts/build-llama-tools.sh")
    "$bin/llama-quantize" --allow-requantize "$q4" "$f16.llama" F16 >/dev/null 2>&1
    "$tool" -q --allow-requantize "$q4" "$f16.ours" F16 >&2
    if ! cmp "$f16.llama" "$f16.ours" >&2; then
        echo "gemma3-f16: llama-quantize's F16 and ggml-qat-quantize's differ" >&2
        rm -f "$f16.llama" "$f16.ours"
        exit 1
    fi
    rm -f "$f16.ours"
    mv "$f16.llama" "$f16"
fi
echo "$f16"
