#!/usr/bin/env sh
# Builds llama.cpp's llama-quantize, llama-perplexity and llama-imatrix, and the
# static libllama and ggml libraries that ggml-qat-calibrate (calibrate/) links,
# once into .deps/llama.cpp-build/ from the tree vendored in the
# llama-cpp-python sdist (scripts/fetch-llama-cpp.sh). Only these targets, no
# curl, no tests or examples, -j2. Prints the bin/ folder. Never committed.
set -eu
. "$(dirname "$0")/env.sh"
tree=$("$root/scripts/fetch-llama-cpp.sh")
build="$root/.deps/llama.cpp-build"
if [ -x "$build/bin/llama-quantize" ] && [ -x "$build/bin/llama-perplexity" ] \
    && [ -x "$build/bin/llama-imatrix" ] && [ -f "$build/src/libllama.a" ]; then
    echo "$build/bin"
    exit 0
fi
cmake -S "$tree" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$build" -j "$jobs" --target llama llama-quantize llama-perplexity llama-imatrix >&2
echo "$build/bin"
