# ggml_qat_find_ggml(): finds ggml the CMake way. Inside a tree that builds
# ggml from source (a llama.cpp-style fork adding this project with
# add_subdirectory or FetchContent), the tree's own ggml, ggml-base and
# ggml-cpu targets. Otherwise find_package(ggml CONFIG) (ggml_DIR,
# CMAKE_PREFIX_PATH, system paths); when there is none, installs the PyPI
# wheel libggml-python==0.20.2.post1 into <source>/.deps/ggml and uses its
# package.
# Sets GGML_QAT_GGML_MODE (tree|package), GGML_QAT_GGML_INCLUDE_DIR,
# GGML_QAT_GGML_LIB_DIR, GGML_QAT_GGML_DIR, GGML_QAT_GGML_TARGETS and, in a
# tree, GGML_QAT_GGML_LIBS (the library files, generator expressions).
function(ggml_qat_find_ggml)
    if(TARGET ggml AND TARGET ggml-base)
        get_target_property(imported ggml IMPORTED)
        if(NOT imported)
            ggml_qat_use_tree_ggml()
            foreach(v MODE INCLUDE_DIR LIB_DIR LIBS DIR TARGETS)
                set(GGML_QAT_GGML_${v} "${GGML_QAT_GGML_${v}}" PARENT_SCOPE)
            endforeach()
            return()
        endif()
    endif()

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
    set(GGML_QAT_GGML_MODE package PARENT_SCOPE)
    set(GGML_QAT_GGML_INCLUDE_DIR "${inc}" PARENT_SCOPE)
    set(GGML_QAT_GGML_LIB_DIR "${lib}" PARENT_SCOPE)
    set(GGML_QAT_GGML_DIR "${ggml_DIR}" PARENT_SCOPE)
    set(GGML_QAT_GGML_TARGETS "${targets}" PARENT_SCOPE)
endfunction()

# The targets of a ggml built in the same tree: the Rust library is compiled
# against their headers and linked to their files (known at build time only:
# generator expressions), after they are built.
macro(ggml_qat_use_tree_ggml)
    get_target_property(_type ggml-base TYPE)
    if(NOT _type STREQUAL "SHARED_LIBRARY")
        message(FATAL_ERROR "ggml-qat: the tree's ggml-base is a ${_type}; ggml-qat needs ggml "
            "built as shared libraries (BUILD_SHARED_LIBS=ON, ggml's default), so that the "
            "program and libggml-qat.so share one ggml")
    endif()
    set(GGML_QAT_GGML_TARGETS ggml ggml-base)
    set(_files "$<TARGET_LINKER_FILE:ggml>")
    if(TARGET ggml-cpu)
        get_target_property(_cpu_type ggml-cpu TYPE)
        if(_cpu_type STREQUAL "SHARED_LIBRARY")   # not a loadable module (GGML_BACKEND_DL)
            list(APPEND GGML_QAT_GGML_TARGETS ggml-cpu)
            string(APPEND _files ":$<TARGET_LINKER_FILE:ggml-cpu>")
        endif()
    endif()
    string(APPEND _files ":$<TARGET_LINKER_FILE:ggml-base>")
    set(GGML_QAT_GGML_MODE tree)
    set(GGML_QAT_GGML_LIBS "${_files}")
    set(GGML_QAT_GGML_INCLUDE_DIR "$<JOIN:$<TARGET_PROPERTY:ggml-base,INTERFACE_INCLUDE_DIRECTORIES>,:>")
    set(GGML_QAT_GGML_LIB_DIR "$<TARGET_LINKER_FILE_DIR:ggml-base>")
    # Installed beside this package by the tree's own install.
    set(GGML_QAT_GGML_DIR "\${PACKAGE_PREFIX_DIR}/${CMAKE_INSTALL_LIBDIR}/cmake/ggml")
    get_target_property(_version ggml-base VERSION)
    message(STATUS "ggml-qat: using the ggml ${_version} built in this tree (targets ${GGML_QAT_GGML_TARGETS})")
    unset(_type)
    unset(_cpu_type)
    unset(_files)
    unset(_version)
endmacro()
