#!/usr/bin/env sh
# Installs the prebuilt ggml of the PyPI wheel libggml-python (headers, shared
# libraries and a CMake package) into a project-local folder, once.
# Usage: scripts/install-ggml-wheel.sh DEST   (DEST/libggml/{include,lib64})
# Prints the prefix (DEST/libggml) on success.
set -eu
dest=${1:?usage: install-ggml-wheel.sh DEST}
version=0.20.2.post1
prefix="$dest/libggml"
if [ -f "$prefix/lib64/cmake/ggml/ggml-config.cmake" ] && [ -f "$dest/.version-$version" ]; then
    echo "$prefix"
    exit 0
fi
python=$(command -v python3 || command -v python) || {
    echo "install-ggml-wheel: python3 with pip is needed to fetch ggml (or point ggml_DIR at your ggml)" >&2
    exit 1
}
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$(dirname "$dest")/.ggml-wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$tmp" "libggml-python==$version" >&2
touch "$tmp/.version-$version"
# Another build may have finished first: keep whichever landed.
if [ ! -f "$dest/.version-$version" ]; then
    rm -rf "$dest"
    mv "$tmp" "$dest" 2>/dev/null || true
fi
echo "$prefix"
