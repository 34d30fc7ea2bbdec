//! The Gram matrices of a calibration file (`ENTRY.gram`: `XᵀX/n` in f32,
//! `d × d`; `ggml_qat.gram.weights[i]` reads `ggml_qat.gram.tensors[i]`),
//! for `--optimize --calibration`: each is read when the first tensor that
//! needs it is converted, factored once ([`GramFactor`]), and kept while
//! the tensors around it (q/k/v, gate/up read the same input) use it; a
//! few at most are held at once, so memory does not grow with the model.
//!
//! Hostile-input safe: the keys are checked against the header (names of
//! F32 square tensors inside the file, one entry per weight), and a
//! matrix's values are checked by [`GramFactor::new`] before use.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::gguf::{self, Header, TensorInfo};
use super::source::Source;
use super::ModelError;
use crate::qat::optimize::GramFactor;

pub const KEY_WEIGHTS: &str = "ggml_qat.gram.weights";
pub const KEY_TENSORS: &str = "ggml_qat.gram.tensors";
/// GPTQ's damping, relative to the mean of the diagonal.
pub const DAMP: f64 = 0.01;
/// Factored matrices held at once.
const CACHE: usize = 3;

/// One Gram tensor of the file.
struct Entry {
    name: String,
    d: usize,
    /// Absolute offset of its data.
    at: u64,
}

/// The Gram matrices of a calibration file, read on demand.
pub struct Grams {
    path: PathBuf,
    file: File,
    entries: Vec<Entry>,
    /// Weight name → entry.
    of: HashMap<String, usize>,
    cache: Mutex<Vec<(usize, Arc<GramFactor>)>>,
}

fn fail(path: &Path, what: impl std::fmt::Display) -> ModelError {
    ModelError::Calibration(format!("{}: {what}", path.display()))
}

impl Grams {
    /// The Gram matrices named by `h`'s keys (`None` when it has none).
    pub fn load(path: &Path, h: &Header) -> Result<Option<Grams>, ModelError> {
        let strs = |key: &str| -> Result<Option<Vec<String>>, ModelError> {
            h.kv(key)
                .map(|k| {
                    k.as_strs()
                        .map(|v| v.iter().map(|s| s.to_string()).collect())
                        .ok_or_else(|| fail(path, format!("{key}: an array of strings expected")))
                })
                .transpose()
        };
        let (weights, tensors) = match (strs(KEY_WEIGHTS)?, strs(KEY_TENSORS)?) {
            (None, None) => return Ok(None),
            (Some(w), Some(t)) if w.len() == t.len() => (w, t),
            _ => {
                return Err(fail(
                    path,
                    format!("{KEY_WEIGHTS} and {KEY_TENSORS} must both be there, of one length"),
                ))
            }
        };
        if weights.is_empty() {
            return Ok(None);
        }
        let (file, _) = gguf::open_regular(path, ModelError::Calibration)?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut of = HashMap::new();
        for (w, t) in weights.iter().zip(&tensors) {
            let e = match entries.iter().position(|e| &e.name == t) {
                Some(e) => e,
                None => {
                    entries.push(entry(path, h, t)?);
                    entries.len() - 1
                }
            };
            if of.insert(w.clone(), e).is_some() {
                return Err(fail(path, format!("{KEY_WEIGHTS}: '{w}' named twice")));
            }
        }
        Ok(Some(Grams {
            path: path.to_path_buf(),
            file,
            entries,
            of,
            cache: Mutex::new(Vec::new()),
        }))
    }

    /// Every weight of `src` with a Gram matrix must read rows of its size
    /// (a file of another model is refused).
    pub fn check(&self, src: &Source) -> Result<(), ModelError> {
        for (_, t) in src.tensors() {
            if let Some(&e) = self.of.get(&t.name) {
                let d = self.entries[e].d as u64;
                if t.ne[0] != d {
                    return Err(fail(
                        &self.path,
                        format!(
                            "the Gram matrix of '{}' is {d} × {d}, its rows have {}: a calibration file of another model?",
                            t.name, t.ne[0]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The weights that have a Gram matrix.
    pub fn weights(&self) -> impl Iterator<Item = &str> {
        self.of.keys().map(String::as_str)
    }

    /// The factored Gram matrix of the 2-D weight `t` (an expert tensor has
    /// none: its experts read other inputs); see [`Grams::factor`].
    pub fn factor_of(&self, t: &TensorInfo) -> Result<Option<Arc<GramFactor>>, ModelError> {
        if t.ne[2] != 1 {
            return Ok(None);
        }
        self.factor(&t.name)
    }

    /// The factored Gram matrix of `weight` (read and factored on first use,
    /// on the current rayon pool).
    pub fn factor(&self, weight: &str) -> Result<Option<Arc<GramFactor>>, ModelError> {
        let Some(&e) = self.of.get(weight) else {
            return Ok(None);
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.iter().position(|(k, _)| *k == e) {
            let hit = cache.remove(i);
            cache.push(hit.clone());
            return Ok(Some(hit.1));
        }
        let ent = &self.entries[e];
        let mut raw = vec![0u8; ent.d * ent.d * 4];
        gguf::read_at(&self.file, ent.at, &mut raw)
            .map_err(|err| ModelError::io(&self.path, "cannot read", err))?;
        let g = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let f = GramFactor::new(g, ent.d, DAMP)
            .map_err(|err| fail(&self.path, format!("{}: {err}", ent.name)))?;
        let f = Arc::new(f);
        if cache.len() == CACHE {
            cache.remove(0);
        }
        cache.push((e, f.clone()));
        Ok(Some(f))
    }
}

/// The Gram tensor `name` of `h`: F32, square, inside the file.
fn entry(path: &Path, h: &Header, name: &str) -> Result<Entry, ModelError> {
    let t = h.tensors.iter().find(|t| t.name == name).ok_or_else(|| {
        fail(
            path,
            format!("{KEY_TENSORS}: no tensor '{name}' in the file"),
        )
    })?;
    let d = t.ne[0];
    let square = t.ne[1] == d && t.ne[2] == 1 && t.ne[3] == 1 && d > 0;
    if t.ty != 0 || !square || Some(t.nbytes) != d.checked_mul(4).and_then(|b| b.checked_mul(d)) {
        return Err(fail(path, format!("'{name}' is not a square F32 matrix")));
    }
    let at = h.data_offset.checked_add(t.offset);
    if at
        .and_then(|a| a.checked_add(t.nbytes))
        .map_or(true, |end| end > h.file_len)
    {
        return Err(fail(path, format!("'{name}' lies outside the file")));
    }
    Ok(Entry {
        name: name.to_string(),
        d: d as usize,
        at: at.expect("checked"),
    })
}
