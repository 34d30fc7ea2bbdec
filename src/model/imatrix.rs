//! Importance matrices in llama.cpp's two formats: the GGUF imatrix
//! (`NAME.in_sum2` and `NAME.counts` tensors, llama-imatrix's default) and
//! the legacy `.dat` file. Values are normalised as llama-quantize does.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use super::gguf;
use super::ModelError;

/// Per-weight importance: tensor name → `ne[0] * n_experts` weights.
pub type Imatrix = HashMap<String, Vec<f32>>;

pub fn load(path: &Path) -> Result<Imatrix, ModelError> {
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = File::open(path).map_err(|e| ModelError::io(path, "cannot open imatrix", e))?;
        f.read_exact(&mut magic)
            .map_err(|_| ModelError::Imatrix(format!("{}: file too short", path.display())))?;
    }
    let m = if &magic == gguf::GGUF_MAGIC {
        load_gguf(path)?
    } else {
        load_legacy(path)?
    };
    for (name, v) in &m {
        if v.iter().any(|x| !x.is_finite()) {
            return Err(ModelError::Imatrix(format!(
                "{}: entry '{name}' has non-finite values",
                path.display()
            )));
        }
    }
    Ok(m)
}

fn load_gguf(path: &Path) -> Result<Imatrix, ModelError> {
    let h = gguf::read_header(path)?;
    let file = File::open(path).map_err(|e| ModelError::io(path, "cannot open imatrix", e))?;
    let read_f32 = |t: &gguf::TensorInfo| -> Result<Vec<f32>, ModelError> {
        if t.ty != 0 {
            return Err(ModelError::Imatrix(format!(
                "{}: tensor '{}' is not F32",
                path.display(),
                t.name
            )));
        }
        let mut b = vec![0u8; t.nbytes as usize];
        gguf::read_at(&file, h.data_offset + t.offset, &mut b)
            .map_err(|e| ModelError::io(path, "cannot read imatrix", e))?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    };
    let mut out = Imatrix::new();
    for t in &h.tensors {
        let Some(name) = t.name.strip_suffix(".in_sum2") else {
            continue;
        };
        let counts = h
            .tensors
            .iter()
            .find(|c| c.name == format!("{name}.counts"))
            .ok_or_else(|| {
                ModelError::Imatrix(format!("{}: '{name}' has no .counts", path.display()))
            })?;
        let sums = read_f32(t)?;
        let counts = read_f32(counts)?;
        if counts.is_empty() || sums.len() % counts.len() != 0 {
            return Err(ModelError::Imatrix(format!(
                "{}: '{name}': {} sums for {} counts",
                path.display(),
                sums.len(),
                counts.len()
            )));
        }
        let ne0 = sums.len() / counts.len();
        let mut e = vec![0f32; sums.len()];
        for (j, &count) in counts.iter().enumerate() {
            for i in 0..ne0 {
                e[j * ne0 + i] = if count > 0.0 {
                    sums[j * ne0 + i] / count
                } else {
                    1.0
                };
            }
        }
        out.insert(name.to_string(), e);
    }
    if out.is_empty() {
        return Err(ModelError::Imatrix(format!(
            "{}: a GGUF file without imatrix entries (*.in_sum2)",
            path.display()
        )));
    }
    Ok(out)
}

fn load_legacy(path: &Path) -> Result<Imatrix, ModelError> {
    let data = std::fs::read(path).map_err(|e| ModelError::io(path, "cannot read imatrix", e))?;
    let bad = |what: &str| ModelError::Imatrix(format!("{}: {what}", path.display()));
    let mut pos = 0usize;
    let i32_at = |pos: &mut usize| -> Result<i32, ModelError> {
        let b = data
            .get(*pos..*pos + 4)
            .ok_or_else(|| bad("truncated legacy imatrix"))?;
        *pos += 4;
        Ok(i32::from_le_bytes(b.try_into().unwrap()))
    };
    let n = i32_at(&mut pos)?;
    if n <= 0 || n as usize > data.len() / 12 {
        return Err(bad(&format!("not an imatrix file ({n} entries)")));
    }
    let mut out = Imatrix::new();
    for _ in 0..n {
        let len = i32_at(&mut pos)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && pos + l <= data.len())
            .ok_or_else(|| bad("bad entry name length"))?;
        let name = String::from_utf8(data[pos..pos + len].to_vec())
            .map_err(|_| bad("entry name is not UTF-8"))?;
        pos += len;
        let ncall = i32_at(&mut pos)?;
        let nval = i32_at(&mut pos)?;
        let nval = usize::try_from(nval)
            .ok()
            .filter(|&v| v > 0 && pos + 4 * v <= data.len())
            .ok_or_else(|| bad(&format!("entry '{name}': bad value count")))?;
        let v: Vec<f32> = data[pos..pos + 4 * nval]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .map(|x| if ncall > 0 { x / ncall as f32 } else { x })
            .collect();
        pos += 4 * nval;
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
