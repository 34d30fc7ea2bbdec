//! Build script: compiles the C shim against llama.cpp's headers and links
//! libllama and the ggml it was built with (one ggml in this process: that
//! one; it never meets the ggml of libggml-qat).
//!
//! Two ways to name them:
//!
//! - `GGML_QAT_LLAMA_LIBS`: the library files, `:`-separated, libllama first
//!   then its ggml (`libggml`, `libggml-cpu`, `libggml-base`), each static
//!   (`.a`) or shared (`.so`, found at run time through an rpath to its
//!   folder, DT_RPATH so that it serves their own dependencies too), with
//!   `GGML_QAT_LLAMA_INCLUDE_DIRS` (`:`-separated folders holding `llama.h`
//!   and ggml's headers) and optionally
//!   `GGML_QAT_LLAMA_SYSTEM_LIBS` (`:`-separated, e.g. `gomp` for a static
//!   ggml-cpu built with OpenMP; a static archive calling `GOMP_*` gets it
//!   anyway). CMake passes these (cmake/Calibrator.cmake:
//!   a llama.cpp tree's `llama` target, or an installed llama.cpp).
//! - Otherwise a llama.cpp source tree and its build folder,
//!   `GGML_QAT_LLAMA_CPP_SRC` and `GGML_QAT_LLAMA_CPP_BUILD`, by default
//!   `../.deps/llama.cpp-src/llama.cpp-0.3.36` and `../.deps/llama.cpp-build`,
//!   as made by `scripts/build-llama-tools.sh` (static libraries, Release).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    for var in [
        "GGML_QAT_LLAMA_CPP_SRC",
        "GGML_QAT_LLAMA_CPP_BUILD",
        "GGML_QAT_LLAMA_LIBS",
        "GGML_QAT_LLAMA_INCLUDE_DIRS",
        "GGML_QAT_LLAMA_SYSTEM_LIBS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=src/shim.c");
    let libs = split_var("GGML_QAT_LLAMA_LIBS");
    if !libs.is_empty() {
        let includes = split_var("GGML_QAT_LLAMA_INCLUDE_DIRS");
        if !includes.iter().any(|d| d.join("llama.h").is_file()) {
            fail("llama.h not found in GGML_QAT_LLAMA_INCLUDE_DIRS");
        }
        compile_shim(&includes);
        link_files(&libs);
        return;
    }
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
    compile_shim(&[src.join("include"), src.join("ggml/include")]);
    link_build(&build);
}

fn fail(why: &str) -> ! {
    panic!(
        "{why}: build llama.cpp first with scripts/build-llama-tools.sh, or set \
         GGML_QAT_LLAMA_CPP_SRC / GGML_QAT_LLAMA_CPP_BUILD, or GGML_QAT_LLAMA_LIBS / \
         GGML_QAT_LLAMA_INCLUDE_DIRS (or build with CMake, which finds libllama)"
    );
}

/// The non-empty `:`-separated entries of `var`.
fn split_var(var: &str) -> Vec<PathBuf> {
    env::var_os(var)
        .map(|v| {
            env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn compile_shim(includes: &[PathBuf]) {
    let mut b = cc::Build::new();
    b.file("src/shim.c");
    for dir in includes {
        b.include(dir);
    }
    b.warnings(true).compile("ggml_qat_calibrate_shim");
}

/// Links the given library files in their order: a static archive by name
/// from its folder; a shared library by name from its folder, with an rpath
/// to that folder. Static archives bring the C++ runtime (and the system
/// libraries of `GGML_QAT_LLAMA_SYSTEM_LIBS`).
fn link_files(libs: &[PathBuf]) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut any_static = false;
    let mut openmp = false;
    let mut rpath: Vec<PathBuf> = Vec::new();
    for file in libs {
        if !file.is_file() {
            fail(&format!(
                "{} (GGML_QAT_LLAMA_LIBS) is not a file",
                file.display()
            ));
        }
        println!("cargo:rerun-if-changed={}", file.display());
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(stem) = name.strip_prefix("lib") else {
            fail(&format!("{}: not a lib*.a or lib*.so file", file.display()));
        };
        let (kind, lib) = if let Some(lib) = stem.strip_suffix(".a") {
            any_static = true;
            openmp |= uses_openmp(file);
            ("static", lib)
        } else if let Some(i) = stem.find(".so") {
            ("dylib", &stem[..i])
        } else {
            fail(&format!("{}: not a lib*.a or lib*.so file", file.display()));
        };
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        if !dirs.contains(&dir) {
            println!("cargo:rustc-link-search=native={}", dir.display());
            dirs.push(dir.clone());
        }
        if kind == "dylib" && !rpath.contains(&dir) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            rpath.push(dir);
        }
        if kind == "dylib" && !name.ends_with(".so") {
            // A versioned file (libllama.so.0): linked by its full name.
            println!("cargo:rustc-link-lib=dylib:+verbatim={name}");
        } else {
            println!("cargo:rustc-link-lib={kind}={lib}");
        }
    }
    let system = split_var("GGML_QAT_LLAMA_SYSTEM_LIBS");
    for lib in &system {
        println!("cargo:rustc-link-lib=dylib={}", lib.display());
    }
    if openmp && !system.iter().any(|l| l.as_os_str() == "gomp") {
        println!("cargo:rustc-link-lib=dylib=gomp");
    }
    if any_static {
        println!("cargo:rustc-link-lib=dylib=stdc++");
    }
    if !rpath.is_empty() {
        // DT_RPATH, not DT_RUNPATH: it also serves the libraries' own
        // dependencies (an installed libllama.so has no rpath of its own
        // and needs libggml.so.0, which --as-needed left out of ours).
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
    }
}

/// Whether a static archive calls OpenMP's runtime (a ggml-cpu built with
/// GGML_OPENMP: GCC's `GOMP_*` entry points).
fn uses_openmp(archive: &Path) -> bool {
    let bytes = fs::read(archive).unwrap_or_default();
    bytes.windows(5).any(|w| w == b"GOMP_")
}

/// Links libllama, ggml's static libraries, OpenMP when ggml-cpu uses it, and
/// the C++ runtime, from a llama.cpp build folder.
fn link_build(build: &Path) {
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
