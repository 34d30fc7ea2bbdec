//! The calibrator on embedding models: tiny BERT-architecture GGUFs written
//! by `tests/tiny_bert.py` (random weights, a WordPiece vocabulary, no
//! language-model head). Their sensitivities are 1 − cosine of the pooled
//! embeddings: checked against the same figure computed from the pooled
//! embeddings of a model whose role was quantized on disk, against a finer
//! probe, across pooling types, and reproducible data-free.
//!
//! Needs `scripts/build-llama-tools.sh` (the llama.cpp build) and
//! `scripts/fetch-gguf-py.sh` (the gguf Python package); `scripts/test.sh`
//! runs both first.

mod common;

use common::{calibrate, ok, python, root, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh folder for one test (apart from calibrate.rs's).
fn dir(name: &str) -> PathBuf {
    common::dir(&format!("embed-{name}"))
}

/// A tiny BERT model; `extra`: tiny_bert.py's options.
fn tiny_bert(d: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let m = d.join(format!("{name}.gguf"));
    let script = root().join("calibrate/tests/tiny_bert.py");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&script, &m];
    for e in extra {
        args.push(e);
    }
    ok(python(&args), "tiny_bert.py");
    m
}

/// Runs the calibrator on `model` with `-c 64 --report`, and `extra`;
/// the summary line and the report.
fn run(model: &Path, out: &Path, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> (String, Value) {
    let report = out.with_extension("json");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&model, &"-c", &"64", &"-o", &out, &"--report", &report];
    args.extend_from_slice(extra);
    let summary = ok(calibrate(&args), "ggml-qat-calibrate");
    let r = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (summary, r)
}

/// A group's figure in a report.
fn figure(r: &Value, group: &str) -> f64 {
    let groups = r["sensitivity"]["groups"].as_array().expect("groups");
    let g = groups.iter().find(|g| g["name"] == group);
    g.unwrap_or_else(|| panic!("no group {group}"))["kld"]
        .as_f64()
        .unwrap()
}

fn groups(r: &Value) -> Vec<(String, f64)> {
    let groups = r["sensitivity"]["groups"].as_array().expect("groups");
    let name = |g: &Value| g["name"].as_str().unwrap().to_string();
    groups
        .iter()
        .map(|g| (name(g), g["kld"].as_f64().unwrap()))
        .collect()
}

/// Rows of f32 from a `--save-embeddings` file.
fn embeddings(p: &Path, n: usize) -> Vec<Vec<f64>> {
    let b = std::fs::read(p).unwrap();
    assert!(!b.is_empty() && b.len() % (4 * n) == 0, "{} bytes", b.len());
    let v: Vec<f64> = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    v.chunks(n).map(<[f64]>::to_vec).collect()
}

fn one_minus_cos(a: &[f64], b: &[f64]) -> f64 {
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    1.0 - dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

const N_EMBD: usize = 64;

/// The attn_v figure equals the mean 1 − cos between the pooled
/// embeddings of the model and of the same model with attn_v round-tripped
/// through Q4_0 on disk (by gguf-py's quantizer, not ggml's), both from
/// llama.cpp. Every group costs something at Q4_0, next to nothing at F16;
/// the restored model costs nothing; the file's factors are figure / NSR.
#[test]
fn sensitivity_is_one_minus_cosine_of_pooled_embeddings() {
    let d = dir("cosine");
    let model = tiny_bert(&d, "bert", &[]);
    let quantized = tiny_bert(&d, "bert-v", &["--round-trip", "attn_v"]);
    let txt = text(&d, 600);
    let (a, b) = (d.join("a.emb"), d.join("b.emb"));
    let (summary, r) = run(
        &model,
        &d.join("q4.gguf"),
        &[&"-f", &txt, &"--save-embeddings", &a],
    );
    // Its vectors only (--no-sensitivity: the model mapped, not probed).
    run(
        &quantized,
        &d.join("v.gguf"),
        &[&"-f", &txt, &"--no-sensitivity", &"--save-embeddings", &b],
    );
    assert!(summary.contains("sensitivities (1-cosine)"), "{summary}");
    assert_eq!(r["sensitivity"]["measure"], "1-cosine");
    let (ea, eb) = (embeddings(&a, N_EMBD), embeddings(&b, N_EMBD));
    assert_eq!(
        ea.len(),
        r["sensitivity"]["positions"].as_u64().unwrap() as usize
    );
    let want = ea
        .iter()
        .zip(&eb)
        .map(|(x, y)| one_minus_cos(x, y))
        .sum::<f64>()
        / ea.len() as f64;
    let got = figure(&r, "attn_v");
    println!("attn_v: calibrator {got:.6e}, from the two models' embeddings {want:.6e}");
    assert!(want > 1e-4, "{want}");
    assert!((got - want).abs() <= 1e-3 * want, "{got} vs {want}");
    assert!(r["sensitivity"]["floor"].as_f64().unwrap() <= 1e-9);
    let (_, f16) = run(
        &model,
        &d.join("f16.gguf"),
        &[&"-f", &txt, &"--probe-type", &"f16"],
    );
    for (name, q4) in groups(&r) {
        let fine = figure(&f16, &name);
        println!("{name}: q4_0 {q4:.3e}, f16 {fine:.3e}");
        assert!(q4 > 1e-5 && q4 < 0.5, "{name}: {q4}");
        assert!(fine < q4 / 100.0, "{name}: f16 {fine} vs q4_0 {q4}");
    }
    let script = root().join("calibrate/tests/check_calib.py");
    let q4 = d.join("q4.gguf");
    let key = "from check_calib import load; import sys; \
               print(load(sys.argv[1])[1]['ggml_qat.factors.measure'])";
    let cwd = root().join("calibrate/tests");
    let measure = Command::new("python3")
        .current_dir(&cwd)
        .env("PYTHONPATH", root().join(".deps/python"))
        .args(["-c", key])
        .arg(&q4)
        .output()
        .unwrap();
    assert_eq!(ok(measure, "reading the measure").trim(), "1-cosine");
    println!(
        "{}",
        ok(
            python(&[&script, &"factors", &q4, &"1e-5", &"0.5"]),
            "check_calib.py"
        )
    );
    println!(
        "{}",
        ok(python(&[&script, &"layout", &q4]), "check_calib.py")
    );
}

/// A model pooling nothing is pooled here by the mean of its token
/// embeddings: the same vectors and figures as llama.cpp's mean pooling of
/// the same weights. CLS pooling works too.
#[test]
fn pooling_none_is_the_mean_of_token_embeddings() {
    let d = dir("pooling");
    let mean = tiny_bert(&d, "mean", &["--pooling", "mean"]);
    let none = tiny_bert(&d, "none", &["--pooling", "none"]);
    let cls = tiny_bert(&d, "cls", &["--pooling", "cls"]);
    let txt = text(&d, 600);
    let (a, b) = (d.join("mean.emb"), d.join("none.emb"));
    let (_, rm) = run(
        &mean,
        &d.join("m.gguf"),
        &[&"-f", &txt, &"--save-embeddings", &a],
    );
    let (_, rn) = run(
        &none,
        &d.join("n.gguf"),
        &[&"-f", &txt, &"--save-embeddings", &b],
    );
    let (ea, eb) = (embeddings(&a, N_EMBD), embeddings(&b, N_EMBD));
    assert_eq!(ea.len(), eb.len());
    for (x, y) in ea.iter().zip(&eb) {
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() <= 1e-5 * (1.0 + p.abs()), "{p} vs {q}");
        }
    }
    for (name, m) in groups(&rm) {
        let n = figure(&rn, &name);
        assert!((m - n).abs() <= 1e-3 * m, "{name}: mean {m} vs none {n}");
    }
    let (_, rc) = run(&cls, &d.join("c.gguf"), &[&"-f", &txt]);
    assert_eq!(rc["sensitivity"]["measure"], "1-cosine");
    assert!(groups(&rc).iter().all(|(_, v)| *v > 0.0 && *v < 1.0));
}

/// Data-free: sequences drawn from the vocabulary, the same for the same
/// seed (the same file, byte for byte), others for another seed.
#[test]
fn data_free_same_seed_same_file() {
    let d = dir("seed");
    let model = tiny_bert(&d, "bert", &[]);
    let go = |seed: &str, name: &str| {
        let out = d.join(format!("{name}.gguf"));
        let txt = d.join(format!("{name}.txt"));
        let args: [&dyn AsRef<std::ffi::OsStr>; 6] =
            [&"--tokens", &"300", &"--seed", &seed, &"--save-text", &txt];
        run(&model, &out, &args)
    };
    let (summary, r) = go("7", "a");
    go("7", "b");
    go("8", "c");
    let read = |p: &str| std::fs::read(d.join(p)).unwrap();
    assert!(
        read("a.gguf") == read("b.gguf"),
        "same seed, different files"
    );
    assert!(read("a.txt") == read("b.txt"), "same seed, different text");
    assert!(read("a.gguf") != read("c.gguf"), "another seed, same file");
    assert!(read("a.txt") != read("c.txt"), "another seed, same text");
    assert!(!read("a.txt").is_empty());
    assert!(
        summary.contains(
            "320 tokens (0 of text in 0 chunks of 64, 320 drawn uniformly from the vocabulary"
        ),
        "{summary}"
    );
    assert_eq!(r["drawn_tokens"], true);
    assert_eq!(r["generated_tokens"], 320);
    assert_eq!(r["sequences"], 5);
    assert_eq!(r["sensitivity"]["measure"], "1-cosine");
    assert!(r["weights"].as_u64().unwrap() == 18, "{}", r["weights"]);
    assert!(groups(&r).iter().all(|(_, v)| *v > 0.0));
}

/// A failure: exit status 1, the message, and no output file.
fn fails(args: &[&dyn AsRef<std::ffi::OsStr>], out: &Path, message: &str) {
    let r = calibrate(args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains(message), "expected {message:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "{} left behind", out.display());
}

#[test]
fn embedding_errors_are_clear() {
    let d = dir("errors");
    let model = tiny_bert(&d, "bert", &[]);
    let rank = tiny_bert(&d, "rank", &["--pooling", "rank"]);
    let out = d.join("out.gguf");
    fails(
        &[&model, &"-c", &"256", &"-o", &out],
        &out,
        "reads at most 128 positions",
    );
    fails(
        &[&rank, &"-c", &"64", &"--tokens", &"64", &"-o", &out],
        &out,
        "pools by rank",
    );
    ok(
        calibrate(&[
            &rank,
            &"-c",
            &"64",
            &"--tokens",
            &"64",
            &"--no-sensitivity",
            &"-o",
            &out,
        ]),
        "a reranker without sensitivities",
    );
    std::fs::remove_file(&out).unwrap();
    let llama = d.join("llama.gguf");
    let script = root().join("calibrate/tests/tiny_model.py");
    ok(python(&[&script, &llama]), "tiny_model.py");
    fails(
        &[
            &llama,
            &"-c",
            &"64",
            &"--tokens",
            &"64",
            &"--save-embeddings",
            &d.join("e.bin"),
            &"-o",
            &out,
        ],
        &out,
        "--save-embeddings: this model has a language-model head",
    );
}
