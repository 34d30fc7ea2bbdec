# The calibrator ggml-qat-calibrate (calibrate/, its own crate and its own
# executable: it links llama.cpp's libllama and the ggml libllama was built
# with, which must never be loaded beside the ggml of libggml-qat; one
# process, one ggml). Built by cargo into <build>/bin/ggml-qat-calibrate and
# installed to bin/, where an installed lib/libggml-qat.so finds it (dladdr).
#
# libllama is found like ggml (DESIGN.md §5):
#   tree      a tree that defines a `llama` target (a llama.cpp tree adding
#             this project with add_subdirectory): that library and the
#             tree's ggml targets, static or shared;
#   package   find_package(llama CONFIG) (llama_DIR, CMAKE_PREFIX_PATH): an
#             installed llama.cpp, and the ggml installed beside it;
#   registry  llama.cpp of the llama-cpp-python sdist (PyPI), built once into
#             <source>/.deps/llama.cpp-build by scripts/build-llama-tools.sh
#             (static libraries), at build time when it is not there yet.
# Sets GGML_QAT_CALIBRATOR_MODE (tree|package|registry|off) and, when it is
# built, GGML_QAT_CALIBRATE_EXE (the file in <build>/bin).

option(GGML_QAT_CALIBRATOR "Build and install the calibrator ggml-qat-calibrate (links llama.cpp's libllama)" ON)
set(GGML_QAT_CALIBRATOR_PROFILE "release" CACHE STRING
    "cargo profile of the calibrator (release; dev shares scripts/test.sh's build in calibrate/target/debug)")

# Which libllama: sets mode, libs (files, ':'-separated, may hold generator
# expressions), includes, system_libs, depends (targets to build first),
# install_rpath (the installed calibrator's RUNPATH, "" to keep cargo's).
function(ggml_qat_find_llama)
    set(mode "")
    if(TARGET llama)
        get_target_property(imported llama IMPORTED)
        if(NOT imported)
            set(mode tree)
        endif()
    endif()
    if(mode STREQUAL "tree")
        # libllama, then the tree's ggml (a loadable ggml-cpu module is not linked).
        set(depends llama ggml ggml-base)
        set(libs "$<TARGET_LINKER_FILE:llama>:$<TARGET_LINKER_FILE:ggml>")
        if(TARGET ggml-cpu)
            get_target_property(cpu_type ggml-cpu TYPE)
            if(cpu_type STREQUAL "SHARED_LIBRARY" OR cpu_type STREQUAL "STATIC_LIBRARY")
                string(APPEND libs ":$<TARGET_LINKER_FILE:ggml-cpu>")
                list(APPEND depends ggml-cpu)
            endif()
        endif()
        string(APPEND libs ":$<TARGET_LINKER_FILE:ggml-base>")
        set(includes "$<JOIN:$<TARGET_PROPERTY:llama,INTERFACE_INCLUDE_DIRECTORIES>,:>:$<JOIN:$<TARGET_PROPERTY:ggml-base,INTERFACE_INCLUDE_DIRECTORIES>,:>")
        get_target_property(llama_type llama TYPE)
        set(system_libs "")
        set(install_rpath "")
        if(llama_type STREQUAL "SHARED_LIBRARY")
            # The tree installs libllama and its ggml into lib/.
            set(install_rpath "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
        elseif(GGML_OPENMP_ENABLED)
            set(system_libs gomp)
        endif()
        set(where "the llama target of this tree (${llama_type}) and its ggml")
    else()
        # Not the ggml of the calling scope: llama-config.cmake calls
        # find_package(ggml), which may well return the ggml of libggml-qat;
        # libllama's own ggml is the one installed beside it.
        find_package(llama CONFIG QUIET)
        if(llama_FOUND AND DEFINED LLAMA_LIB_DIR AND DEFINED LLAMA_INCLUDE_DIR)
            set(libs "")
            set(missing "")
            foreach(name llama ggml ggml-cpu ggml-base)
                find_library(file NAMES ${name} PATHS "${LLAMA_LIB_DIR}" NO_DEFAULT_PATH NO_CACHE)
                if(file)
                    list(APPEND libs "${file}")
                elseif(NOT name STREQUAL "ggml-cpu")   # may be a loadable module
                    list(APPEND missing ${name})
                endif()
                unset(file)
            endforeach()
            if(missing)
                message(STATUS "ggml-qat: the llama.cpp package ${llama_DIR} has no ${missing} "
                    "in ${LLAMA_LIB_DIR}; not used")
            elseif(NOT EXISTS "${LLAMA_INCLUDE_DIR}/ggml.h")
                message(STATUS "ggml-qat: the llama.cpp package ${llama_DIR} has no ggml.h "
                    "beside llama.h; not used")
            else()
                set(mode package)
                string(REPLACE ";" ":" libs "${libs}")
                set(includes "${LLAMA_INCLUDE_DIR}")
                set(system_libs "")   # calibrate/build.rs sees OpenMP in a static ggml-cpu
                set(depends "")
                set(install_rpath "")   # the package's own lib/ (absolute, from cargo)
                set(where "the installed llama.cpp ${LLAMA_VERSION} (${llama_DIR}) and the ggml beside it")
            endif()
        endif()
    endif()
    if(NOT mode)
        set(mode registry)
        set(where "the registry package: llama.cpp of the llama-cpp-python 0.3.36 sdist (PyPI), built into "
            "${PROJECT_SOURCE_DIR}/.deps/llama.cpp-build by scripts/build-llama-tools.sh")
        string(JOIN "" where ${where})
        if(NOT EXISTS "${PROJECT_SOURCE_DIR}/.deps/llama.cpp-build/src/libllama.a")
            string(APPEND where " (not there yet: at build time, about 5 minutes on two cores)")
        endif()
        foreach(v libs includes system_libs depends install_rpath)
            set(${v} "")
        endforeach()
    endif()
    foreach(v mode libs includes system_libs depends install_rpath where)
        set(llama_${v} "${${v}}" PARENT_SCOPE)
    endforeach()
endfunction()

include(CheckLanguage)
set(GGML_QAT_CALIBRATOR_MODE off)
if(NOT GGML_QAT_CALIBRATOR)
    message(STATUS "ggml-qat: the calibrator ggml-qat-calibrate is not built (GGML_QAT_CALIBRATOR=OFF)")
else()
    check_language(CXX)
    if(NOT CMAKE_CXX_COMPILER)
        message(STATUS "ggml-qat: the calibrator ggml-qat-calibrate is not built: no C++ compiler "
            "(llama.cpp is C++); the library is")
    else()
        ggml_qat_find_llama()
        set(GGML_QAT_CALIBRATOR_MODE ${llama_mode})
        message(STATUS "ggml-qat: the calibrator ggml-qat-calibrate links libllama from ${llama_where}")
    endif()
endif()

if(NOT GGML_QAT_CALIBRATOR_MODE STREQUAL "off")
    set(calib_src "${PROJECT_SOURCE_DIR}/calibrate")
    set(calib_vars GGML_QAT_LLAMA_LIBS GGML_QAT_LLAMA_INCLUDE_DIRS GGML_QAT_LLAMA_SYSTEM_LIBS
        GGML_QAT_LLAMA_CPP_SRC GGML_QAT_LLAMA_CPP_BUILD)
    set(calib_env "")
    if(GGML_QAT_CALIBRATOR_MODE STREQUAL "registry")
        # calibrate/build.rs's defaults, the environment of scripts/test.sh's
        # build: one cargo cache in calibrate/target for both.
        foreach(v ${calib_vars})
            list(APPEND calib_env "--unset=${v}")
        endforeach()
        set(calib_target_default "${calib_src}/target")
        # libllama, built from the registry package when it is not there.
        set(llama_a "${PROJECT_SOURCE_DIR}/.deps/llama.cpp-build/src/libllama.a")
        add_custom_command(
            OUTPUT "${llama_a}"
            COMMAND sh "${PROJECT_SOURCE_DIR}/scripts/build-llama-tools.sh" --lib
            COMMENT "llama.cpp's libllama from the llama-cpp-python sdist into .deps/llama.cpp-build (once)"
            USES_TERMINAL
            VERBATIM)
        set(calib_depends "${llama_a}")
    else()
        list(APPEND calib_env
            "--unset=GGML_QAT_LLAMA_CPP_SRC" "--unset=GGML_QAT_LLAMA_CPP_BUILD"
            "GGML_QAT_LLAMA_LIBS=${llama_libs}"
            "GGML_QAT_LLAMA_INCLUDE_DIRS=${llama_includes}"
            "GGML_QAT_LLAMA_SYSTEM_LIBS=${llama_system_libs}")
        # Another libllama than .deps': its own cargo folder.
        set(calib_target_default "${PROJECT_BINARY_DIR}/calibrate-target")
        set(calib_depends ${llama_depends})
    endif()
    set(GGML_QAT_CALIBRATOR_TARGET_DIR "${calib_target_default}" CACHE PATH
        "cargo --target-dir of the calibrator (default: calibrate/target with the registry libllama, else in the build folder)")
    if(GGML_QAT_CALIBRATOR_PROFILE STREQUAL "dev")
        set(calib_out "${GGML_QAT_CALIBRATOR_TARGET_DIR}/debug")
    else()
        set(calib_out "${GGML_QAT_CALIBRATOR_TARGET_DIR}/${GGML_QAT_CALIBRATOR_PROFILE}")
    endif()
    file(GLOB calib_sources CONFIGURE_DEPENDS "${calib_src}/src/*.rs" "${calib_src}/src/*.c")
    set(GGML_QAT_CALIBRATE_EXE "${PROJECT_BINARY_DIR}/bin/ggml-qat-calibrate")
    add_custom_command(
        OUTPUT "${GGML_QAT_CALIBRATE_EXE}"
        COMMAND "${CMAKE_COMMAND}" -E env ${calib_env}
            "${CARGO}" build --manifest-path "${calib_src}/Cargo.toml" --profile "${GGML_QAT_CALIBRATOR_PROFILE}"
                --target-dir "${GGML_QAT_CALIBRATOR_TARGET_DIR}"
        COMMAND "${CMAKE_COMMAND}" -E make_directory "${PROJECT_BINARY_DIR}/bin"
        COMMAND "${CMAKE_COMMAND}" -E copy "${calib_out}/ggml-qat-calibrate" "${GGML_QAT_CALIBRATE_EXE}"
        DEPENDS ${calib_sources} "${calib_src}/Cargo.toml" "${calib_src}/Cargo.lock" "${calib_src}/build.rs"
            ${calib_depends}
        WORKING_DIRECTORY "${calib_src}"
        COMMENT "cargo build --profile ${GGML_QAT_CALIBRATOR_PROFILE} (ggml-qat-calibrate, libllama: ${GGML_QAT_CALIBRATOR_MODE})"
        USES_TERMINAL
        VERBATIM)
    add_custom_target(ggml-qat-calibrate ALL DEPENDS "${GGML_QAT_CALIBRATE_EXE}")
    # One cargo at a time (2-core machines): after the library and the tool.
    add_dependencies(ggml-qat-calibrate ggml-qat-quantize)

    install(PROGRAMS "${GGML_QAT_CALIBRATE_EXE}" DESTINATION ${CMAKE_INSTALL_BINDIR})
    if(llama_install_rpath)
        # A shared libllama of the tree: installed in lib/, beside this bin/.
        install(CODE "set(ggml_qat_calib \"${CMAKE_INSTALL_BINDIR}/ggml-qat-calibrate\")")
        install(CODE "set(ggml_qat_calib_rpath \"${llama_install_rpath}\")")
        install(CODE [[
            set(exe "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/${ggml_qat_calib}")
            file(READ_ELF "${exe}" RPATH old)   # calibrate/build.rs: DT_RPATH
            if(NOT old)
                file(READ_ELF "${exe}" RUNPATH old)
            endif()
            file(RPATH_CHANGE FILE "${exe}" OLD_RPATH "${old}" NEW_RPATH "${ggml_qat_calib_rpath}")
        ]])
    endif()
endif()
