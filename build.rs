//! Build script: finds ggml, compiles the C shim of `src/ggml/` against its
//! headers, links ggml, and generates the C header with cbindgen.
//!
//! ggml is looked for, in order:
//! 1. `GGML_QAT_GGML_INCLUDE_DIR` + `GGML_QAT_GGML_LIBS`: the header folders
//!    and the library files themselves, each a path list (`:`), set by our
//!    CMake build inside a tree that builds ggml from source (the tree's
//!    `ggml`, `ggml-cpu`, `ggml-base` targets, whose files may lie in
//!    different folders),
//! 2. `GGML_QAT_GGML_INCLUDE_DIR` + `GGML_QAT_GGML_LIB_DIR` (set by our CMake
//!    build from `find_package(ggml)`),
//! 3. `ggml_DIR` (the folder holding `ggml-config.cmake`),
//! 4. each prefix of `CMAKE_PREFIX_PATH`,
//! 5. the project-local wheel install `.deps/ggml` (installed on demand by
//!    `scripts/install-ggml-wheel.sh`).
//!
//! The header goes to `$OUT_DIR/ggml-qat.h`; it is also written to
//! `include/ggml-qat.h` when that file is missing or `GGML_QAT_UPDATE_HEADER`
//! is set. A test fails when the committed header differs from the fresh one.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Ggml {
    /// Header folders (the first holds `ggml.h`).
    include: Vec<PathBuf>,
    /// Folders of the libraries, in the order of `libs`.
    lib_dirs: Vec<PathBuf>,
    /// Library names for `-l`, dependents first.
    libs: Vec<String>,
}

impl Ggml {
    /// An installed ggml: headers in `include`, `libggml{,-cpu,-base}` in `lib`.
    fn installed(include: PathBuf, lib: PathBuf) -> Ggml {
        Ggml {
            include: vec![include],
            lib_dirs: vec![lib],
            libs: ["ggml", "ggml-cpu", "ggml-base"].map(String::from).to_vec(),
        }
    }
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    for var in [
        "GGML_QAT_GGML_INCLUDE_DIR",
        "GGML_QAT_GGML_LIB_DIR",
        "GGML_QAT_GGML_LIBS",
        "ggml_DIR",
        "CMAKE_PREFIX_PATH",
        "GGML_QAT_UPDATE_HEADER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=src/ggml/shim.c");
    println!("cargo:rerun-if-changed=scripts/install-ggml-wheel.sh");

    let ggml = find_ggml(&root);
    for dir in &ggml.include {
        println!("cargo:rerun-if-changed={}", dir.join("ggml.h").display());
    }

    let mut shim = cc::Build::new();
    shim.file("src/ggml/shim.c");
    for dir in &ggml.include {
        shim.include(dir);
    }
    shim.std("c11").warnings(true).compile("ggml_qat_shim");

    let mut lib_dirs: Vec<&PathBuf> = Vec::new();
    for dir in &ggml.lib_dirs {
        if !lib_dirs.contains(&dir) {
            lib_dirs.push(dir);
        }
    }
    for dir in &lib_dirs {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for lib in &ggml.libs {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    // Tests, benches and the shared library find ggml where it was found.
    for dir in &lib_dirs {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libggml-qat.so.0");
    println!(
        "cargo:rustc-env=GGML_QAT_GGML_INCLUDE_DIR={}",
        ggml.include[0].display()
    );
    println!(
        "cargo:rustc-env=GGML_QAT_GGML_LIB_DIR={}",
        ggml.lib_dirs.last().unwrap().display()
    );

    avx512_cfg();
    generate_header(&root);
}

/// `cfg(ggml_qat_avx512)` when the compiler has stable AVX-512 intrinsics
/// (Rust 1.89): the AVX-512 kernels are compiled only then, so the crate
/// still builds with its older minimum Rust version.
fn avx512_cfg() {
    println!("cargo:rustc-check-cfg=cfg(ggml_qat_avx512)");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return;
    };
    // "rustc 1.95.0 (...)"
    let text = String::from_utf8_lossy(&out.stdout);
    let minor = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo:rustc-cfg=ggml_qat_avx512");
    }
}

fn find_ggml(root: &Path) -> Ggml {
    if let (Some(include), Some(libs)) = (
        env::var_os("GGML_QAT_GGML_INCLUDE_DIR"),
        env::var_os("GGML_QAT_GGML_LIBS"),
    ) {
        return from_files(&include, &libs);
    }
    if let (Some(include), Some(lib)) = (
        env::var_os("GGML_QAT_GGML_INCLUDE_DIR"),
        env::var_os("GGML_QAT_GGML_LIB_DIR"),
    ) {
        return Ggml::installed(include.into(), lib.into());
    }
    if let Some(dir) = env::var_os("ggml_DIR") {
        if let Some(g) = from_cmake_dir(Path::new(&dir)) {
            return g;
        }
        panic!("ggml_DIR={dir:?} holds no ggml-config.cmake with headers beside it");
    }
    if let Some(paths) = env::var_os("CMAKE_PREFIX_PATH") {
        for prefix in env::split_paths(&paths) {
            for libdir in ["lib", "lib64"] {
                if let Some(g) = from_cmake_dir(&prefix.join(libdir).join("cmake").join("ggml")) {
                    return g;
                }
            }
        }
    }
    let dest = root.join(".deps").join("ggml");
    let out = Command::new("sh")
        .arg(root.join("scripts").join("install-ggml-wheel.sh"))
        .arg(&dest)
        .output()
        .expect("cannot run scripts/install-ggml-wheel.sh");
    if !out.status.success() {
        panic!(
            "no ggml found (set ggml_DIR or CMAKE_PREFIX_PATH) and installing the wheel failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let prefix = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    from_cmake_dir(&prefix.join("lib64").join("cmake").join("ggml"))
        .expect("the ggml wheel has no CMake package")
}

/// Header folders and shared library files (`libNAME.so`), path lists.
fn from_files(include: &std::ffi::OsStr, libs: &std::ffi::OsStr) -> Ggml {
    let include: Vec<PathBuf> = env::split_paths(include).collect();
    if !include.iter().any(|d| d.join("ggml.h").is_file()) {
        panic!("GGML_QAT_GGML_INCLUDE_DIR={include:?}: no folder holds ggml.h");
    }
    let (mut lib_dirs, mut names) = (Vec::new(), Vec::new());
    for file in env::split_paths(libs) {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("lib"))
            .and_then(|n| n.split_once(".so"))
            .map(|(stem, _)| stem.to_owned());
        let (Some(name), Some(dir)) = (name, file.parent()) else {
            panic!("GGML_QAT_GGML_LIBS: {file:?} is not a shared library libNAME.so");
        };
        lib_dirs.push(dir.to_path_buf());
        names.push(name);
    }
    if names.is_empty() {
        panic!("GGML_QAT_GGML_LIBS is empty");
    }
    // ggml.h first on the include path.
    let mut include = include;
    include.sort_by_key(|d| !d.join("ggml.h").is_file());
    Ggml {
        include,
        lib_dirs,
        libs: names,
    }
}

/// `dir` is a CMake package folder `PREFIX/LIBDIR/cmake/ggml`.
fn from_cmake_dir(dir: &Path) -> Option<Ggml> {
    let has_config =
        dir.join("ggml-config.cmake").is_file() || dir.join("ggmlConfig.cmake").is_file();
    let lib = dir.parent()?.parent()?.to_path_buf();
    let include = lib.parent()?.join("include");
    (has_config && include.join("ggml.h").is_file()).then(|| Ggml::installed(include, lib))
}

fn generate_header(root: &Path) {
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src");
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("ggml-qat.h");
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write_to_file(&out);
    let committed = root.join("include").join("ggml-qat.h");
    if !committed.exists() || env::var_os("GGML_QAT_UPDATE_HEADER").is_some() {
        std::fs::create_dir_all(committed.parent().unwrap()).unwrap();
        std::fs::copy(&out, &committed).expect("cannot write include/ggml-qat.h");
    }
}
