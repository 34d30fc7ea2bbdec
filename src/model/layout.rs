//! The output files laid out once: for each shard converted, its path, its
//! key/values and tensor infos, the encoded header and the file's size.

use std::path::{Path, PathBuf};

use super::assign::Assignment;
use super::gguf::{self, Header, Kv, OutTensor};
use super::source::Source;

/// One output file.
pub struct OutFile {
    pub path: PathBuf,
    /// The source shard it is converted from.
    pub shard: usize,
    pub tensors: Vec<OutTensor>,
    /// The encoded header, padded to the alignment.
    pub header: Vec<u8>,
    pub alignment: u64,
    /// The whole file's bytes (header, data, padding).
    pub file_bytes: u64,
}

/// The output paths: `output` itself, or with `keep_split` on a split set
/// `OUT-0000i-of-0000N.gguf` for every shard.
pub fn output_paths(src: &Source, output: &Path, keep_split: bool) -> Vec<PathBuf> {
    let n = src.shards.len();
    if !(keep_split && n > 1) {
        return vec![output.to_path_buf()];
    }
    let s = output.to_string_lossy();
    let prefix = s.strip_suffix(".gguf").unwrap_or(&s);
    src.selected
        .iter()
        .map(|&i| PathBuf::from(format!("{prefix}-{:05}-of-{n:05}.gguf", i + 1)))
        .collect()
}

/// The files written for `paths` (one per selected shard) under `a`.
pub fn layout(src: &Source, a: &Assignment, paths: &[PathBuf], file_type: u32) -> Vec<OutFile> {
    paths
        .iter()
        .zip(&src.selected)
        .map(|(path, &shard)| {
            let h = &src.shards[shard].header;
            let (tensors, header) = encode(src, a, shard, file_type);
            let data: u64 = tensors
                .iter()
                .map(|t| t.nbytes.div_ceil(h.alignment) * h.alignment)
                .sum();
            OutFile {
                path: path.clone(),
                shard,
                file_bytes: header.len() as u64 + data,
                tensors,
                header,
                alignment: h.alignment,
            }
        })
        .collect()
}

/// Header bytes of every shard's output (they do not depend on the types).
pub fn header_bytes(src: &Source, a: &Assignment, file_type: u32) -> u64 {
    (0..src.shards.len())
        .map(|shard| encode(src, a, shard, file_type).1.len() as u64)
        .sum()
}

/// Shard `shard`'s output tensor infos and encoded header under `a`.
fn encode(src: &Source, a: &Assignment, shard: usize, file_type: u32) -> (Vec<OutTensor>, Vec<u8>) {
    let h = &src.shards[shard].header;
    let tensors = out_tensors(h, &a[shard]);
    let kvs = output_kvs(h, src.shards.len(), file_type);
    let (header, _) = gguf::encode_header(&kvs, &tensors, h.alignment);
    (tensors, header)
}

/// The tensor infos written for shard `h`.
fn out_tensors(h: &Header, a: &[super::assign::Assigned]) -> Vec<OutTensor> {
    h.tensors
        .iter()
        .zip(a)
        .map(|(t, x)| OutTensor {
            name: t.name.clone(),
            ne: t.ne,
            ty: x.ty,
            nbytes: t.nbytes_as(x.ty),
        })
        .collect()
}

/// The key/values written for shard `h`: the input's, with the
/// quantization version and file type set on the shard holding the model's
/// metadata.
fn output_kvs(h: &Header, n_shards: usize, file_type: u32) -> Vec<Kv> {
    let mut kvs: Vec<Kv> = h.kvs.clone();
    if h.kv("general.architecture").is_some() || n_shards == 1 {
        set_kv(&mut kvs, Kv::u32("general.quantization_version", 2));
        set_kv(&mut kvs, Kv::u32("general.file_type", file_type));
    }
    kvs
}

/// Sets `kv`, as ggml's gguf_set_val_*: an existing key is removed and the
/// new value appended.
fn set_kv(kvs: &mut Vec<Kv>, kv: Kv) {
    kvs.retain(|k| k.key != kv.key);
    kvs.push(kv);
}
