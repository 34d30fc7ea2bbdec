# Builds the Rust library with cargo (release) and lays out
# <build>/lib/libggml-qat.so.<version> (+ .so.0, .so links) and libggml-qat.a.
# Defines the build-tree targets ggml-qat::ggml-qat and
# ggml-qat::ggml-qat-static, and ggml_qat_link(<target> shared|static).

find_program(CARGO cargo HINTS "$ENV{CARGO_HOME}/bin" "$ENV{HOME}/.cargo/bin" REQUIRED)

# Shared with plain `cargo` runs so build dependencies compile once.
set(GGML_QAT_CARGO_TARGET_DIR "${PROJECT_SOURCE_DIR}/target" CACHE PATH "cargo --target-dir of the CMake build")
set(cargo_dir "${GGML_QAT_CARGO_TARGET_DIR}")
set(lib_dir "${CMAKE_BINARY_DIR}/lib")
set(GGML_QAT_SHARED_REAL "${lib_dir}/libggml-qat.so.${PROJECT_VERSION}")
set(GGML_QAT_SHARED_SONAME "${lib_dir}/libggml-qat.so.${PROJECT_VERSION_MAJOR}")
set(GGML_QAT_SHARED_LINK "${lib_dir}/libggml-qat.so")
set(GGML_QAT_STATIC "${lib_dir}/libggml-qat.a")

file(GLOB_RECURSE rust_sources CONFIGURE_DEPENDS
    "${PROJECT_SOURCE_DIR}/src/*.rs" "${PROJECT_SOURCE_DIR}/src/*.c")
add_custom_command(
    OUTPUT "${GGML_QAT_SHARED_REAL}" "${GGML_QAT_SHARED_SONAME}" "${GGML_QAT_SHARED_LINK}" "${GGML_QAT_STATIC}"
    COMMAND "${CMAKE_COMMAND}" -E env
        "GGML_QAT_GGML_INCLUDE_DIR=${GGML_QAT_GGML_INCLUDE_DIR}"
        "GGML_QAT_GGML_LIB_DIR=${GGML_QAT_GGML_LIB_DIR}"
        "${CARGO}" build --release --lib --target-dir "${cargo_dir}"
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${lib_dir}"
    COMMAND "${CMAKE_COMMAND}" -E copy "${cargo_dir}/release/libggml_qat.so" "${GGML_QAT_SHARED_REAL}"
    COMMAND "${CMAKE_COMMAND}" -E copy "${cargo_dir}/release/libggml_qat.a" "${GGML_QAT_STATIC}"
    COMMAND "${CMAKE_COMMAND}" -E create_symlink "libggml-qat.so.${PROJECT_VERSION}" "${GGML_QAT_SHARED_SONAME}"
    COMMAND "${CMAKE_COMMAND}" -E create_symlink "libggml-qat.so.${PROJECT_VERSION_MAJOR}" "${GGML_QAT_SHARED_LINK}"
    DEPENDS ${rust_sources} "${PROJECT_SOURCE_DIR}/Cargo.toml" "${PROJECT_SOURCE_DIR}/build.rs"
        "${PROJECT_SOURCE_DIR}/cbindgen.toml"
    WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
    COMMENT "cargo build --release (ggml-qat)"
    USES_TERMINAL
    VERBATIM)
add_custom_target(ggml-qat-cargo ALL DEPENDS "${GGML_QAT_SHARED_REAL}" "${GGML_QAT_STATIC}")

# Rust std's system libraries, needed by consumers of the static library.
set(GGML_QAT_STATIC_SYSTEM_LIBS gcc_s util rt pthread m dl c)

add_library(ggml-qat::ggml-qat SHARED IMPORTED GLOBAL)
set_target_properties(ggml-qat::ggml-qat PROPERTIES
    IMPORTED_LOCATION "${GGML_QAT_SHARED_REAL}"
    IMPORTED_SONAME "libggml-qat.so.${PROJECT_VERSION_MAJOR}"
    INTERFACE_INCLUDE_DIRECTORIES "${PROJECT_SOURCE_DIR}/include"
    INTERFACE_LINK_LIBRARIES "${GGML_QAT_GGML_TARGETS}")
add_library(ggml-qat::ggml-qat-static STATIC IMPORTED GLOBAL)
set_target_properties(ggml-qat::ggml-qat-static PROPERTIES
    IMPORTED_LOCATION "${GGML_QAT_STATIC}"
    INTERFACE_INCLUDE_DIRECTORIES "${PROJECT_SOURCE_DIR}/include"
    INTERFACE_LINK_LIBRARIES "${GGML_QAT_GGML_TARGETS};${GGML_QAT_STATIC_SYSTEM_LIBS}")

# Links <target> to the shared or static library and orders it after cargo.
function(ggml_qat_link target kind)
    if(kind STREQUAL "static")
        target_link_libraries(${target} PRIVATE ggml-qat::ggml-qat-static)
    else()
        target_link_libraries(${target} PRIVATE ggml-qat::ggml-qat)
    endif()
    add_dependencies(${target} ggml-qat-cargo)
endfunction()
