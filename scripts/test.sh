#!/usr/bin/env sh
# Runs every test: the Rust suite (unit, differential against ggml, protocol,
# header drift, the C API running the calibrator), the calibrator's
# (calibrate/, against llama-imatrix) and the C suite through CMake and ctest
# (C tests, ABI checks, exported symbols, the demo, consumers of the
# installed package, the installed calibrator).
# Installs cmake and ggml first when the machine lacks them.
set -eu
. "$(dirname "$0")/env.sh"
cd "$root"
# The calibrator first, its own crate linking llama.cpp's libllama (built
# once into .deps/llama.cpp-build with llama-imatrix, its tests' reference):
# the main suite's tests/calibrate_capi.rs runs it through the C API
# (GGML_QAT_CALIBRATE; without it that test fails), and both suites write
# tiny models with the gguf Python package.
"$root/scripts/build-llama-tools.sh" >/dev/null
GGML_QAT_PYTHONPATH=$("$root/scripts/fetch-gguf-py.sh")
export GGML_QAT_PYTHONPATH
(cd calibrate && cargo build -j "$jobs")
export GGML_QAT_CALIBRATE="$root/calibrate/target/debug/ggml-qat-calibrate"
cargo test -j "$jobs"
# The portable scalar kernels (machines without AVX2) against ggml too.
GGML_QAT_FORCE_SCALAR=1 cargo test -j "$jobs" --test quant_vs_ggml_legacy --test quant_vs_ggml_k
# The AVX2 K-quant kernels against ggml too (on machines with AVX-512).
GGML_QAT_NO_AVX512=1 cargo test -j "$jobs" --test quant_vs_ggml_k
# The calibrator's own tests (against llama-imatrix, its options, signals).
(cd calibrate && cargo test -j "$jobs")
# The fork test (ctest fork-ggml-tree) builds a real ggml with as many jobs.
# The CMake build's calibrator is the one built above (profile dev, in
# calibrate/target: cargo finds it fresh), installed and found by the
# installed library in ctest calibrator-installed.
export GGML_QAT_JOBS="$jobs"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGGML_QAT_CALIBRATOR_PROFILE=dev
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure
