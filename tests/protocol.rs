//! The measured protocol against independent computations: validation
//! figures against f64 dot products, progressive quantization's idempotence
//! and gate, sensitivity and the mixed-precision plan, and one test per
//! configuration field showing its effect. No test asserts anything about
//! time.

mod common;

use common::{make_input, Input, Rng};
use ggml_qat::ggml::compute::Backend;
use ggml_qat::ggml::{Context, Tensor};
use ggml_qat::qat::config::RawConfig;
use ggml_qat::qat::{Config, LayerClass, Session};
use ggml_qat::quant::{self, QuantType};

fn session(edit: impl FnOnce(&mut Config)) -> Session {
    let mut c = Config::default();
    edit(&mut c);
    Session::new(c)
}

fn tensor(ctx: &Context, ty: QuantType, values: &[f32], ne0: usize) -> Tensor {
    let ne1 = values.len() / ne0;
    let mut t = ctx
        .new_tensor(ty.ggml_id(), &[ne0 as i64, ne1 as i64])
        .unwrap();
    quant::quantize_rows(ty, values, ne0, t.bytes_mut().unwrap(), None).unwrap();
    t.finish()
}

/// Activations as ggml's CPU kernels round them before the dot product with
/// weights of type `w`: Q8_K (f32 scale -127/max per 256) for K-quants and
/// IQ4_XS, Q8_0 (fp16 scale amax/127 per 32) for the 32-blocks, unchanged
/// for F32.
fn ggml_activations(w: QuantType, x: &[f32]) -> Vec<f64> {
    use QuantType::*;
    match w {
        F32 => x.iter().map(|&v| v as f64).collect(),
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => x
            .chunks(256)
            .flat_map(|b| {
                let max = b
                    .iter()
                    .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let iscale = if max == 0.0 { 0.0 } else { -127.0 / max };
                b.iter()
                    .map(move |&v| {
                        let q = ((iscale * v).round() as i32).min(127) as f64;
                        if iscale == 0.0 {
                            0.0
                        } else {
                            q * (1.0 / iscale) as f64
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        _ => x
            .chunks(32)
            .flat_map(|b| {
                let amax = b.iter().fold(0f32, |m, &v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let dh = half::f16::from_f32(d).to_f32() as f64;
                b.iter()
                    .map(move |&v| (v * id).round() as f64 * dh)
                    .collect::<Vec<_>>()
            })
            .collect(),
    }
}

/// Y = W X in f64: `w` rows of `n`, `x` samples of `n`; sample-major output.
fn matmul_f64(w: &[f32], x: &[f64], n: usize) -> Vec<f64> {
    let rows = w.len() / n;
    x.chunks(n)
        .flat_map(|xs| {
            (0..rows).map(move |r| {
                w[r * n..(r + 1) * n]
                    .iter()
                    .zip(xs)
                    .map(|(&a, &b)| a as f64 * b)
                    .sum()
            })
        })
        .collect()
}

fn kl_f64(p: &[f64], q: &[f64], width: usize, t: f64) -> f64 {
    let rows = p.len() / width;
    let mut total = 0.0;
    for (a, b) in p.chunks(width).zip(q.chunks(width)) {
        let lse = |v: &[f64]| {
            let m = v.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x / t));
            m + v.iter().map(|&x| (x / t - m).exp()).sum::<f64>().ln()
        };
        let (la, lb) = (lse(a), lse(b));
        total += a
            .iter()
            .zip(b)
            .map(|(&x, &y)| ((x / t - la).exp()) * ((x / t - la) - (y / t - lb)))
            .sum::<f64>();
    }
    total / rows as f64
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn validation_agrees_with_independent_f64_computation() {
    let (n, rows, samples) = (512usize, 96usize, 48usize);
    let w = make_input(Input::Gaussian, n * rows, 1);
    let x = make_input(Input::Gaussian, n * samples, 2);
    for ty in [QuantType::Q4_K, QuantType::Q8_0, QuantType::Q6_K] {
        let s = session(|c| c.temperature = 0.5);
        let ctx = Context::new_owned(32 << 20, false).unwrap();
        let wt = tensor(&ctx, QuantType::F32, &w, n);
        let qt = tensor(&ctx, ty, &w, n);
        let xt = tensor(&ctx, QuantType::F32, &x, n);
        let stats = s.validate(&wt, &qt, Some(&xt)).unwrap();

        let deq = qt.read_f32().unwrap();
        let y = matmul_f64(&w, &ggml_activations(QuantType::F32, &x), n);
        let yq = matmul_f64(&deq, &ggml_activations(ty, &x), n);
        let kl = kl_f64(&y, &yq, rows, 0.5);
        let agree = y
            .chunks(rows)
            .zip(yq.chunks(rows))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count() as f32
            / samples as f32;
        let rel = (stats.kl_divergence_loss as f64 - kl).abs() / kl;
        assert!(
            rel < 0.01,
            "{ty:?}: KL {} vs f64 {kl} ({:.3}%)",
            stats.kl_divergence_loss,
            rel * 100.0
        );
        assert_eq!(stats.accuracy_retention, agree, "{ty:?}: top-1 agreement");
        let mib = 1024.0 * 1024.0;
        assert_eq!(stats.original_size_mb, (wt.nbytes() as f64 / mib) as f32);
        assert_eq!(stats.quantized_size_mb, (qt.nbytes() as f64 / mib) as f32);
        assert_eq!(
            stats.compression_ratio,
            (qt.nbytes() as f64 / wt.nbytes() as f64) as f32
        );
        assert!(stats.inference_speedup.is_finite() && stats.inference_speedup > 0.0);
        assert_eq!(
            s.stats().kl_divergence_loss,
            stats.kl_divergence_loss,
            "kept in the context"
        );
    }
}

#[test]
fn temperature_changes_the_kl_figure() {
    let ctx = Context::new_owned(16 << 20, false).unwrap();
    let w = make_input(Input::Gaussian, 256 * 64, 3);
    let wt = tensor(&ctx, QuantType::F32, &w, 256);
    let qt = tensor(&ctx, QuantType::Q4_K, &w, 256);
    let kl = |t: f32| {
        session(|c| c.temperature = t)
            .validate(&wt, &qt, None)
            .unwrap()
            .kl_divergence_loss
    };
    let (k1, k3) = (kl(1.0), kl(3.0));
    assert!(k1 > 2.0 * k3, "KL at T=1 {k1} should exceed KL at T=3 {k3}");
}

#[test]
fn calibration_samples_sets_the_synthetic_input_count() {
    let ctx = Context::new_owned(16 << 20, false).unwrap();
    let w = make_input(Input::Gaussian, 256 * 64, 4);
    let wt = tensor(&ctx, QuantType::F32, &w, 256);
    let qt = tensor(&ctx, QuantType::Q2_K, &w, 256);
    for n in [3usize, 7] {
        let a = session(|c| c.calibration_samples = n)
            .validate(&wt, &qt, None)
            .unwrap()
            .accuracy_retention;
        let k = a * n as f32;
        assert!(
            (k - k.round()).abs() < 1e-4,
            "agreement {a} is not a multiple of 1/{n}"
        );
    }
}

#[test]
fn benchmark_times_both_models() {
    let s = session(|_| {});
    let ctx = Context::new_owned(16 << 20, false).unwrap();
    let w = make_input(Input::Gaussian, 512 * 128, 5);
    let qt = tensor(&ctx, QuantType::Q4_K, &w, 512);
    let xt = tensor(
        &ctx,
        QuantType::F32,
        &make_input(Input::Gaussian, 512 * 4, 6),
        512,
    );
    let backend = Backend::cpu(1).unwrap();
    let speedup = s.benchmark(&backend, &qt, &xt, 3).unwrap();
    let t = s.benchmark_times();
    assert_eq!(t.iterations, 3);
    assert!(t.f32_seconds > 0.0 && t.model_seconds > 0.0);
    assert!((speedup - t.f32_seconds / t.model_seconds).abs() < 1e-9);
    assert!(s.benchmark(&backend, &qt, &xt, 0).is_err());
}

#[test]
fn optimal_type_asks_the_backend() {
    let backend = Backend::cpu(1).unwrap();
    let ty = ggml_qat::ggml::backend::optimal_type(
        &backend,
        &ggml_qat::qat::plan::preference(LayerClass::Attention),
    )
    .unwrap();
    assert_eq!(ty, QuantType::Q4_K);
    assert_eq!(
        ggml_qat::ggml::backend::device_kind(&backend),
        ggml_qat::ggml::backend::DeviceKind::Cpu
    );
    assert!(ggml_qat::ggml::backend::supports_mul_mat(&backend, QuantType::IQ4_XS).unwrap());
}

fn layers(ctx: &Context, n: usize, seed: u64) -> Vec<*mut ggml_qat::ggml::ffi::GgmlTensor> {
    (0..n)
        .map(|i| {
            let v = make_input(Input::Gaussian, 256 * 32, seed + i as u64);
            tensor(ctx, QuantType::F32, &v, 256).as_ptr()
        })
        .collect()
}

#[test]
fn progressive_quantizes_each_layer_once() {
    let s = session(|c| c.accuracy_threshold = 0.0);
    let ctx = Context::new_owned(32 << 20, false).unwrap();
    let mut l = layers(&ctx, 3, 10);
    let original = l.clone();
    let classes = [
        LayerClass::Attention,
        LayerClass::Ffn,
        LayerClass::Embedding,
    ];
    assert_eq!(s.progressive(&ctx, &mut l, &classes, 0).unwrap(), 1);
    let first = l[0];
    assert_ne!(first, original[0]);
    assert_eq!(l[1..], original[1..]);
    assert_eq!(s.progressive(&ctx, &mut l, &classes, 1).unwrap(), 1);
    assert_eq!(l[0], first, "layer 0 quantized again");
    assert_eq!(s.progressive(&ctx, &mut l, &classes, 2).unwrap(), 1);
    assert_eq!(s.progressive(&ctx, &mut l, &classes, 2).unwrap(), 0);
    let types: Vec<i32> = l
        .iter()
        .map(|&p| unsafe { Tensor::from_raw(p, "l") }.unwrap().type_id())
        .collect();
    assert_eq!(
        types,
        vec![
            QuantType::Q4_K as i32,
            QuantType::Q6_K as i32,
            QuantType::Q8_0 as i32
        ]
    );
}

#[test]
fn accuracy_threshold_raises_precision_until_the_gate_passes() {
    let ctx = Context::new_owned(32 << 20, false).unwrap();
    let classes = [LayerClass::Attention];
    let mut lenient = layers(&ctx, 1, 20);
    let mut strict = lenient.clone();
    session(|c| {
        c.attention_qtype = QuantType::Q2_K;
        c.accuracy_threshold = 0.0;
    })
    .progressive(&ctx, &mut lenient, &classes, 0)
    .unwrap();
    let s = session(|c| {
        c.attention_qtype = QuantType::Q2_K;
        c.accuracy_threshold = 1.0;
    });
    s.progressive(&ctx, &mut strict, &classes, 0).unwrap();
    let ty = |p| {
        unsafe { Tensor::from_raw(p, "l") }
            .unwrap()
            .quant_type()
            .unwrap()
    };
    assert_eq!(ty(lenient[0]), QuantType::Q2_K);
    assert_ne!(
        ty(strict[0]),
        QuantType::Q2_K,
        "a strict gate must raise Q2_K"
    );
    assert!(
        s.fallbacks()[0].contains("q2_K top-1"),
        "{:?}",
        s.fallbacks()
    );
}

#[test]
fn progressive_failure_leaves_every_pointer() {
    let s = session(|c| c.accuracy_threshold = 0.0);
    let ctx = Context::new_owned(32 << 20, false).unwrap();
    let mut l = layers(&ctx, 2, 30);
    let bad = unsafe { Tensor::from_raw(l[1], "l") }.unwrap();
    // Element 2 of the F32 layer becomes NaN (through the raw data
    // pointer: a view does not write).
    let nan = f32::NAN.to_ne_bytes();
    unsafe { std::ptr::copy_nonoverlapping(nan.as_ptr(), bad.data_ptr().add(8), 4) };
    let before = l.clone();
    let used = ctx.free_bytes();
    let err = s
        .progressive(&ctx, &mut l, &[LayerClass::Ffn, LayerClass::Ffn], 1)
        .unwrap_err();
    assert!(err.to_string().contains("element 2"), "{err}");
    assert_eq!(l, before);
    assert_eq!(ctx.free_bytes(), used, "nothing allocated on failure");
}

#[test]
fn progressive_layers_caps_one_call() {
    let s = session(|c| {
        c.progressive_layers = 1;
        c.accuracy_threshold = 0.0;
    });
    let ctx = Context::new_owned(32 << 20, false).unwrap();
    let mut l = layers(&ctx, 2, 40);
    let classes = [LayerClass::Ffn, LayerClass::Ffn];
    assert!(
        s.progressive(&ctx, &mut l, &classes, 1).is_err(),
        "two new layers in one call"
    );
    assert_eq!(s.progressive(&ctx, &mut l, &classes, 0).unwrap(), 1);
    assert_eq!(s.progressive(&ctx, &mut l, &classes, 1).unwrap(), 1);
}

#[test]
fn kl_divergence_weight_blends_sensitivity() {
    let ctx = Context::new_owned(16 << 20, false).unwrap();
    let w = make_input(Input::HeavyTails, 256 * 64, 50);
    let t = tensor(&ctx, QuantType::F32, &w, 256);
    let s_kl = session(|c| c.kl_divergence_weight = 1.0);
    let s_mse = session(|c| c.kl_divergence_weight = f32::MIN_POSITIVE);
    // The same seed gives every call the same synthetic inputs.
    s_kl.set_seed(1);
    let e = s_kl.layer_error(&t, QuantType::Q4_K).unwrap();
    let saved = (t.nbytes() - 144 * 64) as f64 / (1024.0 * 1024.0);
    s_kl.set_seed(1);
    let a = s_kl.sensitivity(&t, QuantType::Q4_K).unwrap();
    assert!(
        (a - e.kl / saved).abs() <= 1e-9 * a.abs(),
        "{a} vs {}",
        e.kl / saved
    );
    s_mse.set_seed(1);
    let b = s_mse.sensitivity(&t, QuantType::Q4_K).unwrap();
    assert!(
        (b - e.rel_mse / saved).abs() <= 1e-6 * b.abs(),
        "{b} vs {}",
        e.rel_mse / saved
    );
    assert!(a > 0.0 && b > 0.0 && a != b);
}

#[test]
fn memory_reduction_target_bounds_the_plan() {
    let ctx = Context::new_owned(64 << 20, false).unwrap();
    let mut rng = Rng::new(60);
    let shapes = [(512usize, 512usize), (512, 1024), (1024, 512), (512, 1)];
    let ts: Vec<Tensor> = shapes
        .iter()
        .map(|&(n, r)| {
            let v: Vec<f32> = (0..n * r)
                .map(|_| rng.normal() as f32 / (n as f32).sqrt())
                .collect();
            tensor(&ctx, QuantType::F32, &v, n)
        })
        .collect();
    let f32_total: usize = ts.iter().map(|t| t.nbytes()).sum();
    for target in [0.5f32, 0.75, 0.85] {
        let s = session(|c| {
            c.memory_reduction_target = target;
            c.accuracy_threshold = f32::MIN_POSITIVE;
        });
        let plan = s.plan_mixed_precision(&ts).unwrap();
        let bytes: usize = ts
            .iter()
            .zip(&plan)
            .map(|(t, ty)| Context::data_bytes(ty.ggml_id(), &t.ne()).unwrap())
            .sum();
        assert!(
            bytes as f64 <= (1.0 - target as f64) * f32_total as f64,
            "target {target}: {bytes} of {f32_total}"
        );
    }
    // Beyond the smallest types, the error says how far the gate allows.
    let s = session(|c| {
        c.memory_reduction_target = 0.95;
        c.accuracy_threshold = f32::MIN_POSITIVE;
    });
    let q2k: usize = ts
        .iter()
        .map(|t| Context::data_bytes(QuantType::Q2_K.ggml_id(), &t.ne()).unwrap())
        .sum();
    let reachable = format!(
        "the reduction is {:.1}%",
        100.0 * (1.0 - q2k as f64 / f32_total as f64)
    );
    let err = s.plan_mixed_precision(&ts).unwrap_err().to_string();
    assert!(err.contains(&reachable), "{err} (want {reachable})");

    // With the accuracy gate, every planned type keeps the agreement on the
    // synthetic inputs (the same ones: same seed, same calls).
    let s = session(|c| c.accuracy_threshold = 0.9);
    s.set_seed(5);
    let plan = s.plan_mixed_precision(&ts).unwrap();
    s.set_seed(5);
    for (t, ty) in ts.iter().zip(&plan) {
        let e = s.layer_error(t, *ty).unwrap();
        assert!(
            e.top1 >= 0.9 || *ty == QuantType::F16,
            "{ty:?}: top-1 {}",
            e.top1
        );
    }
}

#[test]
fn layer_types_and_enables_come_from_the_config() {
    let raw = RawConfig {
        qtypes: [
            QuantType::Q5_K as i32,
            QuantType::IQ4_XS as i32,
            QuantType::F16 as i32,
            QuantType::BF16 as i32,
        ],
        kl_divergence_weight: 0.0,
        temperature: 0.0,
        progressive_layers: 0,
        calibration_samples: 0,
        memory_reduction_target: 0.0,
        accuracy_threshold: 0.0,
        enables: [true, false, true],
    };
    let c = raw.validate().unwrap();
    assert_eq!(c.qtype_for(LayerClass::Embedding), QuantType::Q5_K);
    assert_eq!(c.qtype_for(LayerClass::Attention), QuantType::IQ4_XS);
    assert_eq!(c.qtype_for(LayerClass::Ffn), QuantType::F16);
    assert_eq!(c.qtype_for(LayerClass::LayerNorm), QuantType::BF16);
    assert_eq!(c.temperature, 3.0, "0 means the default");
    assert!(!c.opencog_enabled(LayerClass::Moses));
    let s = Session::new(c);
    let ctx = Context::new_owned(8 << 20, false).unwrap();
    let w = make_input(Input::Gaussian, 256 * 4, 70);
    let t = tensor(&ctx, QuantType::F32, &w, 256);
    assert_eq!(
        s.quantize_layer(&ctx, &t, LayerClass::Attention)
            .unwrap()
            .type_id(),
        QuantType::IQ4_XS as i32
    );
    assert_eq!(
        s.quantize_layer(&ctx, &t, LayerClass::LayerNorm)
            .unwrap()
            .type_id(),
        QuantType::BF16 as i32
    );
}
