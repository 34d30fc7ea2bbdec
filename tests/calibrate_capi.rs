//! `ggml_qat_calibrate_model`, the exported C function, running the real
//! calibrator (`calibrate/`, built separately: it links llama.cpp) on tiny
//! llama models written by `calibrate/tests/tiny_model.py`: the file equals
//! the command line's with the same seed, the progress callback sees every
//! stage and can cancel (nothing left behind), and the errors name what
//! went wrong.
//!
//! Needs `GGML_QAT_CALIBRATE` (the built `ggml-qat-calibrate`) and the
//! `gguf` Python package (`scripts/fetch-gguf-py.sh`; `GGML_QAT_PYTHONPATH`
//! or `.deps/python`): `scripts/test.sh` provides both. Without the
//! calibrator the test fails, unless `GGML_QAT_SKIP_CALIBRATOR=1` says to
//! skip it.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

use ggml_qat::capi::calibrate::{
    ggml_qat_calibrate_default_params, ggml_qat_calibrate_model, ggml_qat_calibrate_params_t,
    ggml_qat_calibrate_report_t,
};
use ggml_qat::capi::error::ggml_qat_last_error;
use ggml_qat::capi::types::CBool;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The calibrator, or `None` when the run says to skip.
fn calibrator() -> Option<PathBuf> {
    match std::env::var_os("GGML_QAT_CALIBRATE").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "GGML_QAT_CALIBRATE={}: no such file",
                p.display()
            );
            Some(p)
        }
        None if std::env::var("GGML_QAT_SKIP_CALIBRATOR").as_deref() == Ok("1") => {
            eprintln!("skipped: GGML_QAT_SKIP_CALIBRATOR=1");
            None
        }
        None => panic!(
            "GGML_QAT_CALIBRATE is not set: build the calibrator \
             ((cd calibrate && cargo build), after scripts/build-llama-tools.sh) and set it to \
             calibrate/target/debug/ggml-qat-calibrate, or set GGML_QAT_SKIP_CALIBRATOR=1 to skip"
        ),
    }
}

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("calibrate-capi-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_model(d: &Path) -> PathBuf {
    let m = d.join("tiny.gguf");
    let pypath = std::env::var_os("GGML_QAT_PYTHONPATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/python"));
    let out = Command::new("python3")
        .env("PYTHONPATH", pypath)
        .arg(root().join("calibrate/tests/tiny_model.py"))
        .arg(&m)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "tiny_model.py (needs scripts/fetch-gguf-py.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m
}

fn c(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(ggml_qat_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// The files in `d` whose name mentions `out`.
fn outputs(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("out"))
        .collect();
    v.sort();
    v
}

/// What the progress callback saw; `cancel_after`: return false at the
/// first call whose `done` is above 0.
#[derive(Default)]
struct Seen {
    calls: Vec<(String, u64, u64)>,
    cancel_after_start: bool,
}

unsafe extern "C" fn on_progress(
    stage: *const c_char,
    done: u64,
    total: u64,
    user_data: *mut c_void,
) -> bool {
    let seen = &mut *(user_data as *mut Seen);
    let stage = CStr::from_ptr(stage).to_string_lossy().into_owned();
    seen.calls.push((stage, done, total));
    !(seen.cancel_after_start && done > 0)
}

/// Small runs: 256 self-generated tokens in chunks of 64, two threads.
fn small_params(exe: &CString) -> ggml_qat_calibrate_params_t {
    let mut p = ggml_qat_calibrate_default_params();
    p.calibrator_path = exe.as_ptr();
    p.n_tokens = 256;
    p.n_ctx = 64;
    p.n_threads = 2;
    p
}

#[test]
fn calibrates_like_the_command_line() {
    let Some(exe) = calibrator() else { return };
    let d = dir("cli");
    let model = tiny_model(&d);
    let (out, cli_out, json) = (d.join("out.gguf"), d.join("cli.gguf"), d.join("r.json"));
    let exe_c = c(&exe);
    let mut p = small_params(&exe_c);
    // Seed 0 is a seed like any other.
    p.has_seed = CBool(1);
    p.seed = 0;
    let mut seen = Seen::default();
    p.progress = Some(on_progress);
    p.progress_user_data = &mut seen as *mut Seen as *mut c_void;
    let mut report = ggml_qat_calibrate_report_t::default();
    p.report = &mut report;
    let json_c = c(&json);
    p.report_path = json_c.as_ptr();
    let ok = unsafe { ggml_qat_calibrate_model(c(&model).as_ptr(), c(&out).as_ptr(), &p) };
    assert!(ok, "{}", last_error());
    let cli = Command::new(&exe)
        .args([
            "-q", "-t", "2", "--tokens", "256", "-c", "64", "--seed", "0", "-o",
        ])
        .arg(&cli_out)
        .arg(&model)
        .output()
        .unwrap();
    assert!(cli.status.success(), "{cli:?}");
    let ours = std::fs::read(&out).unwrap();
    assert!(
        ours == std::fs::read(&cli_out).unwrap(),
        "not the CLI's file"
    );
    // The progress: generation then sensitivities, each from 0 to its total.
    let stages: Vec<&str> = {
        let mut v: Vec<&str> = seen.calls.iter().map(|c| c.0.as_str()).collect();
        v.dedup();
        v
    };
    assert_eq!(stages, ["generate", "sensitivity"], "{:?}", seen.calls);
    assert_eq!(seen.calls[0], ("generate".into(), 0, 256));
    assert!(seen.calls.contains(&("generate".into(), 256, 256)));
    assert_eq!(seen.calls.last().unwrap(), &("sensitivity".into(), 9, 9));
    // The report struct and the JSON file.
    assert_eq!(report.tokens, 256);
    assert_eq!(report.generated_tokens, 256);
    assert_eq!(report.text_tokens, 0);
    assert_eq!(report.n_sensitivity_groups, 9);
    assert!(report.n_weights > 0 && report.n_grams > 0, "{report:?}");
    assert_eq!(report.output_bytes, ours.len() as u64);
    assert!(
        report.seconds > 0.0 && report.peak_rss_bytes > 0,
        "{report:?}"
    );
    assert!(report.sensitivity_floor >= 0.0 && report.sensitivity_floor < 1e-3);
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.contains("\"generated_tokens\": 256"), "{text}");
    // Another seed, another file; nothing but the outputs left.
    p.seed = 1;
    p.progress = None;
    p.report_path = std::ptr::null();
    let other = d.join("out-seed1.gguf");
    assert!(unsafe { ggml_qat_calibrate_model(c(&model).as_ptr(), c(&other).as_ptr(), &p) });
    assert!(std::fs::read(&other).unwrap() != ours);
    assert_eq!(outputs(&d), ["out-seed1.gguf", "out.gguf"]);
}

#[test]
fn cancel_and_errors_leave_nothing() {
    let Some(exe) = calibrator() else { return };
    let d = dir("errors");
    let model = tiny_model(&d);
    let out = d.join("out.gguf");
    let (model_c, out_c, exe_c) = (c(&model), c(&out), c(&exe));
    let call = |p: *const ggml_qat_calibrate_params_t, model: &CString| -> bool {
        unsafe { ggml_qat_calibrate_model(model.as_ptr(), out_c.as_ptr(), p) }
    };
    // Cancel from the callback in the middle of a long generation.
    let mut p = small_params(&exe_c);
    p.n_tokens = 1_000_000;
    let mut seen = Seen {
        cancel_after_start: true,
        ..Default::default()
    };
    p.progress = Some(on_progress);
    p.progress_user_data = &mut seen as *mut Seen as *mut c_void;
    let t = std::time::Instant::now();
    assert!(!call(&p, &model_c));
    assert_eq!(last_error(), "ggml_qat_calibrate_model: cancelled");
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
    assert!(outputs(&d).is_empty(), "{:?}", outputs(&d));
    assert_eq!(seen.calls.last().unwrap().0, "generate");
    // An explicit calibrator that does not exist.
    let mut p = small_params(&exe_c);
    let missing = CString::new("/nonexistent/ggml-qat-calibrate").unwrap();
    p.calibrator_path = missing.as_ptr();
    assert!(!call(&p, &model_c));
    let e = last_error();
    assert!(
        e.contains("/nonexistent/ggml-qat-calibrate") && e.contains("not an executable"),
        "{e}"
    );
    // A model that is not one: the calibrator's message, no output.
    let p = small_params(&exe_c);
    let text = d.join("text.txt");
    std::fs::write(&text, "not a model").unwrap();
    assert!(!call(&p, &c(&text)));
    let e = last_error();
    assert!(
        e.contains("not a GGUF file") && e.contains("exit status 1"),
        "{e}"
    );
    // A bad option value is the calibrator's to refuse.
    let mut p = small_params(&exe_c);
    let probe = CString::new("q9_9").unwrap();
    p.probe_type = probe.as_ptr();
    assert!(!call(&p, &model_c));
    assert!(
        last_error().contains("--probe-type q9_9"),
        "{}",
        last_error()
    );
    assert!(outputs(&d).is_empty(), "{:?}", outputs(&d));
}

/// Arguments refused before any process starts (no calibrator needed).
#[test]
fn bad_arguments() {
    let out = CString::new("/nonexistent/out.gguf").unwrap();
    let model = CString::new("/nonexistent/model.gguf").unwrap();
    unsafe {
        assert!(!ggml_qat_calibrate_model(
            std::ptr::null(),
            out.as_ptr(),
            std::ptr::null()
        ));
        assert_eq!(last_error(), "ggml_qat_calibrate_model: model_path is NULL");
        assert!(!ggml_qat_calibrate_model(
            model.as_ptr(),
            std::ptr::null(),
            std::ptr::null()
        ));
        assert_eq!(
            last_error(),
            "ggml_qat_calibrate_model: output_path is NULL"
        );
        let mut p = ggml_qat_calibrate_default_params();
        p.n_text_files = 2;
        assert!(!ggml_qat_calibrate_model(model.as_ptr(), out.as_ptr(), &p));
        assert_eq!(
            last_error(),
            "ggml_qat_calibrate_model: params->text_files is NULL"
        );
        let mut p = ggml_qat_calibrate_default_params();
        p.n_ctx = -1;
        assert!(!ggml_qat_calibrate_model(model.as_ptr(), out.as_ptr(), &p));
        assert!(last_error().contains("params->n_ctx"), "{}", last_error());
        let mut p = ggml_qat_calibrate_default_params();
        p.temperature = f32::NAN;
        assert!(!ggml_qat_calibrate_model(model.as_ptr(), out.as_ptr(), &p));
        assert!(
            last_error().contains("params->temperature"),
            "{}",
            last_error()
        );
        let empty = CString::new("").unwrap();
        assert!(!ggml_qat_calibrate_model(
            empty.as_ptr(),
            out.as_ptr(),
            std::ptr::null()
        ));
        assert!(last_error().contains("empty"), "{}", last_error());
    }
}

/// The search when no calibrator is named: `$GGML_QAT_CALIBRATE`, then
/// `bin/` beside the library, then `PATH`; the error says what was tried.
/// Run in a child process of this test binary, so the environment it
/// changes is its own.
#[test]
fn the_calibrator_is_searched_for() {
    if std::env::var_os("CALIBRATE_CAPI_CHILD").is_some() {
        let model = CString::new("/nonexistent/model.gguf").unwrap();
        let out = CString::new("/nonexistent/out.gguf").unwrap();
        let ok =
            unsafe { ggml_qat_calibrate_model(model.as_ptr(), out.as_ptr(), std::ptr::null()) };
        assert!(!ok);
        println!("ERROR[{}]", last_error());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let run = |env: &[(&str, &str)]| -> String {
        let mut c = Command::new(&exe);
        c.args(["--exact", "the_calibrator_is_searched_for", "--nocapture"])
            .env("CALIBRATE_CAPI_CHILD", "1")
            .env_remove("GGML_QAT_CALIBRATE");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{s}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let at = s.find("ERROR[").expect("the child's message") + 6;
        s[at..at + s[at..].find("]\n").unwrap()].to_string()
    };
    // None anywhere.
    let e = run(&[("PATH", "/nonexistent")]);
    assert!(
        e.contains("was not found")
            && e.contains("GGML_QAT_CALIBRATE")
            && e.contains("bin/ggml-qat-calibrate")
            && e.contains("on PATH"),
        "{e}"
    );
    // $GGML_QAT_CALIBRATE naming nothing.
    let e = run(&[("GGML_QAT_CALIBRATE", "/nonexistent/calib")]);
    assert!(
        e.contains("/nonexistent/calib ($GGML_QAT_CALIBRATE)"),
        "{e}"
    );
    // One on PATH (a script standing in for it): it runs and fails.
    let d = dir("search");
    let fake = d.join("ggml-qat-calibrate");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'fake: error: I am on PATH' >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = run(&[("PATH", d.to_str().unwrap())]);
    assert!(
        e.contains("fake: error: I am on PATH") && e.contains("exit status 3"),
        "{e}"
    );
}
