//! Activation statistics gathered in llama.cpp's graph-evaluation callback,
//! as llama-imatrix gathers them: for every matrix product whose first
//! operand is a model weight (`blk.*`, and `output.weight` when asked), the
//! sum of squares of each input column (per expert for MUL_MAT_ID, through
//! the routing ids) and the number of rows. For dense weights whose rows are
//! at most `gram_max` long, also the Gram matrix XᵀX of the input, computed
//! once per distinct input: within one graph evaluation the weights that
//! read the same input tensor (q/k/v, gate/up) share one entry.
//!
//! The output head (`output.weight`, or `token_embd.weight` when the model
//! ties it to the embedding) always gets its Gram matrix: it is the weight
//! the logits feel most. Its squared sums go to the imatrix part only under
//! `process_output`, and only as `output.weight`, as llama-imatrix does.

use crate::ffi::{self, Node, OP_MUL_MAT, OP_MUL_MAT_ID};
use crate::gram;
use std::collections::BTreeMap;
use std::ffi::{c_void, CStr};

/// What is collected.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub gram_max: usize,
    pub process_output: bool,
    pub threads: usize,
}

/// Per-weight sums (llama-imatrix's `in_sum2` and `counts`).
pub struct WeightStats {
    /// Row length (input width).
    pub ne0: usize,
    /// Sum of squares per column, `ne0` per matrix (expert).
    pub sums: Vec<f64>,
    /// Rows seen per matrix.
    pub counts: Vec<u64>,
    /// The Gram entry this weight reads, if any.
    pub gram: Option<usize>,
    /// Written in the imatrix part (false for an output head collected
    /// for its Gram matrix only).
    pub imatrix: bool,
}

/// One distinct input's Gram sums.
pub struct GramStats {
    /// Name of the first weight seen reading it (the entry's name).
    pub name: String,
    pub d: usize,
    /// Packed upper triangle of Σ xxᵀ.
    pub upper: Vec<f64>,
    pub count: u64,
    /// Weights reading this input.
    pub weights: Vec<String>,
    /// Graph evaluation and input tensors already added in it.
    seen: (u64, Vec<usize>),
    /// Rows gathered but not yet added (at most `GRAM_BATCH`).
    pending: Vec<f32>,
}

/// The callback's state.
pub struct Collector {
    opts: Options,
    /// Off while generating text.
    pub active: bool,
    eval: u64,
    pub weights: BTreeMap<String, WeightStats>,
    pub grams: Vec<GramStats>,
    rows: Vec<f32>,
    xt: Vec<f32>,
    bytes: Vec<u8>,
    /// The first failure; evaluation stops there.
    pub error: Option<String>,
}

impl Collector {
    pub fn new(opts: Options) -> Collector {
        Collector {
            opts,
            active: false,
            eval: 0,
            weights: BTreeMap::new(),
            grams: Vec::new(),
            rows: Vec::new(),
            xt: Vec::new(),
            bytes: Vec::new(),
            error: None,
        }
    }

    /// Weights whose sums go to the imatrix part.
    pub fn imatrix_weights(&self) -> usize {
        self.weights.values().filter(|w| w.imatrix).count()
    }

    /// Marks the start of a graph evaluation (one micro-batch).
    pub fn begin_eval(&mut self) {
        self.eval += 1;
    }

    /// Whether a node is wanted (the scheduler's "ask" call).
    fn wants(&self, n: &Node, name: &str) -> bool {
        let head = is_head(name)
            && (self.in_imatrix(name)
                || (n.op == OP_MUL_MAT && n.ne[0] as usize <= self.opts.gram_max));
        self.active
            && self.error.is_none()
            && n.weight
            && n.f32_rows
            && (name.starts_with("blk.") || head)
    }

    /// Whether `name`'s sums go to the imatrix part (llama-imatrix's rule).
    fn in_imatrix(&self, name: &str) -> bool {
        name.starts_with("blk.") || (self.opts.process_output && name == "output.weight")
    }

    /// The node's input as contiguous f32 rows in `self.rows`.
    fn gather(&mut self, n: &Node) -> Result<(), String> {
        let base: *const u8 = if n.host {
            n.data.cast()
        } else {
            let size = unsafe { ffi::qc_nbytes(n.src1) };
            self.bytes.resize(size, 0);
            if !unsafe { ffi::qc_tensor_read(n.src1, self.bytes.as_mut_ptr().cast(), size) } {
                return Err("cannot read an activation tensor".into());
            }
            self.bytes.as_ptr()
        };
        let [d, r1, r2, r3] = n.ne.map(|v| v as usize);
        self.rows.clear();
        self.rows.reserve(d * r1 * r2 * r3);
        for i3 in 0..r3 {
            for i2 in 0..r2 {
                for i1 in 0..r1 {
                    let off = i1 as u64 * n.nb[1] + i2 as u64 * n.nb[2] + i3 as u64 * n.nb[3];
                    // SAFETY: offsets within the tensor by its own strides.
                    let row = unsafe {
                        std::slice::from_raw_parts(base.add(off as usize).cast::<f32>(), d)
                    };
                    self.rows.extend_from_slice(row);
                }
            }
        }
        if self.rows.iter().any(|v| !v.is_finite()) {
            return Err("non-finite activations".into());
        }
        Ok(())
    }

    /// The actual collection for one product node.
    fn collect(&mut self, n: &Node, name: &str) -> Result<(), String> {
        self.gather(n)?;
        if n.op == OP_MUL_MAT_ID {
            return self.collect_experts(n, name);
        }
        let d = n.ne[0] as usize;
        let n_mat = (n.w_ne[2] * n.w_ne[3]).max(1) as usize;
        let imatrix = self.in_imatrix(name);
        let e = entry(&mut self.weights, name, d, n_mat)?;
        e.imatrix = imatrix;
        let per = n.ne[1] as usize * n.ne[2] as usize;
        for (r, row) in self.rows.chunks_exact(d).enumerate() {
            // Rows of (i2, i3) read matrix (i2 % w2, i3 % w3), as in llama-imatrix.
            let (i2, i3) = ((r / n.ne[1] as usize) % n.ne[2] as usize, r / per);
            let m = (i3 % n.w_ne[3] as usize) * n.w_ne[2] as usize + i2 % n.w_ne[2] as usize;
            add_squares(&mut e.sums[m * d..(m + 1) * d], row);
        }
        let rows = self.rows.len() / d;
        for c in e.counts.iter_mut() {
            *c += (rows / n_mat) as u64;
        }
        if n_mat == 1 && d <= self.opts.gram_max {
            self.collect_gram(n, name, rows, d);
        }
        Ok(())
    }

    /// MUL_MAT_ID: each (token, slot) row goes to the expert its id names.
    fn collect_experts(&mut self, n: &Node, name: &str) -> Result<(), String> {
        let (d, n_as) = (n.ne[0] as usize, n.w_ne[2].max(1) as usize);
        let (n_ids, n_tok) = (n.ids_ne[0] as usize, n.ids_ne[1] as usize);
        if n.ids.is_null() || n_tok != n.ne[2] as usize || n.ne[3] != 1 {
            return Err(format!("{name}: unexpected MUL_MAT_ID shapes"));
        }
        let size = unsafe { ffi::qc_nbytes(n.ids) };
        self.bytes.resize(size, 0);
        if !unsafe { ffi::qc_tensor_read(n.ids, self.bytes.as_mut_ptr().cast(), size) } {
            return Err(format!("{name}: cannot read the expert ids"));
        }
        let e = entry(&mut self.weights, name, d, n_as)?;
        let ne1 = n.ne[1] as usize;
        for idx in 0..n_ids {
            for tok in 0..n_tok {
                let off = tok * n.ids_nb[1] as usize + idx * n.ids_nb[0] as usize;
                let ex = i32::from_ne_bytes(self.bytes[off..off + 4].try_into().unwrap());
                let ex = usize::try_from(ex)
                    .ok()
                    .filter(|&x| x < n_as)
                    .ok_or(format!("{name}: bad expert id"))?;
                let row = &self.rows[(tok * ne1 + idx % ne1) * d..][..d];
                add_squares(&mut e.sums[ex * d..(ex + 1) * d], row);
                e.counts[ex] += 1;
            }
        }
        Ok(())
    }

    /// Adds this node's input to its Gram entry unless another weight
    /// already added the same input tensor in this evaluation.
    fn collect_gram(&mut self, n: &Node, name: &str, rows: usize, d: usize) {
        let key = n.src1 as usize;
        let eval = self.eval;
        let current = |g: &GramStats| g.seen.0 == eval && g.seen.1.contains(&key);
        let w = self.weights.get_mut(name).unwrap();
        let gi = match w.gram {
            Some(g) => g,
            None => {
                let g = match self.grams.iter().position(|g| g.d == d && current(g)) {
                    Some(g) => g,
                    None => {
                        self.grams.push(GramStats::new(name, d));
                        self.grams.len() - 1
                    }
                };
                self.grams[g].weights.push(name.to_string());
                w.gram = Some(g);
                g
            }
        };
        let g = &mut self.grams[gi];
        if current(g) {
            return;
        }
        if g.seen.0 != eval {
            g.seen = (eval, Vec::new());
        }
        g.seen.1.push(key);
        g.pending.extend_from_slice(&self.rows[..rows * d]);
        g.count += rows as u64;
        if g.pending.len() >= GRAM_BATCH * d {
            g.flush(self.opts.threads, &mut self.xt);
        }
    }

    /// Adds every row still pending to its Gram sums (before writing).
    pub fn flush(&mut self) {
        for g in &mut self.grams {
            g.flush(self.opts.threads, &mut self.xt);
        }
    }
}

/// Rows gathered before a Gram update: one update per few rows (a decoding
/// step has one row per sequence) would read and write the whole packed
/// triangle each time.
const GRAM_BATCH: usize = 256;

impl GramStats {
    fn new(name: &str, d: usize) -> GramStats {
        GramStats {
            name: name.to_string(),
            d,
            upper: vec![0.0; gram::packed_len(d)],
            count: 0,
            weights: Vec::new(),
            seen: (0, Vec::new()),
            pending: Vec::new(),
        }
    }

    fn flush(&mut self, threads: usize, xt: &mut Vec<f32>) {
        let rows = self.pending.len() / self.d;
        if rows > 0 {
            gram::accumulate(&mut self.upper, &self.pending, rows, self.d, threads, xt);
        }
        self.pending.clear();
    }
}

/// The weight's sums, created on first sight; a later node of another
/// shape is an error (as in llama-imatrix).
fn entry<'a>(
    map: &'a mut BTreeMap<String, WeightStats>,
    name: &str,
    d: usize,
    n_mat: usize,
) -> Result<&'a mut WeightStats, String> {
    let e = map.entry(name.to_string()).or_insert_with(|| WeightStats {
        ne0: d,
        sums: vec![0.0; d * n_mat],
        counts: vec![0; n_mat],
        gram: None,
        imatrix: true,
    });
    if e.ne0 != d || e.counts.len() != n_mat {
        return Err(format!(
            "{name}: inconsistent input size ({} x {} vs {d} x {n_mat})",
            e.ne0,
            e.counts.len()
        ));
    }
    Ok(e)
}

/// The output head: `output.weight`, or the tied embedding (the only
/// product that reads `token_embd.weight`; its lookup is GET_ROWS).
fn is_head(name: &str) -> bool {
    name == "output.weight" || name == "token_embd.weight"
}

fn add_squares(acc: &mut [f64], row: &[f32]) {
    for (a, &x) in acc.iter_mut().zip(row) {
        *a += f64::from(x) * f64::from(x);
    }
}

/// The `ggml_backend_sched_eval_callback` given to llama.cpp; `data` is a
/// `*mut Collector`. Returns false (llama.cpp then aborts the evaluation)
/// after the first failure.
pub unsafe extern "C" fn callback(t: *mut ffi::GgmlTensor, ask: bool, data: *mut c_void) -> bool {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: llama.cpp hands back the pointer given with the callback.
        let c = unsafe { &mut *data.cast::<Collector>() };
        let mut node = std::mem::MaybeUninit::<Node>::uninit();
        if !unsafe { ffi::qc_node(t, node.as_mut_ptr()) } {
            return !ask;
        }
        let node = unsafe { node.assume_init() };
        let name = unsafe { CStr::from_ptr(node.name) }.to_string_lossy();
        let name = strip_backend_prefix(&name);
        if ask {
            return (node.op == OP_MUL_MAT || node.op == OP_MUL_MAT_ID) && c.wants(&node, name);
        }
        if !c.wants(&node, name) {
            return c.error.is_none();
        }
        if let Err(e) = c.collect(&node, name) {
            c.error = Some(e);
            return false;
        }
        true
    }));
    run.unwrap_or(false)
}

/// "CUDA0#blk.0.attn_k.weight#0" → "blk.0.attn_k.weight" (llama-imatrix's rule).
fn strip_backend_prefix(name: &str) -> &str {
    match name.split_once('#') {
        Some((_, rest)) => rest.split_once('#').map_or(rest, |(w, _)| w),
        None => name,
    }
}
