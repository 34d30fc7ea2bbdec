//! The calibration file: llama-imatrix's GGUF layout (`NAME.in_sum2`,
//! `NAME.counts`, `general.type = imatrix`, `imatrix.*`), so that
//! `llama-quantize --imatrix` reads it, plus our Gram matrices
//! (`ENTRY.gram`, XᵀX/n in f32, d × d) and which weights read each
//! (`ggml_qat.gram.weights[i]` reads `ggml_qat.gram.tensors[i]`).
//!
//! The header is made by ggml's own gguf API (the ggml linked here); tensor
//! data is streamed at the offsets that API assigns, one tensor at a time,
//! so no second copy of the statistics is held. The file is written beside
//! the target under a temporary name and renamed at the end; only a regular
//! file is ever replaced, and a failed run leaves nothing behind.

use crate::collect::Collector;
use crate::error::{Error, Result};
use crate::ffi;
use crate::gram::packed_index;
use crate::sensitivity::Group;
use std::ffi::{c_char, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What the file says about its own making.
pub struct Meta {
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
    pub seed: u64,
    pub tokens: usize,
    pub generated: usize,
    pub gram_max: usize,
    pub sensitivity: Option<Sensitivity>,
}

/// The measured sensitivities (`ggml_qat.factors.*`, read by
/// `ggml-qat-quantize --calibration`, and `ggml_qat.sensitivity.*`, every
/// group's raw figures).
pub struct Sensitivity {
    pub probe_type: String,
    /// `ggml_qat.factors.measure`: "kl-divergence", or "1-cosine" (the
    /// pooled embeddings of an embedding model).
    pub measure: &'static str,
    pub tokens: usize,
    pub positions: usize,
    /// Bytes of the reference distributions held.
    pub reference_bytes: usize,
    pub seconds: f64,
    /// KL divergence of the restored model (the measure's floor).
    pub floor: f64,
    pub groups: Vec<Group>,
}

impl Sensitivity {
    /// The planner's role factors: KL divergence per unit of mean relative
    /// squared error, for each role measured with both above zero.
    pub fn role_factors(&self) -> Vec<(String, f32)> {
        self.groups
            .iter()
            .filter(|g| !g.name.starts_with("depth") && g.nsr > 0.0 && g.kld > 0.0)
            .map(|g| (g.name.clone(), (g.kld / g.nsr) as f32))
            .filter(|(_, f)| f.is_finite() && *f > 0.0)
            .collect()
    }

    /// The depth factors (each third's KL divergence), when all three were
    /// measured above zero.
    pub fn depth_factors(&self) -> Option<[f32; 3]> {
        let d: Vec<f32> = (0..3)
            .filter_map(|t| self.groups.iter().find(|g| g.name == format!("depth{t}")))
            .map(|g| g.kld as f32)
            .filter(|k| k.is_finite() && *k > 0.0)
            .collect();
        d.try_into().ok()
    }
}

/// The temporary file beside the target; removed unless committed.
pub struct Output {
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl Output {
    /// Checks the target (absent or a regular file) and creates the
    /// temporary file, so an unwritable place fails before any work.
    pub fn prepare(target: &Path) -> Result<Output> {
        let werr = |e: std::io::Error| Error::Io(target.into(), e);
        if let Ok(m) = fs::metadata(target) {
            if !m.file_type().is_file() {
                return Err(Error::Write(format!(
                    "{} exists and is not a regular file",
                    target.display()
                )));
            }
        }
        let temp = Output::temp_for(target)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(werr)?;
        Ok(Output {
            target: target.into(),
            temp,
            file: Some(file),
        })
    }

    /// The temporary file of `target`: `.NAME.PID.tmp` beside it (known
    /// before it exists, so the signal handlers can be told first).
    pub fn temp_for(target: &Path) -> Result<PathBuf> {
        let name = target
            .file_name()
            .ok_or_else(|| Error::Write(format!("{}: no file name", target.display())))?;
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok(dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        )))
    }

    /// Writes everything, calls `before_rename` with the bytes written
    /// (an error there leaves no file), and renames the file into place;
    /// the bytes written.
    pub fn commit(
        mut self,
        meta: &Meta,
        c: &Collector,
        before_rename: impl FnOnce(u64) -> Result<()>,
    ) -> Result<u64> {
        let file = self.file.take().unwrap();
        let werr = |e: std::io::Error| Error::Io(self.target.clone(), e);
        let header = Header::build(meta, c)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut pos = header.bytes.len() as u64;
        w.write_all(&header.bytes).map_err(werr)?;
        let mut row = Vec::new();
        for (i, t) in tensors(c).enumerate() {
            let at = (header.data_offset + header.offsets[i]) as u64;
            let gap = at
                .checked_sub(pos)
                .ok_or_else(|| Error::Write("tensor offsets out of order".into()))?;
            pos += pad(&mut w, gap).map_err(werr)?;
            t.write(c, &mut row);
            w.write_all(bytes(&row)).map_err(werr)?;
            pos += (row.len() * 4) as u64;
        }
        pos += pad(&mut w, pos.next_multiple_of(header.alignment) - pos).map_err(werr)?;
        let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(werr)?;
        drop(file);
        before_rename(pos)?;
        fs::rename(&self.temp, &self.target).map_err(werr)?;
        Ok(pos)
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // After a successful rename the temporary name no longer exists.
        let _ = fs::remove_file(&self.temp);
    }
}

fn pad(w: &mut impl Write, n: u64) -> std::io::Result<u64> {
    w.write_all(&vec![0u8; n as usize])?;
    Ok(n)
}

fn bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding; any byte view of it is valid.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len() * 4) }
}

/// One tensor of the file, in file order.
enum Tensor<'a> {
    Sums(&'a str),
    Counts(&'a str),
    Gram(usize),
}

fn tensors(c: &Collector) -> impl Iterator<Item = Tensor<'_>> {
    let per_weight = c
        .weights
        .iter()
        .filter(|(_, w)| w.imatrix)
        .flat_map(|(n, _)| [Tensor::Sums(n), Tensor::Counts(n)]);
    per_weight.chain((0..c.grams.len()).map(Tensor::Gram))
}

impl Tensor<'_> {
    /// Name and shape (ne0, ne1).
    fn describe(&self, c: &Collector) -> (String, i64, i64) {
        match *self {
            Tensor::Sums(n) => {
                let w = &c.weights[n];
                (format!("{n}.in_sum2"), w.ne0 as i64, w.counts.len() as i64)
            }
            Tensor::Counts(n) => (format!("{n}.counts"), 1, c.weights[n].counts.len() as i64),
            Tensor::Gram(g) => {
                let g = &c.grams[g];
                (format!("{}.gram", g.name), g.d as i64, g.d as i64)
            }
        }
    }

    /// The tensor's f32 data into `out`.
    fn write(&self, c: &Collector, out: &mut Vec<f32>) {
        out.clear();
        match *self {
            Tensor::Sums(n) => out.extend(c.weights[n].sums.iter().map(|&v| v as f32)),
            Tensor::Counts(n) => out.extend(c.weights[n].counts.iter().map(|&v| v as f32)),
            Tensor::Gram(g) => {
                let g = &c.grams[g];
                let inv = 1.0 / g.count.max(1) as f64;
                for i in 0..g.d {
                    for j in 0..g.d {
                        let v = g.upper[packed_index(g.d, i.min(j), i.max(j))];
                        out.push((v * inv) as f32);
                    }
                }
            }
        }
    }
}

/// The GGUF header (metadata and tensor descriptions) as ggml lays it out.
struct Header {
    bytes: Vec<u8>,
    data_offset: usize,
    offsets: Vec<usize>,
    alignment: u64,
}

impl Header {
    fn build(meta: &Meta, c: &Collector) -> Result<Header> {
        let g = Gguf::new()?;
        g.set_str("general.type", "imatrix");
        g.set_strs("imatrix.datasets", &meta.datasets);
        g.set_u32("imatrix.chunk_count", meta.chunk_count);
        g.set_u32("imatrix.chunk_size", meta.chunk_size);
        g.set_u32("ggml_qat.calibration.version", 1);
        g.set_str("ggml_qat.calibration.seed", &meta.seed.to_string());
        g.set_u32("ggml_qat.calibration.tokens", clamp_u32(meta.tokens));
        g.set_u32(
            "ggml_qat.calibration.generated_tokens",
            clamp_u32(meta.generated),
        );
        g.set_u32("ggml_qat.gram.max", clamp_u32(meta.gram_max));
        let (mut users, mut entries) = (Vec::new(), Vec::new());
        for gs in &c.grams {
            for w in &gs.weights {
                users.push(w.clone());
                entries.push(format!("{}.gram", gs.name));
            }
        }
        g.set_strs("ggml_qat.gram.weights", &users);
        g.set_strs("ggml_qat.gram.tensors", &entries);
        if let Some(sens) = &meta.sensitivity {
            g.set_sensitivity(sens);
        }
        let n = tensors(c).count();
        let ctx = unsafe { ffi::qc_meta_context(n) };
        if ctx.is_null() {
            return Err(Error::Write("ggml could not make a context".into()));
        }
        let _free = Defer(|| unsafe { ffi::ggml_free(ctx) });
        for t in tensors(c) {
            let (name, ne0, ne1) = t.describe(c);
            let cname = cstr(&name)?;
            if !unsafe { ffi::qc_add_f32(g.0, ctx, cname.as_ptr(), ne0, ne1) } {
                return Err(Error::Write(format!(
                    "cannot describe tensor {name} (name too long or repeated)"
                )));
            }
        }
        let size = unsafe { ffi::gguf_get_meta_size(g.0) };
        let mut bytes = vec![0u8; size];
        unsafe { ffi::gguf_get_meta_data(g.0, bytes.as_mut_ptr().cast()) };
        let offsets = (0..n as i64)
            .map(|i| unsafe { ffi::gguf_get_tensor_offset(g.0, i) })
            .collect();
        // The data section starts right after the (padded) metadata; ggml's
        // own data offset is only known for contexts read from a file.
        let data_offset = bytes.len();
        let alignment = unsafe { ffi::gguf_get_alignment(g.0) } as u64;
        Ok(Header {
            bytes,
            data_offset,
            offsets,
            alignment,
        })
    }
}

fn clamp_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Write(format!("{s:?} holds a NUL byte")))
}

/// Runs a closure on drop.
struct Defer<F: FnMut()>(F);
impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// An owned `gguf_context` (metadata only).
struct Gguf(*mut ffi::GgufContext);

impl Gguf {
    fn new() -> Result<Gguf> {
        let p = unsafe { ffi::gguf_init_empty() };
        if p.is_null() {
            return Err(Error::Write("ggml could not make a GGUF context".into()));
        }
        Ok(Gguf(p))
    }
    fn set_str(&self, key: &str, v: &str) {
        let (k, v) = (
            CString::new(key).unwrap(),
            CString::new(v.replace('\0', "")).unwrap(),
        );
        unsafe { ffi::gguf_set_val_str(self.0, k.as_ptr(), v.as_ptr()) }
    }
    fn set_u32(&self, key: &str, v: u32) {
        let k = CString::new(key).unwrap();
        unsafe { ffi::gguf_set_val_u32(self.0, k.as_ptr(), v) }
    }
    fn set_f32s(&self, key: &str, vs: &[f32]) {
        let k = CString::new(key).unwrap();
        unsafe {
            ffi::gguf_set_arr_data(
                self.0,
                k.as_ptr(),
                ffi::GGUF_TYPE_FLOAT32,
                vs.as_ptr().cast(),
                vs.len(),
            )
        };
    }

    fn set_sensitivity(&self, s: &Sensitivity) {
        let roles = s.role_factors();
        self.set_strs(
            "ggml_qat.factors.roles",
            &roles.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        );
        self.set_f32s(
            "ggml_qat.factors.values",
            &roles.iter().map(|r| r.1).collect::<Vec<_>>(),
        );
        if let Some(d) = s.depth_factors() {
            self.set_f32s("ggml_qat.factors.depth", &d);
        }
        self.set_str("ggml_qat.factors.probe_type", &s.probe_type);
        self.set_str("ggml_qat.factors.measure", s.measure);
        self.set_u32("ggml_qat.factors.tokens", clamp_u32(s.tokens));
        self.set_u32("ggml_qat.sensitivity.positions", clamp_u32(s.positions));
        self.set_f32s("ggml_qat.sensitivity.floor", &[s.floor as f32]);
        let names: Vec<String> = s.groups.iter().map(|g| g.name.clone()).collect();
        self.set_strs("ggml_qat.sensitivity.groups", &names);
        self.set_f32s(
            "ggml_qat.sensitivity.kld",
            &s.groups.iter().map(|g| g.kld as f32).collect::<Vec<_>>(),
        );
        self.set_f32s(
            "ggml_qat.sensitivity.nsr",
            &s.groups.iter().map(|g| g.nsr as f32).collect::<Vec<_>>(),
        );
    }

    fn set_strs(&self, key: &str, vs: &[String]) {
        let k = CString::new(key).unwrap();
        let owned: Vec<CString> = vs
            .iter()
            .map(|v| CString::new(v.replace('\0', "")).unwrap())
            .collect();
        let ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        unsafe { ffi::gguf_set_arr_str(self.0, k.as_ptr(), ptrs.as_ptr(), ptrs.len()) }
    }
}

impl Drop for Gguf {
    fn drop(&mut self) {
        unsafe { ffi::gguf_free(self.0) }
    }
}
