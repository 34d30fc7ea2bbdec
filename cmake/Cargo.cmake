# Builds the Rust library with cargo (release) and lays out
# <build>/lib/libggml-qat.so.<version> (+ .so.0, .so links) and libggml-qat.a.
# Defines the build-tree targets ggml-qat and ggml-qat-static (aliases
# ggml-qat::ggml-qat and ggml-qat::ggml-qat-static), and
# ggml_qat_link(<target> shared|static).
# Inside a tree that builds ggml (GGML_QAT_GGML_MODE tree), cargo runs after
# the tree's ggml targets are built and links their files.

find_program(CARGO cargo HINTS "$ENV{CARGO_HOME}/bin" "$ENV{HOME}/.cargo/bin" REQUIRED)

# Shared with plain `cargo` runs so build dependencies compile once; inside a
# tree, the tree's build folder (another ggml: the crate is built for it).
if(GGML_QAT_GGML_MODE STREQUAL "tree")
    set(cargo_default "${PROJECT_BINARY_DIR}/cargo-target")
else()
    set(cargo_default "${PROJECT_SOURCE_DIR}/target")
endif()
set(GGML_QAT_CARGO_TARGET_DIR "${cargo_default}" CACHE PATH "cargo --target-dir of the CMake build")
set(cargo_dir "${GGML_QAT_CARGO_TARGET_DIR}")
set(lib_dir "${PROJECT_BINARY_DIR}/lib")
set(GGML_QAT_SHARED_REAL "${lib_dir}/libggml-qat.so.${PROJECT_VERSION}")
set(GGML_QAT_SHARED_SONAME "${lib_dir}/libggml-qat.so.${PROJECT_VERSION_MAJOR}")
set(GGML_QAT_SHARED_LINK "${lib_dir}/libggml-qat.so")
set(GGML_QAT_STATIC "${lib_dir}/libggml-qat.a")

file(GLOB_RECURSE rust_sources CONFIGURE_DEPENDS
    "${PROJECT_SOURCE_DIR}/src/*.rs" "${PROJECT_SOURCE_DIR}/src/*.c")
if(GGML_QAT_GGML_MODE STREQUAL "tree")
    # The tree's library files (build.rs links them) and their targets, so
    # that ggml is built first and a rebuilt ggml relinks this library.
    set(ggml_env "GGML_QAT_GGML_LIBS=${GGML_QAT_GGML_LIBS}")
    set(ggml_depends ${GGML_QAT_GGML_TARGETS})
else()
    set(ggml_env "--unset=GGML_QAT_GGML_LIBS")
    set(ggml_depends "")
endif()
add_custom_command(
    OUTPUT "${GGML_QAT_SHARED_REAL}" "${GGML_QAT_SHARED_SONAME}" "${GGML_QAT_SHARED_LINK}" "${GGML_QAT_STATIC}"
    COMMAND "${CMAKE_COMMAND}" -E env ${ggml_env}
        "GGML_QAT_GGML_INCLUDE_DIR=${GGML_QAT_GGML_INCLUDE_DIR}"
        "GGML_QAT_GGML_LIB_DIR=${GGML_QAT_GGML_LIB_DIR}"
        "${CARGO}" build --release --lib --target-dir "${cargo_dir}"
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${lib_dir}"
    COMMAND "${CMAKE_COMMAND}" -E copy "${cargo_dir}/release/libggml_qat.so" "${GGML_QAT_SHARED_REAL}"
    COMMAND "${CMAKE_COMMAND}" -E copy "${cargo_dir}/release/libggml_qat.a" "${GGML_QAT_STATIC}"
    COMMAND "${CMAKE_COMMAND}" -E create_symlink "libggml-qat.so.${PROJECT_VERSION}" "${GGML_QAT_SHARED_SONAME}"
    COMMAND "${CMAKE_COMMAND}" -E create_symlink "libggml-qat.so.${PROJECT_VERSION_MAJOR}" "${GGML_QAT_SHARED_LINK}"
    DEPENDS ${rust_sources} "${PROJECT_SOURCE_DIR}/Cargo.toml" "${PROJECT_SOURCE_DIR}/build.rs"
        "${PROJECT_SOURCE_DIR}/cbindgen.toml" ${ggml_depends}
    WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
    COMMENT "cargo build --release (ggml-qat)"
    USES_TERMINAL
    VERBATIM)
add_custom_target(ggml-qat-cargo ALL DEPENDS "${GGML_QAT_SHARED_REAL}" "${GGML_QAT_STATIC}")

# Rust std's system libraries, needed by consumers of the static library.
set(GGML_QAT_STATIC_SYSTEM_LIBS gcc_s util rt pthread m dl c)

# The files cargo leaves, as imported libraries; users link the interface
# targets ggml-qat / ggml-qat-static, which also order their builds after
# cargo's (dependencies of interface libraries are followed transitively,
# CMake >= 3.19, also through another library's link interface).
add_library(ggml-qat-shared-file SHARED IMPORTED GLOBAL)
set_target_properties(ggml-qat-shared-file PROPERTIES
    IMPORTED_LOCATION "${GGML_QAT_SHARED_REAL}"
    IMPORTED_SONAME "libggml-qat.so.${PROJECT_VERSION_MAJOR}")
add_library(ggml-qat-static-file STATIC IMPORTED GLOBAL)
set_target_properties(ggml-qat-static-file PROPERTIES
    IMPORTED_LOCATION "${GGML_QAT_STATIC}")

add_library(ggml-qat INTERFACE)
target_link_libraries(ggml-qat INTERFACE ggml-qat-shared-file ${GGML_QAT_GGML_TARGETS})
add_library(ggml-qat-static INTERFACE)
target_link_libraries(ggml-qat-static INTERFACE ggml-qat-static-file ${GGML_QAT_GGML_TARGETS}
    ${GGML_QAT_STATIC_SYSTEM_LIBS})
foreach(t ggml-qat ggml-qat-static)
    target_include_directories(${t} INTERFACE "$<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>")
    add_dependencies(${t} ggml-qat-cargo)
endforeach()
add_library(ggml-qat::ggml-qat ALIAS ggml-qat)
add_library(ggml-qat::ggml-qat-static ALIAS ggml-qat-static)

# Links <target> to the shared or static library and orders it after cargo.
function(ggml_qat_link target kind)
    if(kind STREQUAL "static")
        target_link_libraries(${target} PRIVATE ggml-qat::ggml-qat-static)
    else()
        target_link_libraries(${target} PRIVATE ggml-qat::ggml-qat)
    endif()
    add_dependencies(${target} ggml-qat-cargo)
endfunction()
