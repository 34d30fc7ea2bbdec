//! The calibrator end to end on tiny llama-architecture models written by
//! `tests/tiny_model.py` (random weights, an SPM vocabulary of ~330 tokens):
//! its sums against the real llama-imatrix built from the same llama.cpp
//! tree on the same text, its own layout (Gram diagonal = sums / counts),
//! reproducibility of the self-generated text, and its errors.
//!
//! Needs `scripts/build-llama-tools.sh` (llama-imatrix) and
//! `scripts/fetch-gguf-py.sh` (the gguf Python package); `scripts/test.sh`
//! runs both first.

mod common;

use common::{calibrate, check, dir, llama_bin, ok, python, root, text, tiny_model};
use std::path::Path;
use std::process::Command;

/// Relative tolerance (largest difference over the largest sum) against
/// llama-imatrix: it adds squares in f32 over all rows (~1500 here; worst
/// case n·2⁻²⁴ ≈ 1e-4, measured 1.3e-5), we in f64.
const IMATRIX_TOL: &str = "1e-4";

/// Our sums equal llama-imatrix's on the same text and chunk size.
fn against_imatrix(name: &str, experts: u32) {
    let d = dir(name);
    let model = tiny_model(&d, experts);
    let txt = text(&d, 1500);
    let (ours, theirs) = (d.join("ours.gguf"), d.join("theirs.gguf"));
    ok(
        calibrate(&[&model, &"-f", &txt, &"-c", &"64", &"-o", &ours]),
        "ggml-qat-calibrate",
    );
    let out = Command::new(llama_bin("llama-imatrix"))
        .args([
            "-t", "2", "-c", "64", "-b", "64", "-ub", "64", "--no-ppl", "-m",
        ])
        .arg(&model)
        .arg("-f")
        .arg(&txt)
        .arg("-o")
        .arg(&theirs)
        .output()
        .expect("llama-imatrix runs");
    ok(out, "llama-imatrix");
    println!("{}", check(&[&"imatrix", &ours, &theirs, &IMATRIX_TOL]));
    // The output head has a Gram matrix (only: llama-imatrix writes no
    // entry for it without --process-output, nor do we).
    println!("{}", check(&[&"layout", &ours, &"head"]));
}

#[test]
fn dense_sums_equal_llama_imatrix() {
    against_imatrix("dense", 0);
}

#[test]
fn expert_sums_equal_llama_imatrix() {
    against_imatrix("experts", 4);
}

#[test]
fn same_seed_same_file() {
    let d = dir("seed");
    let model = tiny_model(&d, 0);
    let run = |seed: &str, out: &Path, text: &Path| {
        ok(
            calibrate(&[
                &model,
                &"--tokens",
                &"600",
                &"-c",
                &"64",
                &"-b",
                &"4",
                &"--seed",
                &seed,
                &"--save-text",
                &text,
                &"-o",
                &out,
            ]),
            "ggml-qat-calibrate",
        )
    };
    let summary = run("7", &d.join("a.gguf"), &d.join("a.txt"));
    run("7", &d.join("b.gguf"), &d.join("b.txt"));
    run("8", &d.join("c.gguf"), &d.join("c.txt"));
    let read = |p: &str| std::fs::read(d.join(p)).unwrap();
    assert!(
        read("a.gguf") == read("b.gguf"),
        "same seed, different files"
    );
    assert!(read("a.txt") == read("b.txt"), "same seed, different text");
    assert!(read("a.gguf") != read("c.gguf"), "another seed, same file");
    assert!(!read("a.txt").is_empty());
    assert!(
        summary.contains("640 tokens (0 of text in 0 chunks of 64, 640 self-generated"),
        "{summary}"
    );
    println!("{}", check(&[&"layout", &d.join("a.gguf")]));
    // Statistics and the sensitivities' reference both from the generation.
    println!(
        "{}",
        check(&[&"factors", &d.join("a.gguf"), &"1e-4", &"10"])
    );
}

/// The sensitivities react to the probe: at Q4_0 every group costs the
/// model a KL divergence well above zero; at F16 (a near-lossless round
/// trip of these F32 weights) next to none. Three blocks, so each depth
/// third holds one; the expert model's `*_exps` count as their roles.
#[test]
fn sensitivities_measure_the_probe() {
    let d = dir("sensitivity");
    let script = root().join("calibrate/tests/tiny_model.py");
    let model = d.join("tiny3.gguf");
    ok(
        python(&[&script, &model, &"--layers", &"3"]),
        "tiny_model.py",
    );
    let txt = text(&d, 1500);
    let run = |probe: &str, out: &Path| {
        ok(
            calibrate(&[
                &model,
                &"-f",
                &txt,
                &"-c",
                &"64",
                &"--sensitivity-tokens",
                &"256",
                &"--probe-type",
                &probe,
                &"-o",
                &out,
            ]),
            "ggml-qat-calibrate",
        )
    };
    let (q4, f16) = (d.join("q4.gguf"), d.join("f16.gguf"));
    run("q4_0", &q4);
    run("F16", &f16);
    let q4 = check(&[&"factors", &q4, &"1e-4", &"10"]);
    assert!(q4.contains("depth2") && q4.contains("token_embd"), "{q4}");
    println!("{q4}");
    println!("{}", check(&[&"factors", &f16, &"0", &"1e-5"]));
    let experts = tiny_model(&d, 4);
    let out = d.join("experts.gguf");
    ok(
        calibrate(&[&experts, &"-f", &txt, &"-c", &"64", &"-o", &out]),
        "ggml-qat-calibrate",
    );
    let e = check(&[&"factors", &out, &"1e-4", &"10"]);
    assert!(e.contains("ffn_down") && !e.contains("exps"), "{e}");
}

/// A failure: exit status 1, the message, and no output file.
fn fails(args: &[&dyn AsRef<std::ffi::OsStr>], out: &Path, message: &str) {
    let r = calibrate(args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains(message), "expected {message:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
    if out.parent().is_some_and(Path::is_dir) && out != Path::new("/dev/full") {
        let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("out.gguf"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

#[test]
fn errors_are_clear_and_leave_nothing() {
    let d = dir("errors");
    let model = tiny_model(&d, 0);
    let out = d.join("out.gguf");
    let txt = text(&d, 10);
    fails(&[&txt, &"-o", &out], &out, "not a GGUF file");
    fails(
        &[&d.join("missing.gguf"), &"-o", &out],
        &out,
        "No such file",
    );
    let broken = d.join("broken.gguf");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    fails(
        &[&broken, &"-o", &out],
        &out,
        "llama.cpp could not load the model",
    );
    let dup = d.join("dup.gguf");
    let script = root().join("calibrate/tests/tiny_model.py");
    ok(
        python(&[&script, &dup, &"--duplicate-token"]),
        "tiny_model.py",
    );
    fails(&[&dup, &"-o", &out], &out, "llama.cpp stopped");
    fails(
        &[&model, &"-f", &txt, &"-c", &"64", &"-o", &out],
        &out,
        "fewer than one chunk",
    );
    fails(
        &[&model, &"-o", &"/dev/full"],
        Path::new("/dev/full"),
        "not a regular file",
    );
    fails(&[&model, &"-o", &d], &d, "not a regular file");
    let nowhere = d.join("no/such/dir/out.gguf");
    fails(&[&model, &"-o", &nowhere], &nowhere, "No such file");
    fails(&[&model, &"--top-p", &"0", &"-o", &out], &out, "--top-p");
    for probe in ["iq2_xs", "q9_9", "f32"] {
        fails(
            &[&model, &"--probe-type", &probe, &"-o", &out],
            &out,
            "--probe-type",
        );
    }
    let q8 = d.join("q8.gguf");
    let r = Command::new(llama_bin("llama-quantize"))
        .arg(&model)
        .arg(&q8)
        .arg("Q8_0")
        .output()
        .expect("llama-quantize runs");
    ok(r, "llama-quantize");
    fails(
        &[
            &q8,
            &"-f",
            &txt,
            &"--tokens",
            &"128",
            &"-c",
            &"64",
            &"-o",
            &out,
        ],
        &out,
        "--no-sensitivity",
    );
    ok(
        calibrate(&[
            &q8,
            &"--tokens",
            &"128",
            &"-c",
            &"64",
            &"--no-sensitivity",
            &"-o",
            &out,
        ]),
        "ggml-qat-calibrate --no-sensitivity on a Q8_0 model",
    );
    std::fs::remove_file(&out).unwrap();
    full_disk(&model, &out);
    assert!(!out.exists());
}

/// A disk that fills up while the file is written (a 64 KiB file-size
/// limit): the write error, exit status 1, nothing left behind.
fn full_disk(model: &Path, out: &Path) {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(env!("CARGO_BIN_EXE_ggml-qat-calibrate"));
    c.args(["-q", "-t", "2", "--tokens", "128", "-c", "64", "-o"])
        .arg(out)
        .arg(model);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 65536,
                rlim_max: 65536,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let r = c.output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(!out.exists());
    let left = std::fs::read_dir(out.parent().unwrap()).unwrap().flatten();
    assert!(!left
        .into_iter()
        .any(|e| e.file_name().to_string_lossy().contains("out.gguf")));
}

/// `--progress-fd`: `STAGE DONE TOTAL` lines, each stage from 0 to its
/// total, counts never going back; `--report`: the JSON says what the
/// summary line says, and the file size.
#[test]
fn progress_lines_and_report() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let d = dir("progress");
    let model = tiny_model(&d, 0);
    let txt = text(&d, 200);
    let (out, rep, prog) = (d.join("out.gguf"), d.join("r.json"), d.join("p.txt"));
    let file = std::fs::File::create(&prog).unwrap();
    let fd = file.as_raw_fd();
    let mut c = Command::new(env!("CARGO_BIN_EXE_ggml-qat-calibrate"));
    c.args(["-t", "2", "-q", "-c", "64", "--tokens", "1024", "-f"])
        .arg(&txt)
        .arg("--progress-fd")
        .arg(fd.to_string())
        .arg("--report")
        .arg(&rep)
        .arg("-o")
        .arg(&out)
        .arg(&model);
    // SAFETY: fcntl is async-signal-safe: the descriptor survives the exec.
    unsafe {
        c.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let summary = ok(c.output().unwrap(), "ggml-qat-calibrate --progress-fd");
    drop(file);
    let lines = std::fs::read_to_string(&prog).unwrap();
    let mut stages: Vec<(String, u64, u64)> = Vec::new();
    for l in lines.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f.len(), 3, "{l:?} in\n{lines}");
        let (done, total): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        assert!(done <= total, "{l}");
        match stages.last_mut() {
            Some(s) if s.0 == f[0] => {
                assert!(done >= s.1 && total == s.2, "{l} after {s:?}");
                s.1 = done;
            }
            _ => {
                assert_eq!(done, 0, "a stage starts at 0: {l}");
                stages.push((f[0].to_string(), done, total));
            }
        }
    }
    let names: Vec<&str> = stages.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, ["evaluate", "generate", "sensitivity"], "{lines}");
    assert!(stages.iter().all(|s| s.1 == s.2), "unfinished: {stages:?}");
    let r = std::fs::read_to_string(&rep).unwrap();
    let num = |key: &str| -> f64 {
        let at = r
            .find(&format!("\"{key}\": "))
            .unwrap_or_else(|| panic!("{key} in {r}"));
        let v = &r[at + key.len() + 4..];
        v[..v.find([',', '\n']).unwrap()].trim().parse().unwrap()
    };
    let text_tokens = num("text_tokens");
    assert_eq!(stages[0].2 as f64, text_tokens, "{r}");
    assert_eq!(num("tokens"), 1024.0, "{r}");
    assert_eq!(text_tokens + num("generated_tokens"), 1024.0, "{r}");
    assert_eq!(num("chunk_size"), 64.0, "{r}");
    assert_eq!(
        num("output_bytes"),
        std::fs::metadata(&out).unwrap().len() as f64
    );
    assert_eq!(stages[2].2, 9, "sensitivity groups: {lines}");
    assert_eq!(r.matches("\"kld\"").count(), 9, "{r}");
    assert!(num("peak_rss_bytes") > 0.0 && num("total") > 0.0, "{r}");
    assert!(
        summary.contains(&format!("{} weights", num("weights"))),
        "{summary}\n{r}"
    );
    // Nothing but the three files is left.
    let mut left: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["out.gguf", "p.txt", "r.json", "text.txt", "tiny-0.gguf"]
    );
    // A bad descriptor is refused before any work.
    fails(
        &[&model, &"--progress-fd", &"999", &"-o", &out],
        &d.join("none/out.gguf"),
        "--progress-fd 999",
    );
}

/// SIGTERM (the C API's cancel), SIGINT and SIGHUP in the middle of a run:
/// the process dies of the signal and leaves neither the output nor its
/// temporary files (calibration file, report).
#[test]
fn a_signal_mid_run_leaves_nothing() {
    use std::io::BufRead;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let d = dir("signal");
    let model = tiny_model(&d, 0);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let (out, rep) = (d.join("out.gguf"), d.join("r.json"));
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (r, w) = unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        let (rfd, wfd) = (r.as_raw_fd(), w.as_raw_fd());
        let mut c = Command::new(env!("CARGO_BIN_EXE_ggml-qat-calibrate"));
        // Enough tokens for many seconds of generation.
        c.args(["-t", "2", "-q", "-c", "64", "--tokens", "1000000"])
            .arg(format!("--progress-fd={wfd}"))
            .arg("--report")
            .arg(&rep)
            .arg("-o")
            .arg(&out)
            .arg(&model)
            .stderr(std::process::Stdio::piped());
        // SAFETY: close is async-signal-safe.
        unsafe {
            c.pre_exec(move || {
                libc::close(rfd);
                Ok(())
            });
        }
        let mut child = c.spawn().unwrap();
        drop(w);
        let mut lines = std::io::BufReader::new(r).lines();
        // Into the generation: its temporary file exists.
        loop {
            let l = lines.next().expect("progress lines").unwrap();
            if l.starts_with("generate ") && !l.starts_with("generate 0 ") {
                break;
            }
        }
        let temps = || {
            std::fs::read_dir(&d)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("out.gguf") || n.contains("r.json"))
                .collect::<Vec<_>>()
        };
        assert_eq!(temps().len(), 1, "{:?}", temps());
        unsafe { libc::kill(child.id() as i32, sig) };
        let st = child.wait().unwrap();
        assert_eq!(st.signal(), Some(sig), "{st:?}");
        assert!(temps().is_empty(), "left behind: {:?}", temps());
    }
}
