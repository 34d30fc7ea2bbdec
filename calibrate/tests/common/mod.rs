//! Helpers shared by the calibrator's integration tests: where the tools
//! are, running python, the calibrator and check_calib.py, a fresh folder,
//! a deterministic text.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn llama_bin(tool: &str) -> PathBuf {
    let build = std::env::var_os("GGML_QAT_LLAMA_CPP_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/llama.cpp-build"));
    build.join("bin").join(tool)
}

pub fn python(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let pypath = std::env::var_os("GGML_QAT_PYTHONPATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/python"));
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", pypath);
    for a in args {
        c.arg(a);
    }
    c.output().expect("python3 runs")
}

pub fn ok(out: Output, what: &str) -> String {
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// A fresh folder for one test.
pub fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn tiny_model(d: &Path, experts: u32) -> PathBuf {
    let m = d.join(format!("tiny-{experts}.gguf"));
    let script = root().join("calibrate/tests/tiny_model.py");
    ok(
        python(&[&script, &m, &"--experts", &experts.to_string()]),
        "tiny_model.py",
    );
    m
}

/// Deterministic English-like text of about `words` words.
pub fn text(d: &Path, words: usize) -> PathBuf {
    let vocab = [
        "the", "model", "weight", "of", "a", "token", "and", "quant", "layer", "is", "text", "to",
        "run", "data", "bit", "in", "small", "random", "values", "matrix",
    ];
    let mut s = String::new();
    let mut x: u64 = 12345;
    for i in 0..words {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(vocab[(x >> 33) as usize % vocab.len()]);
        s.push_str(if i % 13 == 12 { ".\n" } else { " " });
    }
    let p = d.join("text.txt");
    std::fs::write(&p, s).unwrap();
    p
}

pub fn calibrate(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ggml-qat-calibrate"));
    c.args(["-t", "2", "-q"]);
    for a in args {
        c.arg(a);
    }
    c.output().expect("the calibrator runs")
}

pub fn check(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let script = root().join("calibrate/tests/check_calib.py");
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&script];
    all.extend_from_slice(args);
    ok(python(&all), "check_calib.py")
}
