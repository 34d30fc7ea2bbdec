#!/usr/bin/env sh
# Model quality as llama.cpp measures it (not in the default test run; a few
# minutes on 2 cores): Gemma 3 270M against its F16 reference, llama-quantize's
# outputs and ggml-qat-quantize's side by side.
#
# - llama-quantize, llama-perplexity and llama-imatrix are built once into
#   .deps/ (scripts/build-llama-tools.sh); the model comes from
#   scripts/fetch-gemma3.sh and its F16 copy is made by ggml-qat-quantize
#   (scripts/gemma3-f16.sh).
# - Texts: both from the llama.cpp tree vendored in the PyPI sdist
#   llama-cpp-python 0.3.36 (scripts/fetch-llama-cpp.sh), disjoint files:
#   calibration (for llama-imatrix) = tools/*/README.md, evaluation =
#   docs/*.md and docs/*/*.md, each concatenated in name order.
# - llama-perplexity --kl-divergence-base on the F16 model over the evaluation
#   text (EVAL_CTX tokens of context, 512; EVAL_CHUNKS chunks, 24), then
#   --kl-divergence for each quantized file; llama-imatrix on the calibration
#   text (EVAL_CTX, IMATRIX_CHUNKS chunks, 24).
# - For each type of EVAL_TYPES ("Q4_0 Q4_K_M"), without and with the
#   imatrix: llama-quantize's file and ggml-qat-quantize's; when every tensor
#   is byte-identical (compare-gguf.py; llama-quantize adds imatrix key/values
#   to the header) the second KLD run is skipped (same figures). For each
#   type of EVAL_OPT_TYPES ("Q4_0"): ggml-qat-quantize --optimize data-free
#   (the default plain weight-space objective; and --norm-importance, columns
#   weighted by the RMS norms' squared weights) and with the same imatrix.
# - For each preset of EVAL_PRESETS ("Q3_K_S Q3_K_M Q2_K IQ4_NL IQ4_XS"):
#   llama-quantize's file only, without and with the imatrix (the sizes at
#   or below Q4_0's that the planner must beat).
# - The size planner (EVAL_PLAN=1): ggml-qat-quantize --target-size = the
#   size of llama-quantize's Q4_0 file, preset Q4_0, --optimize, without and
#   with the imatrix, choosing among PLAN_TYPES ("Q2_K,Q3_K,IQ4_XS,IQ4_NL,
#   Q4_0,Q8_0"; token_embd among PLAN_EMBD_TYPES, "Q4_0,Q4_1,IQ4_NL,Q5_0,
#   Q5_1,Q8_0"). The reference model is Gemma 3 270M Q4_K_M dequantized:
#   requantizing a tensor to the grid it came from (Q5_0 for attn_q/k/v and
#   ffn_gate/up, Q4_K/Q6_K for attn_output and ffn_down, and Q4_1, whose
#   affine 32-blocks hold a Q4_K grid) is nearly lossless, so those types
#   are left out of PLAN_TYPES for the blocks; Q8_0 stays (the presets keep
#   token_embd, Q8_0 in the origin, at Q8_0 too), and token_embd may take
#   any 32-block type (none is its origin's grid but Q8_0). Then the same
#   for each size of PLAN_SIZES ("200000000": below every preset's size, so
#   the blocks cannot all stay at Q8_0). Each plan with each factor set of
#   PLAN_FACTORS ("measured uniform"): the default factors (measured on
#   Gemma by measure-roles.sh) and uniform ones (every role and depth 1), so
#   the table shows what the measured factors are worth. PLAN_AT_Q4_0=0
#   leaves out the plans at Q4_0's size.
# - The calibrator (EVAL_CALIB=1): ggml-qat-calibrate on the F16 model with
#   its defaults (10240 self-generated tokens, no text: data-free; made once,
#   target/eval-kld/calib-self.gguf) and ggml-qat-calibrate on the
#   calibration text (IMATRIX_CHUNKS chunks, as llama-imatrix above), then
#   ggml-qat-quantize --optimize --calibration with each (its Gram matrices:
#   the Gram quantizer) for each of EVAL_CALIB_TYPES ("Q4_0 Q3_K_M
#   IQ4_XS"); the size planner with the data-free file and --optimize at
#   each size of CALIB_PLAN_SIZES ("170000000": -69% of the F16 file; the
#   planner rows' types); and the calibration-text file read by
#   llama-quantize --imatrix for Q4_0. The planner's ranking with a
#   calibration file's factors: scripts/eval-planner.sh.
# Prints one table: file size, bits per weight, mean KLD, same-top-token %,
# PPL(Q)/PPL(F16); bits per weight = 8 x tensor data bytes / weights. Work
# files in target/eval-kld/ (the KLD base is ~3.2 GB).
# Usage: scripts/eval-kld.sh [THREADS]
set -eu
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/kld-common.sh"
cd "$root"
threads=${1:-2}
ctx=${EVAL_CTX:-512}
chunks=${EVAL_CHUNKS:-24}
im_chunks=${IMATRIX_CHUNKS:-24}
types=${EVAL_TYPES-Q4_0 Q4_K_M}
opt_types=${EVAL_OPT_TYPES-Q4_0}
presets=${EVAL_PRESETS-Q3_K_S Q3_K_M Q2_K IQ4_NL IQ4_XS}
plan=${EVAL_PLAN:-1}
plan_types=${PLAN_TYPES:-Q2_K,Q3_K,IQ4_XS,IQ4_NL,Q4_0,Q8_0}
plan_embd_types=${PLAN_EMBD_TYPES:-Q4_0,Q4_1,IQ4_NL,Q5_0,Q5_1,Q8_0}
plan_sizes=${PLAN_SIZES-200000000}
plan_factors=${PLAN_FACTORS-measured uniform}
plan_at_q4_0=${PLAN_AT_Q4_0:-1}
calib_rows=${EVAL_CALIB:-1}
calib_types=${EVAL_CALIB_TYPES-Q4_0 Q3_K_M IQ4_XS}
calib_plan_sizes=${CALIB_PLAN_SIZES-170000000}
bin=$(scripts/build-llama-tools.sh)
tree=$(scripts/fetch-llama-cpp.sh)
cargo build -j "$jobs" --release --bin ggml-qat-quantize >&2
tool="$root/target/release/ggml-qat-quantize"
work="$root/target/eval-kld"
mkdir -p "$work"
f16=$(scripts/gemma3-f16.sh "$tool")

calib="$work/calibration.txt"
evalt="$work/evaluation.txt"
# shellcheck disable=SC2046
cat $(ls "$tree"/tools/*/README.md | sort) > "$calib"
# shellcheck disable=SC2046
cat $(ls "$tree"/docs/*.md "$tree"/docs/*/*.md | sort) > "$evalt"
echo "texts (llama-cpp-python 0.3.36 sdist): calibration tools/*/README.md $(wc -c < "$calib") bytes," \
    "evaluation docs/**.md $(wc -c < "$evalt") bytes" >&2

base="$work/f16-$ctx-$chunks.kld"
kld_base "$f16" "$evalt" "$base" "$work/base.log"
imatrix="$work/imatrix-$ctx-$im_chunks.gguf"
if [ ! -f "$imatrix" ]; then
    "$bin/llama-imatrix" -m "$f16" -f "$calib" -c "$ctx" --chunks "$im_chunks" -t "$threads" \
        -o "$imatrix" > "$work/imatrix.log" 2>&1 || {
        tail -20 "$work/imatrix.log" >&2
        exit 1
    }
fi

# bpw FILE: 8 x tensor data bytes / weights.
bpw() {
    PYTHONPATH="$root/.deps/python" python3 -c '
import sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
print("%.3f" % (8 * sum(int(t.n_bytes) for t in r.tensors) / sum(int(t.n_elements) for t in r.tensors)))
' "$1"
}
# kld NAME FILE: one table row from llama-perplexity --kl-divergence.
rows="$work/rows.txt"
: > "$rows"
kld() {
    log="$work/$1.log"
    kld_run "$2" "$evalt" "$base" "$log"
    fbytes=$(stat -c %s "$2")
    bpw=$(bpw "$2")
    k=$(awk '/^Mean +KLD:/ {print $3; exit}' "$log")
    top=$(awk '/^Same top p:/ {print $4; exit}' "$log")
    ratio=$(awk '/^Mean PPL\(Q\)\/PPL\(base\)/ {print $4; exit}' "$log")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$fbytes" "$bpw" "$k" "$top" "$ratio" >> "$rows"
}
same() { # NAME AS FILE: the KLD figures of AS (same tensor bytes), FILE's size
    awk -F'\t' -v n="$1" -v a="$2" -v s="$(stat -c %s "$3")" -v b="$(bpw "$3")" \
        '$1 == a {OFS="\t"; $1 = n " (tensors identical)"; $2 = s; $3 = b; print}' "$rows" > "$rows.new"
    cat "$rows.new" >> "$rows"
    rm -f "$rows.new"
}

for t in $types; do
    for im in none imatrix; do
        if [ $im = none ]; then lopt=""; oopt=""; sfx=""; else
            lopt="--imatrix $imatrix"; oopt="--imatrix $imatrix"; sfx=" +imatrix"; fi
        theirs="$work/$t-$im.llama.gguf"
        ours="$work/$t-$im.ggml-qat.gguf"
        # shellcheck disable=SC2086
        "$bin/llama-quantize" $lopt "$f16" "$theirs" "$t" "$threads" > "$work/lq-$t-$im.log" 2>&1
        # shellcheck disable=SC2086
        "$tool" -q $oopt "$f16" "$ours" "$t" "$threads" > /dev/null
        kld "llama-quantize $t$sfx" "$theirs"
        if python3 scripts/compare-gguf.py "$ours" "$theirs" --ignore-kv \
            general.file_type general.quantization_version quantize.imatrix.file \
            quantize.imatrix.dataset quantize.imatrix.entries_count \
            quantize.imatrix.chunks_count > "$work/cmp.log" 2>&1; then
            same "ggml-qat-quantize $t$sfx" "llama-quantize $t$sfx" "$ours"
        else
            kld "ggml-qat-quantize $t$sfx" "$ours"
        fi
        [ "$t" = Q4_0 ] && [ $im = none ] && q4_0_size=$(stat -c %s "$theirs")
        rm -f "$theirs"
    done
done
for t in $presets; do
    for im in none imatrix; do
        if [ $im = none ]; then lopt=""; sfx=""; else lopt="--imatrix $imatrix"; sfx=" +imatrix"; fi
        theirs="$work/$t-$im.llama.gguf"
        # shellcheck disable=SC2086
        "$bin/llama-quantize" $lopt "$f16" "$theirs" "$t" "$threads" > "$work/lq-$t-$im.log" 2>&1
        kld "llama-quantize $t$sfx" "$theirs"
        rm -f "$theirs"
    done
done
if [ "$plan" = 1 ]; then
    if [ -z "${q4_0_size:-}" ]; then
        "$bin/llama-quantize" "$f16" "$work/q4_0-size.gguf" Q4_0 "$threads" > /dev/null 2>&1
        q4_0_size=$(stat -c %s "$work/q4_0-size.gguf")
        rm -f "$work/q4_0-size.gguf"
    fi
    uniform="$work/uniform-factors.txt"
    printf 'token_embd 1\noutput 1\nattn_q 1\nattn_k 1\nattn_v 1\nattn_qkv 1\nattn_kv_b 1\nattn_output 1\nffn_gate 1\nffn_up 1\nffn_down 1\nother 1\ndepth 1 1 1\n' > "$uniform"
    [ "$plan_at_q4_0" = 1 ] || q4_0_size=""
    for tsize in $q4_0_size $plan_sizes; do
        for fac in $plan_factors; do
            if [ "$fac" = uniform ]; then fopt="--plan-factors $uniform"; fsfx=" (uniform factors)"; else fopt=""; fsfx=""; fi
            for im in none imatrix; do
                if [ $im = none ]; then oopt=""; sfx=""; else oopt="--imatrix $imatrix"; sfx=" +imatrix"; fi
                ours="$work/plan-$tsize-$fac-$im.ggml-qat.gguf"
                # shellcheck disable=SC2086
                "$tool" -q --optimize --target-size "$tsize" $fopt \
                    --plan-types "token_embd=$plan_embd_types" --plan-types "$plan_types" \
                    --report "$work/plan-$tsize-$fac-$im.json" $oopt "$f16" "$ours" Q4_0 "$threads" \
                    > "$work/plan-$tsize-$fac-$im.txt" 2>&1
                sed -n '/^plan (/,/measured on/p' "$work/plan-$tsize-$fac-$im.txt" >&2
                kld "ggml-qat-quantize --target-size $tsize Q4_0 --optimize$sfx$fsfx" "$ours"
                rm -f "$ours"
            done
        done
    done
fi
for t in $opt_types; do
    # data-free without and with the norms' column weights, then the imatrix
    for v in plain norm imatrix; do
        case $v in
            plain) oopt=""; sfx=" (weight-space objective)" ;;
            norm) oopt="--norm-importance"; sfx=" (norm-weighted objective)" ;;
            imatrix) oopt="--imatrix $imatrix"; sfx=" +imatrix" ;;
        esac
        ours="$work/$t-$v-opt.ggml-qat.gguf"
        # shellcheck disable=SC2086
        "$tool" -q --optimize --report "$work/$t-$v-opt.json" $oopt "$f16" "$ours" "$t" "$threads" 2>/dev/null \
            | sed -n "s/^optimize:/$t $v --optimize:/p" >&2
        kld "ggml-qat-quantize --optimize $t$sfx" "$ours"
    done
done

if [ "$calib_rows" = 1 ]; then
    # The calibrator's rows: data-free (its file from the model's own samples,
    # no text anywhere) with --optimize; and llama-quantize reading its file
    # made from the calibration text (beside llama-imatrix's, above).
    cargo build -j "$jobs" --release --manifest-path calibrate/Cargo.toml >&2
    cal="$root/calibrate/target/release/ggml-qat-calibrate"
    self="$work/calib-self.gguf"
    [ -f "$self" ] || "$cal" "$f16" -q -t "$threads" -o "$self"
    ctext="$work/calib-text-$ctx-$im_chunks.gguf"
    [ -f "$ctext" ] || "$cal" "$f16" -q -t "$threads" -f "$calib" --tokens $((ctx * im_chunks)) \
        -c "$ctx" --no-sensitivity -o "$ctext"
    for t in $calib_types; do
        ours="$work/$t-calib-self-opt.ggml-qat.gguf"
        "$tool" -q --optimize --calibration "$self" "$f16" "$ours" "$t" "$threads" > /dev/null
        kld "ggml-qat-quantize --optimize $t --calibration (self-generated: no text)" "$ours"
        rm -f "$ours"
        ours="$work/$t-calib-text-opt.ggml-qat.gguf"
        "$tool" -q --optimize --calibration "$ctext" "$f16" "$ours" "$t" "$threads" > /dev/null
        kld "ggml-qat-quantize --optimize $t --calibration (the calibration text)" "$ours"
        rm -f "$ours"
    done
    for tsize in $calib_plan_sizes; do
        ours="$work/plan-$tsize-calib-self.ggml-qat.gguf"
        "$tool" -q --optimize --calibration "$self" --target-size "$tsize" \
            --plan-types "token_embd=$plan_embd_types" --plan-types "$plan_types" \
            "$f16" "$ours" Q4_0 "$threads" > /dev/null
        kld "ggml-qat-quantize --target-size $tsize Q4_0 --optimize --calibration (self-generated: no text)" "$ours"
        rm -f "$ours"
    done
    theirs="$work/Q4_0-ourcalib.llama.gguf"
    "$bin/llama-quantize" --imatrix "$ctext" "$f16" "$theirs" Q4_0 "$threads" > "$work/lq-Q4_0-ourcalib.log" 2>&1
    kld "llama-quantize Q4_0 --imatrix (ggml-qat-calibrate's file from the calibration text)" "$theirs"
    rm -f "$theirs"
fi

ntok=$(sed -n 's/.*calculating perplexity over \([0-9]*\) chunks, n_ctx=\([0-9]*\).*/\1 chunks of \2 tokens/p' "$work/base.log" | head -1)
echo
echo "Gemma 3 270M vs its F16 reference; evaluation text: $ntok (second half of each scored); imatrix: $im_chunks chunks of $ctx tokens of the calibration text"
echo
echo "| model | file bytes | bpw | mean KLD | same top % | PPL(Q)/PPL(F16) |"
echo "|---|---|---|---|---|---|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$rows"
