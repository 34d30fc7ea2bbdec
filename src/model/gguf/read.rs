//! The bounded reader of a GGUF header. Every count and length read from
//! the file is checked against the bytes the file can still hold (and
//! ggml's caps) before anything is allocated; lists grow as items are
//! actually read, long values are read a piece at a time, and an allocation
//! that fails is an error, not an abort.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{scalar_size, type_geometry, type_nbytes, vt, Header, Kv, TensorInfo};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, KEY_ALIGNMENT};
use crate::model::ModelError;

/// ggml's caps (`GGUF_MAX_STRING_LENGTH`, `GGUF_MAX_ARRAY_ELEMENTS`).
pub const MAX_STRING_LEN: u64 = 1 << 30;
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// Keys are short names; none comes near this.
pub const MAX_KEY_LEN: u64 = 1 << 16;
/// ggml's `GGML_MAX_NAME - 1`.
pub const MAX_NAME_LEN: u64 = 63;
/// Bytes read (and allocated) at a time for a long value.
const PIECE: u64 = 1 << 20;
/// Items reserved before any is read, at most.
const RESERVE: u64 = 256;
/// Smallest key/value: key length, a 1-byte key, type, a u8.
const MIN_KV: u64 = 8 + 1 + 4 + 1;
/// Smallest tensor info: name length, n_dims, one dimension, type, offset.
const MIN_TENSOR: u64 = 8 + 4 + 8 + 4 + 8;

/// Opens `path` for reading if it is a regular file (a FIFO or a device is
/// refused; the open itself never blocks). Returns the file and its length.
pub fn open_regular(path: &Path, err: fn(String) -> ModelError) -> Result<(File, u64), ModelError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| ModelError::io(path, "cannot open", e))?;
    let md = file
        .metadata()
        .map_err(|e| ModelError::io(path, "cannot stat", e))?;
    if !md.is_file() {
        return Err(err(format!(
            "{}: not a regular file ({:?})",
            path.display(),
            md.file_type()
        )));
    }
    Ok((file, md.len()))
}

struct Reader<'a> {
    f: BufReader<&'a File>,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl Reader<'_> {
    fn err(&self, what: impl std::fmt::Display) -> ModelError {
        ModelError::Format(format!(
            "{}: {what} (at byte {})",
            self.path.display(),
            self.pos
        ))
    }
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }
    /// `n` items of at least `min` bytes each must fit in what is left.
    fn fits(&self, n: u64, min: u64, what: &str) -> Result<(), ModelError> {
        if n > self.left() / min {
            return Err(self.err(format!(
                "{n} {what} cannot fit in the {} bytes left of the file (truncated or corrupt)",
                self.left()
            )));
        }
        Ok(())
    }
    /// Appends the next `n` bytes to `out`, a piece at a time.
    fn read_into(&mut self, n: u64, out: &mut Vec<u8>) -> Result<(), ModelError> {
        self.fits(n, 1, "bytes")?;
        let mut left = n;
        while left > 0 {
            let k = left.min(PIECE) as usize;
            out.try_reserve(k)
                .map_err(|_| self.err(format!("out of memory reading {n} bytes")))?;
            let s = out.len();
            out.resize(s + k, 0);
            self.f
                .read_exact(&mut out[s..])
                .map_err(|e| self.err(format!("read error: {e}")))?;
            self.pos += k as u64;
            left -= k as u64;
        }
        Ok(())
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ModelError> {
        let mut b = [0u8; N];
        self.fits(N as u64, 1, "bytes")
            .map_err(|_| self.err(format!("truncated file: {N} bytes needed")))?;
        self.f
            .read_exact(&mut b)
            .map_err(|e| self.err(format!("read error: {e}")))?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, ModelError> {
        self.array().map(u64::from_le_bytes)
    }
    /// A string of at most `max` bytes; `what` names it in errors.
    fn string(&mut self, max: u64, what: &str) -> Result<String, ModelError> {
        let n = self.u64()?;
        if n > max {
            return Err(self.err(format!("{what} of {n} bytes (at most {max} allowed)")));
        }
        let mut b = Vec::new();
        self.read_into(n, &mut b)?;
        String::from_utf8(b).map_err(|_| self.err(format!("{what} is not UTF-8")))
    }
    /// The encoded bytes of one value of type `ty`, appended to `out`.
    fn value(&mut self, ty: u32, out: &mut Vec<u8>) -> Result<(), ModelError> {
        if let Some(n) = scalar_size(ty) {
            return self.read_into(n, out);
        }
        match ty {
            vt::STRING => self.string_value(out),
            vt::ARRAY => self.array_value(out),
            _ => Err(self.err(format!("unknown key/value type {ty}"))),
        }
    }
    fn string_value(&mut self, out: &mut Vec<u8>) -> Result<(), ModelError> {
        let n = self.u64()?;
        if n > MAX_STRING_LEN {
            return Err(self.err(format!(
                "string value of {n} bytes (ggml allows {MAX_STRING_LEN})"
            )));
        }
        out.extend(n.to_le_bytes());
        self.read_into(n, out)
    }
    fn array_value(&mut self, out: &mut Vec<u8>) -> Result<(), ModelError> {
        let et = self.u32()?;
        let n = self.u64()?;
        if n > MAX_ARRAY_LEN {
            return Err(self.err(format!(
                "array of {n} elements (ggml allows {MAX_ARRAY_LEN})"
            )));
        }
        out.extend(et.to_le_bytes());
        out.extend(n.to_le_bytes());
        if let Some(s) = scalar_size(et) {
            self.fits(n, s, "array elements")?;
            self.read_into(n * s, out)
        } else if et == vt::STRING {
            self.fits(n, 8, "array strings")?;
            (0..n).try_for_each(|_| self.string_value(out))
        } else {
            Err(self.err(format!("array of unsupported element type {et}")))
        }
    }
    fn kvs(&mut self, n: u64) -> Result<Vec<Kv>, ModelError> {
        let mut kvs = Vec::with_capacity(n.min(RESERVE) as usize);
        let mut keys = HashSet::new();
        for i in 0..n {
            let key = self.string(MAX_KEY_LEN, "key")?;
            if key.is_empty() {
                return Err(self.err(format!("empty key (key/value {i})")));
            }
            if !keys.insert(key.clone()) {
                return Err(self.err(format!("duplicate key '{key}'")));
            }
            let ty = self.u32()?;
            let mut raw = Vec::new();
            self.value(ty, &mut raw)
                .map_err(|e| ModelError::Format(format!("{e}, in the value of '{key}'")))?;
            kvs.push(Kv { key, ty, raw });
        }
        Ok(kvs)
    }
}

/// Reads and validates the header of the GGUF file `path`: sizes, keys,
/// tensor shapes and types, and the tensor data (inside the file, aligned,
/// not overlapping). A model's metadata is checked by
/// [`super::check_model_header`].
pub fn read_header(path: &Path) -> Result<Header, ModelError> {
    let (file, len) = open_regular(path, ModelError::Format)?;
    let mut r = Reader {
        f: BufReader::with_capacity(1 << 16, &file),
        pos: 0,
        len,
        path,
    };
    let magic: [u8; 4] = r.array().map_err(|_| {
        ModelError::Format(format!(
            "{}: not a GGUF file (shorter than its magic)",
            path.display()
        ))
    })?;
    if &magic != GGUF_MAGIC {
        return Err(ModelError::Format(format!(
            "{}: not a GGUF file (magic {magic:02x?}, expected \"GGUF\")",
            path.display()
        )));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(r.err(format!("unsupported GGUF version {version}")));
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    r.fits(n_kv, MIN_KV, "key/values")?;
    r.fits(n_tensors, MIN_TENSOR, "tensor infos")?;
    // each product is at most the file's length: no overflow
    r.fits(
        n_kv * MIN_KV + n_tensors * MIN_TENSOR,
        1,
        "bytes of key/values and tensor infos",
    )?;
    let kvs = r.kvs(n_kv)?;
    let alignment = alignment(&kvs).map_err(|e| r.err(e))?;
    // the writer pads to it: never more than the file's own length
    if alignment > len.max(DEFAULT_ALIGNMENT) {
        return Err(r.err(format!(
            "alignment {alignment} is larger than the file ({len} bytes)"
        )));
    }
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors.min(RESERVE) as usize);
    let mut names = HashSet::new();
    for _ in 0..n_tensors {
        let t = tensor_info(&mut r, alignment)?;
        if !names.insert(t.name.clone()) {
            return Err(r.err(format!("duplicate tensor name '{}'", t.name)));
        }
        tensors.push(t);
    }
    let data_offset = r
        .pos
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| r.err("data offset overflows"))?;
    check_data(path, &tensors, data_offset, len)?;
    Ok(Header {
        version,
        kvs,
        tensors,
        alignment,
        data_offset,
        file_len: len,
    })
}

/// `general.alignment`: a u32 power of two (32 when absent).
fn alignment(kvs: &[Kv]) -> Result<u64, String> {
    let a = match kvs.iter().find(|k| k.key == KEY_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some(k) if k.ty == vt::U32 => k.as_u64().unwrap_or(0),
        Some(_) => return Err(format!("{KEY_ALIGNMENT} is not a u32")),
    };
    if !a.is_power_of_two() {
        return Err(format!("alignment {a} is not a power of 2"));
    }
    Ok(a)
}

/// One tensor info: name, shape (no element count above i64::MAX, even
/// leaving out zero dimensions), a known type whose blocks fit the rows,
/// an aligned offset.
fn tensor_info(r: &mut Reader, alignment: u64) -> Result<TensorInfo, ModelError> {
    let name = r.string(MAX_NAME_LEN, "tensor name (ggml's limit)")?;
    let n_dims = r.u32()?;
    if !(1..=4).contains(&n_dims) {
        return Err(r.err(format!(
            "tensor '{name}' has {n_dims} dimensions (1..4 allowed)"
        )));
    }
    let mut ne = [1u64; 4];
    for d in ne.iter_mut().take(n_dims as usize) {
        *d = r.u64()?;
    }
    let ty = r.u32()? as i32;
    let offset = r.u64()?;
    let bad = |what: String| r.err(format!("tensor '{name}': {what}"));
    let nonzero = ne
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |a, &b| a.checked_mul(b))
        .filter(|&n| n <= i64::MAX as u64);
    if nonzero.is_none() {
        return Err(bad(format!("shape {ne:?} overflows (or is negative)")));
    }
    let (blck, _) =
        type_geometry(ty).ok_or_else(|| bad(format!("unknown type id {}", ty as u32)))?;
    if ne[0] % blck != 0 {
        return Err(bad(format!(
            "row length {} is not a multiple of its type's block size {blck}",
            ne[0]
        )));
    }
    let nbytes = if ne.contains(&0) {
        0
    } else {
        type_nbytes(ty, ne[0], ne[1] * ne[2] * ne[3])
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| bad("size overflows".into()))?
    };
    if offset % alignment != 0 {
        return Err(bad(format!(
            "data offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    Ok(TensorInfo {
        name,
        ne,
        n_dims,
        ty,
        offset,
        nbytes,
    })
}

/// Every tensor's data inside the file, and no two of them overlapping.
fn check_data(path: &Path, tensors: &[TensorInfo], base: u64, len: u64) -> Result<(), ModelError> {
    let fail = |what: String| ModelError::Format(format!("{}: {what}", path.display()));
    let mut ranges = Vec::with_capacity(tensors.len());
    for t in tensors {
        let start = base.checked_add(t.offset);
        match start.and_then(|s| s.checked_add(t.nbytes)) {
            Some(end) if end <= len => ranges.push((start.unwrap_or(0), end, &t.name)),
            _ => {
                return Err(fail(format!(
                    "the data of tensor '{}' ({} bytes at offset {} of the data section at {base}) lies past the end of the file ({len} bytes): truncated or corrupt",
                    t.name, t.nbytes, t.offset
                )))
            }
        }
    }
    ranges.retain(|r| r.1 > r.0);
    ranges.sort_unstable();
    let mut last: Option<(u64, &String)> = None;
    for (start, end, name) in ranges {
        if let Some((prev_end, prev)) = last {
            if start < prev_end {
                return Err(fail(format!(
                    "the data of tensors '{prev}' and '{name}' overlap (bytes {start}..{prev_end})"
                )));
            }
        }
        if last.map_or(true, |(e, _)| end > e) {
            last = Some((end, name));
        }
    }
    Ok(())
}
