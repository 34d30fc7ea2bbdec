//! GGUF files: a validating reader of the header (key/values and tensor
//! infos) and a writer that lays a file out byte for byte as ggml's
//! `gguf_write_to_file` does.
//!
//! Why not ggml's `gguf_init_from_file` for reading: the model path must
//! never abort or allocate without bound on a hostile or truncated file, and
//! tensor data is streamed piecewise (never loaded whole); here every count
//! and length is checked against the bytes actually present before anything
//! is allocated. Key/values are kept as their raw encoded bytes, so copying
//! them to the output is exact whatever their type. The outputs are read back
//! by ggml's own `gguf_init_from_file` in the tests (`crate::ggml::gguf`).
//!
//! [`read`] holds the bounded reader (structural checks), [`check`] the
//! checks of a model's metadata that llama.cpp makes when loading it.

mod check;
mod read;

pub use check::{check_model_header, KNOWN_ARCHITECTURES, MAX_LAYERS};
pub use read::{
    open_regular, read_header, MAX_ARRAY_LEN, MAX_KEY_LEN, MAX_NAME_LEN, MAX_STRING_LEN,
};

use std::fs::File;
use std::io::{BufWriter, Write};

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const KEY_ALIGNMENT: &str = "general.alignment";

/// GGUF value types (`enum gguf_type`).
pub mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

pub(crate) fn scalar_size(ty: u32) -> Option<u64> {
    Some(match ty {
        vt::U8 | vt::I8 | vt::BOOL => 1,
        vt::U16 | vt::I16 => 2,
        vt::U32 | vt::I32 | vt::F32 => 4,
        vt::U64 | vt::I64 | vt::F64 => 8,
        _ => return None,
    })
}

/// One key/value: the type and the value's encoded bytes (as in the file).
#[derive(Clone, Debug, PartialEq)]
pub struct Kv {
    pub key: String,
    pub ty: u32,
    pub raw: Vec<u8>,
}

impl Kv {
    pub fn u32(key: &str, v: u32) -> Kv {
        Kv {
            key: key.into(),
            ty: vt::U32,
            raw: v.to_le_bytes().to_vec(),
        }
    }
    pub fn u16(key: &str, v: u16) -> Kv {
        Kv {
            key: key.into(),
            ty: vt::U16,
            raw: v.to_le_bytes().to_vec(),
        }
    }
    pub fn f32(key: &str, v: f32) -> Kv {
        Kv {
            key: key.into(),
            ty: vt::F32,
            raw: v.to_le_bytes().to_vec(),
        }
    }
    pub fn i32(key: &str, v: i32) -> Kv {
        Kv {
            key: key.into(),
            ty: vt::I32,
            raw: v.to_le_bytes().to_vec(),
        }
    }
    pub fn string(key: &str, v: &str) -> Kv {
        let mut raw = (v.len() as u64).to_le_bytes().to_vec();
        raw.extend_from_slice(v.as_bytes());
        Kv {
            key: key.into(),
            ty: vt::STRING,
            raw,
        }
    }
    /// An array of f32.
    pub fn f32s(key: &str, v: &[f32]) -> Kv {
        let mut raw = vt::F32.to_le_bytes().to_vec();
        raw.extend((v.len() as u64).to_le_bytes());
        raw.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        Kv {
            key: key.into(),
            ty: vt::ARRAY,
            raw,
        }
    }
    /// An array of strings.
    pub fn strs(key: &str, v: &[&str]) -> Kv {
        let mut raw = vt::STRING.to_le_bytes().to_vec();
        raw.extend((v.len() as u64).to_le_bytes());
        for s in v {
            raw.extend((s.len() as u64).to_le_bytes());
            raw.extend(s.as_bytes());
        }
        Kv {
            key: key.into(),
            ty: vt::ARRAY,
            raw,
        }
    }
    /// The value as an unsigned integer (any integer type); for an array,
    /// its first element (per-layer head counts: llama.cpp's n_gqa() uses
    /// layer 0).
    pub fn as_u64(&self) -> Option<u64> {
        let r = &self.raw;
        let le = |n: usize| -> Option<[u8; 8]> {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(r.get(..n)?);
            Some(b)
        };
        let signed = |n: usize| -> Option<u64> {
            let v = i64::from_le_bytes(le(n)?) << (64 - 8 * n) >> (64 - 8 * n);
            u64::try_from(v).ok()
        };
        Some(match self.ty {
            vt::U8 => u64::from_le_bytes(le(1)?),
            vt::U16 => u64::from_le_bytes(le(2)?),
            vt::U32 => u64::from_le_bytes(le(4)?),
            vt::U64 => u64::from_le_bytes(le(8)?),
            vt::I8 => signed(1)?,
            vt::I16 => signed(2)?,
            vt::I32 => signed(4)?,
            vt::I64 => signed(8)?,
            vt::ARRAY => {
                let et = u32::from_le_bytes(r.get(..4)?.try_into().ok()?);
                let n = u64::from_le_bytes(r.get(4..12)?.try_into().ok()?);
                if n == 0 || et == vt::ARRAY {
                    return None;
                }
                return Kv {
                    key: String::new(),
                    ty: et,
                    raw: r.get(12..)?.to_vec(),
                }
                .as_u64();
            }
            _ => return None,
        })
    }
    pub fn as_str(&self) -> Option<&str> {
        (self.ty == vt::STRING)
            .then(|| std::str::from_utf8(self.raw.get(8..)?).ok())
            .flatten()
    }
    /// The element count and encoded elements of an array of `et`.
    fn array_of(&self, et: u32) -> Option<(u64, &[u8])> {
        let r = &self.raw;
        let t = u32::from_le_bytes(r.get(..4)?.try_into().ok()?);
        let n = u64::from_le_bytes(r.get(4..12)?.try_into().ok()?);
        (self.ty == vt::ARRAY && t == et).then(|| (n, &r[12..]))
    }
    /// The values of an array of f32 (`None` for any other type).
    pub fn as_f32s(&self) -> Option<Vec<f32>> {
        let (n, b) = self.array_of(vt::F32)?;
        (b.len() as u64 == n.checked_mul(4)?).then(|| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }
    /// The strings of an array of strings (`None` for any other type or
    /// a string that is not UTF-8).
    pub fn as_strs(&self) -> Option<Vec<&str>> {
        let (n, mut b) = self.array_of(vt::STRING)?;
        // each string takes at least its 8-byte length
        let mut v = Vec::with_capacity(n.min(b.len() as u64 / 8) as usize);
        for _ in 0..n {
            let len = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
            let end = usize::try_from(len).ok()?.checked_add(8)?;
            v.push(std::str::from_utf8(b.get(8..end)?).ok()?);
            b = &b[end..];
        }
        b.is_empty().then_some(v)
    }
}

/// One tensor info of a GGUF header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, unused ones 1 (as ggml's `ne`).
    pub ne: [u64; 4],
    /// `n_dims` as stored in the file.
    pub n_dims: u32,
    pub ty: i32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of the data (ggml_nbytes).
    pub nbytes: u64,
}

impl TensorInfo {
    pub fn nelements(&self) -> u64 {
        self.ne.iter().product()
    }
    pub fn row_len(&self) -> u64 {
        self.ne[0]
    }
    pub fn nrows(&self) -> u64 {
        self.ne[1] * self.ne[2] * self.ne[3]
    }
    /// Bytes of the data once of type `ty` (its own when unchanged; 0 when
    /// the rows do not fit the type's blocks).
    pub fn nbytes_as(&self, ty: i32) -> u64 {
        if ty == self.ty {
            self.nbytes
        } else {
            type_nbytes(ty, self.ne[0], self.nrows()).unwrap_or(0)
        }
    }
    /// ggml_n_dims: the number of dimensions up to the last one above 1 (at least 1).
    pub fn ggml_n_dims(&self) -> u32 {
        (1..4)
            .rev()
            .find(|&i| self.ne[i] > 1)
            .map_or(1, |i| i as u32 + 1)
    }
}

/// A parsed GGUF header.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub kvs: Vec<Kv>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Offset of the data section in the file.
    pub data_offset: u64,
    pub file_len: u64,
}

impl Header {
    pub fn kv(&self, key: &str) -> Option<&Kv> {
        self.kvs.iter().find(|k| k.key == key)
    }
    pub fn arch(&self) -> String {
        self.kv("general.architecture")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string()
    }
    /// `{arch}.{suffix}` as an integer.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.kv(&format!("{}.{suffix}", self.arch()))
            .and_then(|k| k.as_u64())
    }
}

/// `(block size, bytes per block)` of a ggml type id, from ggml itself.
pub fn type_geometry(ty: i32) -> Option<(u64, u64)> {
    crate::ggml::reference::type_geometry(ty).map(|(b, s)| (b as u64, s as u64))
}

/// Bytes of `nrows` rows of `row_len` elements of type `ty`.
pub fn type_nbytes(ty: i32, row_len: u64, nrows: u64) -> Option<u64> {
    let (blck, size) = type_geometry(ty)?;
    if blck == 0 || row_len % blck != 0 {
        return None;
    }
    (row_len / blck).checked_mul(size)?.checked_mul(nrows)
}

/// A tensor of the output: name, shape, type; its offset is computed.
#[derive(Clone, Debug)]
pub struct OutTensor {
    pub name: String,
    pub ne: [u64; 4],
    pub ty: i32,
    pub nbytes: u64,
}

/// The header bytes and tensor offsets of an output file, laid out as
/// ggml's gguf writer does (version 3, `ggml_n_dims` dimensions, tensor
/// data padded to the alignment, the data section aligned). An empty tensor
/// keeps its zero dimensions (ggml's writer may drop them).
pub fn encode_header(kvs: &[Kv], tensors: &[OutTensor], alignment: u64) -> (Vec<u8>, Vec<u64>) {
    let mut b = Vec::new();
    b.extend_from_slice(GGUF_MAGIC);
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for kv in kvs {
        b.extend((kv.key.len() as u64).to_le_bytes());
        b.extend(kv.key.as_bytes());
        b.extend(kv.ty.to_le_bytes());
        b.extend(&kv.raw);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut off = 0u64;
    for t in tensors {
        b.extend((t.name.len() as u64).to_le_bytes());
        b.extend(t.name.as_bytes());
        // ggml_n_dims, except that a zero dimension is kept: ggml's writer
        // drops it when no later dimension is above 1, and the empty tensor
        // then reads back with data
        let n_dims = (1..4).rev().find(|&i| t.ne[i] != 1).map_or(1, |i| i + 1);
        b.extend((n_dims as u32).to_le_bytes());
        for d in &t.ne[..n_dims] {
            b.extend(d.to_le_bytes());
        }
        b.extend(t.ty.to_le_bytes());
        b.extend(off.to_le_bytes());
        offsets.push(off);
        off += t.nbytes.div_ceil(alignment) * alignment;
    }
    let padded = (b.len() as u64).div_ceil(alignment) * alignment;
    b.resize(padded as usize, 0);
    (b, offsets)
}

/// Writes tensor data after an encoded header, padding each tensor.
pub struct DataWriter {
    pub w: BufWriter<File>,
    pub written: u64,
    alignment: u64,
}

impl DataWriter {
    pub fn new(file: File, header: &[u8], alignment: u64) -> std::io::Result<DataWriter> {
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(header)?;
        Ok(DataWriter {
            w,
            written: header.len() as u64,
            alignment,
        })
    }
    pub fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.w.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }
    pub fn pad(&mut self) -> std::io::Result<()> {
        let n = self.written.div_ceil(self.alignment) * self.alignment - self.written;
        self.write(&vec![0u8; n as usize])
    }
    pub fn finish(self) -> std::io::Result<File> {
        let f = self.w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(f)
    }
}

/// Reads `buf.len()` bytes at `offset` of `file`.
pub fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_decode_and_truncated_ones_are_none() {
        let s = Kv::strs("k", &["attn_q", "", "ffn_down"]);
        assert_eq!(s.as_strs().unwrap(), ["attn_q", "", "ffn_down"]);
        let f = Kv::f32s("k", &[1.5, -2.0]);
        assert_eq!(f.as_f32s().unwrap(), [1.5, -2.0]);
        // the wrong element type, or not an array
        assert!(s.as_f32s().is_none() && f.as_strs().is_none());
        assert!(Kv::u32("k", 7).as_strs().is_none());
        assert!(Kv::string("k", "abc").as_f32s().is_none());
        // every cut of the encoded bytes, and bytes left over
        for (kv, n) in [(&s, s.raw.len()), (&f, f.raw.len())] {
            for cut in 0..n {
                let mut k = kv.clone();
                k.raw.truncate(cut);
                assert!(k.as_strs().is_none() && k.as_f32s().is_none(), "{cut}");
            }
            let mut k = kv.clone();
            k.raw.push(0);
            assert!(k.as_strs().is_none() && k.as_f32s().is_none());
        }
        // a string length beyond the bytes
        let mut k = Kv::strs("k", &["ab"]);
        k.raw[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(k.as_strs().is_none());
    }
}
