# Installs the build into WORK_DIR/prefix, checks the installed layout, then
# configures, builds and runs the consumer project against it with
# find_package(ggml-qat CONFIG REQUIRED), linking the KIND (shared|static)
# target; the library and the consumers load one libggml-base, the file
# EXPECT_GGML_BASE when given (the ggml the build found).
# Usage: cmake -DBUILD_DIR=.. -DCONSUMER_SOURCE=.. -DWORK_DIR=.. -DKIND=.. [-DEXPECT_GGML_BASE=..]
#        [-DGGML_DIR=<ggml package folder>] -P consumer-test.cmake

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

# Exactly the promised layout.
foreach(f
        lib/libggml-qat.so lib/libggml-qat.so.0 lib/libggml-qat.a include/ggml-qat.h
        lib/cmake/ggml-qat/ggml-qat-config.cmake lib/cmake/ggml-qat/ggml-qat-config-version.cmake
        lib/pkgconfig/ggml-qat.pc)
    if(NOT EXISTS "${prefix}/${f}")
        message(FATAL_ERROR "installed package lacks ${f}")
    endif()
endforeach()
if(NOT IS_SYMLINK "${prefix}/lib/libggml-qat.so" OR NOT IS_SYMLINK "${prefix}/lib/libggml-qat.so.0")
    message(FATAL_ERROR "libggml-qat.so and libggml-qat.so.0 must be version links")
endif()
find_program(READELF readelf)
if(READELF)
    run("${READELF}" -d "${prefix}/lib/libggml-qat.so")
    if(NOT last_output MATCHES "SONAME[^\n]*libggml-qat\\.so\\.0\\]")
        message(FATAL_ERROR "SONAME is not libggml-qat.so.0:\n${last_output}")
    endif()
endif()

# The static consumer finds ggml itself first (GGML_DIR given): the package
# then takes the caller's ggml::ggml instead of importing its own.
set(ggml_first "")
if(KIND STREQUAL "static")
    set(use_static ON)
    if(GGML_DIR)
        set(ggml_first -DGGML_QAT_CONSUMER_GGML_FIRST=ON "-Dggml_DIR=${GGML_DIR}")
    endif()
else()
    set(use_static OFF)
endif()
run("${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE}" -B "${WORK_DIR}/build"
    "-DCMAKE_PREFIX_PATH=${prefix}" "-DGGML_QAT_CONSUMER_STATIC=${use_static}" ${ggml_first})
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/build")
# pkg-config users: compile and run the C consumer with the .pc flags only.
find_program(PKG_CONFIG NAMES pkg-config pkgconf)
find_program(CC NAMES cc gcc)
if(PKG_CONFIG AND CC AND KIND STREQUAL "shared")
    set(ENV{PKG_CONFIG_PATH} "${prefix}/lib/pkgconfig")
    run("${PKG_CONFIG}" --cflags --libs ggml-qat)
    separate_arguments(pc_flags UNIX_COMMAND "${last_output}")
    run("${CC}" -std=c11 "${CONSUMER_SOURCE}/consumer.c" ${pc_flags} -Wl,-rpath,${prefix}/lib -lm
        -o "${WORK_DIR}/consumer-pkgconfig")
    run("${WORK_DIR}/consumer-pkgconfig")
    message(STATUS "consumer-pkgconfig: ${last_output}")
endif()

foreach(exe consumer-c11 consumer-cxx17 consumer-cxx20)
    run("${WORK_DIR}/build/${exe}")
    message(STATUS "${exe} (${KIND}): ${last_output}")
endforeach()

# One ggml per process (ldd): the installed library and every consumer.
set(files "${prefix}/lib/libggml-qat.so.0")
set(links_qat "")
foreach(exe consumer-c11 consumer-cxx17 consumer-cxx20)
    list(APPEND files "${WORK_DIR}/build/${exe}")
    if(KIND STREQUAL "shared")
        list(APPEND links_qat "${WORK_DIR}/build/${exe}")
    endif()
endforeach()
string(REPLACE ";" "|" files "${files}")
string(REPLACE ";" "|" links_qat "${links_qat}")
run("${CMAKE_COMMAND}" "-DFILES=${files}" "-DEXPECT=${EXPECT_GGML_BASE}" "-DLINKS_QAT=${links_qat}"
    -P "${CMAKE_CURRENT_LIST_DIR}/one-ggml.cmake")
string(REGEX REPLACE "(^|\n)-- " "\\1" out "${last_output}")
message(STATUS "${out}")
