#!/usr/bin/env sh
# Runs llama.cpp's llama-perplexity (built by scripts/build-llama-tools.sh)
# on each GGUF model given, over a text file (PPL_TEXT; default: the
# documentation of the vendored llama.cpp tree, concatenated), PPL_CTX tokens
# of context (256), PPL_CHUNKS chunks (8), 2 threads. Prints the final
# estimate of each model; fails when a run does not reach its end.
# Usage: scripts/perplexity.sh MODEL.gguf...
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$("$root/scripts/build-llama-tools.sh")
tree=$("$root/scripts/fetch-llama-cpp.sh")
text=${PPL_TEXT:-}
if [ -z "$text" ]; then
    text="$root/.deps/ppl-text.txt"
    [ -f "$text" ] || cat "$tree"/docs/*.md "$tree"/docs/build.md "$tree"/README.md > "$text"
fi
status=0
for m in "$@"; do
    log=$(mktemp)
    if "$bin/llama-perplexity" -m "$m" -f "$text" -c "${PPL_CTX:-256}" --chunks "${PPL_CHUNKS:-8}" -t 2 >"$log" 2>&1 \
        && grep -q "Final estimate" "$log"; then
        echo "$(basename "$m"): $(grep "Final estimate" "$log")"
    else
        echo "$(basename "$m"): llama-perplexity FAILED" >&2
        tail -20 "$log" >&2
        status=1
    fi
    rm -f "$log"
done
exit $status
