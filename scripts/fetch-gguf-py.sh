#!/usr/bin/env sh
# Installs llama.cpp's `gguf` Python package (and numpy) into .deps/python,
# once: the calibrator's tests write their tiny models and read calibration
# files with it. Never committed. Prints the folder for PYTHONPATH.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.deps/python"
if [ ! -d "$dest/gguf" ] || [ ! -d "$dest/numpy" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$dest" "gguf==0.19.0" "numpy" >&2
fi
echo "$dest"
