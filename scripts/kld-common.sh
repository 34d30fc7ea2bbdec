# shellcheck shell=sh disable=SC2154
# Sourced by eval-kld.sh and measure-roles.sh: llama-perplexity's KL
# divergence runs. Needs $bin (llama.cpp's tools), $ctx, $chunks, $threads.

# kld_base MODEL TEXT BASE LOG: the reference logits of MODEL over TEXT into
# BASE (kept; made once).
kld_base() {
    [ -f "$3" ] && return 0
    "$bin/llama-perplexity" -m "$1" -f "$2" -c "$ctx" --chunks "$chunks" -t "$threads" \
        --kl-divergence-base "$3.part" > "$4" 2>&1 || {
        tail -20 "$4" >&2
        exit 1
    }
    mv "$3.part" "$3"
}

# kld_run MODEL TEXT BASE LOG: MODEL's KL divergence against BASE, in LOG.
kld_run() {
    "$bin/llama-perplexity" -m "$1" -f "$2" -c "$ctx" --chunks "$chunks" -t "$threads" \
        --kl-divergence-base "$3" --kl-divergence > "$4" 2>&1 || {
        tail -20 "$4" >&2
        exit 1
    }
}
