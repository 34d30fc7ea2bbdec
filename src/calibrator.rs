//! Runs the calibrator, `ggml-qat-calibrate`, as a child process (for the C
//! API's `ggml_qat_calibrate_model`).
//!
//! The calibrator links llama.cpp's libllama and the ggml of that tree,
//! which must never meet the ggml this library links in one process
//! (README, "One ggml per process"): so it stays its own executable, and
//! this module only finds it, builds its command line, reads its progress
//! lines (`--progress-fd`: `STAGE DONE TOTAL`), keeps the tail of its
//! stderr for the error message, cancels it (SIGTERM, then SIGKILL after
//! [`KILL_AFTER`]) and reads its JSON report (`--report`). Nothing here
//! knows libllama or the calibration file's contents.

use std::ffi::{c_void, CStr, OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The calibrator's file name.
pub const EXE_NAME: &str = "ggml-qat-calibrate";
/// The environment variable naming the calibrator.
pub const ENV_VAR: &str = "GGML_QAT_CALIBRATE";
/// How long a cancelled calibrator may take to clean up after SIGTERM
/// before it is killed.
pub const KILL_AFTER: Duration = Duration::from_secs(30);
/// How much of the calibrator's stderr is kept for the error message.
const STDERR_TAIL: usize = 4096;

/// What went wrong, worded for the caller.
#[derive(Debug, thiserror::Error)]
pub enum CalibratorError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot run the calibrator {}: {}", .0.display(), .1)]
    Spawn(PathBuf, std::io::Error),
    #[error("{0}")]
    Failed(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Io(String),
}

type Result<T> = std::result::Result<T, CalibratorError>;

/// The calibrator's options; `None` and `false` leave its default. Each
/// maps to one command-line option of `ggml-qat-calibrate` (in brackets).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The calibrator to run; `None`: [`find_calibrator`]'s search.
    pub calibrator: Option<PathBuf>,
    /// Text files to calibrate on (`-f`, repeated).
    pub files: Vec<PathBuf>,
    /// Where to save the evaluated text (`--save-text`).
    pub save_text: Option<PathBuf>,
    /// `--tokens`
    pub tokens: Option<u64>,
    /// `-c`
    pub ctx_size: Option<u64>,
    /// `-ub`
    pub ubatch_size: Option<u64>,
    /// `-t`
    pub threads: Option<u64>,
    /// `-ngl`
    pub n_gpu_layers: Option<i32>,
    /// `--seed`
    pub seed: Option<u64>,
    /// `-np`
    pub parallel: Option<u64>,
    /// `--temp`
    pub temp: Option<f32>,
    /// `--top-k`
    pub top_k: Option<i32>,
    /// `--top-p`
    pub top_p: Option<f32>,
    /// `--gram-max` (0: no Gram matrices)
    pub gram_max: Option<u64>,
    /// `--process-output`
    pub process_output: bool,
    /// `--probe-type`
    pub probe_type: Option<String>,
    /// `--no-sensitivity`
    pub no_sensitivity: bool,
    /// `--sensitivity-tokens`
    pub sensitivity_tokens: Option<u64>,
    /// `-v`, and the calibrator's stderr copied to ours.
    pub verbose: bool,
    /// `--report`: the JSON report kept there too.
    pub report: Option<PathBuf>,
}

impl Options {
    /// The command line after the executable (the runner adds its
    /// `--progress-fd` and `--report` in front).
    pub fn args(&self, model: &Path, output: &Path) -> Vec<OsString> {
        // `--name=value`, and the model after `--`: a path starting with
        // '-' is never read as an option.
        let eq = |name: &str, v: &OsStr| {
            let mut s = OsString::from(name);
            s.push("=");
            s.push(v);
            s
        };
        let mut a: Vec<OsString> = vec![eq("--output", output.as_os_str())];
        let mut opt = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(eq(name, OsStr::new(&v)));
            }
        };
        opt("--tokens", self.tokens.map(|v| v.to_string()));
        opt("--ctx-size", self.ctx_size.map(|v| v.to_string()));
        opt("--ubatch-size", self.ubatch_size.map(|v| v.to_string()));
        opt("--threads", self.threads.map(|v| v.to_string()));
        opt("--n-gpu-layers", self.n_gpu_layers.map(|v| v.to_string()));
        opt("--seed", self.seed.map(|v| v.to_string()));
        opt("--parallel", self.parallel.map(|v| v.to_string()));
        opt("--temp", self.temp.map(|v| v.to_string()));
        opt("--top-k", self.top_k.map(|v| v.to_string()));
        opt("--top-p", self.top_p.map(|v| v.to_string()));
        opt("--gram-max", self.gram_max.map(|v| v.to_string()));
        opt("--probe-type", self.probe_type.clone());
        opt(
            "--sensitivity-tokens",
            self.sensitivity_tokens.map(|v| v.to_string()),
        );
        for f in &self.files {
            a.push(eq("--file", f.as_os_str()));
        }
        if let Some(p) = &self.save_text {
            a.push(eq("--save-text", p.as_os_str()));
        }
        if self.process_output {
            a.push("--process-output".into());
        }
        if self.no_sensitivity {
            a.push("--no-sensitivity".into());
        }
        a.push(if self.verbose { "--verbose" } else { "--quiet" }.into());
        a.push("--".into());
        a.push(model.into());
        a
    }
}

/// One progress line of the calibrator: `stage` ("evaluate", "generate",
/// "sensitivity") has `done` of `total` units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub stage: String,
    pub done: u64,
    pub total: u64,
}

impl Progress {
    /// Reads `STAGE DONE TOTAL`; `None` for any other line.
    pub fn parse(line: &str) -> Option<Progress> {
        let mut it = line.split_ascii_whitespace();
        let stage = it.next()?.to_string();
        let done = it.next()?.parse().ok()?;
        let total = it.next()?.parse().ok()?;
        it.next()
            .is_none()
            .then_some(Progress { stage, done, total })
    }
}

/// The calibrator's JSON report (`--report`), the figures the C API
/// returns; the file has more.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Report {
    pub tokens: u64,
    pub text_tokens: u64,
    pub generated_tokens: u64,
    pub sequences: u64,
    pub chunks: u64,
    pub chunk_size: u64,
    pub weights: u64,
    pub grams: u64,
    pub sensitivity: Option<SensitivityReport>,
    pub seconds: Seconds,
    pub output_bytes: u64,
    pub peak_rss_bytes: u64,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct SensitivityReport {
    pub probe_type: String,
    pub tokens: u64,
    pub floor: f64,
    pub groups: Vec<GroupReport>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct GroupReport {
    pub name: String,
    pub kld: f64,
    pub nsr: f64,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Seconds {
    pub evaluate: f64,
    pub generate: f64,
    pub sensitivity: f64,
    pub total: f64,
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The folder of the loaded library (or executable) holding this code,
/// found with `dladdr` on one of its functions.
fn own_folder() -> Option<PathBuf> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let f: fn(Option<&Path>) -> Result<PathBuf> = find_calibrator;
    // SAFETY: dladdr only reads the address and fills `info`.
    if unsafe { libc::dladdr(f as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr gives a NUL-terminated name that lives as long as the
    // object is loaded (it is: this code is running from it).
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(OsStr::from_bytes(name.to_bytes()));
    std::fs::canonicalize(path)
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

/// The calibrator to run: `explicit` when given, else `$GGML_QAT_CALIBRATE`,
/// else `bin/ggml-qat-calibrate` beside the folder of the loaded library
/// (an installed `lib/libggml-qat.so` finds `bin/ggml-qat-calibrate`), else
/// the first `ggml-qat-calibrate` on `PATH`. An explicit choice (argument
/// or environment) that is not an executable file is an error, not a
/// reason to look further.
pub fn find_calibrator(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if is_executable(p) {
            Ok(p.into())
        } else {
            Err(CalibratorError::NotFound(format!(
                "the calibrator {} (params->calibrator_path) is not an executable file",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(CalibratorError::NotFound(format!(
                "the calibrator {} (${ENV_VAR}) is not an executable file",
                p.display()
            )))
        };
    }
    let mut tried = Vec::new();
    if let Some(dir) = own_folder() {
        let p = dir.join("..").join("bin").join(EXE_NAME);
        if is_executable(&p) {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(EXE_NAME);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    tried.push(format!("{EXE_NAME} on PATH"));
    Err(CalibratorError::NotFound(format!(
        "the calibrator {EXE_NAME} was not found (tried: params->calibrator_path unset, \
         ${ENV_VAR} unset, {}); build it (calibrate/, README \"Calibrate a model\") and \
         set one of them",
        tried.join(", ")
    )))
}

/// The calibrator's temporary file for `output` (or its report) when its
/// process id is `pid` (`calibrate/src/output.rs`, `report.rs`:
/// `.NAME.PID.tmp` beside the target).
fn child_temp(output: &Path, pid: u32) -> Option<PathBuf> {
    let name = output.file_name()?;
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(dir.join(format!(".{}.{pid}.tmp", name.to_string_lossy())))
}

/// A report file of ours beside the output, removed when dropped.
struct TempReport(PathBuf);

impl TempReport {
    fn new(output: &Path) -> Option<TempReport> {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = output.file_name()?;
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(TempReport(dir.join(format!(
            ".{}.{}-{}.report.json",
            name.to_string_lossy(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))))
    }
}

impl Drop for TempReport {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The last `STDERR_TAIL` bytes of the child's stderr (copied to ours too
/// when `echo`).
fn read_tail(mut r: impl Read, echo: bool) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if echo {
                    let _ = std::io::stderr().write_all(&buf[..n]);
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if tail.len() > STDERR_TAIL {
        tail.drain(..tail.len() - STDERR_TAIL);
    }
    tail
}

/// The line of the calibrator's stderr that says what failed: the last
/// one naming an error, else the last non-empty one.
fn error_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.last())
        .map(|l| l.to_string())
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".into(),
    }
}

/// The running calibrator: stopped by [`stop`] if dropped before it was
/// waited for (a panic in the caller's process never leaves it running).
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not yet reaped")
    }

    /// Waits for the end (or stops it first when `cancel`).
    fn finish(mut self, cancel: bool) -> std::io::Result<Option<ExitStatus>> {
        let mut child = self.0.take().expect("not yet reaped");
        if cancel {
            stop(&mut child);
            return Ok(None);
        }
        child.wait().map(Some)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            stop(c);
        }
    }
}

/// SIGTERM, then SIGKILL after [`KILL_AFTER`]; waits for the end.
fn stop(child: &mut Child) {
    // SAFETY: a signal to our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + KILL_AFTER;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= deadline => break,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the calibrator on `model`, writing `output`: `progress` is called
/// for each progress line (false cancels: the calibrator is stopped, and
/// its temporary output removed). The report on success.
pub fn calibrate(
    model: &Path,
    output: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Report> {
    for (p, what) in [(model, "the model path"), (output, "the output path")] {
        if p.as_os_str().is_empty() {
            return Err(CalibratorError::Invalid(format!("{what} is empty")));
        }
    }
    let exe = find_calibrator(opts.calibrator.as_deref())?;
    let ours = match &opts.report {
        Some(_) => None,
        None => Some(TempReport::new(output).ok_or_else(|| {
            CalibratorError::Invalid(format!("{}: no file name", output.display()))
        })?),
    };
    let report_path = opts
        .report
        .clone()
        .or_else(|| ours.as_ref().map(|t| t.0.clone()))
        .unwrap_or_default();
    let (read_end, write_end) = progress_pipe()?;
    let mut cmd = Command::new(&exe);
    let mut report_arg = OsString::from("--report=");
    report_arg.push(&report_path);
    cmd.arg(format!("--progress-fd={}", write_end.as_raw_fd()))
        .arg(report_arg)
        .args(opts.args(model, output));
    let mut child = spawn(cmd, &exe, write_end)?;
    let pid = child.child().id();
    let stderr = child.child().stderr.take();
    let echo = opts.verbose;
    let tail = std::thread::spawn(move || stderr.map(|s| read_tail(s, echo)).unwrap_or_default());
    let cancelled = relay(read_end, progress);
    let status = child
        .finish(cancelled)
        .map_err(|e| CalibratorError::Io(format!("waiting for the calibrator: {e}")))?;
    let stderr = tail.join().unwrap_or_default();
    let ok = status.is_some_and(|s| s.success());
    if !ok {
        // The calibrator removes its temporary files itself, even on
        // SIGTERM; after SIGKILL (or a crash) it could not.
        for t in [output, report_path.as_path()]
            .into_iter()
            .filter_map(|p| child_temp(p, pid))
        {
            let _ = std::fs::remove_file(t);
        }
    }
    let Some(status) = status else {
        return Err(CalibratorError::Cancelled);
    };
    if !ok {
        let why = error_line(&stderr).unwrap_or_else(|| "no message".into());
        return Err(CalibratorError::Failed(format!(
            "the calibrator {} ended with {}: {why}",
            exe.display(),
            describe(status)
        )));
    }
    read_report(&report_path)
}

/// The progress pipe, both ends close-on-exec (the write end is made
/// inheritable in the child only, by [`spawn`]).
fn progress_pipe() -> Result<(File, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two descriptors, owned below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(CalibratorError::Io(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fresh descriptors from pipe2, owned once each.
    Ok(unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts `cmd` (no stdin or stdout, stderr piped) with `write_end` kept
/// open across the exec in the child, and closes it here.
fn spawn(mut cmd: Command, exe: &Path, write_end: OwnedFd) -> Result<Running> {
    let wfd = write_end.as_raw_fd();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: fcntl is async-signal-safe; it lets the pipe's write end
    // survive the exec in the child only.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(wfd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| CalibratorError::Spawn(exe.to_path_buf(), e))?;
    drop(write_end);
    Ok(Running(Some(child)))
}

/// Hands each progress line to `progress` until the pipe closes; true when
/// `progress` asked to cancel.
fn relay(read_end: File, progress: &mut dyn FnMut(&Progress) -> bool) -> bool {
    let mut lines = BufReader::new(read_end);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
        if let Some(p) = Progress::parse(&line) {
            if !progress(&p) {
                return true;
            }
        }
    }
}

/// The calibrator's JSON report.
fn read_report(path: &Path) -> Result<Report> {
    let fail = |e: &dyn std::fmt::Display| {
        CalibratorError::Io(format!("the calibrator's report {}: {e}", path.display()))
    };
    let text = std::fs::read(path).map_err(|e| fail(&e))?;
    serde_json::from_slice(&text).map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_parse() {
        assert_eq!(
            Progress::parse("generate 64 640\n"),
            Some(Progress {
                stage: "generate".into(),
                done: 64,
                total: 640
            })
        );
        assert_eq!(Progress::parse("generate 64"), None);
        assert_eq!(Progress::parse("generate 64 640 1"), None);
        assert_eq!(Progress::parse("generate x 640"), None);
    }

    #[test]
    fn the_error_line_is_the_last_naming_an_error() {
        let e = b"evaluate: 10\nggml-qat-calibrate: error: bad model\nbye\n";
        assert_eq!(
            error_line(e).unwrap(),
            "ggml-qat-calibrate: error: bad model"
        );
        assert_eq!(error_line(b"a\n\nlast\n\n").unwrap(), "last");
        assert_eq!(error_line(b""), None);
    }

    #[test]
    fn the_stderr_tail_is_bounded() {
        let big = vec![b'x'; 100_000];
        let t = read_tail(&big[..], false);
        assert_eq!(t.len(), STDERR_TAIL);
    }

    #[test]
    fn options_map_to_the_command_line() {
        let o = Options {
            seed: Some(0),
            gram_max: Some(0),
            no_sensitivity: true,
            files: vec!["a.txt".into(), "b.txt".into()],
            ..Default::default()
        };
        let a: Vec<String> = o
            .args(Path::new("m.gguf"), Path::new("o.gguf"))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            a.join(" "),
            "--output=o.gguf --seed=0 --gram-max=0 --file=a.txt --file=b.txt --no-sensitivity --quiet -- m.gguf"
        );
    }
}
