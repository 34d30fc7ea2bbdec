//! Output-aware quantization (`qat::optimize`) against ggml's own quantizer:
//! the output MSE `Σ (Σ_i (w_i − ŵ_i)·x_i)² / (rows·samples)` of our bytes,
//! decoded by ggml's `to_float`, next to ggml's reference quantization (no
//! imatrix) and ggml's imatrix quantization with the inputs' imatrix.
//!
//! Asserted:
//! - Q2_K, Q3_K, Q4_K on Gaussian and Student-t weights with anisotropic
//!   inputs: ours ≤ 0.9 × ggml reference, and ours ≤ ggml + imatrix;
//! - every other implemented quantized type: ours ≤ ggml reference and
//!   ≤ ggml + imatrix;
//! - without inputs (weight space), every type: ours ≤ ggml reference;
//! - correlated inputs (shrinkage < 1, GPTQ candidate active): the same
//!   bounds for the K-quants;
//! - the bytes have exactly ggml's size, ggml decodes them to the values our
//!   dequantizer gives, and the result does not depend on the thread count.

mod common;

use common::{weights, Rng, Weights};
use ggml_qat::ggml::reference;
use ggml_qat::qat::optimize::{input_imatrix, output_mse, quantize_output_aware};
use ggml_qat::quant::{dequantize_rows, format, is_implemented, QuantType};

const ROWS: usize = 64;
const N: usize = 1024;
const SAMPLES: usize = 256;

/// Relative slack for "not worse": the two sides may sum in a different
/// order.
const TIE: f64 = 1e-12;

/// Anisotropic inputs: `s` samples, column `i` scaled by a log-uniform
/// factor in 0.1..10 (the same factors for every sample).
fn anisotropic_inputs(n: usize, s: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let scales: Vec<f64> = (0..n)
        .map(|_| 10f64.powf(2.0 * r.uniform() - 1.0))
        .collect();
    let mut x = Vec::with_capacity(n * s);
    for _ in 0..s {
        for c in &scales {
            x.push((c * r.normal()) as f32);
        }
    }
    x
}

/// Output MSE with ggml's own dequantizer.
fn mse_ggml(ty: QuantType, q: &[u8], w: &[f32], n: usize, x: Option<&[f32]>) -> f64 {
    let deq = reference::to_float(ty, q, w.len());
    let rows = w.len() / n;
    let mut total = 0.0;
    for r in 0..rows {
        let e: Vec<f64> = (0..n)
            .map(|i| w[r * n + i] as f64 - deq[r * n + i] as f64)
            .collect();
        match x {
            None => total += e.iter().map(|v| v * v).sum::<f64>(),
            Some(x) => {
                for xs in x.chunks_exact(n) {
                    let y: f64 = e.iter().zip(xs).map(|(a, &b)| a * b as f64).sum();
                    total += y * y;
                }
            }
        }
    }
    let per = x.map_or(n, |x| x.len() / n);
    total / (rows * per) as f64
}

struct Outcome {
    reference: f64,
    imatrix: f64,
    ours: f64,
}

/// Quantize with ggml (both paths) and with ours; check size and decoding.
fn run(ty: QuantType, w: &[f32], n: usize, x: Option<&[f32]>, s: usize) -> Outcome {
    let rows = w.len() / n;
    let g_ref = reference::quantize_chunk(ty, w, rows, n, None);
    let imatrix = match x {
        Some(x) => input_imatrix(x, n, s),
        None => vec![1.0; n],
    };
    let g_imat = reference::quantize_chunk(ty, w, rows, n, Some(&imatrix));
    let ours = quantize_output_aware(ty, w, n, x, s).unwrap();
    assert_eq!(ours.len(), g_ref.len(), "{ty:?}: size differs from ggml's");
    // ggml reads our bytes exactly as our dequantizer does.
    let by_ggml = reference::to_float(ty, &ours, w.len());
    let mut by_us = vec![0f32; w.len()];
    dequantize_rows(ty, &ours, n, &mut by_us).unwrap();
    assert!(
        by_ggml
            .iter()
            .zip(&by_us)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{ty:?}: ggml decodes our bytes differently"
    );
    // Our MSE helper agrees with the one written here on ggml's decoding.
    let a = mse_ggml(ty, &ours, w, n, x);
    let b = output_mse(ty, &ours, w, n, x, s).unwrap();
    assert!((a - b).abs() <= 1e-9 * a.abs().max(1e-300), "{a} vs {b}");
    Outcome {
        reference: mse_ggml(ty, &g_ref, w, n, x),
        imatrix: mse_ggml(ty, &g_imat, w, n, x),
        ours: a,
    }
}

fn check_anisotropic(ty: QuantType, need_gain: bool) {
    let x = anisotropic_inputs(N, SAMPLES, 99);
    for (ci, class) in [Weights::Gaussian, Weights::StudentT]
        .into_iter()
        .enumerate()
    {
        let w = weights(class, ROWS * N, 1000 + 10 * ty as u64 + ci as u64);
        let o = run(ty, &w, N, Some(&x), SAMPLES);
        let vs_ref = 100.0 * (1.0 - o.ours / o.reference);
        let vs_imat = 100.0 * (1.0 - o.ours / o.imatrix);
        println!(
            "{ty:?} {class:?}: ggml {:.4e}, ggml+imatrix {:.4e}, ours {:.4e} ({vs_ref:.1}% below ggml, {vs_imat:.1}% below ggml+imatrix)",
            o.reference, o.imatrix, o.ours
        );
        if need_gain {
            assert!(
                o.ours <= 0.9 * o.reference,
                "{ty:?} {class:?}: ours {} is not 10% below ggml {}",
                o.ours,
                o.reference
            );
        } else {
            assert!(
                o.ours <= o.reference * (1.0 + TIE),
                "{ty:?} {class:?}: worse than ggml"
            );
        }
        assert!(
            o.ours <= o.imatrix * (1.0 + TIE),
            "{ty:?} {class:?}: ours {} worse than ggml+imatrix {}",
            o.ours,
            o.imatrix
        );
    }
}

#[test]
fn q2_k_ten_percent_below_ggml() {
    check_anisotropic(QuantType::Q2_K, true);
}

#[test]
fn q3_k_ten_percent_below_ggml() {
    check_anisotropic(QuantType::Q3_K, true);
}

#[test]
fn q4_k_ten_percent_below_ggml() {
    check_anisotropic(QuantType::Q4_K, true);
}

/// Every other implemented quantized type: never worse than ggml.
#[test]
fn other_types_never_worse() {
    let others = [
        QuantType::Q5_K,
        QuantType::Q6_K,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::IQ4_NL,
        QuantType::IQ4_XS,
    ];
    for ty in others {
        if !is_implemented(ty) {
            println!("{ty:?}: not implemented in this build, skipped");
            continue;
        }
        check_anisotropic(ty, false);
    }
}

/// No inputs: weight-space error, never worse than ggml for any type.
#[test]
fn data_free_never_worse() {
    let n = 512;
    for ty in QuantType::ALL {
        if !is_implemented(ty) || format(ty).block_size == 1 {
            continue;
        }
        let w = weights(Weights::StudentT, 16 * n, 5 + ty as u64);
        let o = run(ty, &w, n, None, 0);
        println!(
            "{ty:?} weight space: ggml {:.4e}, ours {:.4e}",
            o.reference, o.ours
        );
        assert!(o.ours <= o.reference * (1.0 + TIE), "{ty:?}");
    }
}

/// Correlated inputs (shared latent factors, more samples than columns):
/// the full metric and the GPTQ candidate are used; same bounds.
#[test]
fn correlated_inputs() {
    let (rows, n, s, r) = (16, 512, 2048, 8);
    let mut rng = Rng::new(4);
    let scales: Vec<f64> = (0..n)
        .map(|_| 10f64.powf(2.0 * rng.uniform() - 1.0))
        .collect();
    let mix: Vec<f64> = (0..n * r).map(|_| rng.normal()).collect();
    let mut x = Vec::with_capacity(n * s);
    for _ in 0..s {
        let z: Vec<f64> = (0..r).map(|_| rng.normal()).collect();
        for i in 0..n {
            let f: f64 = (0..r).map(|k| mix[i * r + k] * z[k]).sum();
            x.push((scales[i] * (0.5 * rng.normal() + f)) as f32);
        }
    }
    for ty in [
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ] {
        let w = weights(Weights::Gaussian, rows * n, 77 + ty as u64);
        let o = run(ty, &w, n, Some(&x), s);
        println!(
            "{ty:?} correlated: ggml {:.4e}, ggml+imatrix {:.4e}, ours {:.4e}",
            o.reference, o.imatrix, o.ours
        );
        assert!(o.ours <= 0.9 * o.reference, "{ty:?}");
        assert!(o.ours <= o.imatrix * (1.0 + TIE), "{ty:?}");
    }
}

#[test]
fn independent_of_thread_count() {
    let (n, s) = (512, 300);
    let x = anisotropic_inputs(n, s, 3);
    let w = weights(Weights::StudentT, 24 * n, 8);
    let at = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| quantize_output_aware(QuantType::Q3_K, &w, n, Some(&x), s).unwrap())
    };
    assert_eq!(at(1), at(3));
}
