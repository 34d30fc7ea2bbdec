//! Differential tests of the non-K formats (F32, F16, BF16, Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0, IQ4_NL, IQ4_XS) against the ggml we link:
//! - every type × input class × shape × with/without importance matrix
//!   gives the bytes of `ggml_quantize_chunk`, and our dequantizer gives
//!   ggml's `to_float` bit for bit (NaN equal to NaN only with equal bits);
//! - the same on inputs exactly representable in F16 and BF16, on special
//!   values (NaN, ±∞, ±0, subnormals, FLT_MAX), and on random bytes for the
//!   dequantizers;
//! - a per-format bound on the round-trip error;
//! - the same bytes on a 1-thread and a 4-thread rayon pool.

mod common;

use common::{first_byte_diff, first_float_diff, make_imatrix, make_input, shapes, Input, Rng};
use ggml_qat::ggml::reference;
use ggml_qat::quant::float::{bf16_to_fp32, fp16_to_fp32, fp32_to_bf16, fp32_to_fp16};
use ggml_qat::quant::{dequantize_rows, format, quantize_rows, QuantType};

/// Every registered format but the K-quants (tests/quant_vs_ggml_k.rs), so
/// a format added to the registry is tested here without being listed.
fn types() -> Vec<QuantType> {
    let all: Vec<QuantType> = QuantType::ALL
        .into_iter()
        .filter(|t| !format(*t).name.ends_with("_K"))
        .collect();
    assert_eq!(all.len(), 10, "F32, F16, BF16, Q4_0..Q8_0, IQ4_NL, IQ4_XS");
    all
}

/// ggml's `to_float` of `ty`; F32 has none in ggml's type traits (its
/// "dequantization" is the identity), so it is the little-endian copy.
fn ggml_to_float(ty: QuantType, bytes: &[u8], n: usize) -> Vec<f32> {
    if ty == QuantType::F32 {
        return bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
    }
    reference::to_float(ty, bytes, n)
}

/// Quantizes `src` both ways and dequantizes ggml's bytes both ways; any
/// difference is appended to `failures`.
fn compare_one(
    ty: QuantType,
    src: &[f32],
    nrows: usize,
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    what: &str,
    failures: &mut Vec<String>,
) {
    let f = format(ty);
    let want = reference::quantize_chunk(ty, src, nrows, n_per_row, imatrix);
    let mut got = vec![0u8; want.len()];
    quantize_rows(ty, src, n_per_row, &mut got, imatrix).unwrap();
    if let Some((i, g, w)) = first_byte_diff(&got, &want) {
        let nbad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        failures.push(format!(
            "{what}: byte {i} (block {}, offset {}): ours {g:#04x} ggml {w:#04x} ({nbad} bytes differ)",
            i / f.block_bytes,
            i % f.block_bytes
        ));
    }
    let want_f = ggml_to_float(ty, &want, nrows * n_per_row);
    let mut got_f = vec![0f32; want_f.len()];
    dequantize_rows(ty, &want, n_per_row, &mut got_f).unwrap();
    if let Some((i, g, w)) = first_float_diff(&got_f, &want_f) {
        failures.push(format!(
            "{what}: dequantized value {i}: ours {g:e} ({:#010x}) ggml {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        ));
    }
}

fn assert_no_failures(cases: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {cases} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// How inputs are post-processed before quantization.
#[derive(Copy, Clone, Debug)]
enum Source {
    F32,
    /// Rounded to F16 and back: exactly representable in F16.
    F16,
    /// Rounded to BF16 and back.
    BF16,
}

fn sourced(src: Vec<f32>, source: Source) -> Vec<f32> {
    match source {
        Source::F32 => src,
        Source::F16 => src
            .into_iter()
            .map(|x| fp16_to_fp32(fp32_to_fp16(x)))
            .collect(),
        Source::BF16 => src
            .into_iter()
            .map(|x| bf16_to_fp32(fp32_to_bf16(x)))
            .collect(),
    }
}

/// All classes × shapes × imatrix of one type and source; returns the
/// number of cases.
fn check_type(ty: QuantType, source: Source) -> usize {
    let f = format(ty);
    let mut cases = 0;
    let mut failures = Vec::new();
    for (ci, class) in Input::ALL.into_iter().enumerate() {
        for (si, (nrows, n_per_row)) in shapes(f.block_size).into_iter().enumerate() {
            let seed = 1000 * ci as u64 + si as u64 + ty as u64 * 7919 + source as u64 * 104729;
            let src = sourced(make_input(class, nrows * n_per_row, seed), source);
            let imatrix = make_imatrix(n_per_row, seed);
            for imat in [None, Some(imatrix.as_slice())] {
                cases += 1;
                let what = format!(
                    "{ty:?} {source:?} {class:?} {nrows}x{n_per_row} imatrix={}",
                    imat.is_some()
                );
                compare_one(ty, &src, nrows, n_per_row, imat, &what, &mut failures);
            }
        }
    }
    assert_no_failures(cases, &failures);
    cases
}

/// 11 classes × 5 shapes × 2 (with/without imatrix).
const CASES_PER_SOURCE: usize = 110;

macro_rules! differential {
    ($($name:ident: $ty:expr,)*) => {$(
        #[test]
        fn $name() {
            for source in [Source::F32, Source::F16, Source::BF16] {
                assert_eq!(check_type($ty, source), CASES_PER_SOURCE);
            }
        }
    )*};
}

differential! {
    f32_matches_ggml: QuantType::F32,
    f16_matches_ggml: QuantType::F16,
    bf16_matches_ggml: QuantType::BF16,
    q4_0_matches_ggml: QuantType::Q4_0,
    q4_1_matches_ggml: QuantType::Q4_1,
    q5_0_matches_ggml: QuantType::Q5_0,
    q5_1_matches_ggml: QuantType::Q5_1,
    q8_0_matches_ggml: QuantType::Q8_0,
    iq4_nl_matches_ggml: QuantType::IQ4_NL,
    iq4_xs_matches_ggml: QuantType::IQ4_XS,
}

/// Blocks built from special values: NaN (several payloads), ±∞, ±0,
/// subnormals, FLT_MAX, values whose scale under- or overflows in F16, ties.
fn special_rows(n_per_row: usize, nrows: usize, seed: u64) -> Vec<f32> {
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7F80_0001),
        f32::from_bits(0xFFBF_FFFF),
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::from_bits(1),
        -f32::from_bits(0x0000_1234),
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE * 3.0,
        f32::MAX,
        -f32::MAX,
        1e-39,
        3e-38,
        -7e-38,
        65504.0 * 8.0,
        1e-7,
        0.5,
        -0.5,
        1.0,
        -1.0,
    ];
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(n_per_row * nrows);
    // Each block gets one "mode": mostly specials, a Gaussian with a few
    // specials sprinkled in, or all equal to one special value.
    for i in 0..nrows * n_per_row / 32 {
        let mode = i % 4;
        let fill = specials[(r.next_u64() % specials.len() as u64) as usize];
        for _ in 0..32 {
            let pick = specials[(r.next_u64() % specials.len() as u64) as usize];
            let v = match mode {
                0 => pick,
                1 if r.next_u64() % 8 == 0 => pick,
                1 => r.normal() as f32,
                2 => fill,
                _ => {
                    // Signed zeros and tiny values mixed with ±x ties.
                    let s = [0.0, -0.0, 2.5, -2.5, 1e-41, -1e-41];
                    s[(r.next_u64() % s.len() as u64) as usize]
                }
            };
            out.push(v);
        }
    }
    out
}

/// Special values through every type, with and without imatrix.
#[test]
fn special_values_match_ggml() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for ty in types() {
        let n_per_row = format(ty).block_size.max(32) * 8;
        let nrows = 64;
        for seed in 0..4u64 {
            let src = special_rows(n_per_row, nrows, seed);
            let imatrix = make_imatrix(n_per_row, seed);
            for imat in [None, Some(imatrix.as_slice())] {
                cases += 1;
                let what = format!("{ty:?} specials seed {seed} imatrix={}", imat.is_some());
                compare_one(ty, &src, nrows, n_per_row, imat, &what, &mut failures);
            }
        }
    }
    assert_no_failures(cases, &failures);
}

/// Dequantizing arbitrary bytes (random scales, NaN/∞ halves included)
/// gives ggml's floats bit for bit.
#[test]
fn dequantize_random_bytes_matches_ggml() {
    let mut r = Rng::new(42);
    let mut failures = Vec::new();
    for ty in types() {
        let f = format(ty);
        let n = 256 * 256;
        let nbytes = n / f.block_size * f.block_bytes;
        let bytes: Vec<u8> = (0..nbytes).map(|_| r.next_u64() as u8).collect();
        let want = ggml_to_float(ty, &bytes, n);
        let mut got = vec![0f32; n];
        dequantize_rows(ty, &bytes, 256, &mut got).unwrap();
        if let Some((i, g, w)) = first_float_diff(&got, &want) {
            failures.push(format!(
                "{ty:?}: value {i}: ours {:#010x} ggml {:#010x}",
                g.to_bits(),
                w.to_bits()
            ));
        }
    }
    assert_no_failures(types().len(), &failures);
}

/// Largest round-trip error allowed for one block `x` (a super-block for
/// IQ4_XS), for finite inputs whose scales are normal F16 numbers.
///
/// With an importance matrix the scale (and minimum) come from a weighted
/// search; an element of weight zero may then land anywhere on the grid, so
/// only the block's range (a sanity bound) is promised per element; the
/// weighted error is checked separately (`imatrix_never_worse_weighted`).
fn error_bound(ty: QuantType, x: &[f32], imatrix: bool) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let range =
        x.iter().fold(-f32::MAX, |m, &v| m.max(v)) - x.iter().fold(f32::MAX, |m, &v| m.min(v));
    let weighted = matches!(
        ty,
        QuantType::Q4_0
            | QuantType::Q4_1
            | QuantType::Q5_0
            | QuantType::Q5_1
            | QuantType::IQ4_NL
            | QuantType::IQ4_XS
    );
    if imatrix && weighted {
        return amax.max(range) + 1e-6 * amax;
    }
    error_bound_reference(ty, x)
}

/// [`error_bound`] without importance matrix.
fn error_bound_reference(ty: QuantType, x: &[f32]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let min = x.iter().fold(f32::MAX, |m, &v| m.min(v));
    let max = x.iter().fold(-f32::MAX, |m, &v| m.max(v));
    let h = 1.0 / 2048.0; // relative rounding of an F16 scale
    let tiny = 1e-6 * amax;
    match ty {
        QuantType::F32 => 0.0,
        // Relative half-ulp of F16 / BF16 (normal range).
        QuantType::F16 => amax * h,
        QuantType::BF16 => amax / 256.0,
        // Symmetric: half a step, a whole step where the extreme opposite
        // to the scale's sign clips (q=+8 is not representable), plus the
        // F16 rounding of d times the largest |q|.
        QuantType::Q4_0 => amax / 8.0 + 8.0 * (amax / 8.0) * h + tiny,
        QuantType::Q5_0 => amax / 16.0 + 16.0 * (amax / 16.0) * h + tiny,
        // Half a step; F16 rounding of d (× 15 or 31) and of the minimum.
        QuantType::Q4_1 => {
            let d = (max - min) / 15.0;
            d / 2.0 + 15.0 * d * h + min.abs() * h + tiny
        }
        QuantType::Q5_1 => {
            let d = (max - min) / 31.0;
            d / 2.0 + 31.0 * d * h + min.abs() * h + tiny
        }
        QuantType::Q8_0 => {
            let d = amax / 127.0;
            d / 2.0 + 127.0 * d * h + tiny
        }
        // Non-linear grids with a searched scale: a quarter of the block's
        // largest magnitude (the widest half-gap of the grid is 12/113 of
        // the scale and the search may shrink the scale).
        QuantType::IQ4_NL | QuantType::IQ4_XS => amax / 4.0,
        _ => unreachable!(),
    }
}

/// dequantize(quantize(x)) stays within `error_bound` per block.
#[test]
fn round_trip_error_is_bounded() {
    let classes = [
        Input::Gaussian,
        Input::Laplace,
        Input::HeavyTails,
        Input::RareOutliers,
        Input::Zeros,
        Input::Constant,
        Input::OnePositive,
        Input::OneNegative,
        Input::AlternatingRamp,
    ];
    for ty in types() {
        let f = format(ty);
        let n_per_row = 1024;
        let nrows = 64;
        let group = if ty == QuantType::IQ4_XS { 256 } else { 32 };
        for (ci, class) in classes.into_iter().enumerate() {
            let src = make_input(class, nrows * n_per_row, 77 + ci as u64);
            let imatrix = make_imatrix(n_per_row, 5);
            for imat in [None, Some(imatrix.as_slice())] {
                let mut q = vec![0u8; nrows * f.row_bytes(n_per_row).unwrap()];
                quantize_rows(ty, &src, n_per_row, &mut q, imat).unwrap();
                let mut back = vec![0f32; src.len()];
                dequantize_rows(ty, &q, n_per_row, &mut back).unwrap();
                for (b, (xs, ys)) in src.chunks(group).zip(back.chunks(group)).enumerate() {
                    let bound = error_bound(ty, xs, imat.is_some());
                    for (x, y) in xs.iter().zip(ys) {
                        let err = (x - y).abs();
                        assert!(
                            err <= bound,
                            "{ty:?} {class:?} imatrix={} block {b}: |{x} - {y}| = {err} > {bound}",
                            imat.is_some()
                        );
                    }
                }
            }
        }
    }
}

/// With an importance matrix, the importance-weighted squared error of a
/// row is no larger than that of the reference quantization (which ignores
/// the weights), up to 1%. Not a theorem (ggml's search weights are
/// `imatrix * sqrt(sigma2 + x^2)`, and scales are rounded to F16), but a
/// property the weighted paths must show on ordinary data: a broken search
/// fails it at once.
#[test]
fn imatrix_never_worse_weighted() {
    let classes = [
        Input::Gaussian,
        Input::Laplace,
        Input::HeavyTails,
        Input::RareOutliers,
    ];
    for ty in [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
    ] {
        let f = format(ty);
        let n_per_row = 1024;
        let nrows = 64;
        for (ci, class) in classes.into_iter().enumerate() {
            let src = make_input(class, nrows * n_per_row, 300 + ci as u64);
            let imatrix = make_imatrix(n_per_row, 6);
            let weighted_err = |imat: Option<&[f32]>| {
                let mut q = vec![0u8; nrows * f.row_bytes(n_per_row).unwrap()];
                quantize_rows(ty, &src, n_per_row, &mut q, imat).unwrap();
                let mut back = vec![0f32; src.len()];
                dequantize_rows(ty, &q, n_per_row, &mut back).unwrap();
                src.chunks(n_per_row)
                    .zip(back.chunks(n_per_row))
                    .map(|(xs, ys)| {
                        xs.iter()
                            .zip(ys)
                            .zip(&imatrix)
                            .map(|((x, y), w)| (*w as f64) * ((x - y) as f64).powi(2))
                            .sum::<f64>()
                    })
                    .collect::<Vec<_>>()
            };
            let with = weighted_err(Some(&imatrix));
            let without = weighted_err(None);
            for (r, (a, b)) in with.iter().zip(&without).enumerate() {
                assert!(
                    *a <= b * 1.01 + 1e-12,
                    "{ty:?} {class:?} row {r}: weighted error {a} with imatrix > {b} without"
                );
            }
        }
    }
}

/// The same bytes whatever the number of threads.
#[test]
fn thread_count_does_not_change_bytes() -> Result<(), Box<dyn std::error::Error>> {
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let four = rayon::ThreadPoolBuilder::new().num_threads(4).build()?;
    for ty in types() {
        let f = format(ty);
        let n_per_row = 4096;
        let nrows = 300;
        let src = make_input(Input::Laplace, nrows * n_per_row, 9);
        let imatrix = make_imatrix(n_per_row, 9);
        for imat in [None, Some(imatrix.as_slice())] {
            let run = |pool: &rayon::ThreadPool| {
                let mut q = vec![0u8; nrows * f.row_bytes(n_per_row).unwrap()];
                pool.install(|| quantize_rows(ty, &src, n_per_row, &mut q, imat))
                    .unwrap();
                q
            };
            assert!(run(&one) == run(&four), "{ty:?} imatrix={}", imat.is_some());
        }
    }
    Ok(())
}
