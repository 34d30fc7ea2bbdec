#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for a bounded time and prints the
# executions and time per target. Not part of the default test run.
#
#   scripts/fuzz.sh                 # every target, 60 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh quant_roundtrip
#   FUZZ_SANITIZER=none scripts/fuzz.sh   # without AddressSanitizer
#
# Targets: quant_roundtrip, dequant_bytes, tensor_api (kernels and the
# tensor API); gguf_header, imatrix_file, quantize_model (model files: the
# GGUF header reader, both imatrix readers, the whole pipeline on small
# mutated models; the model targets read their inputs from a file each).
#
# Only the stable toolchain is assumed: cargo-fuzz's -Z flags are accepted
# through RUSTC_BOOTSTRAP=1. The committed seeds (fuzz/corpus/<target>) are
# read; new inputs go to fuzz/target/corpus/<target> (git-ignored), crashes
# to fuzz/artifacts/<target>. Exit status is non-zero when a target fails.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$root/fuzz"

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-address}
max_len=${FUZZ_MAX_LEN:-4096}
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-$jobs}
# One worker thread: the fuzzers time themselves, the machine is shared.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz >&2
fi

# ggml: the same search as build.rs; the dependency's rpath does not reach
# the fuzz binaries, so the library folder goes on LD_LIBRARY_PATH.
if [ -z "${ggml_DIR:-}" ] && [ -d "$root/.deps/ggml/libggml/lib64/cmake/ggml" ]; then
    export ggml_DIR="$root/.deps/ggml/libggml/lib64/cmake/ggml"
fi
if [ -n "${ggml_DIR:-}" ]; then
    export LD_LIBRARY_PATH="$(cd "$ggml_DIR/../.." && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

cargo fuzz build --sanitizer "$sanitizer" >&2 || exit 1
status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t" "corpus/$t"
    log="target/fuzz-$t.log"
    start=$(date +%s)
    set +e
    len=$max_len
    extra=()
    # whole small models: the seeds are a few KB
    case $t in gguf_header | quantize_model) len=${FUZZ_MAX_LEN:-8192} ;; esac
    # quantize_model starts a rayon pool per call, whose worker may still be
    # exiting when the process ends: LeakSanitizer reports its thread
    # handle (144 bytes) at exit, no leak per input
    [ "$t" = quantize_model ] && extra=(-detect_leaks=0)
    cargo fuzz run --sanitizer "$sanitizer" "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len="$len" -rss_limit_mb=2048 "${extra[@]}" \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(( $(date +%s) - start ))
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    if [ $rc -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $rc, see fuzz/$log and fuzz/artifacts/$t)"
        status=1
        grep -m1 -A2 'panicked at\|ERROR: AddressSanitizer\|ERROR: libFuzzer' "$log" >&2 || true
    fi
    summary+=("$(printf '%-18s %10s execs %6s s  %s' "$t" "${runs:-?}" "$elapsed" "$result")")
done
echo "target             executions   time  result (sanitizer: $sanitizer, $seconds s each)"
printf '%s\n' "${summary[@]}"
exit $status
