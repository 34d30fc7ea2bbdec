#!/usr/bin/env sh
# Runs every test: the Rust suite (unit, differential against ggml, header
# drift, exported symbols) and the C suite through CMake and ctest (C tests,
# ABI checks, the demo, and consumers of the installed package).
# Installs cmake and ggml first when the machine lacks them.
set -eu
. "$(dirname "$0")/env.sh"
cd "$root"
cargo test -j "$jobs"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure
