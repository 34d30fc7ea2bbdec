//! The model tool never replaces what it must not: outputs and reports that
//! are devices, FIFOs, folders, the input or each other are refused before
//! any work; temporary files go on a signal; a closed stdout is no panic; an
//! absurd thread count is refused.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ggml_qat::model::gguf::{self, Kv, OutTensor};

const BIN: &str = env!("CARGO_BIN_EXE_ggml-qat-quantize");

#[path = "common/tmp.rs"]
mod tmp;
use tmp::Tmp as Dir;

/// A one-tensor F32 llama-style model of `rows` rows of 256 values.
fn model(path: &Path, rows: u64) {
    let kvs = vec![
        Kv::string("general.architecture", "llama"),
        Kv::u32("llama.block_count", 1),
        Kv::u32("llama.embedding_length", 256),
        Kv::u32("llama.attention.head_count", 8),
        Kv::u32("llama.attention.head_count_kv", 2),
    ];
    let n = 256 * rows;
    let t = OutTensor {
        name: "blk.0.ffn_up.weight".into(),
        ne: [256, rows, 1, 1],
        ty: 0,
        nbytes: n * 4,
    };
    let (mut b, _) = gguf::encode_header(&kvs, &[t], 32);
    b.extend((0..n).flat_map(|i| ((i as f32 * 0.37).sin() * 0.1).to_le_bytes()));
    std::fs::write(path, b).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the tool on one thread with extra arguments.
fn run(inp: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args([s(inp), s(out), "Q8_0", "1"])
        .args(extra)
        .output()
        .unwrap()
}

/// The run failed with status 1 and a message holding every `want`.
fn refused(o: &Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for w in want {
        assert!(err.contains(w), "'{err}' does not say '{w}'");
    }
}

#[test]
fn fifo_and_device_outputs_are_refused_untouched() {
    let d = Dir::new("paths-fifo");
    let inp = d.p("in.gguf");
    model(&inp, 4);
    let fifo = d.p("out.fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    refused(
        &run(&inp, &fifo, &[]),
        &["out.fifo", "FIFO", "not a regular file"],
    );
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // A character device of our own (as /dev/null), where we may make one.
    let node = d.p("null");
    let c = std::ffi::CString::new(s(&node)).unwrap();
    let mut want = vec!["in.gguf", "out.fifo"];
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0 {
        refused(&run(&inp, &node, &[]), &["character device"]);
        assert!(std::fs::metadata(&node)
            .unwrap()
            .file_type()
            .is_char_device());
        want.insert(1, "null");
    }
    assert_eq!(d.files(), want);
}

#[test]
fn dev_null_output_is_refused_before_any_work() {
    // Not a valid model: the old tool failed on it before touching
    // /dev/null, so this test never replaces /dev/null, whatever the code.
    let d = Dir::new("paths-devnull");
    let inp = d.p("in.gguf");
    std::fs::write(&inp, b"not a model").unwrap();
    refused(
        &run(&inp, Path::new("/dev/null"), &[]),
        &["/dev/null", "character device"],
    );
    let m = std::fs::metadata("/dev/null").unwrap();
    assert!(m.file_type().is_char_device());
}

#[test]
fn directory_output_is_refused_before_any_work() {
    let d = Dir::new("paths-dir");
    let inp = d.p("in.gguf");
    model(&inp, 4);
    std::fs::create_dir(d.p("out.gguf")).unwrap();
    refused(
        &run(&inp, &d.p("out.gguf"), &[]),
        &["out.gguf", "is a directory, not a regular file"],
    );
    assert_eq!(d.files(), ["in.gguf", "out.gguf"]);
}

#[test]
fn output_is_never_the_input() {
    let d = Dir::new("paths-same");
    let inp = d.p("in.gguf");
    model(&inp, 4);
    let before = std::fs::read(&inp).unwrap();
    std::fs::create_dir(d.p("sub")).unwrap();
    std::fs::hard_link(&inp, d.p("link.gguf")).unwrap();
    for out in [d.p("sub/../in.gguf"), d.p("link.gguf")] {
        refused(&run(&inp, &out, &[]), &["is the input", "in.gguf"]);
    }
    assert_eq!(std::fs::read(&inp).unwrap(), before);
    assert_eq!(d.files(), ["in.gguf", "link.gguf", "sub"]);
}

#[test]
fn report_is_never_the_input_nor_the_output() {
    let d = Dir::new("paths-report");
    let inp = d.p("in.gguf");
    model(&inp, 4);
    let before = std::fs::read(&inp).unwrap();
    std::fs::create_dir(d.p("sub")).unwrap();
    std::fs::hard_link(&inp, d.p("link.gguf")).unwrap();
    let out = d.p("out.gguf");
    for r in [&inp, &d.p("sub/../in.gguf"), &d.p("link.gguf")] {
        refused(&run(&inp, &out, &["--report", s(r)]), &["is the input"]);
    }
    // The output, as given or spelled otherwise (before it exists).
    for r in [&out, &d.p("sub/../out.gguf")] {
        refused(&run(&inp, &out, &["--report", s(r)]), &["the same file"]);
    }
    assert_eq!(std::fs::read(&inp).unwrap(), before);
    assert_eq!(d.files(), ["in.gguf", "link.gguf", "sub"]);
    // Once the output exists too.
    let o = run(&inp, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model_bytes = std::fs::read(&out).unwrap();
    refused(&run(&inp, &out, &["--report", s(&out)]), &["the same file"]);
    assert_eq!(std::fs::read(&out).unwrap(), model_bytes);
}

#[test]
fn report_in_a_missing_folder_leaves_no_output() {
    let d = Dir::new("paths-nofolder");
    let inp = d.p("in.gguf");
    model(&inp, 4);
    let r = d.p("no/such/report.json");
    refused(
        &run(&inp, &d.p("out.gguf"), &["--report", s(&r)]),
        &["report", "does not exist"],
    );
    assert_eq!(d.files(), ["in.gguf"]);
    // A good report is written whole, through a temporary file.
    let o = run(&inp, &d.p("out.gguf"), &["--report", s(&d.p("r.json"))]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.p("r.json")).unwrap()).unwrap();
    assert_eq!(j["tensors"].as_array().unwrap().len(), 1);
    assert_eq!(d.files(), ["in.gguf", "out.gguf", "r.json"]);
}

/// The temporary files left in the folder.
fn temporaries(d: &Dir) -> Vec<String> {
    let mut v = d.files();
    v.retain(|f| f.ends_with(".tmp"));
    v
}

#[test]
fn signals_remove_the_temporary_output() {
    let d = Dir::new("paths-signal");
    let inp = d.p("in.gguf");
    model(&inp, 4096); // 4 MiB of F32 through --optimize: about 30 s (killed early).
    let out = d.p("out.gguf");
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let mut child = Command::new(BIN)
            .args([s(&inp), s(&out), "Q4_K_M", "1", "--optimize", "--quiet"])
            .args(["--max-buffer-size", "1"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while temporaries(&d).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no temporary file"
            );
            assert!(child.try_wait().unwrap().is_none(), "finished too early");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let st = child.wait().unwrap();
        assert!(
            st.signal() == Some(sig) || st.code() == Some(128 + sig),
            "signal {sig}: {st:?}"
        );
        assert_eq!(d.files(), ["in.gguf"], "signal {sig}");
    }
}

#[test]
fn closed_stdout_is_no_panic() {
    // A pipe whose reader is gone: writes fail with EPIPE. (A closed fd 1
    // is reopened on /dev/null by Rust's runtime, so `>&-` proves nothing.)
    use std::os::fd::FromRawFd;
    let d = Dir::new("paths-stdout");
    let inp = d.p("in.gguf");
    model(&inp, 4);
    let out = d.p("out.gguf");
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    let writer = unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[1]) };
    let o = Command::new(BIN)
        .args([s(&inp), s(&out), "Q8_0", "1"])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("cannot print the summary"), "{err}");
    assert!(out.exists());
}

#[test]
fn absurd_thread_counts_are_refused() {
    let d = Dir::new("paths-threads");
    let inp = d.p("in.gguf");
    model(&inp, 4);
    let mut cmd = Command::new(BIN);
    cmd.args([s(&inp), s(&d.p("out.gguf")), "Q8_0", "100000"]);
    // Bounded address space: an unchecked count cannot spawn the machine's
    // threads away (thread stacks run out first).
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("100000 threads: at most 1024"), "{err}");
    assert_eq!(d.files(), ["in.gguf"]);
}

#[test]
fn c_api_checks_paths_and_threads() {
    use ggml_qat::capi::model::{ggml_qat_model_default_params, ggml_qat_quantize_model};
    use std::ffi::{CStr, CString};
    let d = Dir::new("paths-capi");
    let inp = d.p("in.gguf");
    model(&inp, 4);
    let before = std::fs::read(&inp).unwrap();
    let (ci, co) = (
        CString::new(s(&inp)).unwrap(),
        CString::new(s(&d.p("o.gguf"))).unwrap(),
    );
    let last = || {
        unsafe { CStr::from_ptr(ggml_qat::capi::error::ggml_qat_last_error()) }
            .to_string_lossy()
            .into_owned()
    };
    let mut p = ggml_qat_model_default_params();
    p.report_json_path = ci.as_ptr();
    assert!(!unsafe {
        ggml_qat_quantize_model(std::ptr::null_mut(), ci.as_ptr(), co.as_ptr(), &p)
    });
    assert!(last().contains("is the input"), "{}", last());
    let mut p = ggml_qat_model_default_params();
    p.n_threads = 100_000;
    assert!(!unsafe {
        ggml_qat_quantize_model(std::ptr::null_mut(), ci.as_ptr(), co.as_ptr(), &p)
    });
    assert!(last().contains("at most 1024"), "{}", last());
    assert_eq!(std::fs::read(&inp).unwrap(), before);
    assert_eq!(d.files(), ["in.gguf"]);
}

#[test]
fn symlink_outputs_are_written_through_or_refused() {
    let d = Dir::new("paths-symlink");
    let inp = d.p("in.gguf");
    model(&inp, 4);
    std::fs::write(d.p("real.gguf"), b"old").unwrap();
    std::os::unix::fs::symlink("real.gguf", d.p("link.gguf")).unwrap();
    let o = run(&inp, &d.p("link.gguf"), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = std::fs::symlink_metadata(d.p("link.gguf")).unwrap();
    assert!(m.file_type().is_symlink(), "the link stays");
    assert!(std::fs::read(d.p("real.gguf"))
        .unwrap()
        .starts_with(b"GGUF"));
    std::os::unix::fs::symlink("missing.gguf", d.p("dangling.gguf")).unwrap();
    refused(
        &run(&inp, &d.p("dangling.gguf"), &[]),
        &["symbolic link to a missing file"],
    );
    // A link to the input is the input.
    std::os::unix::fs::symlink("in.gguf", d.p("in-link.gguf")).unwrap();
    refused(
        &run(&inp, &d.p("in-link.gguf"), &[]),
        &["is the input file"],
    );
    assert_eq!(
        d.files(),
        [
            "dangling.gguf",
            "in-link.gguf",
            "in.gguf",
            "link.gguf",
            "real.gguf"
        ]
    );
}
