#!/usr/bin/env sh
# Runs every test: the Rust suite (unit, differential against ggml, protocol,
# header drift), the calibrator's (calibrate/, against llama-imatrix) and the C suite through CMake and ctest (C tests, ABI checks,
# exported symbols, the demo, and consumers of the installed package).
# Installs cmake and ggml first when the machine lacks them.
set -eu
. "$(dirname "$0")/env.sh"
cd "$root"
cargo test -j "$jobs"
# The portable scalar kernels (machines without AVX2) against ggml too.
GGML_QAT_FORCE_SCALAR=1 cargo test -j "$jobs" --test quant_vs_ggml_legacy --test quant_vs_ggml_k
# The AVX2 K-quant kernels against ggml too (on machines with AVX-512).
GGML_QAT_NO_AVX512=1 cargo test -j "$jobs" --test quant_vs_ggml_k
# The calibrator, its own crate linking llama.cpp's libllama (built once into
# .deps/llama.cpp-build with llama-imatrix, its tests' reference), its tests
# writing tiny models with the gguf Python package.
"$root/scripts/build-llama-tools.sh" >/dev/null
"$root/scripts/fetch-gguf-py.sh" >/dev/null
(cd calibrate && cargo test -j "$jobs")
# The fork test (ctest fork-ggml-tree) builds a real ggml with as many jobs.
export GGML_QAT_JOBS="$jobs"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure
