# Sourced by the scripts: makes cargo and cmake available on a fresh machine.
# cmake, when missing, comes from the PyPI wheel into .deps/cmake (project-local).
root=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
if ! cmake --version >/dev/null 2>&1 || ! ctest --version >/dev/null 2>&1; then
    if [ ! -x "$root/.deps/cmake/cmake/data/bin/cmake" ]; then
        echo "setup: cmake not found; installing it from PyPI into .deps/cmake" >&2
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            --target "$root/.deps/cmake" "cmake>=3.19" >&2
    fi
    PATH="$root/.deps/cmake/cmake/data/bin:$PATH"
fi
export PATH
# Two cores here: keep parallel builds modest.
jobs=${GGML_QAT_JOBS:-2}
