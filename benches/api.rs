//! The public API as C callers call it, against ggml doing the same job, in
//! the same run.
//!
//! Every figure goes through the exported `extern "C"` functions (the ones
//! in `libggml-qat.so`), with a fresh ggml context for the output on each
//! call, as a caller has; ggml's side gets the same fresh context and runs
//! `ggml_quantize_chunk` into a new tensor (for F16/BF16 sources, ggml's
//! `to_float` into a new buffer first). The bare kernel (`quantize_rows` on
//! the F32 values into a new tensor of a fresh context, as ggml's side: no
//! checks, no conversion) is a column, so the API's overhead is one too. "1t" is one thread (a context with
//! `ggml_qat_set_n_threads(ctx, 1)`, and ggml), "all" the global pool.
//!
//! Sections: `quantize_layer` per type from F32 (32 MiB, 2048 rows x 4096),
//! the same from F16 and BF16 sources, small tensors (64 KiB, 4 rows x 4096:
//! per-call cost), `quantize_tensor`, `kl_divergence_loss` against ggml's
//! `to_float` plus a plain softmax/KL loop, `generate_calibration_data`, and
//! `quantize_layer_optimized` against `quantize_layer`.
//!
//! `cargo bench --bench api`; `QAT_BENCH_TYPES=Q4_0,Q4_K` selects types,
//! `QAT_BENCH_SECTIONS=f32,small` sections (f32, f16, bf16, small, tensor,
//! kl, calibration, optimized), `QAT_BENCH_BUDGET_MS` the time per figure.

mod common;

use std::ffi::CStr;
use std::ptr::null_mut;
use std::time::Duration;

use common::{gaussian, mb_per_s, median_times, selected};
use ggml_qat::capi::context::{
    ggml_qat_default_config, ggml_qat_free, ggml_qat_init, ggml_qat_set_n_threads, QatContext,
};
use ggml_qat::capi::error::ggml_qat_last_error;
use ggml_qat::capi::metrics::ggml_qat_kl_divergence_loss;
use ggml_qat::capi::quantize::{
    ggml_qat_generate_calibration_data, ggml_qat_quantize_layer, ggml_qat_quantize_layer_optimized,
    ggml_qat_quantize_tensor,
};
use ggml_qat::capi::types::{GgmlType, LayerTypeArg};
use ggml_qat::ggml::ffi::{self, GgmlContext, GgmlTensor};
use ggml_qat::ggml::{Context, Tensor};
use ggml_qat::qat::metrics::kl_row;
use ggml_qat::quant::{format, is_implemented, on_this_thread, quantize_rows, QuantType};

const N_PER_ROW: usize = 4096;
const FFN: LayerTypeArg = LayerTypeArg(2);

fn last_error() -> String {
    unsafe { CStr::from_ptr(ggml_qat_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A QAT context whose FFN class has type `ty`, on `threads` threads (0:
/// the global pool).
fn qat_context(ty: QuantType, threads: i32) -> *mut QatContext {
    let mut c = ggml_qat_default_config();
    c.ffn_qtype = GgmlType(ty.ggml_id());
    let ctx = unsafe { ggml_qat_init(&c) };
    assert!(!ctx.is_null(), "init: {}", last_error());
    assert!(unsafe { ggml_qat_set_n_threads(ctx, threads) });
    ctx
}

/// Bytes of `rows` rows of [`N_PER_ROW`] values of type `ty`.
fn out_bytes(ty: QuantType, rows: usize) -> usize {
    format(ty)
        .row_bytes(N_PER_ROW)
        .expect("4096 is block-aligned")
        * rows
}

/// A fresh ggml context with room for one tensor of `bytes` bytes.
fn fresh_context(bytes: usize) -> *mut GgmlContext {
    unsafe { ffi::qat_shim_init(Context::tensor_cost(bytes), false) }
}

/// A tensor of `ty` holding `values` (rows of [`N_PER_ROW`]) in `ctx`.
fn source(ctx: &Context, ty: QuantType, values: &[f32]) -> Tensor {
    let rows = (values.len() / N_PER_ROW) as i64;
    let mut t = ctx
        .new_tensor(ty.ggml_id(), &[N_PER_ROW as i64, rows])
        .expect("source tensor");
    let bytes = t.bytes_mut().expect("source bytes");
    quantize_rows(ty, values, N_PER_ROW, bytes, None).expect("source data");
    t.finish()
}

/// ggml's way: a fresh context, a new tensor, `to_float` when the source is
/// not F32, `ggml_quantize_chunk`; returns the bytes for comparison when
/// `keep` is set.
fn ggml_job(ty: QuantType, src: &Tensor, keep: bool) -> Option<Vec<u8>> {
    let n = src.nelements();
    let rows = n / N_PER_ROW;
    let out_bytes = out_bytes(ty, rows);
    let ctx = fresh_context(out_bytes);
    let ne = [N_PER_ROW as i64, rows as i64];
    let dst = unsafe { ffi::ggml_new_tensor(ctx, ty.ggml_id(), 2, ne.as_ptr()) };
    let dst = unsafe { Tensor::from_raw(dst, "dst") }.unwrap();
    let converted: Vec<f32>;
    let values: *const f32 = if src.type_id() == QuantType::F32.ggml_id() {
        src.data_ptr() as *const f32
    } else {
        converted = {
            let mut v = vec![0f32; n];
            let ok = unsafe {
                ffi::qat_shim_to_float(
                    src.type_id(),
                    src.data_ptr().cast(),
                    v.as_mut_ptr(),
                    n as i64,
                )
            };
            assert!(ok);
            v
        };
        converted.as_ptr()
    };
    let written = unsafe {
        ffi::ggml_quantize_chunk(
            ty.ggml_id(),
            values,
            dst.data_ptr().cast(),
            0,
            rows as i64,
            N_PER_ROW as i64,
            std::ptr::null(),
        )
    };
    assert_eq!(written, out_bytes);
    let kept = keep.then(|| dst.bytes().unwrap().to_vec());
    unsafe { ffi::ggml_free(ctx) };
    kept
}

/// Our way: a fresh context, `quantize_layer` (FFN class of `qat`, whose
/// type is `ty`) or `quantize_tensor`.
fn api_job(
    qat: *mut QatContext,
    ty: QuantType,
    src: &Tensor,
    tensor_fn: bool,
    keep: bool,
) -> Option<Vec<u8>> {
    let rows = src.nelements() / N_PER_ROW;
    let out_bytes = out_bytes(ty, rows);
    let ctx = fresh_context(out_bytes);
    let out: *mut GgmlTensor = unsafe {
        if tensor_fn {
            ggml_qat_quantize_tensor(qat, ctx, src.as_ptr(), GgmlType(ty.ggml_id()))
        } else {
            ggml_qat_quantize_layer(qat, ctx, src.as_ptr(), FFN)
        }
    };
    assert!(!out.is_null(), "quantize: {}", last_error());
    let kept = keep.then(|| {
        let t = unsafe { Tensor::from_raw(out, "out") }.unwrap();
        t.bytes().unwrap().to_vec()
    });
    unsafe { ffi::ggml_free(ctx) };
    kept
}

/// The bare kernel on this thread, with what ggml's side does around its
/// quantizer (a fresh context and a new tensor): the F32 values (already
/// converted for F16/BF16 sources) quantized by `quantize_rows` into the new
/// tensor's data. `out` receives a copy when it is not empty (outside the
/// timed calls it is).
fn kernel_job(ty: QuantType, f32_values: &[f32], out: &mut [u8]) {
    let rows = f32_values.len() / N_PER_ROW;
    let bytes = out_bytes(ty, rows);
    let ctx = fresh_context(bytes);
    let ne = [N_PER_ROW as i64, rows as i64];
    let dst = unsafe { ffi::ggml_new_tensor(ctx, ty.ggml_id(), 2, ne.as_ptr()) };
    let data = unsafe {
        std::slice::from_raw_parts_mut(Tensor::from_raw(dst, "dst").unwrap().data_ptr(), bytes)
    };
    on_this_thread(|| quantize_rows(ty, f32_values, N_PER_ROW, data, None)).unwrap();
    if !out.is_empty() {
        out.copy_from_slice(data);
    }
    unsafe { ffi::ggml_free(ctx) };
}

struct Row {
    ggml: Duration,
    api1: Duration,
    kernel1: Duration,
    api_all: Duration,
    same: bool,
}

/// ggml, the API on one thread, the bare kernel on one thread and the API
/// on all threads, for one type and source.
fn measure(ty: QuantType, src: &Tensor, f32_values: &[f32], tensor_fn: bool) -> Row {
    let one = qat_context(ty, 1);
    let all = qat_context(ty, 0);
    let rows = src.nelements() / N_PER_ROW;
    let mut kernel_out = vec![0u8; out_bytes(ty, rows)];
    let want = ggml_job(ty, src, true).unwrap();
    let got1 = api_job(one, ty, src, tensor_fn, true).unwrap();
    let got_all = api_job(all, ty, src, tensor_fn, true).unwrap();
    kernel_job(ty, f32_values, &mut kernel_out);
    let same = want == got1 && want == got_all && want == kernel_out;
    let mut kernel_out = Vec::new();
    let [ggml, api1, kernel1, api_all] = median_times(
        common::budget(),
        [
            &mut || {
                ggml_job(ty, src, false);
            },
            &mut || {
                api_job(one, ty, src, tensor_fn, false);
            },
            &mut || kernel_job(ty, f32_values, &mut kernel_out),
            &mut || {
                api_job(all, ty, src, tensor_fn, false);
            },
        ],
    );
    unsafe {
        ggml_qat_free(one);
        ggml_qat_free(all);
    }
    Row {
        ggml,
        api1,
        kernel1,
        api_all,
        same,
    }
}

fn header(unit: &str) {
    println!(
        "{:<7} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>7} {:>5}",
        "type", "ggml 1t", "api 1t", "kern 1t", "api/ggml", "overhead", "api all", "all/1t", "same"
    );
    println!("  ({unit}; overhead = api 1t time / kernel 1t time - 1)");
}

fn print_row(ty: QuantType, r: &Row, bytes: usize, per_call: bool) {
    let fig = |t: Duration| {
        if per_call {
            t.as_secs_f64() * 1e6
        } else {
            mb_per_s(bytes, t)
        }
    };
    let speed = |t: Duration| mb_per_s(bytes, t);
    println!(
        "{:<7} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {:>8.1}% {:>9.1} {:>7.2} {:>5}",
        format!("{ty:?}"),
        fig(r.ggml),
        fig(r.api1),
        fig(r.kernel1),
        speed(r.api1) / speed(r.ggml),
        (r.api1.as_secs_f64() / r.kernel1.as_secs_f64() - 1.0) * 100.0,
        fig(r.api_all),
        speed(r.api_all) / speed(r.api1),
        if r.same { "yes" } else { "NO" }
    );
}

fn types() -> impl Iterator<Item = QuantType> {
    QuantType::ALL.into_iter().filter(|&t| {
        t != QuantType::F32 && is_implemented(t) && selected("QAT_BENCH_TYPES", &format!("{t:?}"))
    })
}

fn section_quantize(label: &str, src_ty: QuantType, values: &[f32], tensor_fn: bool) {
    let sctx = Context::new_owned(Context::tensor_cost(values.len() * 4), false).unwrap();
    let src = source(&sctx, src_ty, values);
    // The kernel column quantizes the source's F32 values.
    let f32_values = src.read_f32().unwrap();
    let small = values.len() * 4 < 1 << 20;
    println!(
        "\n{label}: {} x {} {src_ty:?} source ({} KiB)",
        N_PER_ROW,
        values.len() / N_PER_ROW,
        src.nbytes() >> 10
    );
    header(if small {
        "microseconds per call"
    } else {
        "MB/s of F32 values"
    });
    for ty in types() {
        let r = measure(ty, &src, &f32_values, tensor_fn);
        print_row(ty, &r, values.len() * 4, small);
    }
}

/// The reference KL: ggml's `to_float` of the quantized tensor into a new
/// buffer, then the same per-row log-sum-exp formula, one thread.
fn ggml_kl(p: &Tensor, q: &Tensor, t: f64) -> f64 {
    let n = q.nelements();
    let mut qv = vec![0f32; n];
    assert!(unsafe {
        ffi::qat_shim_to_float(q.type_id(), q.data_ptr().cast(), qv.as_mut_ptr(), n as i64)
    });
    let pv = unsafe { std::slice::from_raw_parts(p.data_ptr() as *const f32, n) };
    let rows = n / N_PER_ROW;
    let sum: f64 = pv
        .chunks(N_PER_ROW)
        .zip(qv.chunks(N_PER_ROW))
        .map(|(a, b)| kl_row(a, b, 1.0 / t))
        .sum();
    sum / rows as f64
}

fn section_kl(values: &[f32]) {
    let sctx = Context::new_owned(Context::tensor_cost(values.len() * 4) * 2, false).unwrap();
    let p = source(&sctx, QuantType::F32, values);
    let q = source(&sctx, QuantType::Q4_K, values);
    let one = qat_context(QuantType::Q4_K, 1);
    let all = qat_context(QuantType::Q4_K, 0);
    let ours = unsafe { ggml_qat_kl_divergence_loss(one, null_mut(), p.as_ptr(), q.as_ptr(), 1.0) };
    let theirs = ggml_kl(&p, &q, 1.0);
    let [g, o1, oa] = median_times(
        common::budget(),
        [
            &mut || {
                std::hint::black_box(ggml_kl(&p, &q, 1.0));
            },
            &mut || {
                std::hint::black_box(unsafe {
                    ggml_qat_kl_divergence_loss(one, null_mut(), p.as_ptr(), q.as_ptr(), 1.0)
                });
            },
            &mut || {
                std::hint::black_box(unsafe {
                    ggml_qat_kl_divergence_loss(all, null_mut(), p.as_ptr(), q.as_ptr(), 1.0)
                });
            },
        ],
    );
    let bytes = values.len() * 4;
    println!(
        "\nkl_divergence_loss, F32 against Q4_K, {} MiB each (MB/s of F32 values): to_float + loop {:.0}, api 1t {:.0} ({:.2}x), api all {:.0} ({:.2}x of 1t); KL {ours:.6} vs {theirs:.6}",
        bytes >> 20,
        mb_per_s(bytes, g),
        mb_per_s(bytes, o1),
        g.as_secs_f64() / o1.as_secs_f64(),
        mb_per_s(bytes, oa),
        o1.as_secs_f64() / oa.as_secs_f64(),
    );
    unsafe {
        ggml_qat_free(one);
        ggml_qat_free(all);
    }
}

fn section_calibration(n: usize) {
    let one = qat_context(QuantType::Q4_K, 1);
    let all = qat_context(QuantType::Q4_K, 0);
    let shape = [N_PER_ROW as i64, (n / N_PER_ROW) as i64];
    let job = |qat| {
        let mut shape = shape;
        let ctx = fresh_context(n * 4);
        let t = unsafe {
            ggml_qat_generate_calibration_data(qat, ctx, shape.as_mut_ptr(), 2, 0.0, 1.0)
        };
        assert!(!t.is_null(), "{}", last_error());
        unsafe { ffi::ggml_free(ctx) };
    };
    let [o1, oa] = median_times(common::budget(), [&mut || job(one), &mut || job(all)]);
    println!(
        "\ngenerate_calibration_data, {} MiB of N(0,1) F32 (MB/s written; no ggml equivalent): 1t {:.0}, all {:.0} ({:.2}x)",
        (n * 4) >> 20,
        mb_per_s(n * 4, o1),
        mb_per_s(n * 4, oa),
        o1.as_secs_f64() / oa.as_secs_f64()
    );
    unsafe {
        ggml_qat_free(one);
        ggml_qat_free(all);
    }
}

fn section_optimized(values: &[f32]) {
    let sctx = Context::new_owned(Context::tensor_cost(values.len() * 4), false).unwrap();
    let src = source(&sctx, QuantType::F32, values);
    let bytes = values.len() * 4;
    println!(
        "\nquantize_layer_optimized (no calibration inputs), {} x {} F32, all threads (MB/s; no ggml equivalent)",
        N_PER_ROW,
        values.len() / N_PER_ROW
    );
    for ty in types().filter(|&t| !matches!(t, QuantType::F16 | QuantType::BF16)) {
        let qat = qat_context(ty, 0);
        let out_bytes = out_bytes(ty, values.len() / N_PER_ROW);
        let job = |optimized: bool| {
            let ctx = fresh_context(out_bytes);
            let t = unsafe {
                if optimized {
                    ggml_qat_quantize_layer_optimized(qat, ctx, src.as_ptr(), FFN, null_mut())
                } else {
                    ggml_qat_quantize_layer(qat, ctx, src.as_ptr(), FFN)
                }
            };
            assert!(!t.is_null(), "{}", last_error());
            unsafe { ffi::ggml_free(ctx) };
        };
        // One timed call each: the optimized search is slow.
        let s = std::time::Instant::now();
        job(true);
        let t_opt = s.elapsed();
        let [t_plain] = median_times(common::budget(), [&mut || job(false)]);
        println!(
            "{:<7} optimized {:>8.1} MB/s, quantize_layer {:>8.1} MB/s, ratio {:.3}",
            format!("{ty:?}"),
            mb_per_s(bytes, t_opt),
            mb_per_s(bytes, t_plain),
            t_plain.as_secs_f64() / t_opt.as_secs_f64()
        );
        unsafe { ggml_qat_free(qat) };
    }
}

fn main() {
    let big = gaussian(2048 * N_PER_ROW, 1);
    let small = gaussian(4 * N_PER_ROW, 2);
    println!(
        "ggml-qat's C API against ggml, same run; {} threads for \"all\"",
        rayon::current_num_threads()
    );
    let on = |s: &str| selected("QAT_BENCH_SECTIONS", s);
    if on("f32") {
        section_quantize("quantize_layer", QuantType::F32, &big, false);
    }
    if on("small") {
        section_quantize(
            "quantize_layer, small tensor",
            QuantType::F32,
            &small,
            false,
        );
    }
    if on("f16") {
        section_quantize("quantize_layer", QuantType::F16, &big, false);
    }
    if on("bf16") {
        section_quantize("quantize_layer", QuantType::BF16, &big, false);
    }
    if on("tensor") {
        section_quantize("quantize_tensor", QuantType::F32, &big, true);
    }
    if on("kl") {
        section_kl(&big);
    }
    if on("calibration") {
        section_calibration(big.len());
    }
    if on("optimized") {
        section_optimized(&big[..64 * N_PER_ROW]);
    }
}
