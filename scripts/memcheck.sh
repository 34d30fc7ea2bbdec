#!/usr/bin/env sh
# Memory checking of the C test programs, in two builds next to ./build:
#   build-asan      the C tests compiled with AddressSanitizer
#                   (-DGGML_QAT_SANITIZE=ON), run by ctest;
#   build-valgrind  a plain build whose valgrind memcheck runs are registered
#                   (-DGGML_QAT_VALGRIND=ON), run by ctest -L memcheck.
# The Rust library is the same release build in both (cargo's target dir is
# shared) and is NOT instrumented by ASan: ASan checks the C side, and sees
# the library's malloc/free (leaks, double or foreign frees) but not its
# loads and stores. valgrind checks everything, the library and ggml too.
#
# Usage: scripts/memcheck.sh [asan|valgrind|all]   (default: all)
# Env:   MEMCHECK_TESTS  ctest -R regex of the programs to check
#                        (default: every C test but qat-demo, see below)
#        GGML_QAT_JOBS   build parallelism (default 2)
#
# qat-demo is left out by default: it passes under AddressSanitizer, but
# its measurements (hundreds of matrix products) take more than 15 minutes
# under valgrind. Include it with MEMCHECK_TESTS='test-|qat-demo'.
set -eu
. "$(dirname "$0")/env.sh"
cd "$root"
what=${1:-all}
tests=${MEMCHECK_TESTS:-test-}
common="-DCMAKE_BUILD_TYPE=Release"
[ -n "${GGML_QAT_CARGO_TARGET_DIR:-}" ] && common="$common -DGGML_QAT_CARGO_TARGET_DIR=$GGML_QAT_CARGO_TARGET_DIR"
[ -n "${ggml_DIR:-}" ] && common="$common -Dggml_DIR=$ggml_DIR"
status=0

if [ "$what" = asan ] || [ "$what" = all ]; then
    echo "== AddressSanitizer (C side) =="
    # shellcheck disable=SC2086
    cmake -S . -B build-asan $common -DGGML_QAT_SANITIZE=ON >/dev/null
    cmake --build build-asan -j "$jobs"
    ctest --test-dir build-asan --output-on-failure -R "$tests" -E "consumer|memcheck" || status=1
fi

if [ "$what" = valgrind ] || [ "$what" = all ]; then
    echo "== valgrind memcheck =="
    # shellcheck disable=SC2086
    cmake -S . -B build-valgrind $common -DGGML_QAT_VALGRIND=ON >/dev/null
    cmake --build build-valgrind -j "$jobs"
    rm -f build-valgrind/memcheck/*.log
    ctest --test-dir build-valgrind --output-on-failure -L memcheck -R "memcheck-($tests)" || status=1
    # One log per process (forked children included): show any that found something.
    for log in build-valgrind/memcheck/*.log; do
        [ -f "$log" ] || continue
        if ! grep -q "ERROR SUMMARY: 0 errors" "$log"; then
            echo "--- $log"
            cat "$log"
            status=1
        fi
    done
    n=$(ls build-valgrind/memcheck/*.log 2>/dev/null | wc -l)
    echo "valgrind: $n process logs in build-valgrind/memcheck/"
fi

exit $status
