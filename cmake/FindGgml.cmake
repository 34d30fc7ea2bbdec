# ggml_qat_find_ggml(): finds ggml the CMake way (ggml_DIR, CMAKE_PREFIX_PATH,
# system paths); when there is none, installs the PyPI wheel
# libggml-python==0.20.2.post1 into <source>/.deps/ggml and uses its package.
# Sets GGML_QAT_GGML_INCLUDE_DIR, GGML_QAT_GGML_LIB_DIR, GGML_QAT_GGML_DIR and
# GGML_QAT_GGML_TARGETS.
function(ggml_qat_find_ggml)
    find_package(ggml CONFIG QUIET)
    if(NOT ggml_FOUND)
        message(STATUS "ggml-qat: no ggml found; installing the libggml-python wheel into .deps/ggml")
        execute_process(
            COMMAND sh "${PROJECT_SOURCE_DIR}/scripts/install-ggml-wheel.sh" "${PROJECT_SOURCE_DIR}/.deps/ggml"
            OUTPUT_VARIABLE prefix
            RESULT_VARIABLE rc
            OUTPUT_STRIP_TRAILING_WHITESPACE)
        if(NOT rc EQUAL 0)
            message(FATAL_ERROR "ggml-qat: no ggml found and the wheel could not be installed; set ggml_DIR")
        endif()
        unset(ggml_DIR CACHE)
        find_package(ggml CONFIG REQUIRED PATHS "${prefix}/lib64/cmake/ggml" "${prefix}/lib/cmake/ggml" NO_DEFAULT_PATH)
    endif()

    if(DEFINED GGML_INCLUDE_DIR AND DEFINED GGML_LIB_DIR)
        set(inc "${GGML_INCLUDE_DIR}")
        set(lib "${GGML_LIB_DIR}")
    else()
        get_target_property(inc ggml::ggml INTERFACE_INCLUDE_DIRECTORIES)
        get_target_property(loc ggml::ggml-base LOCATION)
        get_filename_component(lib "${loc}" DIRECTORY)
    endif()
    set(targets ggml::ggml)
    foreach(t ggml::ggml-base ggml::ggml-cpu)
        if(TARGET ${t})
            list(APPEND targets ${t})
        endif()
    endforeach()
    message(STATUS "ggml-qat: using ggml ${ggml_VERSION} from ${ggml_DIR}")
    set(GGML_QAT_GGML_INCLUDE_DIR "${inc}" PARENT_SCOPE)
    set(GGML_QAT_GGML_LIB_DIR "${lib}" PARENT_SCOPE)
    set(GGML_QAT_GGML_DIR "${ggml_DIR}" PARENT_SCOPE)
    set(GGML_QAT_GGML_TARGETS "${targets}" PARENT_SCOPE)
endfunction()
