# ggml-qat inside a real ggml source tree (issue: drop into a fork's build).
# Downloads the llama.cpp tree vendored in the llama-cpp-python sdist
# (scripts/fetch-llama-cpp.sh, into .deps/), then, under WORK_DIR:
#  sub/      c_tests/fork: builds that ggml from source and this project with
#            add_subdirectory + GGML_QAT_INTO_GGML (the README's recipe); runs
#            the fork's programs, which link only ggml, and programs linking
#            ggml-qat::ggml-qat; one libggml-base for all: the tree's.
#  prefix/   `cmake --install sub`: the tree's ggml and ggml-qat side by side
#            (libggml-qat.so finds ggml through $ORIGIN), bin/ggml-qat-calibrate.
#  package/  c_tests/fork again, building ggml in-tree, with
#            find_package(ggml-qat) of prefix/ beside the tree's ggml::ggml.
#  user/     this project alone against the installed ggml of prefix/
#            (-Dggml_DIR: a user's own ggml), and the consumer of its package
#            (GGML_QAT_CALIBRATOR=OFF: the library without the calibrator).
#  fetchcontent/, static/  configured only: the swap through FetchContent
#            (the same targets), and a static ggml refused with a message.
# Usage: cmake -DSOURCE_DIR=<ggml-qat> -DWORK_DIR=<dir> [-DJOBS=2] [-DCALIBRATOR_PROFILE=release]
#        -P fork-test.cmake
if(NOT JOBS)
    set(JOBS 2)
endif()
if(NOT CALIBRATOR_PROFILE)
    set(CALIBRATOR_PROFILE release)
endif()
set(tests "${SOURCE_DIR}/c_tests")

function(run)
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
    endif()
    set(last_output "${out}" PARENT_SCOPE)
endfunction()

# Checks one libggml-base (the file `expect`) for the files ARGN, of which
# `links_qat` load libggml-qat (lists are passed with '|').
function(one_ggml expect links_qat)
    string(REPLACE ";" "|" files "${ARGN}")
    string(REPLACE ";" "|" links_qat "${links_qat}")
    run("${CMAKE_COMMAND}" "-DFILES=${files}" "-DEXPECT=${expect}" "-DLINKS_QAT=${links_qat}"
        -P "${tests}/one-ggml.cmake")
    string(REGEX REPLACE "(^|\n)-- " "\\1" out "${last_output}")
    message(STATUS "${out}")
endfunction()

# 0. The README's fork recipe is what c_tests/fork runs: each line of its
#    cmake block stands, as written, between the markers of the fork project.
file(READ "${SOURCE_DIR}/README.md" readme)
string(REGEX MATCH "### Replacing the C implementation in a ggml fork.*```cmake\n([^`]*)```" _ "${readme}")
set(recipe "${CMAKE_MATCH_1}")
file(READ "${tests}/fork/CMakeLists.txt" fork)
string(REGEX MATCH "# --- the README's lines, verbatim -*\n(.*)\n *# -------" _ "${fork}")
set(verbatim "${CMAKE_MATCH_1}")
string(REGEX REPLACE "(^|\n) +" "\\1" recipe "${recipe}")
string(REGEX REPLACE "(^|\n) +" "\\1" verbatim "${verbatim}")
string(STRIP "${recipe}" recipe)
string(STRIP "${verbatim}" verbatim)
if(recipe STREQUAL "" OR NOT recipe STREQUAL verbatim)
    message(FATAL_ERROR "README's fork recipe:\n${recipe}\nis not what c_tests/fork/CMakeLists.txt runs:\n${verbatim}")
endif()
message(STATUS "README's fork recipe = c_tests/fork:\n${recipe}")

# 1. The llama.cpp tree (ggml 0.25.3).
execute_process(COMMAND sh "${SOURCE_DIR}/scripts/fetch-llama-cpp.sh"
    RESULT_VARIABLE rc OUTPUT_VARIABLE tree ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0 OR NOT EXISTS "${tree}/ggml/CMakeLists.txt")
    message(FATAL_ERROR "fork test: cannot get the llama.cpp source tree: scripts/fetch-llama-cpp.sh "
        "downloads the llama-cpp-python sdist from PyPI (pip download) into .deps/llama.cpp-src, and "
        "failed (no network or no pip?). Fetch it once on a machine with PyPI access.\n${err}")
endif()
message(STATUS "llama.cpp tree: ${tree}")
set(common -DCMAKE_BUILD_TYPE=Release "-DLLAMA_CPP_DIR=${tree}" "-DGGML_QAT_DIR=${SOURCE_DIR}")

# 2. The fork with this project added by add_subdirectory. A ggml-only tree
#    defines no `llama` target: the calibrator takes the registry libllama
#    (.deps/llama.cpp-build, static: its own process holds that ggml alone).
set(sub "${WORK_DIR}/sub")
run("${CMAKE_COMMAND}" -S "${tests}/fork" -B "${sub}" ${common} -DFORK_QAT=subdirectory
    "-DGGML_QAT_CALIBRATOR_PROFILE=${CALIBRATOR_PROFILE}")
if(NOT last_output MATCHES "calibrator ggml-qat-calibrate links libllama from the registry package")
    message(FATAL_ERROR "the calibrator in a ggml-only tree should take the registry libllama:\n${last_output}")
endif()
run("${CMAKE_COMMAND}" --build "${sub}" -j "${JOBS}")
foreach(exe test-qat-framework qat-demo fork-cxx qat-target-c qat-target-cxx)
    run("${sub}/bin/${exe}")
    string(REGEX MATCH "[^\n]*\n?$" tail "${last_output}")
    message(STATUS "sub/${exe}: ${tail}")
endforeach()
set(tree_base "${sub}/bin/libggml-base.so.0")
set(qat_lib "${sub}/ggml-qat/lib/libggml-qat.so")
set(programs "")
foreach(exe test-qat-framework qat-demo fork-cxx qat-target-c qat-target-cxx)
    list(APPEND programs "${sub}/bin/${exe}")
endforeach()
one_ggml("${tree_base}" "${programs}" "${qat_lib}" ${programs})

# 3. Installed side by side.
set(prefix "${WORK_DIR}/prefix")
file(REMOVE_RECURSE "${prefix}")
run("${CMAKE_COMMAND}" --install "${sub}" --prefix "${prefix}")
foreach(f lib/libggml-qat.so.0 lib/libggml-base.so.0 include/ggml-qat.h include/ggml.h bin/ggml-qat-calibrate
        lib/cmake/ggml-qat/ggml-qat-config.cmake lib/cmake/ggml/ggml-config.cmake)
    if(NOT EXISTS "${prefix}/${f}")
        message(FATAL_ERROR "fork install lacks ${f}")
    endif()
endforeach()
run(readelf -d "${prefix}/lib/libggml-qat.so.0")
if(NOT last_output MATCHES "RUNPATH[^\n]*\\[\\$ORIGIN\\]")
    message(FATAL_ERROR "installed libggml-qat.so should find ggml through $ORIGIN:\n${last_output}")
endif()
one_ggml("${prefix}/lib/libggml-base.so.0" "" "${prefix}/lib/libggml-qat.so.0")
run("${prefix}/bin/ggml-qat-calibrate" --help)
message(STATUS "prefix/bin/ggml-qat-calibrate --help runs")
# A plain consumer of that installed tree: the package finds the ggml
# installed beside it.
run("${CMAKE_COMMAND}" -S "${tests}/consumer" -B "${WORK_DIR}/prefix-consumer" -DCMAKE_BUILD_TYPE=Release
    "-DCMAKE_PREFIX_PATH=${prefix}")
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/prefix-consumer")
set(programs "")
foreach(exe consumer-c11 consumer-cxx17)
    run("${WORK_DIR}/prefix-consumer/${exe}")
    message(STATUS "prefix-consumer/${exe}: ${last_output}")
    list(APPEND programs "${WORK_DIR}/prefix-consumer/${exe}")
endforeach()
one_ggml("${prefix}/lib/libggml-base.so.0" "${programs}" ${programs})

# 4. find_package(ggml-qat) in a tree that builds ggml (ggml::ggml is its alias).
set(pkg "${WORK_DIR}/package")
run("${CMAKE_COMMAND}" -S "${tests}/fork" -B "${pkg}" ${common} -DFORK_QAT=package
    "-DCMAKE_PREFIX_PATH=${prefix}")
run("${CMAKE_COMMAND}" --build "${pkg}" -j "${JOBS}")
set(programs "")
foreach(exe test-qat-framework qat-target-c qat-target-cxx)
    run("${pkg}/bin/${exe}")
    string(REGEX MATCH "[^\n]*\n?$" tail "${last_output}")
    message(STATUS "package/${exe}: ${tail}")
    list(APPEND programs "${pkg}/bin/${exe}")
endforeach()
# The process loads the tree's ggml (the installed library's own lookup
# would find the installed copy of the same build: not loaded twice).
one_ggml("${pkg}/bin/libggml-base.so.0" "${programs}" ${programs})

# 5. A user's installed ggml (prefix/), this project built alone against it.
set(user "${WORK_DIR}/user")
run("${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${user}/build" -DCMAKE_BUILD_TYPE=Release
    "-Dggml_DIR=${prefix}/lib/cmake/ggml" -DGGML_QAT_BUILD_TESTS=OFF
    "-DGGML_QAT_CARGO_TARGET_DIR=${user}/cargo-target" -DGGML_QAT_CALIBRATOR=OFF)
if(NOT last_output MATCHES "calibrator ggml-qat-calibrate is not built \\(GGML_QAT_CALIBRATOR=OFF\\)")
    message(FATAL_ERROR "GGML_QAT_CALIBRATOR=OFF should say the calibrator is not built:\n${last_output}")
endif()
run("${CMAKE_COMMAND}" --build "${user}/build" -j "${JOBS}")
run("${CMAKE_COMMAND}" "-DBUILD_DIR=${user}/build" "-DCONSUMER_SOURCE=${tests}/consumer"
    "-DWORK_DIR=${user}/consumer" -DKIND=shared "-DEXPECT_GGML_BASE=${prefix}/lib/libggml-base.so.0"
    -P "${tests}/consumer-test.cmake")
message(STATUS "${last_output}")

# 6. Configured only (the build is that of sub/): FetchContent, and ggml
#    built as static libraries, which ggml-qat refuses (libggml-qat.so and the
#    program would each hold a ggml).
set(fc "${WORK_DIR}/fetchcontent")
run("${CMAKE_COMMAND}" -S "${tests}/fork" -B "${fc}" ${common} -DFORK_QAT=fetchcontent)
if(NOT last_output MATCHES "ggml-qat: using the ggml [0-9.]+ built in this tree"
        OR NOT last_output MATCHES "programs linking ggml get ggml-qat")
    message(FATAL_ERROR "FetchContent: ggml-qat did not take the tree's ggml:\n${last_output}")
endif()
run("${CMAKE_COMMAND}" --build "${fc}" --target help)
foreach(t ggml-qat-cargo test-qat-framework)
    if(NOT last_output MATCHES "\\.\\.\\. ${t}\n")
        message(FATAL_ERROR "FetchContent: no target ${t}:\n${last_output}")
    endif()
endforeach()
message(STATUS "fetchcontent: configured with the tree's ggml")
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${tests}/fork" -B "${WORK_DIR}/static" ${common}
        -DFORK_QAT=subdirectory -DBUILD_SHARED_LIBS=OFF
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(REGEX REPLACE "[ \n]+" " " err_text "${err}")   # CMake wraps its messages
if(rc EQUAL 0 OR NOT err_text MATCHES "ggml-qat needs ggml built as shared libraries")
    message(FATAL_ERROR "a static ggml in the tree should be refused with a message (rc ${rc}):\n${err}")
endif()
message(STATUS "static ggml: refused with a message")
message(STATUS "fork test: all set-ups passed")
