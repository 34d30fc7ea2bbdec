//! The source model: its shards opened once, every tensor addressed by
//! shard and index, and the one reader of tensor rows as F32.
//!
//! A split set (`NAME-0000i-of-0000N.gguf`, llama.cpp's gguf-split) is read
//! whole — llama-quantize's rules count layers over the whole model — and
//! every shard must be there and say it belongs to the set. The shard given
//! (or, with `keep_split`, every shard) is the one converted.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::gguf::{self, Header, TensorInfo};
use super::ModelError;
use crate::quant::{self, QuantType};

/// One opened shard.
pub struct Shard {
    pub path: PathBuf,
    pub header: Header,
    pub file: File,
}

/// A tensor: its shard and its index in that shard's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorRef {
    pub shard: usize,
    pub index: usize,
}

/// The model being converted.
pub struct Source {
    pub shards: Vec<Shard>,
    /// The shards to convert, in order.
    pub selected: Vec<usize>,
    /// The shard holding the model's metadata (`general.architecture`).
    meta: usize,
}

impl Source {
    /// Opens `input` and, when it is a shard of a split set, every shard.
    pub fn open(input: &Path, keep_split: bool) -> Result<Source, ModelError> {
        let first = open_shard(input)?;
        let split_count = first
            .header
            .kv("split.count")
            .and_then(|k| k.as_u64())
            .unwrap_or(0);
        let paths = match split_paths(input) {
            Some(p) if split_count > 1 && p.len() as u64 == split_count => p,
            _ if split_count > 1 => {
                return Err(ModelError::Invalid(format!(
                    "{} is shard of a split set of {split_count} but not named NAME-0000i-of-{split_count:05}.gguf, so the other shards cannot be found",
                    input.display()
                )))
            }
            _ if keep_split => {
                return Err(ModelError::Invalid(format!(
                    "--keep-split: {} is not a shard of a split model",
                    input.display()
                )))
            }
            _ => return Source::single(first).checked(),
        };
        let mut shards = Vec::with_capacity(paths.len());
        let mut given = 0;
        let mut first = Some(first);
        for (i, p) in paths.iter().enumerate() {
            let s = if p == input {
                given = i;
                first.take().expect("input named once")
            } else {
                open_shard(p)?
            };
            check_shard(&s, i, split_count)?;
            shards.push(s);
        }
        let meta = shards
            .iter()
            .position(|s| s.header.kv("general.architecture").is_some())
            .unwrap_or(given);
        let selected = if keep_split {
            (0..shards.len()).collect()
        } else {
            vec![given]
        };
        Source {
            shards,
            selected,
            meta,
        }
        .checked()
    }

    /// The metadata must be a model llama.cpp loads (its architecture,
    /// block count, embedding length).
    fn checked(self) -> Result<Source, ModelError> {
        let m = &self.shards[self.meta];
        gguf::check_model_header(&m.header, &m.path)?;
        Ok(self)
    }

    fn single(shard: Shard) -> Source {
        Source {
            shards: vec![shard],
            selected: vec![0],
            meta: 0,
        }
    }

    /// The header holding the model's metadata.
    pub fn meta(&self) -> &Header {
        &self.shards[self.meta].header
    }

    /// Every tensor of the model, shard by shard, in file order.
    pub fn tensors(&self) -> impl Iterator<Item = (TensorRef, &TensorInfo)> + '_ {
        self.shards.iter().enumerate().flat_map(|(shard, s)| {
            s.header
                .tensors
                .iter()
                .enumerate()
                .map(move |(index, t)| (TensorRef { shard, index }, t))
        })
    }

    pub fn info(&self, r: TensorRef) -> &TensorInfo {
        &self.shards[r.shard].header.tensors[r.index]
    }

    /// The tensor of that name in the same shard as `near`.
    pub fn find_near(&self, near: TensorRef, name: &str) -> Option<TensorRef> {
        let tensors = &self.shards[near.shard].header.tensors;
        let index = tensors.iter().position(|t| t.name == name)?;
        Some(TensorRef {
            shard: near.shard,
            index,
        })
    }

    /// Bytes of one source row of `r`.
    pub fn row_bytes(&self, r: TensorRef) -> usize {
        let t = self.info(r);
        t.nbytes.checked_div(t.nrows()).unwrap_or(0) as usize
    }

    /// Reads the raw bytes of rows `row..row + buf.len() / row_bytes`.
    pub fn read_rows(&self, r: TensorRef, row: usize, buf: &mut [u8]) -> Result<(), ModelError> {
        let s = &self.shards[r.shard];
        let t = &s.header.tensors[r.index];
        let off = s.header.data_offset + t.offset + (row * self.row_bytes(r)) as u64;
        gguf::read_at(&s.file, off, buf).map_err(|e| ModelError::io(&s.path, "cannot read", e))
    }

    /// Rows `row..` of `r` as F32 into `out` (whole rows): read into `raw`
    /// (resized as needed; unused for F32 sources) and converted on the
    /// current rayon pool.
    pub fn rows_f32(
        &self,
        r: TensorRef,
        row: usize,
        raw: &mut Vec<u8>,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let t = self.info(r);
        let row_len = t.ne[0] as usize;
        let n = out.len() / row_len.max(1);
        let from = QuantType::from_ggml(t.ty).ok_or_else(|| {
            ModelError::Invalid(format!(
                "tensor '{}': cannot convert from type {} (not implemented here)",
                t.name,
                crate::ggml::tensor::type_name(t.ty)
            ))
        })?;
        if from == QuantType::F32 {
            // SAFETY: any bytes are a valid f32; the slice covers `out` exactly.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, out.len() * 4)
            };
            return self.read_rows(r, row, bytes);
        }
        raw.resize(n * self.row_bytes(r), 0);
        self.read_rows(r, row, raw)?;
        quant::dequantize_rows(from, raw, row_len, out)?;
        Ok(())
    }
}

fn open_shard(path: &Path) -> Result<Shard, ModelError> {
    let header = gguf::read_header(path)?;
    let (file, _) = gguf::open_regular(path, ModelError::Format)?;
    Ok(Shard {
        path: path.to_path_buf(),
        header,
        file,
    })
}

/// A shard must say it is number `i` of a set of `count`.
fn check_shard(s: &Shard, i: usize, count: u64) -> Result<(), ModelError> {
    let no = s.header.kv("split.no").and_then(|k| k.as_u64());
    let n = s.header.kv("split.count").and_then(|k| k.as_u64());
    if no != Some(i as u64) || n != Some(count) {
        return Err(ModelError::Format(format!(
            "{}: not shard {} of a set of {count} (its split.no / split.count say {} / {})",
            s.path.display(),
            i + 1,
            no.map_or("none".into(), |x| (x + 1).to_string()),
            n.map_or("none".into(), |x| x.to_string()),
        )));
    }
    Ok(())
}

/// A split set: `prefix-00001-of-00003.gguf` → its shard paths.
pub fn split_paths(path: &Path) -> Option<Vec<PathBuf>> {
    let s = path.to_str()?;
    let stem = s.strip_suffix(".gguf")?;
    let (head, count) = stem.rsplit_once("-of-")?;
    let (prefix, _no) = head.rsplit_once('-')?;
    let n: usize = count.parse().ok()?;
    if count.len() != 5 || n == 0 {
        return None;
    }
    Some(
        (1..=n)
            .map(|i| PathBuf::from(format!("{prefix}-{i:05}-of-{n:05}.gguf")))
            .collect(),
    )
}
