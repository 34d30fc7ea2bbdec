//! The public API stays the kernel path: through the exported C functions,
//! a tensor's bytes equal the bare kernel's, each input value is read once
//! (counted, not timed), and the memory allocated beyond the output stays
//! bounded whatever the source's type or size (counted by this test's
//! allocator). Fails when someone adds a copy, a conversion of the whole
//! tensor or an extra pass over the data to the API.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ggml_qat::capi::context::{ggml_qat_free, ggml_qat_init, ggml_qat_set_n_threads};
use ggml_qat::capi::error::ggml_qat_last_error;
use ggml_qat::capi::metrics::ggml_qat_kl_divergence_loss;
use ggml_qat::capi::quantize::{ggml_qat_quantize_layer, ggml_qat_quantize_tensor};
use ggml_qat::capi::types::{GgmlType, LayerTypeArg};
use ggml_qat::ggml::tensor_rows::elements_read;
use ggml_qat::ggml::{Context, Tensor};
use ggml_qat::quant::{format, quantize_rows, QuantType};

/// Counts the bytes allocated at any time and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counters are process-wide: one measured call at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f`, returning its value, the tensor values it read and the most
/// bytes it had allocated at once (ggml contexts are malloc'ed by ggml, not
/// counted here).
fn measured<R>(f: impl FnOnce() -> R) -> (R, u64, usize) {
    let before_read = elements_read();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    (r, elements_read() - before_read, peak)
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(ggml_qat_last_error()) }
        .to_string_lossy()
        .into_owned()
}

const ROW: usize = 4096;
const ROWS: usize = 512; // 8 MiB of F32 values

fn values() -> Vec<f32> {
    let mut s = 7u64;
    (0..ROW * ROWS)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

/// A tensor of `ty` holding `values` in `ctx`, its data `offset` bytes past
/// an aligned address (a view into a larger byte tensor when offset > 0).
fn tensor(ctx: &Context, ty: QuantType, values: &[f32], offset: usize) -> Tensor {
    let row_bytes = format(ty).row_bytes(ROW).unwrap();
    // One spare row gives room for the offset.
    let mut base = ctx
        .new_tensor(ty.ggml_id(), &[ROW as i64, ROWS as i64 + 1])
        .unwrap();
    let raw = base.bytes_mut().unwrap();
    quantize_rows(
        ty,
        values,
        ROW,
        &mut raw[offset..offset + row_bytes * ROWS],
        None,
    )
    .unwrap();
    // A view at that byte offset, as ggml_view_2d makes it (any offset is
    // legal in ggml).
    let view = unsafe {
        ggml_qat::ggml::ffi::ggml_view_2d(
            ctx.as_ptr(),
            base.finish().as_ptr(),
            ROW as i64,
            ROWS as i64,
            row_bytes,
            offset,
        )
    };
    unsafe { Tensor::from_raw(view, "view") }.unwrap()
}

#[test]
fn quantize_reads_each_value_once_and_allocates_a_bounded_amount() {
    let _serial = SERIAL.lock().unwrap();
    let v = values();
    let src_ctx = Context::new_owned(64 << 20, false).unwrap();
    for threads in [1, 0] {
        let q = unsafe { ggml_qat_init(std::ptr::null()) };
        assert!(unsafe { ggml_qat_set_n_threads(q, threads) });
        for (src_ty, offset) in [
            (QuantType::F32, 0),
            (QuantType::F32, 1),
            (QuantType::F16, 0),
            (QuantType::F16, 3),
            (QuantType::BF16, 2),
            (QuantType::Q8_0, 0),
        ] {
            let src = tensor(&src_ctx, src_ty, &v, offset);
            let f32_values = src.read_f32().unwrap();
            for ty in [
                QuantType::Q4_0,
                QuantType::Q8_0,
                QuantType::Q4_K,
                QuantType::Q6_K,
            ] {
                let mut want = vec![0u8; format(ty).row_bytes(ROW).unwrap() * ROWS];
                quantize_rows(ty, &f32_values, ROW, &mut want, None).unwrap();
                let out_ctx = Context::new_owned(Context::tensor_cost(want.len()), false).unwrap();
                let (out, read, peak) = measured(|| unsafe {
                    ggml_qat_quantize_tensor(
                        q,
                        out_ctx.as_ptr(),
                        src.as_ptr(),
                        GgmlType(ty.ggml_id()),
                    )
                });
                assert!(!out.is_null(), "{}", last_error());
                let out = unsafe { Tensor::from_raw(out, "out") }.unwrap();
                let case = format!("{src_ty:?} at +{offset} -> {ty:?}, {threads} threads");
                assert!(
                    out.bytes().unwrap() == want.as_slice(),
                    "{case}: bytes differ from the kernel's"
                );
                assert_eq!(read, (ROW * ROWS) as u64, "{case}: values read");
                // A piece buffer per thread (64k values) and bookkeeping; a
                // copy of the source would be 8 MiB or more.
                assert!(peak < 1 << 20, "{case}: {peak} bytes allocated at once");
            }
        }
        unsafe { ggml_qat_free(q) };
    }
}

#[test]
fn quantize_layer_is_quantize_tensor_with_the_class_type() {
    let _serial = SERIAL.lock().unwrap();
    let v = values();
    let ctx = Context::new_owned(64 << 20, false).unwrap();
    let src = tensor(&ctx, QuantType::F32, &v, 0);
    let q = unsafe { ggml_qat_init(std::ptr::null()) };
    // FFN's default type is Q6_K.
    let (a, read, _) = measured(|| unsafe {
        ggml_qat_quantize_layer(q, ctx.as_ptr(), src.as_ptr(), LayerTypeArg(2))
    });
    assert_eq!(read, (ROW * ROWS) as u64);
    let b = unsafe {
        ggml_qat_quantize_tensor(
            q,
            ctx.as_ptr(),
            src.as_ptr(),
            GgmlType(QuantType::Q6_K.ggml_id()),
        )
    };
    let (a, b) = unsafe {
        (
            Tensor::from_raw(a, "a").unwrap(),
            Tensor::from_raw(b, "b").unwrap(),
        )
    };
    assert_eq!(a.type_id(), QuantType::Q6_K.ggml_id());
    assert!(a.bytes().unwrap() == b.bytes().unwrap());
    unsafe { ggml_qat_free(q) };
}

#[test]
fn kl_reads_both_tensors_once_without_converting_them_whole() {
    let _serial = SERIAL.lock().unwrap();
    let v = values();
    let ctx = Context::new_owned(64 << 20, false).unwrap();
    let q = unsafe { ggml_qat_init(std::ptr::null()) };
    for (a_ty, b_ty, offset) in [
        (QuantType::F32, QuantType::Q4_K, 0),
        (QuantType::F16, QuantType::Q8_0, 1),
        (QuantType::BF16, QuantType::F32, 3),
    ] {
        let a = tensor(&ctx, a_ty, &v, offset);
        let b = tensor(&ctx, b_ty, &v, 0);
        let want = {
            let (pa, pb) = (a.read_f32().unwrap(), b.read_f32().unwrap());
            ggml_qat::qat::metrics::mean_kl(&pa, &pb, ROW, 2.0)
        };
        let (kl, read, peak) = measured(|| unsafe {
            ggml_qat_kl_divergence_loss(q, null_mut(), a.as_ptr(), b.as_ptr(), 2.0)
        });
        let case = format!("{a_ty:?} at +{offset} vs {b_ty:?}");
        assert!(kl.is_finite(), "{case}: {}", last_error());
        assert!(
            ((kl as f64) - want).abs() <= 1e-6 * want.max(1e-9),
            "{case}: {kl} vs {want}"
        );
        assert_eq!(read, 2 * (ROW * ROWS) as u64, "{case}: values read");
        assert!(peak < 2 << 20, "{case}: {peak} bytes allocated at once");
    }
    unsafe { ggml_qat_free(q) };
}
