#!/usr/bin/env sh
# Does the size planner rank its plans as the model does? Gemma 3 270M F16
# (scripts/gemma3-f16.sh), quantized by ggml-qat-quantize --target-size at
# each size of RANK_SIZES (8 sizes, 170-300 MB), choosing among the types
# eval-kld.sh's planner rows allow, with the importance of a calibration file
# CALIB (made by ggml-qat-calibrate), under two factor sets:
#   - "calibration": --calibration CALIB (its diagonal and its measured
#     planner factors, this model's own);
#   - "default": --imatrix CALIB (the same diagonal) with the built-in
#     factors (measured once on Gemma with llama-perplexity).
# Each without and with --optimize. Per plan: the planner's predicted error
# (the report's plan.chosen_error) and the mean KL divergence measured by
# llama-perplexity --kl-divergence on eval-kld.sh's evaluation text (docs/
# of the llama.cpp tree, which nothing here was calibrated or tuned on),
# RANK_CHUNKS (8) chunks of 512 tokens. Prints the rows and, per factor set
# and search, the Spearman rank correlation of predicted and measured KLD.
# Not part of CI: some 40-60 minutes on 2 cores.
# Usage: scripts/eval-planner.sh CALIB [THREADS]; outputs in target/eval-planner/.
set -eu
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/kld-common.sh"
cd "$root"
calib=$(realpath "$1")
threads=${2:-2}
ctx=512
chunks=${RANK_CHUNKS:-8}
sizes=${RANK_SIZES:-170000000 185000000 200000000 215000000 230000000 250000000 275000000 300000000}
plan_types=${PLAN_TYPES:-Q2_K,Q3_K,IQ4_XS,IQ4_NL,Q4_0,Q8_0}
plan_embd_types=${PLAN_EMBD_TYPES:-Q4_0,Q4_1,IQ4_NL,Q5_0,Q5_1,Q8_0}
bin=$(scripts/build-llama-tools.sh)
tree=$(scripts/fetch-llama-cpp.sh)
cargo build -j "$jobs" --release --bin ggml-qat-quantize >&2
tool="$root/target/release/ggml-qat-quantize"
f16=$(scripts/gemma3-f16.sh "$tool")
work="$root/target/eval-planner"
mkdir -p "$work"
evalt="$work/evaluation.txt"
# shellcheck disable=SC2046
cat $(ls "$tree"/docs/*.md "$tree"/docs/*/*.md | sort) > "$evalt"
base="$work/f16-$ctx-$chunks.kld"
kld_base "$f16" "$evalt" "$base" "$work/base.log"

rows="$work/rows.tsv"
printf 'search\tfactors\ttarget\tbytes\tpredicted\tkld\n' > "$rows"
for search in plain optimize; do
    [ $search = optimize ] && sopt="--optimize" || sopt=""
    for fac in calibration default; do
        [ $fac = calibration ] && fopt="--calibration $calib" || fopt="--imatrix $calib"
        for size in $sizes; do
            name="$search-$fac-$size"
            out="$work/$name.gguf"
            # shellcheck disable=SC2086
            "$tool" -q $sopt $fopt --target-size "$size" \
                --plan-types "token_embd=$plan_embd_types" --plan-types "$plan_types" \
                --report "$work/$name.json" "$f16" "$out" Q4_0 "$threads" > "$work/$name.txt" 2>&1
            kld_run "$out" "$evalt" "$base" "$work/$name.log"
            pred=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["plan"]["chosen_error"])' "$work/$name.json")
            k=$(awk '/^Mean +KLD:/ {print $3; exit}' "$work/$name.log")
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' $search $fac "$size" "$(stat -c %s "$out")" "$pred" "$k" | tee -a "$rows"
            rm -f "$out"
        done
    done
done

python3 - "$rows" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]

def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r

def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb)

print("\n| search | factors | plans | Spearman(predicted, measured KLD) | KLD at the smallest / largest size |")
print("|---|---|---|---|---|")
for s in ("plain", "optimize"):
    for f in ("calibration", "default"):
        sel = [r for r in rows if r[0] == s and r[1] == f]
        if len(sel) < 2:
            continue
        p, k = [float(r[4]) for r in sel], [float(r[5]) for r in sel]
        print(f"| {s} | {f} | {len(sel)} | {spearman(p, k):.3f} | {k[0]:.4f} / {k[-1]:.4f} |")
PY
