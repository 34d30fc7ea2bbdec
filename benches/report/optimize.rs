//! Output-aware quantization (`qat::optimize`) next to ggml: output MSE of
//! ggml's reference quantizer (no imatrix), of ggml with the inputs' imatrix
//! (per-column mean of x²), and of ours, per type and weight class, on
//! anisotropic calibration inputs (per-column scales log-uniform in
//! 0.1..10). Margins are `1 − ours/ggml` in %. "held-out" repeats the
//! measurement on fresh inputs from the same distribution (not seen by the
//! optimizer). The last block is the data-free case (no inputs: weight-space
//! MSE).
//!
//! Printed by `cargo bench --bench protocol`.

use ggml_qat::ggml::reference;
use ggml_qat::qat::optimize::{input_imatrix, output_mse, quantize_output_aware_with, Options};
use ggml_qat::quant::{is_implemented, QuantType};
use std::time::Instant;

use crate::common::{weights, Rng, Weights};

/// `s` samples of width `n`, column `i` scaled by `scales[i]`.
fn inputs(scales: &[f32], s: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let mut x = Vec::with_capacity(scales.len() * s);
    for _ in 0..s {
        for &c in scales {
            x.push(c * r.normal() as f32);
        }
    }
    x
}

fn margin(ours: f64, theirs: f64) -> f64 {
    100.0 * (1.0 - ours / theirs)
}

/// One table row's inputs: weights `w` (rows of `n`) of type `ty`,
/// calibration and held-out inputs of `s` samples, the imatrix ggml gets.
struct Case<'a> {
    ty: QuantType,
    w: &'a [f32],
    n: usize,
    x: &'a [f32],
    x_test: &'a [f32],
    s: usize,
    imatrix: &'a [f32],
}

/// Quantizes `case` with ggml (with and without the imatrix) and with the
/// output-aware quantizer, and prints their output MSE and the margins.
fn print_row(label: &str, case: &Case, opts: &Options) {
    let Case {
        ty,
        w,
        n,
        x,
        x_test,
        s,
        imatrix,
    } = *case;
    let rows = w.len() / n;
    let g_ref = reference::quantize_chunk(ty, w, rows, n, None);
    let g_imat = reference::quantize_chunk(ty, w, rows, n, Some(imatrix));
    let t = Instant::now();
    let (ours, choice) = quantize_output_aware_with(ty, w, n, Some(x), s, opts).unwrap();
    let dt = t.elapsed().as_secs_f64();
    let mse = |q: &[u8], x: &[f32]| output_mse(ty, q, w, n, Some(x), s).unwrap();
    let (a, b, o) = (mse(&g_ref, x), mse(&g_imat, x), mse(&ours, x));
    let (ha, hb, ho) = (
        mse(&g_ref, x_test),
        mse(&g_imat, x_test),
        mse(&ours, x_test),
    );
    println!(
        "{:<7} {:<9} {:>11.4e} {:>11.4e} {:>11.4e} {:>7.1}% {:>7.1}% | {:>7.1}% {:>7.1}% | {:>3}/{:>2}/{:>3} {:>5.2} {:>5.1}s",
        format!("{ty:?}"),
        label,
        a,
        b,
        o,
        margin(o, a),
        margin(o, b),
        margin(ho, ha),
        margin(ho, hb),
        choice.reference,
        choice.imatrix,
        choice.refined,
        choice.shrinkage,
        dt
    );
}

/// Prints the table (64 rows x 1024, 256 samples).
pub fn report() {
    let (rows, n, s) = (64, 1024, 256);
    let mut r = Rng::new(42);
    let scales: Vec<f32> = (0..n)
        .map(|_| 10f64.powf(2.0 * r.uniform() - 1.0) as f32)
        .collect();
    let x = inputs(&scales, s, 1);
    let x_test = inputs(&scales, s, 2);
    let imatrix = input_imatrix(&x, n, s);
    let types = [
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
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
    let opts = Options::default();
    println!(
        "W: {rows} x {n}; calibration X: {s} samples, column scales 0.1..10 (log-uniform); held-out X: {s} fresh samples"
    );
    println!(
        "{:<7} {:<9} {:>11} {:>11} {:>11} {:>8} {:>8} | {:>8} {:>8} | {:>9} {:>5} {:>6}",
        "type",
        "weights",
        "ggml ref",
        "ggml+imat",
        "ours",
        "vs ref",
        "vs imat",
        "held ref",
        "held im",
        "rows r/i/o",
        "alpha",
        "time"
    );
    let t_all = Instant::now();
    for ty in types {
        if !is_implemented(ty) {
            println!("{:<7} (not implemented in this build)", format!("{ty:?}"));
            continue;
        }
        for class in [Weights::Gaussian, Weights::StudentT] {
            let w = weights(class, rows * n, 7 + ty as u64);
            let case = Case {
                ty,
                w: &w,
                n,
                x: &x,
                x_test: &x_test,
                s,
                imatrix: &imatrix,
            };
            print_row(&format!("{class:?}"), &case, &opts);
        }
    }
    // Correlated inputs: 8 shared latent factors, more samples than columns;
    // the search then uses the full metric and the GPTQ candidate.
    let (cn, cs, crows, rank) = (512, 2048, 32, 8);
    let mut r = Rng::new(4);
    let cscales: Vec<f64> = (0..cn)
        .map(|_| 10f64.powf(2.0 * r.uniform() - 1.0))
        .collect();
    let mix: Vec<f64> = (0..cn * rank).map(|_| r.normal()).collect();
    let correlated = |seed: u64| {
        let mut r = Rng::new(seed);
        let mut x = Vec::with_capacity(cn * cs);
        for _ in 0..cs {
            let z: Vec<f64> = (0..rank).map(|_| r.normal()).collect();
            for i in 0..cn {
                let f: f64 = (0..rank).map(|k| mix[i * rank + k] * z[k]).sum();
                x.push((cscales[i] * (0.5 * r.normal() + f)) as f32);
            }
        }
        x
    };
    let cx = correlated(10);
    let cx_test = correlated(11);
    let cimatrix = input_imatrix(&cx, cn, cs);
    println!();
    println!(
        "correlated inputs: W {crows} x {cn}; X {cs} samples = column scales 0.1..10 x ({rank} shared factors + 0.5 noise); held-out {cs} fresh"
    );
    for ty in &types[..5] {
        let ty = *ty;
        let w = weights(Weights::Gaussian, crows * cn, 70 + ty as u64);
        let case = Case {
            ty,
            w: &w,
            n: cn,
            x: &cx,
            x_test: &cx_test,
            s: cs,
            imatrix: &cimatrix,
        };
        print_row("Gaussian", &case, &opts);
    }
    println!();
    println!("data-free (no inputs: weight-space MSE)");
    println!(
        "{:<7} {:<9} {:>11} {:>11} {:>8}",
        "type", "weights", "ggml ref", "ours", "vs ref"
    );
    for ty in types {
        if !is_implemented(ty) {
            continue;
        }
        for class in [Weights::Gaussian, Weights::StudentT] {
            let w = weights(class, rows * n, 7 + ty as u64);
            let g_ref = reference::quantize_chunk(ty, &w, rows, n, None);
            let (ours, _) = quantize_output_aware_with(ty, &w, n, None, 0, &opts).unwrap();
            let a = output_mse(ty, &g_ref, &w, n, None, 0).unwrap();
            let o = output_mse(ty, &ours, &w, n, None, 0).unwrap();
            println!(
                "{:<7} {:<9} {:>11.4e} {:>11.4e} {:>7.1}%",
                format!("{ty:?}"),
                format!("{class:?}"),
                a,
                o,
                margin(o, a)
            );
        }
    }
    println!("total {:.1}s", t_all.elapsed().as_secs_f64());
}
