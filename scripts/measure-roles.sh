#!/usr/bin/env sh
# How much each tensor role and each depth of Gemma 3 270M contributes to the
# model's mean KL divergence when quantized (not in the default test run;
# ~5 minutes on 2 cores with the defaults). Input for a bit planner.
#
# - Model: the F16 copy of Gemma 3 270M that eval-kld.sh also uses
#   (scripts/gemma3-f16.sh: target/gemma3/gemma-3-270m-f16.gguf, the
#   Q4_K_M download of scripts/fetch-gemma3.sh through ggml-qat-quantize F16).
# - Text: the CALIBRATION text only (tools/*/README.md of the llama.cpp tree in
#   the llama-cpp-python 0.3.36 sdist, scripts/fetch-llama-cpp.sh, in name
#   order), never eval-kld.sh's evaluation text (docs/*.md): a planner tuned on
#   these figures is judged on the evaluation text.
# - KLD base: llama-perplexity on the F16 model, 512 tokens of context,
#   ROLE_CHUNKS chunks (12); then --kl-divergence for each variant.
# - Variants: the F16 model with one group of tensors at ROLE_TYPE (Q4_0),
#   every other tensor F16 (norms stay F32): one role at a time (token_embd,
#   which Gemma ties to the output; attn_q, attn_k, attn_v, attn_output,
#   ffn_gate, ffn_up, ffn_down, all 18 blocks each), one depth third at a time
#   (the 7 block roles of blocks 0-5, 6-11, 12-17), and all 7 block roles
#   together (token_embd F16) to check whether the KLDs add up. Selected with
#   --pure, --tensor-type GROUP=TYPE then --tensor-type .=f16 (first match
#   wins) and --token-embedding-type; each variant's --report JSON is checked:
#   exactly the group's tensors are at TYPE, all others F16/F32.
# - Per variant: tensors and weights quantized, mean NSR (mean over those
#   tensors of rel_rmse^2 = ||w - q(w)||^2 / ||w||^2, from the report), mean
#   KLD and its +/- (llama-perplexity's, over tokens), same top token %, KLD / mean NSR (the group's factor) and KLD per
#   million quantized weights.
# Also writes target/measure-roles/factors.txt, the planner's factors
# (ggml-qat-quantize --plan-factors) as measured.
# Tool: target/release/ggml-qat-quantize built by cargo, or TOOL=/path (no
# build). Work files in target/measure-roles/ (roles.tsv, logs, JSONs; the KLD
# base is ~1.6 GB; each variant's .gguf is deleted after its run).
# Usage: [ROLE_TYPE=Q4_0] [ROLE_CHUNKS=12] [TOOL=...] scripts/measure-roles.sh [THREADS]
set -eu
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/kld-common.sh"
cd "$root"
threads=${1:-2}
ctx=512
chunks=${ROLE_CHUNKS:-12}
type=${ROLE_TYPE:-Q4_0}
# the preset only has to be a quantized one (overrides are ignored under F16):
# every tensor is set by --tensor-type / --token-embedding-type below.
preset=${ROLE_PRESET:-$type}
bin=$(scripts/build-llama-tools.sh)
tree=$(scripts/fetch-llama-cpp.sh)
if [ -n "${TOOL:-}" ]; then
    tool=$TOOL
else
    cargo build -j "$jobs" --release --bin ggml-qat-quantize >&2
    tool="$root/target/release/ggml-qat-quantize"
fi
f16=$(scripts/gemma3-f16.sh "$tool")
work="$root/target/measure-roles"
mkdir -p "$work"
start=$(date +%s)

calib="$work/calibration.txt"
# shellcheck disable=SC2046,SC2012
cat $(ls "$tree"/tools/*/README.md | sort) > "$calib"
echo "text (llama-cpp-python 0.3.36 sdist): calibration tools/*/README.md $(wc -c < "$calib") bytes" >&2

base="$work/f16-calib-$ctx-$chunks.kld"
kld_base "$f16" "$calib" "$base" "$work/base.log"

# stats JSON REGEX TYPE: checks that exactly the 2-D tensors whose names match
# REGEX are at TYPE (all others F16 or F32); prints "tensors weights meanNSR".
stats() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, math, re, sys
path, regex, typ = sys.argv[1], re.compile(sys.argv[2]), sys.argv[3].lower()
ts = json.load(open(path))["tensors"]
want = {t["name"] for t in ts if len(t["shape"]) >= 2 and regex.search(t["name"])}
got = {t["name"] for t in ts if t["chosen_type"].lower() == typ}
other = {t["chosen_type"] for t in ts if t["name"] not in got} - {"f16", "f32"}
if want != got or other or not got:
    sys.exit(f"{path}: wanted {sorted(want)} at {typ}, got {sorted(got)}; other types {other}")
q = [t for t in ts if t["name"] in got]
nsr = [t["rel_rmse"] ** 2 for t in q]
print(len(q), sum(math.prod(t["shape"]) for t in q), "%.6g" % (sum(nsr) / len(nsr)))
PY
}

roles7="attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down"
tsv="$work/roles.tsv"
printf 'variant\ttensors\tweights\tmean_nsr\tmean_kld\tkld_pm\tsame_top_pct\tkld_per_nsr\tkld_per_mweights\n' > "$tsv"
: > "$work/commands.txt"
# variant NAME REGEX: quantizes the 2-D tensors matching REGEX (token_embd
# through --token-embedding-type), writes NAME.json, runs the KLD, adds a row.
variant() {
    name=$1
    regex=$2
    out="$work/$name.gguf"
    if [ "$name" = token_embd ]; then
        set -- --token-embedding-type "$type" --tensor-type ".=f16"
    else
        set -- --token-embedding-type f16 --tensor-type "$regex=$type" --tensor-type ".=f16"
    fi
    {
        printf '%s -q --pure' "$tool"
        printf " '%s'" "$@" --report "$work/$name.json" "$f16" "$out" "$preset" "$threads"
        echo
    } >> "$work/commands.txt"
    "$tool" -q --pure "$@" --report "$work/$name.json" "$f16" "$out" "$preset" "$threads" \
        > "$work/$name.quantize.log" 2>&1 || {
        tail -20 "$work/$name.quantize.log" >&2
        exit 1
    }
    s=$(stats "$work/$name.json" "$regex" "$type")
    log="$work/$name.log"
    kld_run "$out" "$calib" "$base" "$log"
    rm -f "$out"
    k=$(awk '/^Mean +KLD:/ {print $3; exit}' "$log")
    pm=$(awk '/^Mean +KLD:/ {print $5; exit}' "$log")
    top=$(awk '/^Same top p:/ {print $4; exit}' "$log")
    # shellcheck disable=SC2086
    set -- $s
    awk -v n="$name" -v t="$1" -v w="$2" -v e="$3" -v k="$k" -v pm="$pm" -v p="$top" 'BEGIN {
        printf "%s\t%d\t%d\t%.4e\t%.6f\t%s\t%s\t%.2f\t%.6f\n", n, t, w, e, k, pm, p, k / e, k / (w / 1e6) }' >> "$tsv"
    echo "$name: $1 tensors, mean NSR $3, mean KLD $k, same top $top %" >&2
}

variant token_embd '^token_embd\.weight$'
for r in attn_q attn_k attn_v attn_output ffn_gate ffn_up ffn_down; do
    variant "$r" "^blk\\.[0-9]+\\.$r\\.weight\$"
done
variant blk0-5 "^blk\\.[0-5]\\.($roles7)\\.weight\$"
variant blk6-11 "^blk\\.([6-9]|1[01])\\.($roles7)\\.weight\$"
variant blk12-17 "^blk\\.1[2-7]\\.($roles7)\\.weight\$"
variant all-blocks "^blk\\.[0-9]+\\.($roles7)\\.weight\$"
end=$(date +%s)

ntok=$(sed -n 's/.*calculating perplexity over \([0-9]*\) chunks, n_ctx=\([0-9]*\).*/\1 chunks of \2 tokens/p' "$work/base.log" | head -1)
echo
echo "Gemma 3 270M, one group of tensors at $type, the rest F16, vs the F16 model; calibration text: $ntok (second half of each scored); $((end - start)) s"
echo
echo "| variant | tensors | weights | mean NSR | mean KLD | same top % | KLD / mean NSR | KLD per M weights |"
echo "|---|---|---|---|---|---|---|---|"
awk -F'\t' 'NR > 1 {printf "| %s | %s | %s | %s | %s ± %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}' "$tsv"
echo
awk -F'\t' '
    $1 ~ /^(attn_|ffn_)/ {roles += $5}
    $1 ~ /^blk[0-9]/ {thirds += $5}
    $1 == "all-blocks" {all = $5}
    END {printf "additivity: sum of the 7 block-role KLDs %.6f, of the 3 depth thirds %.6f; all 7 roles together (measured) %.6f = %.2f x the role sum\n", roles, thirds, all, all / roles}' "$tsv"
# The factors as ggml-qat-quantize --plan-factors reads them.
factors="$work/factors.txt"
awk -F'\t' -v t="$type" '
    BEGIN {print "# ggml-qat-quantize --plan-factors FILE: KLD per unit NSR by role, KLD by depth third (" t ", scripts/measure-roles.sh)"}
    NR > 1 && $1 !~ /^(blk|all)/ {print $1, $8}
    $1 ~ /^blk[0-9]/ {d = d " " $5}
    END {print "depth" d}' "$tsv" > "$factors"
echo "factors for --plan-factors: $factors" >&2
