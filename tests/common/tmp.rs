//! A fresh temporary folder per test, removed at the end (the model tests'
//! shared helper: `#[path = "common/tmp.rs"] mod tmp;`).

use std::path::PathBuf;

pub struct Tmp(pub PathBuf);

#[allow(dead_code)]
impl Tmp {
    /// `$TMPDIR/ggml-qat-{tag}-{pid}`, emptied.
    pub fn new(tag: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("ggml-qat-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }
    pub fn p(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// The names in the folder, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
