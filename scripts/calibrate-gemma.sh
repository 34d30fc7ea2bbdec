#!/usr/bin/env sh
# The calibrator on the real Gemma 3 270M (F16 reference from
# scripts/gemma3-f16.sh): 10k self-generated tokens under /usr/bin/time -v
# (time, peak RSS), llama-quantize --imatrix on the result, and the sums
# against llama-imatrix on 4 chunks of the same text. Not part of CI.
# Usage: scripts/calibrate-gemma.sh TOOL   (TOOL: a ggml-qat-quantize binary,
# used once to make the F16 copy). Outputs in target/calibrate-gemma/.
set -eu
. "$(dirname "$0")/env.sh"
f16=$("$root/scripts/gemma3-f16.sh" "$1")
bin=$("$root/scripts/build-llama-tools.sh")
export PYTHONPATH=$("$root/scripts/fetch-gguf-py.sh")
cargo build --release -j "$jobs" --manifest-path "$root/calibrate/Cargo.toml" >&2
cal="$root/calibrate/target/release/ggml-qat-calibrate"
out="$root/target/calibrate-gemma"
mkdir -p "$out"
/usr/bin/time -v "$cal" "$f16" -t 2 -o "$out/calib.gguf" --save-text "$out/text.txt" 2>"$out/time.txt"
grep -E "Elapsed|Maximum resident" "$out/time.txt"
"$bin/llama-quantize" --imatrix "$out/calib.gguf" "$f16" "$out/q4_k_m.gguf" Q4_K_M 2 2>&1 \
    | grep -E "load_imatrix|quant size"
rm -f "$out/q4_k_m.gguf"
"$cal" "$f16" -q -f "$out/text.txt" --tokens 2048 -c 512 -t 2 --gram-max 0 -o "$out/ours4.gguf"
OMP_WAIT_POLICY=passive "$bin/llama-imatrix" -m "$f16" -f "$out/text.txt" -c 512 -b 128 -ub 128 \
    --chunks 4 --no-ppl -t 2 -o "$out/imatrix4.gguf" >"$out/imatrix.log" 2>&1
python3 "$root/calibrate/tests/check_calib.py" imatrix "$out/ours4.gguf" "$out/imatrix4.gguf" 1e-4
python3 "$root/calibrate/tests/check_calib.py" layout "$out/calib.gguf"
