//! Where a model run writes: which paths may be written, the temporary file
//! that becomes the output, the JSON report, and the cleanup of temporary
//! files when the command line is interrupted.
//!
//! Rules ([`check_paths`]): an output or report path, when it exists, is a
//! regular file (a directory, FIFO, socket or device such as `/dev/null` is
//! refused before anything is opened); it is never an input (same file by
//! device and inode, or, for a path not there yet, the same canonical folder
//! and name); no two outputs (the report included) are the same file; its
//! folder exists.
//!
//! Symbolic links: an output or report that is a link to an existing regular
//! file is written *through* the link: the temporary file is made beside the
//! link's final target and renamed over that target, so the link stays and
//! names the new file ([`resolve`]). A link to a missing file is refused (a
//! rename would silently replace the link itself).
//!
//! Temporary files ([`TempOut`]) are `.NAME.PID.tmp` beside the target and are
//! kept in a process-wide registry while they exist. A library never installs
//! signal handlers; the command line calls [`install_signal_cleanup`] so that
//! SIGINT, SIGTERM and SIGHUP remove them before the process dies.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::ModelError;

/// What a path designates, to compare two paths: the file (device, inode)
/// when it exists, else its canonical folder joined with its name.
#[derive(PartialEq, Eq, Debug)]
enum Ident {
    File(u64, u64),
    Missing(PathBuf),
}

/// The identity of an input; `None` when it cannot be known (a missing
/// input fails later, when it is read).
fn input_ident(p: &Path) -> Option<Ident> {
    match std::fs::metadata(p) {
        Ok(m) => Some(Ident::File(m.dev(), m.ino())),
        Err(_) => {
            let name = p.file_name()?;
            let dir = std::fs::canonicalize(folder(p)).ok()?;
            Some(Ident::Missing(dir.join(name)))
        }
    }
}

/// The folder holding `p` (`.` for a bare name).
fn folder(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A file kind for messages.
fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The path a write to `p` lands on: `p`, or the final target of the
/// symbolic link `p` (which must exist).
pub fn resolve(p: &Path) -> Result<PathBuf, ModelError> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(p).map_err(|e| {
            ModelError::Invalid(format!(
                "{} is a symbolic link to a missing file ({e}): it would be replaced by a \
                 regular file; remove the link or give the path of its target",
                p.display()
            ))
        }),
        _ => Ok(p.to_path_buf()),
    }
}

/// Checks that `what` (e.g. "output") at `p` may be replaced: a regular file
/// or absent, in an existing folder. Returns its identity.
fn check_target(p: &Path, what: &str) -> Result<Ident, ModelError> {
    let invalid = |why: String| ModelError::Invalid(format!("{what} {}: {why}", p.display()));
    let real = resolve(p).map_err(|e| invalid(e.to_string()))?;
    let Some(name) = real.file_name() else {
        return Err(invalid("has no file name".into()));
    };
    match std::fs::metadata(&real) {
        Ok(m) if m.file_type().is_file() => Ok(Ident::File(m.dev(), m.ino())),
        Ok(m) => Err(invalid(format!(
            "is {}, not a regular file: it is never replaced (give the path of a file)",
            kind(&m)
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = folder(&real);
            match std::fs::canonicalize(dir) {
                Ok(d) if d.is_dir() => Ok(Ident::Missing(d.join(name))),
                _ => Err(invalid(format!("folder {} does not exist", dir.display()))),
            }
        }
        Err(e) => Err(ModelError::io(p, "cannot inspect", e)),
    }
}

/// Checks every output and the report before anything is written (see the
/// module doc): each may be replaced, none is an input, no two are the same
/// file. The errors name both paths.
pub fn check_paths(
    inputs: &[&Path],
    outputs: &[&Path],
    report: Option<&Path>,
) -> Result<(), ModelError> {
    let ins: Vec<(&Path, Ident)> = inputs
        .iter()
        .filter_map(|&p| input_ident(p).map(|i| (p, i)))
        .collect();
    let targets = outputs
        .iter()
        .map(|&p| (p, "output"))
        .chain(report.map(|p| (p, "report")));
    let mut seen: Vec<(&Path, &str, Ident)> = Vec::new();
    for (p, what) in targets {
        let id = check_target(p, what)?;
        if let Some((i, _)) = ins.iter().find(|(_, i)| *i == id) {
            return Err(ModelError::Invalid(format!(
                "{what} {} is the input file {}: choose another name (the input is never modified)",
                p.display(),
                i.display()
            )));
        }
        if let Some((q, w, _)) = seen.iter().find(|(_, _, i)| *i == id) {
            return Err(ModelError::Invalid(format!(
                "{what} {} and {w} {} are the same file: give them different names",
                p.display(),
                q.display()
            )));
        }
        seen.push((p, what, id));
    }
    Ok(())
}

/// The temporary files that exist now (removed on a signal).
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary file `.NAME.PID.tmp` beside the target, renamed over it by
/// [`TempOut::commit`], removed otherwise (on drop, or on a signal once
/// [`install_signal_cleanup`] ran). A symbolic link target is written
/// through ([`resolve`]).
pub struct TempOut {
    pub(crate) tmp: PathBuf,
    target: PathBuf,
    file: Option<File>,
    committed: bool,
}

impl TempOut {
    /// Creates the temporary file (never over an existing one).
    pub fn create(target: &Path) -> Result<TempOut, ModelError> {
        let target = resolve(target)?;
        let name = target.file_name().ok_or_else(|| {
            ModelError::Invalid(format!("output {} has no file name", target.display()))
        })?;
        let tmp = target.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        // Created and registered under the lock: a signal's cleanup either
        // sees it or runs before it exists (and the process then dies).
        let mut reg = live();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| ModelError::io(&tmp, "cannot create the temporary output", e))?;
        reg.push(tmp.clone());
        drop(reg);
        Ok(TempOut {
            tmp,
            target,
            file: Some(file),
            committed: false,
        })
    }

    /// The file to write (once).
    pub fn file(&mut self) -> Result<File, ModelError> {
        self.file
            .take()
            .ok_or_else(|| ModelError::Invalid("output already taken".into()))
    }

    /// Renames the temporary file over the target, if the target is still a
    /// regular file or absent.
    pub fn commit(mut self) -> Result<(), ModelError> {
        check_target(&self.target, "output")?;
        let mut reg = live();
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| ModelError::io(&self.target, "cannot rename the finished output to", e))?;
        self.committed = true;
        reg.retain(|p| *p != self.tmp);
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        self.file = None;
        let mut reg = live();
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
        reg.retain(|p| *p != self.tmp);
    }
}

/// Writes the JSON report through a temporary file renamed over `path`
/// (only over a regular file): a failure leaves no half report.
pub fn write_report(path: &Path, json: &[u8]) -> Result<(), ModelError> {
    check_target(path, "report")?;
    let mut out = TempOut::create(path)?;
    let mut f = out.file()?;
    f.write_all(json)
        .and_then(|()| f.flush())
        .map_err(|e| ModelError::io(&out.tmp, "cannot write the report", e))?;
    drop(f);
    out.commit()
}

/// For the command line only (a library must not install handlers): on
/// SIGINT, SIGTERM or SIGHUP, removes the live temporary files, then dies of
/// that signal (default disposition restored and the signal raised again;
/// exit status 128 + signal number should that return). The signals are
/// received by signal-hook on a dedicated thread: nothing runs in a raw
/// handler.
pub fn install_signal_cleanup() -> Result<(), ModelError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let fail =
        |e: std::io::Error| ModelError::Invalid(format!("cannot install the signal cleanup: {e}"));
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(fail)?;
    std::thread::Builder::new()
        .name("signal-cleanup".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                // Held until the process ends: no temporary file is created
                // or renamed after this cleanup.
                let reg = live();
                for p in reg.iter() {
                    let _ = std::fs::remove_file(p);
                }
                let _ = signal_hook::low_level::emulate_default_handler(sig);
                std::process::exit(128 + sig);
            }
        })
        .map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_folders_are_refused() {
        let e = check_paths(&[], &[Path::new("/dev/null")], None).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = check_paths(&[], &[Path::new("/tmp")], None).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        let e = check_paths(&[], &[Path::new("/no/such/dir/x")], None).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
