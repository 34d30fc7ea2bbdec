#!/usr/bin/env sh
# Fetches the llama.cpp source tree vendored in the llama-cpp-python sdist
# (PyPI, version below) into .deps/llama.cpp-src/. Never committed.
# It holds a full ggml (ggml/) and llama.cpp's tools (llama-quantize,
# llama-perplexity, llama-imatrix). The sdist's ggml lacks ggml/cmake/
# ggml.pc.in, which ggml's CMakeLists configures: an empty stand-in is written.
# Usage: scripts/fetch-llama-cpp.sh   (prints the path of the llama.cpp tree)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
dest="$root/.deps/llama.cpp-src"
tree="$dest/llama.cpp-$version"
if [ -f "$tree/.complete" ]; then
    echo "$tree"
    exit 0
fi
python=$(command -v python3 || command -v python) || {
    echo "fetch-llama-cpp: python3 with pip is needed" >&2
    exit 1
}
mkdir -p "$dest"
tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# --no-binary for this package only: the build tools come as wheels.
"$python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python -d "$tmp" "llama-cpp-python==$version" >&2
tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
rm -rf "$tree"
mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$tree"
[ -f "$tree/ggml/cmake/ggml.pc.in" ] || : > "$tree/ggml/cmake/ggml.pc.in"
: > "$tree/.complete"
echo "$tree"
