//! Build script: compiles the C shim against the llama.cpp tree's headers
//! and links that tree's libllama and ggml statically (one ggml: theirs).
//!
//! The tree and its build come from `GGML_QAT_LLAMA_CPP_SRC` and
//! `GGML_QAT_LLAMA_CPP_BUILD`, by default `../.deps/llama.cpp-src/
//! llama.cpp-0.3.36` and `../.deps/llama.cpp-build`, as made by
//! `scripts/build-llama-tools.sh` (static libraries, Release).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    for var in ["GGML_QAT_LLAMA_CPP_SRC", "GGML_QAT_LLAMA_CPP_BUILD"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=src/shim.c");
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let version = "0.3.36";
    let src = env::var_os("GGML_QAT_LLAMA_CPP_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            root.join(".deps/llama.cpp-src")
                .join(format!("llama.cpp-{version}"))
        });
    let build = env::var_os("GGML_QAT_LLAMA_CPP_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".deps/llama.cpp-build"));
    if !src.join("include/llama.h").is_file() {
        fail(&format!("llama.h not found under {}", src.display()));
    }
    cc::Build::new()
        .file("src/shim.c")
        .include(src.join("include"))
        .include(src.join("ggml/include"))
        .warnings(true)
        .compile("ggml_qat_calibrate_shim");
    link(&build);
}

fn fail(why: &str) -> ! {
    panic!(
        "{why}: build llama.cpp first with scripts/build-llama-tools.sh, or set \
         GGML_QAT_LLAMA_CPP_SRC / GGML_QAT_LLAMA_CPP_BUILD"
    );
}

/// Links libllama, ggml's static libraries, OpenMP when ggml-cpu uses it, and
/// the C++ runtime.
fn link(build: &Path) {
    let libs = ["llama", "ggml", "ggml-cpu", "ggml-base"];
    let mut dirs = Vec::new();
    for lib in libs {
        let file = format!("lib{lib}.a");
        let found = [build.join("src"), build.join("ggml/src"), build.join("lib")]
            .into_iter()
            .find(|d| d.join(&file).is_file())
            .unwrap_or_else(|| fail(&format!("{file} not found under {}", build.display())));
        println!("cargo:rerun-if-changed={}", found.join(&file).display());
        if !dirs.contains(&found) {
            println!("cargo:rustc-link-search=native={}", found.display());
            dirs.push(found);
        }
    }
    for lib in libs {
        println!("cargo:rustc-link-lib=static={lib}");
    }
    let cache = fs::read_to_string(build.join("CMakeCache.txt")).unwrap_or_default();
    if cache.contains("GGML_OPENMP:BOOL=ON") && cache.contains("OpenMP_C_FLAGS:STRING=-fopenmp") {
        println!("cargo:rustc-link-lib=dylib=gomp");
    }
    println!("cargo:rustc-link-lib=dylib=stdc++");
}
