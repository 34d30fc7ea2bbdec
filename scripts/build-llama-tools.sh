#!/usr/bin/env sh
# Builds llama.cpp's llama-quantize, llama-perplexity and llama-imatrix, and the
# static libllama and ggml libraries that ggml-qat-calibrate (calibrate/) links,
# once into .deps/llama.cpp-build/ from the tree vendored in the
# llama-cpp-python sdist (scripts/fetch-llama-cpp.sh). Only these targets, no
# curl, no tests or examples, -j2. Prints the bin/ folder. Never committed.
# --lib: only the libraries (libllama and its ggml: what the calibrator
# links; CMake's build runs this when they are missing); the tools are added
# to the same build folder by a later run without --lib.
set -eu
. "$(dirname "$0")/env.sh"
targets="llama llama-quantize llama-perplexity llama-imatrix"
[ "${1:-}" = "--lib" ] && targets="llama"
tree=$("$root/scripts/fetch-llama-cpp.sh")   # also the headers calibrate/ compiles against
build="$root/.deps/llama.cpp-build"
libs_ok() {
    [ -f "$build/src/libllama.a" ] && [ -f "$build/ggml/src/libggml.a" ] \
        && [ -f "$build/ggml/src/libggml-cpu.a" ] && [ -f "$build/ggml/src/libggml-base.a" ]
}
if libs_ok && { [ "$targets" = "llama" ] || { [ -x "$build/bin/llama-quantize" ] \
    && [ -x "$build/bin/llama-perplexity" ] && [ -x "$build/bin/llama-imatrix" ]; }; }; then
    echo "$build/bin"
    exit 0
fi
cmake -S "$tree" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >&2
# shellcheck disable=SC2086
cmake --build "$build" -j "$jobs" --target $targets >&2
echo "$build/bin"
