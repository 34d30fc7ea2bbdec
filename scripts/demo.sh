#!/usr/bin/env sh
# Builds everything (installing cmake and ggml when missing) and runs the demo.
set -eu
. "$(dirname "$0")/env.sh"
cd "$root"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs" --target qat-demo
./build/bin/qat-demo
