//! The per-tensor conversion of one output file, as a pipeline of three
//! threads so that reading, converting and writing overlap: a reader reads
//! the next chunk of rows while the calling thread converts the current
//! one on the worker pool and a writer writes the previous one. With one
//! thread asked for, the three take turns on the calling thread.
//!
//! A chunk is at most `max_buffer` bytes of work buffers (source, F32,
//! output and, when measuring, the dequantized output), whole rows, and
//! inside one expert when the tensor has column weights; a copied tensor
//! moves in slabs of `max_buffer`. The pipeline holds at most a few chunks
//! at once (one per stage and one per channel), so memory stays a small
//! multiple of `max_buffer`, whatever the model's size. Chunk boundaries
//! do not depend on the thread count: the bytes neither.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use serde::Serialize;

use super::chunk;
use super::gguf::DataWriter;
use super::gram::Grams;
use super::layout::OutFile;
use super::source::{Source, TensorRef};
use super::weights::ColumnWeights;
use super::ModelError;
use crate::qat::{metrics, optimize};
use crate::quant::{self, QuantType};

/// A tensor's objective under `--optimize`: ggml's bytes against ours.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Objective {
    /// The column weights of the objective: "imatrix" (the tensor's
    /// imatrix entry), "norm" (the squared RMS-norm weight scaling its
    /// inputs, [`Params::norm_importance`]), "none" (plain squared error),
    /// or "gram": the output error Σ_rows eᵀGe with the calibration file's
    /// Gram matrix of the tensor's inputs.
    pub weights: &'static str,
    pub ggml: f64,
    pub ours: f64,
    /// Rows where the search's result was kept over ggml's (chunks where
    /// it was not better keep ggml's bytes whole).
    pub rows_changed: u64,
    /// With a Gram matrix ("gram" weights): rows won by ggml's bytes, the
    /// diagonal search and the Gram quantizer, in that order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub won: Option<[u64; 3]>,
}

impl Objective {
    /// Relative reduction of the objective: 1 − ours/ggml (0 when equal).
    pub fn gain(&self) -> f64 {
        if self.ggml > 0.0 {
            1.0 - self.ours / self.ggml
        } else {
            0.0
        }
    }
}

/// What one tensor is converted to.
pub struct Job<'a> {
    pub r: TensorRef,
    /// `None`: copied as it is.
    pub to: Option<QuantType>,
    pub weights: ColumnWeights<'a>,
}

/// What converting one tensor measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Converted {
    /// ‖x − dequant(quant(x))‖ / ‖x‖ (when converted and measured).
    pub rel_rmse: Option<f64>,
    /// Under `optimize`: ggml's objective against ours.
    pub objective: Option<Objective>,
}

/// How to convert.
pub struct Settings<'a> {
    pub pool: &'a rayon::ThreadPool,
    pub max_buffer: usize,
    pub measure_error: bool,
    pub optimize: bool,
    /// The calibration file's Gram matrices (`optimize` only).
    pub grams: Option<&'a Grams>,
}

/// A chunk of rows of job `job`.
#[derive(Clone, Copy, Debug)]
struct Span {
    job: usize,
    row: usize,
    n: usize,
    /// The tensor's last chunk (padding follows).
    last: bool,
}

/// A reusable buffer (f32 storage, so F32 rows can be read in place).
type Buf = Vec<f32>;

fn bytes_mut(b: &mut Buf, len: usize) -> &mut [u8] {
    b.resize(len.div_ceil(4), 0.0);
    // SAFETY: f32 storage of at least `len` bytes; any bytes are valid.
    unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut u8, len) }
}

fn bytes(b: &Buf, len: usize) -> &[u8] {
    // SAFETY: callers pass the length last given to `bytes_mut`.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const u8, len) }
}

/// Buffers handed back and forth between the stages.
struct Pool(Mutex<Vec<Buf>>);

impl Pool {
    fn take(&self) -> Buf {
        self.0
            .lock()
            .map(|mut v| v.pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }
    fn give(&self, b: Buf) {
        if let Ok(mut v) = self.0.lock() {
            v.push(b);
        }
    }
}

/// Converts `jobs` (the tensors of `file`, in order) into `w`, which holds
/// the header already; pads each tensor. `progress` gets the bytes of the
/// file's source tensors done; false cancels.
pub fn convert_file(
    src: &Source,
    file: &OutFile,
    jobs: &[Job],
    set: &Settings,
    mut w: DataWriter,
    progress: &mut dyn FnMut(usize, u64) -> bool,
) -> Result<(Vec<Converted>, DataWriter), ModelError> {
    let spans = spans(src, jobs, set);
    let pool = Pool(Mutex::new(Vec::new()));
    if set.pool.current_num_threads() == 1 {
        // One thread asked for: the stages take turns on it.
        let input = spans.iter().map(|&sp| read_span(src, jobs, sp, &pool));
        let mut out =
            |b: Buf, len: usize, pad: bool| write_piece(&mut w, &pool, b, len, pad, &file.path);
        let done = convert_stage(src, jobs, set, &pool, input, &mut out, progress)?;
        return Ok((done, w));
    }
    std::thread::scope(|s| {
        let (to_conv, from_read) = sync_channel::<Result<(Span, Buf), ModelError>>(1);
        let (to_write, from_conv) = sync_channel::<(Buf, usize, bool)>(1);
        let pool = &pool;
        s.spawn(move || read_stage(src, jobs, &spans, pool, to_conv));
        let writer = s.spawn(move || write_stage(w, pool, from_conv, &file.path));
        let mut out = move |b: Buf, len: usize, pad: bool| {
            to_write
                .send((b, len, pad))
                .map_err(|_| ModelError::Invalid("the writer stopped".into()))
        };
        let done = convert_stage(src, jobs, set, pool, from_read, &mut out, progress);
        drop(out);
        let w = writer.join().map_err(|_| panicked("writer"))?;
        // A failed write closes the writer's end: its error comes first.
        let w = w?;
        Ok((done?, w))
    })
}

fn panicked(stage: &str) -> ModelError {
    ModelError::Invalid(format!("the {stage} thread panicked"))
}

/// The chunks of every job, in file order.
fn spans(src: &Source, jobs: &[Job], set: &Settings) -> Vec<Span> {
    let mut out = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let t = src.info(job.r);
        let nrows = t.nrows() as usize;
        let src_row = src.row_bytes(job.r);
        if t.nbytes == 0 || nrows == 0 {
            continue;
        }
        let rows = match job.to {
            None => (set.max_buffer / src_row.max(1)).max(1),
            Some(to) => {
                let row_len = t.ne[0] as usize;
                let dst_row = to.format().row_bytes(row_len).unwrap_or(0);
                let back = if set.measure_error { 4 * row_len } else { 0 };
                let per_row = src_row + 4 * row_len + dst_row + back;
                (set.max_buffer / per_row.max(1)).max(1).min(nrows)
            }
        };
        let mut row = 0;
        while row < nrows {
            let mut n = rows.min(nrows - row);
            if job.to.is_some() && job.weights.any() {
                n = n.min(job.weights.rows_left_in_expert(row));
            }
            row += n;
            let last = row == nrows;
            out.push(Span {
                job: j,
                row: row - n,
                n,
                last,
            });
        }
    }
    out
}

/// Reads one span's source bytes.
fn read_span(src: &Source, jobs: &[Job], sp: Span, pool: &Pool) -> Result<(Span, Buf), ModelError> {
    let mut b = pool.take();
    let len = sp.n * src.row_bytes(jobs[sp.job].r);
    src.read_rows(jobs[sp.job].r, sp.row, bytes_mut(&mut b, len))?;
    Ok((sp, b))
}

/// Reads every span's source bytes, in order.
fn read_stage(
    src: &Source,
    jobs: &[Job],
    spans: &[Span],
    pool: &Pool,
    out: SyncSender<Result<(Span, Buf), ModelError>>,
) {
    for &sp in spans {
        let r = read_span(src, jobs, sp, pool);
        let failed = r.is_err();
        if out.send(r).is_err() || failed {
            return;
        }
    }
}

/// Writes one piece (`len` bytes of `b`), padding after a tensor's last.
fn write_piece(
    w: &mut DataWriter,
    pool: &Pool,
    b: Buf,
    len: usize,
    pad: bool,
    path: &std::path::Path,
) -> Result<(), ModelError> {
    let wio = |e| ModelError::io(path, "cannot write", e);
    let before = w.written;
    w.write(bytes(&b, len)).map_err(wio)?;
    if pad {
        w.pad().map_err(wio)?;
    }
    pool.give(b);
    if before / WRITEBACK != w.written / WRITEBACK {
        start_writeback(w).map_err(wio)?;
    }
    Ok(())
}

/// Bytes between two starts of the kernel's writeback.
const WRITEBACK: u64 = 32 << 20;

/// Starts writing what is written so far to the disk without waiting
/// (`sync_file_range`), so that the final `fsync` has little left to wait
/// for and the page cache does not fill with dirty pages.
fn start_writeback(w: &mut DataWriter) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    w.w.flush()?;
    let fd = w.w.get_ref().as_raw_fd();
    // SAFETY: a valid descriptor of an open file; no memory is passed.
    // A file system without it (ENOSYS, EINVAL) only loses the head start.
    unsafe { libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    Ok(())
}

/// Writes the pieces `(buffer, length, pad after)` in order.
fn write_stage(
    mut w: DataWriter,
    pool: &Pool,
    input: Receiver<(Buf, usize, bool)>,
    path: &std::path::Path,
) -> Result<DataWriter, ModelError> {
    for (b, len, pad) in input {
        write_piece(&mut w, pool, b, len, pad, path)?;
    }
    Ok(w)
}

/// Converts the spans as they arrive (on the calling thread, with the
/// worker pool) and hands the bytes to `out`.
fn convert_stage(
    src: &Source,
    jobs: &[Job],
    set: &Settings,
    pool: &Pool,
    input: impl IntoIterator<Item = Result<(Span, Buf), ModelError>>,
    out: &mut dyn FnMut(Buf, usize, bool) -> Result<(), ModelError>,
    progress: &mut dyn FnMut(usize, u64) -> bool,
) -> Result<Vec<Converted>, ModelError> {
    let mut done: Vec<Converted> = jobs.iter().map(|_| Converted::default()).collect();
    let mut acc: Vec<(f64, f64)> = vec![(0.0, 0.0); jobs.len()];
    let mut work = Work::default();
    for msg in input {
        let (sp, raw) = msg?;
        let job = &jobs[sp.job];
        let src_row = src.row_bytes(job.r);
        let piece = match job.to {
            None => (raw, sp.n * src_row),
            Some(to) => {
                let mut dst = pool.take();
                let len = convert_span(src, job, to, sp, &raw, &mut dst, set, &mut work)?;
                add_figures(
                    &mut done[sp.job],
                    &mut acc[sp.job],
                    &work,
                    job.weights.kind(),
                );
                pool.give(raw);
                (dst, len)
            }
        };
        out(piece.0, piece.1, sp.last)?;
        if sp.last && set.measure_error && job.to.is_some() {
            let (e, s) = acc[sp.job];
            done[sp.job].rel_rmse = Some(if s > 0.0 { (e / s).sqrt() } else { 0.0 });
        }
        if !progress(sp.job, ((sp.row + sp.n) * src_row) as u64) {
            return Err(ModelError::Cancelled);
        }
    }
    Ok(done)
}

/// The compute buffers of the converting thread, and the last span's
/// figures.
#[derive(Default)]
struct Work {
    x: Vec<f32>,
    back: Vec<f32>,
    searched: Option<chunk::Searched>,
    err: (f64, f64),
}

/// Converts one span of `raw` source bytes into `dst`; returns the bytes
/// written. The figures are left in `work`.
#[allow(clippy::too_many_arguments)]
fn convert_span(
    src: &Source,
    job: &Job,
    to: QuantType,
    sp: Span,
    raw: &Buf,
    dst: &mut Buf,
    set: &Settings,
    work: &mut Work,
) -> Result<usize, ModelError> {
    let t = src.info(job.r);
    let row_len = t.ne[0] as usize;
    let from = QuantType::from_ggml(t.ty).expect("checked when assigned");
    let values = sp.n * row_len;
    let x: &[f32] = if from == QuantType::F32 {
        &raw[..values]
    } else {
        work.x.resize(values, 0.0);
        let r = bytes(raw, sp.n * src.row_bytes(job.r));
        set.pool
            .install(|| quant::dequantize_rows(from, r, row_len, &mut work.x))?;
        &work.x
    };
    let len = sp.n * to.format().row_bytes(row_len).unwrap_or(0);
    let d = bytes_mut(dst, len);
    let (im, search) = (
        job.weights.imatrix_row(sp.row),
        job.weights.search_row(sp.row),
    );
    // The Gram matrix of the weight, when the calibration file has one.
    let gram = match set.grams {
        Some(g) if set.optimize && optimize::gram_supported(to) => {
            set.pool.install(|| g.factor_of(t))?
        }
        _ => None,
    };
    work.searched = set
        .pool
        .install(|| {
            chunk::quantize_chunk(to, x, row_len, d, im, search, set.optimize, gram.as_deref())
        })
        .map_err(|e| ModelError::Invalid(format!("tensor '{}': {e}", t.name)))?;
    if set.measure_error {
        work.back.resize(values, 0.0);
        let b = &mut work.back;
        set.pool
            .install(|| quant::dequantize_rows(to, d, row_len, b))?;
        work.err = set.pool.install(|| metrics::error_sums(x, b));
        if !work.err.1.is_finite() {
            return Err(ModelError::Format(format!(
                "tensor '{}' holds non-finite values (NaN or Inf) in rows {}..{}",
                t.name,
                sp.row,
                sp.row + sp.n
            )));
        }
    }
    Ok(len)
}

/// Adds the last span's figures to its tensor's.
/// `kind`: what the search's weights are ([`ColumnWeights::kind`]).
fn add_figures(c: &mut Converted, acc: &mut (f64, f64), work: &Work, kind: &'static str) {
    if let Some(sr) = work.searched {
        let gram = sr.won.iter().sum::<u64>() > 0;
        let o = c.objective.get_or_insert(Objective {
            weights: if gram { "gram" } else { kind },
            ggml: 0.0,
            ours: 0.0,
            rows_changed: 0,
            won: gram.then_some([0; 3]),
        });
        o.ggml += sr.ggml;
        o.ours += sr.kept;
        o.rows_changed += sr.rows_changed;
        if let Some(w) = &mut o.won {
            for (a, b) in w.iter_mut().zip(sr.won) {
                *a += b;
            }
        }
    }
    acc.0 += work.err.0;
    acc.1 += work.err.1;
}
