#!/usr/bin/env sh
# The F16 copy of Gemma 3 270M (its Q4_K_M download, scripts/fetch-gemma3.sh,
# dequantized by ggml-qat-quantize), made once in target/gemma3/: the
# reference of eval-kld.sh, measure-roles.sh and real-model.sh.
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
    "$tool" -q --allow-requantize "$q4" "$f16" F16 >&2
fi
echo "$f16"
