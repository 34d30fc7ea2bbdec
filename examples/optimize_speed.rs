//! Time and objective of the `--optimize` search on one chunk of rows, the
//! way the model tool runs it (`quantize_chunk`, data-free: no column
//! weights): ggml's objective, the kept one, rows changed, seconds. A small
//! reproducible input for callgrind/perf.
//!
//! `cargo run --release --example optimize_speed -- TYPE [ROWS] [N]`
//! (TYPE: q4_0, q4_k, q6_k, q8_0, ...; default 64 rows of 640), or
//! `... -- TYPE --safetensors FILE` for every 2-D F32 tensor of a
//! safetensors file (e.g. all-MiniLM-L6-v2), summed.

use std::time::Instant;

use ggml_qat::model::chunk::quantize_chunk;
use ggml_qat::quant::QuantType;

fn gaussian(n: usize, mut s: u64) -> Vec<f32> {
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (((z ^ (z >> 31)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let g = (-2.0 * next().ln()).sqrt() * (2.0 * std::f64::consts::PI * next()).cos();
            // a heavier tail now and then, as real weights have
            let t = if next() < 0.01 { 4.0 } else { 1.0 };
            (0.02 * g * t) as f32
        })
        .collect()
}

fn parse_type(s: &str) -> QuantType {
    QuantType::ALL
        .iter()
        .copied()
        .find(|t| format!("{t:?}").eq_ignore_ascii_case(s))
        .unwrap_or_else(|| panic!("unknown type {s}"))
}

/// The 2-D F32 tensors of a safetensors file: (name, rows of `n`, n).
fn safetensors(path: &str) -> Vec<(String, Vec<f32>, usize)> {
    let buf = std::fs::read(path).expect("read safetensors");
    let hl = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
    let head: serde_json::Value = serde_json::from_slice(&buf[8..8 + hl]).unwrap();
    let data = &buf[8 + hl..];
    let mut out = Vec::new();
    for (name, t) in head.as_object().unwrap() {
        if name == "__metadata__" || t["dtype"] != "F32" {
            continue;
        }
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        if shape.len() != 2 {
            continue;
        }
        let off = t["data_offsets"].as_array().unwrap();
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        let w: Vec<f32> = data[a..b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.push((name.clone(), w, shape[1]));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ty = parse_type(args.first().map(String::as_str).unwrap_or("q4_0"));
    let tensors = if args.get(1).map(String::as_str) == Some("--safetensors") {
        safetensors(&args[2])
    } else {
        let rows: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(64);
        let n: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(640);
        vec![("synthetic".to_string(), gaussian(rows * n, 7), n)]
    };
    let (mut g, mut k, mut changed, mut secs) = (0f64, 0f64, 0u64, 0f64);
    for (name, w, n) in &tensors {
        let Some(rb) = ty.format().row_bytes(*n) else {
            continue;
        };
        let rows = w.len() / n;
        let mut dst = vec![0u8; rows * rb];
        let t = Instant::now();
        let s = quantize_chunk(ty, w, *n, &mut dst, None, None, true, None)
            .unwrap()
            .unwrap();
        let dt = t.elapsed().as_secs_f64();
        if tensors.len() > 1 {
            println!(
                "{name:48} {rows:6}x{n:<5} ggml {:.6e} kept {:.6e} ({:+.3}%) changed {:6} {dt:.3}s",
                s.ggml,
                s.kept,
                100.0 * (s.kept / s.ggml - 1.0),
                s.rows_changed
            );
        }
        g += s.ggml;
        k += s.kept;
        changed += s.rows_changed;
        secs += dt;
    }
    println!(
        "{ty:?}: ggml {g:.9e} kept {k:.9e} ({:+.4}%) rows changed {changed} {secs:.3}s",
        100.0 * (k / g - 1.0)
    );
}
