//! The protocol's functions called on plain data — a configuration, the
//! threads, a seed or a stream, a backend, slices and tensors — with no
//! session: what each returns follows from its arguments alone, and what it
//! made comes back to the caller instead of being counted somewhere.

use ggml_qat::ggml::compute::Backend;
use ggml_qat::ggml::{Context, Tensor};
use ggml_qat::qat::config::Config;
use ggml_qat::qat::stats::{Quantized, Totals};
use ggml_qat::qat::threads::{Threads, MAX_THREADS};
use ggml_qat::qat::{measure, progressive, sensitivity, tensors, LayerClass};
use ggml_qat::quant::QuantType;
use ggml_qat::rng::{SeedSequence, Stream};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let s = SeedSequence::new(seed).next_stream();
    (0..n).map(|i| s.normal_at(i as u64) as f32 * 0.1).collect()
}

fn f32_tensor(ctx: &Context, v: &[f32], ne0: usize) -> Tensor {
    let mut t = ctx
        .new_tensor(
            QuantType::F32.ggml_id(),
            &[ne0 as i64, (v.len() / ne0) as i64],
        )
        .unwrap();
    t.f32_mut().unwrap().copy_from_slice(v);
    t.finish()
}

fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config {
        calibration_samples: 32,
        ..Config::default()
    };
    edit(&mut c);
    c
}

#[test]
fn the_gate_depends_on_its_arguments_only() {
    let threads = Threads::default();
    let backend = Backend::cpu(1).unwrap();
    let w = values(256 * 64, 3);
    let strict = config(|c| c.accuracy_threshold = 1.0);
    let a = progressive::gate(&strict, &threads, 7, &backend, &w, 256, QuantType::Q2_K).unwrap();
    // Every type it passed over missed the threshold; it ends where the
    // threshold is met or at F32.
    assert!(a.rejected.iter().all(|&(_, agree)| agree < 1.0));
    assert!(a.agreement >= 1.0 || a.weights.ty == QuantType::F32);
    assert_eq!(a.rejected[0].0, QuantType::Q2_K);
    // The same arguments give the same answer, on other threads too.
    let other = Threads::new(Threads::pool(2).unwrap());
    let b = progressive::gate(&strict, &other, 7, &backend, &w, 256, QuantType::Q2_K).unwrap();
    assert_eq!(
        (a.weights.ty, a.weights.bytes),
        (b.weights.ty, b.weights.bytes)
    );
    assert_eq!(a.rejected, b.rejected);
    // A gate that takes anything keeps the starting type.
    let lax = config(|c| c.accuracy_threshold = 0.0);
    let c = progressive::gate(&lax, &threads, 7, &backend, &w, 256, QuantType::Q2_K).unwrap();
    assert_eq!(c.weights.ty, QuantType::Q2_K);
    assert!(c.rejected.is_empty());
}

#[test]
fn progressive_returns_what_it_made() {
    let ctx = Context::new_owned(8 << 20, false).unwrap();
    let w = values(256 * 16, 5);
    let mut layers = vec![f32_tensor(&ctx, &w, 256).as_ptr(); 2];
    let cfg = config(|c| c.accuracy_threshold = 0.0);
    let threads = Threads::default();
    let classes = [LayerClass::Ffn, LayerClass::Attention];
    let made = progressive::progressive(&cfg, &threads, 1, &ctx, &mut layers, &classes, 0).unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].wanted, QuantType::Q6_K);
    assert_eq!(made[0].got, "q6_K");
    assert_eq!(made[0].original_bytes, 256 * 16 * 4);
    let q = unsafe { Tensor::from_raw(layers[0], "layer") }.unwrap();
    assert_eq!(q.quant_type().unwrap(), QuantType::Q6_K);
    // Layer 0 is quantized now: only layer 1 is left.
    let made = progressive::progressive(&cfg, &threads, 1, &ctx, &mut layers, &classes, 1).unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].wanted, QuantType::Q4_K);
    let mut totals = Totals::default();
    totals.add(&made[0]);
    assert_eq!(
        totals.stats().original_size_mb,
        (256 * 16 * 4) as f32 / 1048576.0
    );
}

#[test]
fn quantize_as_reports_the_fallback() {
    let ctx = Context::new_owned(1 << 20, false).unwrap();
    let src = f32_tensor(&ctx, &values(96 * 4, 9), 96);
    let (dst, made) =
        tensors::quantize_as(&Threads::default(), &ctx, &src, QuantType::Q4_K).unwrap();
    assert_eq!(dst.quant_type().unwrap(), QuantType::Q5_0);
    assert_eq!(
        made,
        Quantized {
            name: String::new(),
            original_bytes: src.nbytes() as u64,
            quantized_bytes: dst.nbytes() as u64,
            wanted: QuantType::Q4_K,
            got: "q5_0",
            why: Some("ne[0] = 96 is not a multiple of 256".into()),
        }
    );
    assert_eq!(
        tensors::estimate_memory(&Config::default(), &[src], &[LayerClass::Attention]).unwrap(),
        dst.nbytes()
    );
}

#[test]
fn inputs_draw_a_stream_only_when_they_are_synthetic() {
    let cfg = config(|_| {});
    let threads = Threads::default();
    let ctx = Context::new_owned(1 << 20, false).unwrap();
    let x = f32_tensor(&ctx, &values(64 * 3, 2), 64);
    let given = measure::inputs(&cfg, &threads, 64, Some(&x), || unreachable!()).unwrap();
    assert_eq!(given.1, 3);
    let (v, n) = measure::inputs(&cfg, &threads, 64, None, || Stream::keyed(1, 2)).unwrap();
    assert_eq!(n, 32);
    assert_eq!(v[5], Stream::keyed(1, 2).normal_at(5) as f32);
    let huge = config(|c| c.calibration_samples = usize::MAX);
    let err = measure::synthetic_inputs(&huge, &threads, 64, Stream::keyed(1, 2)).unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");
}

#[test]
fn blended_error_weighs_kl_against_mse() {
    let e = sensitivity::OutputError {
        kl: 2.0,
        rel_mse: 4.0,
        top1: 1.0,
    };
    assert_eq!(
        sensitivity::blended(&config(|c| c.kl_divergence_weight = 0.25), e),
        3.5
    );
    assert_eq!(
        sensitivity::blended(&config(|c| c.kl_divergence_weight = 1.0), e),
        2.0
    );
}

#[test]
fn threads_refuse_more_than_the_maximum() {
    assert!(Threads::pool(MAX_THREADS + 1).is_err());
    assert!(Threads::pool(0).unwrap().is_none());
    assert_eq!(Threads::new(Threads::pool(3).unwrap()).count(), 3);
}
