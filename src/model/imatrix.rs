//! Importance matrices in llama.cpp's two formats: the GGUF imatrix
//! (`NAME.in_sum2` and `NAME.counts` tensors, llama-imatrix's default) and
//! the legacy `.dat` file. Values are normalised as llama-quantize does.
//!
//! Only regular files are read (a FIFO or a device is refused without
//! blocking), every size is bounded by the bytes the file still holds, and
//! values llama-quantize cannot use are refused with the entry's name:
//! negative or non-finite sums, counts that are negative, non-finite, or 0
//! beside non-zero sums, a legacy entry given twice.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::gguf;
use super::ModelError;

/// Per-weight importance: tensor name → `ne[0] * n_experts` weights.
pub type Imatrix = HashMap<String, Vec<f32>>;

fn fail(path: &Path, what: impl std::fmt::Display) -> ModelError {
    ModelError::Imatrix(format!("{}: {what}", path.display()))
}

/// Reads the imatrix file `path` (GGUF or legacy `.dat`).
pub fn load(path: &Path) -> Result<Imatrix, ModelError> {
    let (file, len) = gguf::open_regular(path, ModelError::Imatrix)?;
    let mut magic = [0u8; 4];
    (&file)
        .read_exact(&mut magic)
        .map_err(|_| fail(path, "file too short"))?;
    if &magic == gguf::GGUF_MAGIC {
        drop(file);
        return from_gguf(path, &gguf::read_header(path)?);
    }
    let m = load_legacy(path, file, len)?;
    check_finite(path, &m)?;
    Ok(m)
}

/// The imatrix entries of the GGUF file `path` whose header is `h`
/// (`NAME.in_sum2` with `NAME.counts`; other tensors, such as a
/// calibration file's `.gram` matrices, are neither entries nor read).
pub fn from_gguf(path: &Path, h: &gguf::Header) -> Result<Imatrix, ModelError> {
    let m = gguf_entries(path, h)?;
    check_finite(path, &m)?;
    Ok(m)
}

/// Every weight finite (a sum divided by a tiny count may overflow).
fn check_finite(path: &Path, m: &Imatrix) -> Result<(), ModelError> {
    for (name, v) in m {
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(fail(path, format!("entry '{name}' has the value {x}")));
        }
    }
    Ok(())
}

/// `n` little-endian f32 of `bytes`.
fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Sums must be finite and not negative; `what` names them in the error.
fn check_sums(path: &Path, name: &str, what: &str, v: &[f32]) -> Result<(), ModelError> {
    match v
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && **x >= 0.0))
    {
        None => Ok(()),
        Some((i, x)) => Err(fail(
            path,
            format!("entry '{name}': {what}[{i}] is {x} (negative or not finite)"),
        )),
    }
}

fn gguf_entries(path: &Path, h: &gguf::Header) -> Result<Imatrix, ModelError> {
    let (file, _) = gguf::open_regular(path, ModelError::Imatrix)?;
    let by_name: HashMap<&str, &gguf::TensorInfo> =
        h.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let read_f32 = |t: &gguf::TensorInfo| -> Result<Vec<f32>, ModelError> {
        if t.ty != 0 {
            return Err(fail(path, format!("tensor '{}' is not F32", t.name)));
        }
        // inside the file (read_header checked it)
        let mut b = Vec::new();
        b.try_reserve_exact(t.nbytes as usize)
            .map_err(|_| fail(path, format!("tensor '{}': out of memory", t.name)))?;
        b.resize(t.nbytes as usize, 0);
        gguf::read_at(&file, h.data_offset + t.offset, &mut b)
            .map_err(|e| ModelError::io(path, "cannot read imatrix", e))?;
        Ok(floats(&b))
    };
    let mut out = Imatrix::new();
    for t in &h.tensors {
        let Some(name) = t.name.strip_suffix(".in_sum2") else {
            continue;
        };
        let counts = by_name
            .get(format!("{name}.counts").as_str())
            .ok_or_else(|| fail(path, format!("'{name}' has no .counts")))?;
        let sums = read_f32(t)?;
        let counts = read_f32(counts)?;
        out.insert(name.to_string(), normalise(path, name, &sums, &counts)?);
    }
    if out.is_empty() {
        return Err(fail(
            path,
            "a GGUF file without imatrix entries (*.in_sum2)",
        ));
    }
    Ok(out)
}

/// `sums / count` per matrix (expert), 1 where a matrix had no input (as
/// llama-quantize).
fn normalise(
    path: &Path,
    name: &str,
    sums: &[f32],
    counts: &[f32],
) -> Result<Vec<f32>, ModelError> {
    if counts.is_empty() || sums.is_empty() || sums.len() % counts.len() != 0 {
        return Err(fail(
            path,
            format!(
                "entry '{name}': {} in_sum2 values for {} counts",
                sums.len(),
                counts.len()
            ),
        ));
    }
    check_sums(path, name, "in_sum2", sums)?;
    check_sums(path, name, "counts", counts)?;
    let ne0 = sums.len() / counts.len();
    let mut e = Vec::with_capacity(sums.len());
    for (j, (&count, s)) in counts.iter().zip(sums.chunks_exact(ne0)).enumerate() {
        if count > 0.0 {
            e.extend(s.iter().map(|x| x / count));
        } else if s.iter().all(|&x| x == 0.0) {
            e.extend(std::iter::repeat(1.0).take(ne0));
        } else {
            return Err(fail(
                path,
                format!("entry '{name}': counts[{j}] is 0 but its in_sum2 values are not"),
            ));
        }
    }
    Ok(e)
}

/// A legacy file read in order, every length bounded by what is left.
struct Legacy<'a> {
    f: BufReader<File>,
    left: u64,
    path: &'a Path,
}

impl Legacy<'_> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, ModelError> {
        if n > self.left {
            return Err(fail(
                self.path,
                format!(
                    "truncated legacy imatrix: {what} needs {n} bytes, {} left",
                    self.left
                ),
            ));
        }
        let mut b = Vec::new();
        b.try_reserve_exact(n as usize)
            .map_err(|_| fail(self.path, format!("{what}: out of memory for {n} bytes")))?;
        b.resize(n as usize, 0);
        self.f
            .read_exact(&mut b)
            .map_err(|e| ModelError::io(self.path, "cannot read imatrix", e))?;
        self.left -= n;
        Ok(b)
    }
    fn i32(&mut self, what: &str) -> Result<i32, ModelError> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// One entry: name, call count, values (divided by the call count).
    fn entry(&mut self) -> Result<(String, Vec<f32>), ModelError> {
        let len = self.i32("entry name length")?;
        if len <= 0 {
            return Err(fail(self.path, format!("bad entry name length {len}")));
        }
        let name = String::from_utf8(self.bytes(len as u64, "entry name")?)
            .map_err(|_| fail(self.path, "entry name is not UTF-8"))?;
        let ncall = self.i32("call count")?;
        let nval = self.i32("value count")?;
        if nval <= 0 {
            return Err(fail(self.path, format!("entry '{name}': {nval} values")));
        }
        let v = floats(&self.bytes(4 * nval as u64, &format!("entry '{name}'"))?);
        check_sums(self.path, &name, "value", &v)?;
        let v = if ncall > 0 {
            v.into_iter().map(|x| x / ncall as f32).collect()
        } else {
            v
        };
        Ok((name, v))
    }
}

fn load_legacy(path: &Path, file: File, len: u64) -> Result<Imatrix, ModelError> {
    use std::io::{Seek, SeekFrom};
    let mut f = BufReader::new(file);
    f.seek(SeekFrom::Start(0))
        .map_err(|e| ModelError::io(path, "cannot read imatrix", e))?;
    let mut r = Legacy { f, left: len, path };
    let n = r.i32("entry count")?;
    // an entry takes at least 4 + 1 + 4 + 4 + 4 bytes
    if n <= 0 || n as u64 > r.left / 17 {
        return Err(fail(path, format!("not an imatrix file ({n} entries)")));
    }
    let mut out = Imatrix::new();
    for _ in 0..n {
        let (name, v) = r.entry()?;
        if out.contains_key(&name) {
            return Err(fail(path, format!("duplicate entry '{name}'")));
        }
        out.insert(name, v);
    }
    Ok(out)
}

/// Writes a legacy `.dat` imatrix (for tests).
pub fn write_legacy(path: &Path, entries: &[(&str, i32, &[f32])]) -> std::io::Result<()> {
    let mut b = Vec::new();
    b.extend((entries.len() as i32).to_le_bytes());
    for (name, ncall, v) in entries {
        b.extend((name.len() as i32).to_le_bytes());
        b.extend(name.as_bytes());
        b.extend(ncall.to_le_bytes());
        b.extend((v.len() as i32).to_le_bytes());
        for x in *v {
            b.extend(x.to_le_bytes());
        }
    }
    b.extend(1i32.to_le_bytes());
    std::fs::write(path, b)
}
