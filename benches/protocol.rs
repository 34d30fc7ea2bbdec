//! The measured protocol, printed: per layer of a synthetic transformer block
//! and per type, size, KL, top-1 agreement and measured speedup over F32 on
//! ggml's CPU backend; the two speedup cases where the compression ratio
//! misleads; the mixed-precision plan; and the output-aware quantizer
//! against ggml's reference at equal size.
//!
//! `cargo bench --bench protocol`

use std::time::Instant;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "report/optimize.rs"]
mod optimize_report;
#[path = "report/real.rs"]
mod real;

use ggml_qat::ggml::{Context, Tensor};
use ggml_qat::qat::measure::{compare, Weights};
use ggml_qat::qat::plan::type_for_row;
use ggml_qat::qat::sensitivity::PLAN_LADDER;
use ggml_qat::qat::{metrics, Config, Session};
use ggml_qat::quant::QuantType;
use ggml_qat::rng::SeedSequence;

const TYPES: [QuantType; 8] = [
    QuantType::Q2_K,
    QuantType::Q3_K,
    QuantType::Q4_K,
    QuantType::Q5_K,
    QuantType::Q6_K,
    QuantType::Q8_0,
    QuantType::IQ4_XS,
    QuantType::F16,
];

fn normal(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let s = SeedSequence::new(seed).next_stream();
    (0..n).map(|i| s.normal_at(i as u64) as f32 * std).collect()
}

fn f32_tensor(ctx: &Context, values: &[f32], ne0: usize) -> Tensor {
    let mut t = ctx
        .new_tensor(
            QuantType::F32.ggml_id(),
            &[ne0 as i64, (values.len() / ne0) as i64],
        )
        .unwrap();
    t.bytes_mut().unwrap().copy_from_slice(
        &values
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect::<Vec<_>>(),
    );
    t.finish()
}

/// Median speedup of `ty` over F32 for `W (ne0 × ne1) · X (ne0 × samples)`.
fn speedup(ty: QuantType, ne0: usize, ne1: usize, samples: usize, runs: usize) -> (f64, f64, f64) {
    let w = normal(ne0 * ne1, 1.0 / (ne0 as f32).sqrt(), 7);
    let x = normal(ne0 * samples, 1.0, 8);
    let a = Weights::quantized(QuantType::F32, &w, ne0).unwrap();
    let b = Weights::quantized(ty, &w, ne0).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let backend = ggml_qat::ggml::compute::Backend::cpu(threads).unwrap();
    let c = compare(&backend, &a, &b, &x, samples, runs).unwrap();
    let (ta, tb) = (c.time_a.as_secs_f64(), c.time_b.as_secs_f64());
    (ta * 1e3, tb * 1e3, ta / tb)
}

fn main() {
    let start = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("ggml-qat protocol report (ggml CPU backend, {threads} threads; times are medians)\n");

    println!("speedup over F32 where the compression ratio misleads:");
    println!(
        "{:<34} {:>10} {:>10} {:>9} {:>9}",
        "case", "F32 ms", "quant ms", "speedup", "1/ratio"
    );
    for (label, ty, ne0, ne1, samples) in [
        (
            "Q4_K 4096x4096 x 1 (mat-vec)",
            QuantType::Q4_K,
            4096,
            4096,
            1,
        ),
        (
            "Q8_0 2048x2048 x 64 inputs",
            QuantType::Q8_0,
            2048,
            2048,
            64,
        ),
    ] {
        let (ta, tb, s) = speedup(ty, ne0, ne1, samples, 15);
        let inv_ratio = 4.0 * ty.format().block_size as f64 / ty.format().block_bytes as f64;
        println!("{label:<34} {ta:>10.3} {tb:>10.3} {s:>8.2}x {inv_ratio:>8.2}x");
    }

    let block: [(&str, usize, usize); 6] = [
        ("token_embd 512x5000", 512, 5000),
        ("attn_q 512x512", 512, 512),
        ("ffn_up 512x2048", 512, 2048),
        ("ffn_down 2048x512", 2048, 512),
        ("attn_k 512x512", 512, 512),
        ("attn_v 512x512", 512, 512),
    ];
    let session = Session::new(Config {
        calibration_samples: 128,
        ..Config::default()
    });
    let ctx = Context::new_owned(256 << 20, false).unwrap();
    let tensors: Vec<Tensor> = block
        .iter()
        .enumerate()
        .map(|(i, &(_, ne0, ne1))| {
            f32_tensor(
                &ctx,
                &normal(ne0 * ne1, 1.0 / (ne0 as f32).sqrt(), 100 + i as u64),
                ne0,
            )
        })
        .collect();

    layer_table(&session, &block[..4], &tensors[..4]);

    plans(&session, &block, &tensors);
    gate_report(&session, &block, &tensors, 1024);

    println!(
        "\n== real weights: all-MiniLM-L6-v2, word embedding and encoder layer 0 ({}) ==",
        real::path().display()
    );
    match real::load() {
        Err(e) => println!("not available ({e}); scripts/fetch-minilm.sh downloads them"),
        Ok(matrices) => {
            let real_block: Vec<(&str, usize, usize)> = real::LAYERS
                .iter()
                .zip(&matrices)
                .map(|((label, _), m)| (*label, m.ne0, m.values.len() / m.ne0))
                .collect();
            let real_ctx = Context::new_owned(128 << 20, false).unwrap();
            let real_tensors: Vec<Tensor> = matrices
                .iter()
                .map(|m| f32_tensor(&real_ctx, &m.values, m.ne0))
                .collect();
            layer_table(&session, &real_block, &real_tensors);
            plans(&session, &real_block, &real_tensors);
            gate_report(&session, &real_block, &real_tensors, 1024);
        }
    }
    println!("\noutput-aware quantization against ggml (equal size: same type):");
    optimize_report::report();
    println!("\n({:.1} s)", start.elapsed().as_secs_f64());
}

/// Plans the block under `s`'s configuration and prints the plan with its
/// top-1 agreement on the planning inputs and on held-out inputs.
fn plan_report(
    s: &Session,
    block: &[(&str, usize, usize)],
    tensors: &[Tensor],
) -> ggml_qat::error::Result<()> {
    s.set_seed(2024);
    let plan = s.plan_mixed_precision(tensors)?;
    println!(
        "\nmixed-precision plan, target {:.0}% reduction, accuracy gate {:.0}% top-1:",
        100.0 * s.config().memory_reduction_target,
        100.0 * s.config().accuracy_threshold
    );
    // The same seed replays the planning inputs; then fresh, held-out ones.
    s.set_seed(2024);
    let planning: Vec<f64> = tensors
        .iter()
        .zip(&plan)
        .map(|(t, ty)| s.layer_error(t, *ty).unwrap().top1)
        .collect();
    let held_out: Vec<f64> = tensors
        .iter()
        .zip(&plan)
        .map(|(t, ty)| s.layer_error(t, *ty).unwrap().top1)
        .collect();
    println!(
        "{:<22} {:<7} {:>10} {:>16} {:>16}",
        "layer", "type", "bytes", "top-1 (planning)", "top-1 (held-out)"
    );
    let (mut f32_total, mut total) = (0usize, 0usize);
    for (i, ((name, _, _), t)) in block.iter().zip(tensors).enumerate() {
        let bytes = Context::data_bytes(plan[i].ggml_id(), &t.ne()).unwrap();
        f32_total += t.nbytes();
        total += bytes;
        println!(
            "{:<22} {:<7} {:>10} {:>15.1}% {:>15.1}%",
            name,
            plan[i].format().name,
            bytes,
            100.0 * planning[i],
            100.0 * held_out[i]
        );
    }
    let min = |v: &[f64]| v.iter().fold(1.0f64, |m, &x| m.min(x));
    println!(
        "total {f32_total} -> {total} bytes: {:.1}% reduction; lowest top-1 {:.1}% (planning inputs), {:.1}% (held-out)",
        100.0 * (1.0 - total as f64 / f32_total as f64),
        100.0 * min(&planning),
        100.0 * min(&held_out)
    );
    Ok(())
}

/// Top-1 agreement of every layer at every type of the planner's ladder on
/// `samples` synthetic inputs (more than the planner uses, so the figures
/// are tight), the smallest type of each layer that meets the configured
/// accuracy gate, and the reduction when every layer is at that type: the
/// most any plan can reach under the gate.
fn gate_report(
    session: &Session,
    block: &[(&str, usize, usize)],
    tensors: &[Tensor],
    samples: usize,
) {
    let s = Session::new(Config {
        calibration_samples: samples,
        ..session.config().clone()
    });
    let gate = s.config().accuracy_threshold as f64;
    println!(
        "\nwhat a {:.0}% top-1 gate allows (top-1 on {samples} synthetic samples per layer and type):",
        100.0 * gate
    );
    let mut head = format!("{:<22}", "layer");
    for ty in PLAN_LADDER {
        head += &format!(" {:>7}", ty.format().name);
    }
    println!("(a layer whose rows do not fit a type is measured at llama.cpp's fallback, as the planner does)");
    println!("{head}  smallest passing");
    let (mut f32_total, mut least) = (0usize, 0usize);
    for ((name, _, _), t) in block.iter().zip(tensors) {
        let mut line = format!("{name:<22}");
        let mut smallest = None;
        for ty in PLAN_LADDER {
            s.set_seed(7);
            let top1 = s.layer_error(t, ty).unwrap().top1;
            line += &format!(" {:>6.1}%", 100.0 * top1);
            if smallest.is_none() && (top1 >= gate || ty == QuantType::F16) {
                smallest = Some(ty);
            }
        }
        let ty = type_for_row(smallest.expect("F16 always passes"), t.row_len());
        f32_total += t.nbytes();
        least += Context::data_bytes(ty.ggml_id(), &t.ne()).unwrap();
        println!("{line}  {}", ty.format().name);
    }
    println!(
        "every layer at its smallest passing type: {:.1}% reduction (target {:.0}%)",
        100.0 * (1.0 - least as f64 / f32_total as f64),
        100.0 * s.config().memory_reduction_target
    );
}

/// Per layer and type: size, ratio to F32, KL, top-1 agreement and measured
/// speedup over F32, on the session's synthetic inputs. Types a layer's rows
/// cannot hold are replaced by llama.cpp's fallback (shown once).
fn layer_table(session: &Session, block: &[(&str, usize, usize)], tensors: &[Tensor]) {
    println!(
        "\nper layer and type, on {} synthetic N(0,1) samples, KL at T = {}:",
        session.config().calibration_samples,
        session.config().temperature
    );
    println!(
        "{:<22} {:<7} {:>10} {:>7} {:>11} {:>7} {:>8}",
        "layer", "type", "bytes", "ratio", "KL", "top-1", "speedup"
    );
    let backend = session.cpu_backend().unwrap();
    for ((name, ne0, _), t) in block.iter().zip(tensors) {
        let values = t.values().unwrap();
        let a = Weights::quantized(QuantType::F32, &values, *ne0).unwrap();
        let (x, n) = session.inputs(*ne0, None).unwrap();
        let mut types: Vec<QuantType> = TYPES.iter().map(|&ty| type_for_row(ty, *ne0)).collect();
        types.dedup();
        for ty in types {
            let b = Weights::quantized(ty, &values, *ne0).unwrap();
            let c = compare(&backend, &a, &b, &x, n, 5).unwrap();
            let kl = metrics::mean_kl(&c.y_a, &c.y_b, a.ne1, session.config().temperature as f64);
            let top1 = metrics::top1_agreement(&c.y_a, &c.y_b, a.ne1);
            println!(
                "{:<22} {:<7} {:>10} {:>7.4} {:>11.3e} {:>6.1}% {:>7.2}x",
                name,
                ty.format().name,
                b.bytes.len(),
                b.bytes.len() as f64 / a.bytes.len() as f64,
                kl,
                100.0 * top1,
                c.time_a.as_secs_f64() / c.time_b.as_secs_f64()
            );
        }
    }
}

/// The plan under the session's gate, or when that cannot reach the target,
/// why, and the plan under a 95% gate.
fn plans(session: &Session, block: &[(&str, usize, usize)], tensors: &[Tensor]) {
    for gate in [session.config().accuracy_threshold, 0.95] {
        let s = Session::new(Config {
            accuracy_threshold: gate,
            ..session.config().clone()
        });
        match plan_report(&s, block, tensors) {
            Ok(()) => break,
            Err(e) => println!(
                "\nmixed-precision plan with a {:.0}% top-1 gate: {e}",
                100.0 * gate
            ),
        }
    }
}
