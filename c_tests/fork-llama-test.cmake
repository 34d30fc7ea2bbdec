# ggml-qat inside a whole llama.cpp tree (c_tests/fork with FORK_QAT=llama):
# the tree's `llama` target and its ggml (shared) are what the calibrator
# links, and the library links the same ggml. Builds libllama from the
# llama.cpp tree of the llama-cpp-python sdist (scripts/fetch-llama-cpp.sh),
# runs the calibrator from the build, installs the tree and checks the
# installed calibrator (RUNPATH $ORIGIN/../lib; found by the installed
# library through dladdr: calibrator-install-test.cmake); then builds this
# project alone against that installed llama.cpp (find_package(llama)).
# Usage: cmake -DSOURCE_DIR=<ggml-qat> -DWORK_DIR=<dir> [-DJOBS=2] -P fork-llama-test.cmake
if(NOT JOBS)
    set(JOBS 2)
endif()
set(tests "${SOURCE_DIR}/c_tests")

function(run)
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
    endif()
    set(last_output "${out}" PARENT_SCOPE)
endfunction()

execute_process(COMMAND sh "${SOURCE_DIR}/scripts/fetch-llama-cpp.sh"
    RESULT_VARIABLE rc OUTPUT_VARIABLE tree ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0 OR NOT EXISTS "${tree}/CMakeLists.txt")
    message(FATAL_ERROR "fork-llama test: cannot get the llama.cpp source tree "
        "(scripts/fetch-llama-cpp.sh, PyPI):\n${err}")
endif()

set(build "${WORK_DIR}/llama")
run("${CMAKE_COMMAND}" -S "${tests}/fork" -B "${build}" -DCMAKE_BUILD_TYPE=Release
    "-DLLAMA_CPP_DIR=${tree}" "-DGGML_QAT_DIR=${SOURCE_DIR}" -DFORK_QAT=llama
    "-DGGML_QAT_CALIBRATOR_TARGET_DIR=${WORK_DIR}/calibrate-target")
if(NOT last_output MATCHES "ggml-qat: using the ggml [0-9.]+ built in this tree"
        OR NOT last_output MATCHES "calibrator ggml-qat-calibrate links libllama from the llama target of this tree")
    message(FATAL_ERROR "the llama.cpp tree's ggml and llama targets were not taken:\n${last_output}")
endif()
run("${CMAKE_COMMAND}" --build "${build}" -j "${JOBS}")
set(calib "${build}/ggml-qat/bin/ggml-qat-calibrate")
run("${calib}" --help)
run(ldd "${calib}")
if(NOT last_output MATCHES "libllama\\.so[^ ]* => ${build}/bin/libllama")
    message(FATAL_ERROR "the calibrator does not load the tree's libllama:\n${last_output}")
endif()
# One ggml: the calibrator's (through libllama) is the library's.
run("${CMAKE_COMMAND}" "-DFILES=${calib}|${build}/ggml-qat/lib/libggml-qat.so|${build}/bin/qat-target-c"
    "-DEXPECT=${build}/bin/libggml-base.so" -P "${tests}/one-ggml.cmake")
message(STATUS "${last_output}")

# Installed: bin/ggml-qat-calibrate finds libllama in lib/ ($ORIGIN/../lib),
# and the installed libggml-qat.so finds bin/ggml-qat-calibrate.
run("${CMAKE_COMMAND}" "-DBUILD_DIR=${build}" "-DCONSUMER_SOURCE=${tests}/calibrator-consumer"
    "-DWORK_DIR=${WORK_DIR}/installed" -P "${tests}/calibrator-install-test.cmake")
message(STATUS "${last_output}")
set(exe "${WORK_DIR}/installed/prefix/bin/ggml-qat-calibrate")
run(readelf -d "${exe}")
if(NOT last_output MATCHES "R(UN)?PATH[^\n]*\\[\\$ORIGIN/\\.\\./lib\\]")
    message(FATAL_ERROR "the installed calibrator should find libllama through $ORIGIN/../lib:\n${last_output}")
endif()
run(ldd "${exe}")
if(NOT last_output MATCHES "libllama\\.so[^ ]* => ${WORK_DIR}/installed/prefix/bin/\\.\\./lib/libllama")
    message(FATAL_ERROR "the installed calibrator does not load the installed libllama:\n${last_output}")
endif()
# An installed llama.cpp (the prefix above, shared libraries): this project
# alone with find_package(llama) (-Dllama_DIR) and the ggml installed with it
# (-Dggml_DIR); the calibrator finds libllama through an rpath to lib/.
set(prefix "${WORK_DIR}/installed/prefix")
set(user "${WORK_DIR}/user")
run("${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${user}" -DCMAKE_BUILD_TYPE=Release
    "-Dggml_DIR=${prefix}/lib/cmake/ggml" "-Dllama_DIR=${prefix}/lib/cmake/llama"
    -DGGML_QAT_BUILD_TESTS=OFF "-DGGML_QAT_CARGO_TARGET_DIR=${WORK_DIR}/user-cargo-target"
    "-DGGML_QAT_CALIBRATOR_TARGET_DIR=${WORK_DIR}/calibrate-target")
if(NOT last_output MATCHES "calibrator ggml-qat-calibrate links libllama from the installed llama.cpp")
    message(FATAL_ERROR "find_package(llama) was not taken:\n${last_output}")
endif()
run("${CMAKE_COMMAND}" --build "${user}" -j "${JOBS}")
run("${user}/bin/ggml-qat-calibrate" --help)
run(ldd "${user}/bin/ggml-qat-calibrate")
if(NOT last_output MATCHES "libllama\\.so[^ ]* => ${prefix}/lib/libllama")
    message(FATAL_ERROR "the calibrator does not load the installed libllama:\n${last_output}")
endif()
message(STATUS "find_package(llama): the calibrator links the installed libllama")
message(STATUS "fork-llama test: passed")
