# The installed calibrator: installs the build into WORK_DIR/prefix, runs
# bin/ggml-qat-calibrate --help, then builds c_tests/calibrator-consumer
# against the installed package and runs it with no calibrator named
# (calibrator_path NULL, GGML_QAT_CALIBRATE unset, a PATH without one): the
# library must find bin/ggml-qat-calibrate beside its lib/ (dladdr) and run
# it, which fails on the missing model with the calibrator's own message.
# Usage: cmake -DBUILD_DIR=.. -DCONSUMER_SOURCE=.. -DWORK_DIR=.. -P calibrator-install-test.cmake

set(prefix "${WORK_DIR}/prefix")
file(REMOVE_RECURSE "${WORK_DIR}")

function(run)
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
    endif()
    set(last_output "${out}" PARENT_SCOPE)
endfunction()

run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}")
foreach(f bin/ggml-qat-calibrate bin/ggml-qat-quantize lib/libggml-qat.so.0)
    if(NOT EXISTS "${prefix}/${f}")
        message(FATAL_ERROR "installed package lacks ${f}")
    endif()
endforeach()

run("${prefix}/bin/ggml-qat-calibrate" --help)
if(NOT last_output MATCHES "Usage: ggml-qat-calibrate")
    message(FATAL_ERROR "bin/ggml-qat-calibrate --help:\n${last_output}")
endif()
message(STATUS "bin/ggml-qat-calibrate --help runs")

run("${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE}" -B "${WORK_DIR}/build" "-DCMAKE_PREFIX_PATH=${prefix}")
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/build")
set(missing "${WORK_DIR}/no-such-model.gguf")
run("${CMAKE_COMMAND}" -E env --unset=GGML_QAT_CALIBRATE "PATH=/usr/bin:/bin"
    "${WORK_DIR}/build/find-calibrator" "${missing}" "${WORK_DIR}/calib.gguf")
string(STRIP "${last_output}" message)
# The library's message names the calibrator it ran and ends with the
# calibrator's own last line of stderr.
file(REAL_PATH "${prefix}" real_prefix)
set(expect_exe "${real_prefix}/lib/../bin/ggml-qat-calibrate")
string(FIND "${message}" "the calibrator ${expect_exe} ended with" at_exe)
string(FIND "${message}" "ggml-qat-calibrate: error: ${missing}" at_error)
if(at_exe EQUAL -1 OR at_error EQUAL -1)
    message(FATAL_ERROR "ggml_qat_calibrate_model did not run the installed calibrator "
        "${expect_exe} (found through the library's folder):\n${message}")
endif()
if(EXISTS "${WORK_DIR}/calib.gguf")
    message(FATAL_ERROR "a failed calibration left ${WORK_DIR}/calib.gguf")
endif()
message(STATUS "the installed library found and ran bin/ggml-qat-calibrate: ${message}")
