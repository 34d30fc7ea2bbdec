//! Where outputs go: checks on the output paths, and a temporary file
//! beside each target, renamed over it only when the work succeeded.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::ModelError;

/// The output may not be the input, and its folder must exist.
pub fn check_output(input: &Path, output: &Path) -> Result<(), ModelError> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(ModelError::Invalid(format!(
            "output folder {} does not exist",
            parent.display()
        )));
    }
    let same = match (std::fs::metadata(input), std::fs::metadata(output)) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        _ => false,
    };
    if same {
        return Err(ModelError::Invalid(format!(
            "output {} is the input file: choose another name (the input is never modified)",
            output.display()
        )));
    }
    Ok(())
}

/// A temporary file beside the target, removed unless committed.
pub struct TempOut {
    pub tmp: PathBuf,
    target: PathBuf,
    file: Option<File>,
    committed: bool,
}

impl TempOut {
    pub fn create(target: &Path) -> Result<TempOut, ModelError> {
        let name = target.file_name().ok_or_else(|| {
            ModelError::Invalid(format!("output {} has no file name", target.display()))
        })?;
        let tmp = target.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| ModelError::io(&tmp, "cannot create the temporary output", e))?;
        Ok(TempOut {
            tmp,
            target: target.to_path_buf(),
            file: Some(file),
            committed: false,
        })
    }
    pub fn file(&mut self) -> Result<File, ModelError> {
        self.file
            .take()
            .ok_or_else(|| ModelError::Invalid("output already taken".into()))
    }
    pub fn commit(mut self) -> Result<(), ModelError> {
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| ModelError::io(&self.target, "cannot rename the finished output to", e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
