//! The model's weight matrices as llama.cpp holds them, for the sensitivity
//! probes: found in a graph (every weight a node reads), grouped by role and
//! by depth third, overwritten in place with their round trip through the
//! probe type (ggml's own quantizer and dequantizer), and restored from the
//! model file afterwards. Only float weights (F32, F16, BF16) are probed: a
//! round trip of an already quantized weight would not be the probe type.

use crate::error::{Error, Result};
use crate::ffi::{self, GgmlTensor, GgufContext};
use std::collections::BTreeMap;
use std::ffi::{c_void, CStr, CString};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The roles a planner factor exists for, as llama.cpp names the tensors
/// (expert tensors count as their dense role).
const ROLES: [(&str, &str); 14] = [
    ("attn_q", "attn_q"),
    ("attn_k", "attn_k"),
    ("attn_v", "attn_v"),
    ("attn_qkv", "attn_qkv"),
    ("attn_kv_b", "attn_kv_b"),
    ("attn_output", "attn_output"),
    ("ffn_gate", "ffn_gate"),
    ("ffn_up", "ffn_up"),
    ("ffn_down", "ffn_down"),
    ("ffn_gate_exps", "ffn_gate"),
    ("ffn_up_exps", "ffn_up"),
    ("ffn_down_exps", "ffn_down"),
    ("token_embd", "token_embd"),
    ("output", "output"),
];

/// Values converted per step (bounds the memory of a round trip).
const STEP_VALUES: usize = 1 << 22;

/// One weight tensor of the loaded model.
pub struct Weight {
    ptr: *mut GgmlTensor,
    pub name: String,
    ty: i32,
    ne: [i64; 4],
    /// Its role's name (the planner's vocabulary).
    pub role: &'static str,
    /// Its block, for `blk.N.*`.
    pub layer: Option<usize>,
}

/// A weight's role and block from its name; `None` for tensors no factor
/// covers (norms, routers, position embeddings…).
pub fn role_of(name: &str) -> Option<(&'static str, Option<usize>)> {
    let base = name.strip_suffix(".weight")?;
    let (layer, base) = match base.strip_prefix("blk.") {
        Some(rest) => {
            let (n, b) = rest.split_once('.')?;
            (Some(n.parse::<usize>().ok()?), b)
        }
        None => (None, base),
    };
    let role = ROLES.iter().find(|(n, _)| *n == base)?.1;
    let in_block = !matches!(role, "token_embd" | "output");
    (in_block == layer.is_some()).then_some((role, layer))
}

/// The weights found, and where their bytes are in the model file(s).
pub struct Weights {
    pub list: Vec<Weight>,
    pub n_layer: usize,
    files: Vec<(File, Gguf)>,
}

impl Weights {
    /// The probe-able weights among `found` (name → tensor, as a graph
    /// showed them): those of a known role with rows whose length is a
    /// multiple of the probe type's block. Fails on a weight of a known role
    /// that is not F32, F16 or BF16.
    pub fn new(model: &Path, found: &BTreeMap<String, usize>, probe: i32) -> Result<Weights> {
        let block = unsafe { ffi::qc_block_size(probe) }.max(1);
        let mut list = Vec::new();
        for (name, &ptr) in found {
            let Some((role, layer)) = role_of(name) else {
                continue;
            };
            let ptr = ptr as *mut GgmlTensor;
            let (mut ty, mut ne) = (0i32, [0i64; 4]);
            unsafe { ffi::qc_tensor_desc(ptr, &mut ty, ne.as_mut_ptr()) };
            if ![0, 1, 30].contains(&ty) {
                let t = unsafe { CStr::from_ptr(ffi::qc_type_name(ty)) }.to_string_lossy();
                return Err(Error::Usage(format!(
                    "sensitivities need the weights in F32, F16 or BF16, and {name} is {t}: \
                     calibrate the F16 model, or pass --no-sensitivity"
                )));
            }
            if ne[1] < 2 || ne[0] % block != 0 {
                continue;
            }
            list.push(Weight {
                ptr,
                name: name.clone(),
                ty,
                ne,
                role,
                layer,
            });
        }
        let n_layer = list
            .iter()
            .filter_map(|w| w.layer)
            .max()
            .map_or(0, |l| l + 1);
        Ok(Weights {
            list,
            n_layer,
            files: open_shards(model)?,
        })
    }

    /// The depth third of a weight (None outside blocks).
    pub fn third(&self, w: &Weight) -> Option<usize> {
        w.layer.map(|l| (3 * l / self.n_layer.max(1)).min(2))
    }

    /// Replaces weight `i` by its round trip through `probe`; returns the
    /// relative squared error ‖w − q(w)‖² / ‖w‖².
    pub fn quantize(&self, i: usize, probe: i32) -> Result<f64> {
        let w = &self.list[i];
        let row = w.ne[0] as usize;
        let rows = (w.ne[1] * w.ne[2] * w.ne[3]) as usize;
        let step = (STEP_VALUES / row).max(1);
        let (src_row, q_row) = (row_size(w.ty, row), row_size(probe, row));
        let (mut raw, mut x, mut q, mut y) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut err, mut norm) = (0f64, 0f64);
        for r0 in (0..rows).step_by(step) {
            let n = step.min(rows - r0);
            let (off, len) = (r0 * src_row, n * src_row);
            raw.resize(len, 0u8);
            x.resize(n * row, 0f32);
            y.resize(n * row, 0f32);
            q.resize(n * q_row, 0u8);
            let fail = || Error::Statistics(format!("cannot convert {}", w.name));
            unsafe {
                if !ffi::qc_tensor_get(w.ptr, raw.as_mut_ptr().cast(), off, len)
                    || !ffi::qc_to_f32(w.ty, raw.as_ptr().cast(), x.as_mut_ptr(), (n * row) as i64)
                    || ffi::qc_from_f32(
                        probe,
                        x.as_ptr(),
                        q.as_mut_ptr().cast(),
                        n as i64,
                        row as i64,
                    ) != q.len()
                    || !ffi::qc_to_f32(probe, q.as_ptr().cast(), y.as_mut_ptr(), (n * row) as i64)
                    || ffi::qc_from_f32(
                        w.ty,
                        y.as_ptr(),
                        raw.as_mut_ptr().cast(),
                        n as i64,
                        row as i64,
                    ) != len
                    || !ffi::qc_tensor_set(w.ptr, raw.as_ptr().cast(), off, len)
                {
                    return Err(fail());
                }
            }
            for (a, b) in x.iter().zip(&y) {
                let d = (*a - *b) as f64;
                err += d * d;
                norm += (*a as f64) * (*a as f64);
            }
        }
        Ok(if norm > 0.0 { err / norm } else { 0.0 })
    }

    /// Puts weight `i`'s bytes back from the model file.
    pub fn restore(&self, i: usize) -> Result<()> {
        let w = &self.list[i];
        let name = CString::new(w.name.as_str()).unwrap_or_default();
        let total = unsafe { ffi::qc_nbytes(w.ptr) };
        let found = self.files.iter().find_map(|(f, g)| {
            let (mut off, mut size) = (0u64, 0u64);
            unsafe { ffi::qc_gguf_tensor_at(g.0, name.as_ptr(), &mut off, &mut size) }
                .then_some((f, off, size))
        });
        let Some((file, off, size)) = found.filter(|x| x.2 == total as u64) else {
            return Err(Error::Statistics(format!(
                "{}: not found in the model file with its size; cannot restore it",
                w.name
            )));
        };
        let mut buf = vec![0u8; (size as usize).min(STEP_VALUES * 4)];
        let mut done = 0usize;
        while done < total {
            let n = buf.len().min(total - done);
            file.read_exact_at(&mut buf[..n], off + done as u64)
                .map_err(|e| Error::Statistics(format!("re-reading {}: {e}", w.name)))?;
            if !unsafe { ffi::qc_tensor_set(w.ptr, buf.as_ptr().cast::<c_void>(), done, n) } {
                return Err(Error::Statistics(format!("cannot restore {}", w.name)));
            }
            done += n;
        }
        Ok(())
    }
}

fn row_size(ty: i32, n: usize) -> usize {
    unsafe { ffi::qc_row_size(ty, n as i64) }
}

/// A GGUF header read by ggml (data left on disk).
struct Gguf(*mut GgufContext);

impl Drop for Gguf {
    fn drop(&mut self) {
        unsafe { ffi::gguf_free(self.0) }
    }
}

fn open_gguf(path: &Path) -> Result<(File, Gguf)> {
    let file = File::open(path).map_err(|e| Error::Io(path.into(), e))?;
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
    let g = unsafe { ffi::qc_gguf_open(c.as_ptr()) };
    if g.is_null() {
        return Err(Error::NotGguf(path.into()));
    }
    Ok((file, Gguf(g)))
}

/// The model file, and its other shards when it is split (llama.cpp's
/// `PREFIX-0000i-of-0000n.gguf` names).
fn open_shards(model: &Path) -> Result<Vec<(File, Gguf)>> {
    let first = open_gguf(model)?;
    let n = unsafe { ffi::qc_gguf_split_count(first.1 .0) };
    if n <= 1 {
        return Ok(vec![first]);
    }
    let c = CString::new(model.as_os_str().as_encoded_bytes()).unwrap_or_default();
    let mut prefix = vec![0u8; 4096];
    let len = unsafe {
        ffi::llama_split_prefix(prefix.as_mut_ptr().cast(), prefix.len(), c.as_ptr(), 1, n)
    };
    if len <= 0 {
        return Err(Error::Usage(format!(
            "{}: split model, but not its first shard",
            model.display()
        )));
    }
    let mut files = vec![first];
    for i in 2..=n {
        let mut path = vec![0u8; 4096];
        let len = unsafe {
            ffi::llama_split_path(
                path.as_mut_ptr().cast(),
                path.len(),
                prefix.as_ptr().cast(),
                i,
                n,
            )
        };
        path.truncate(len.max(0) as usize);
        let p = PathBuf::from(String::from_utf8_lossy(&path).into_owned());
        files.push(open_gguf(&p)?);
    }
    Ok(files)
}

/// Every model weight a graph evaluation reads (the scheduler's "ask"
/// calls, nothing observed): `data` is a `BTreeMap<String, usize>`.
pub unsafe extern "C" fn scan(t: *mut GgmlTensor, ask: bool, data: *mut c_void) -> bool {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if !ask {
            return true;
        }
        // SAFETY: llama.cpp hands back the pointer given with the callback.
        let found = unsafe { &mut *data.cast::<BTreeMap<String, usize>>() };
        let mut srcs = [std::ptr::null::<GgmlTensor>(); ffi::MAX_SRC];
        let n = unsafe { ffi::qc_weight_srcs(t, srcs.as_mut_ptr(), srcs.len() as i32) };
        for &w in &srcs[..n.max(0) as usize] {
            let (mut ty, mut ne) = (0i32, [0i64; 4]);
            let name = unsafe { CStr::from_ptr(ffi::qc_tensor_desc(w, &mut ty, ne.as_mut_ptr())) };
            found.insert(name.to_string_lossy().into_owned(), w as usize);
        }
        false
    }));
    run.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::role_of;

    #[test]
    fn roles_by_name() {
        assert_eq!(role_of("blk.3.attn_q.weight"), Some(("attn_q", Some(3))));
        assert_eq!(
            role_of("blk.0.ffn_down_exps.weight"),
            Some(("ffn_down", Some(0)))
        );
        assert_eq!(role_of("token_embd.weight"), Some(("token_embd", None)));
        assert_eq!(role_of("output.weight"), Some(("output", None)));
        for none in [
            "blk.1.attn_norm.weight",
            "blk.1.ffn_gate_inp.weight",
            "blk.x.attn_q.weight",
            "attn_q.weight",
            "blk.1.token_embd.weight",
            "blk.1.attn_q.bias",
        ] {
            assert_eq!(role_of(none), None, "{none}");
        }
    }
}
