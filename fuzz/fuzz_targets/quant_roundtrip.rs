//! Quantize then dequantize fuzzed rows with every registered format.
//!
//! Input: `[type, flags, exponent, blocks, imatrix bytes?, value bytes…]`.
//! - `type` picks one of `QuantType::ALL`;
//! - `flags`: bit 0 importance matrix, bits 1–2 how the value bytes become
//!   floats ([`Decode`]), bits 3–4 rows − 1, bit 5 also run the portable
//!   scalar K-quant row function;
//! - `exponent` scales the decoded values; `blocks` sets the row length.
//!
//! Checks, for every input: no panic; our bytes equal
//! `ggml_quantize_chunk`'s (the crate's byte-identity promise, NaN and ±∞
//! included, NaN payloads aside: see `canonical_nans`); our dequantized floats equal ggml's `to_float` bit for bit;
//! and, for groups of finite values whose largest magnitude is in [1, 2^13]
//! (where every F16 scale is a normal number) or all zero, the round-trip
//! error stays within the bound the test suites state for the format
//! (K-quants: a wider one, see `K_SANITY`; `FUZZ_REPORT_BOUNDS=1` prints
//! every K-quant error over the suite's bound).

#![no_main]

mod common;

use common::{bound_group, decode, error_bound, first_byte_diff, first_float_diff, pick_type};
use common::{tile, Decode, Reader};
use ggml_qat::ggml::reference;
use ggml_qat::quant::kquants::{q2k, q3k, q4k, q5k, q6k};
use ggml_qat::quant::{dequantize_rows, format, quantize_rows, QuantType};
use libfuzzer_sys::fuzz_target;

fn scalar_k(ty: QuantType) -> Option<fn(&[f32], &mut [u8], Option<&[f32]>)> {
    Some(match ty {
        QuantType::Q2_K => q2k::quantize_row_scalar,
        QuantType::Q3_K => q3k::quantize_row_scalar,
        QuantType::Q4_K => q4k::quantize_row_scalar,
        QuantType::Q5_K => q5k::quantize_row_scalar,
        QuantType::Q6_K => q6k::quantize_row_scalar,
        _ => return None,
    })
}

/// K-quants: largest |x - deq(q(x))| / amax enforced on any input (the test
/// suite's per-format bounds hold for typical data only).
const K_SANITY: f32 = 1.0;

/// The x86 default NaN (what `inf * 0` gives).
const DEFAULT_NAN: u32 = 0xFFC0_0000;

/// `x` with every NaN replaced by the default NaN, or `None` when no NaN
/// differs from it.
fn canonical_nans(x: &[f32]) -> Option<Vec<f32>> {
    x.iter()
        .any(|v| v.is_nan() && v.to_bits() != DEFAULT_NAN)
        .then(|| {
            x.iter()
                .map(|&v| {
                    if v.is_nan() {
                        f32::from_bits(DEFAULT_NAN)
                    } else {
                        v
                    }
                })
                .collect()
        })
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let ty = pick_type(r.u8());
    let flags = r.u8();
    let exp = r.u8();
    let blocks = r.u8();
    let f = format(ty);

    let use_imatrix = flags & 1 != 0;
    let mode = match (flags >> 1) & 3 {
        0 => Decode::Raw,
        1 => Decode::I8(exp as i32 % 41 - 20),
        2 => Decode::I16(exp as i32 % 41 - 28),
        _ => Decode::Clamped(exp as i32 % 48 - 8),
    };
    let nrows = ((flags >> 3) & 3) as usize + 1;
    // Float formats (block size 1) get any row length 1..=160, so the SIMD
    // conversions see every tail length; block formats 1..=4 blocks.
    let n_per_row = if f.block_size == 1 {
        blocks as usize % 160 + 1
    } else {
        (blocks as usize % 4 + 1) * f.block_size
    };

    let imatrix: Option<Vec<f32>> = use_imatrix.then(|| {
        (0..n_per_row)
            .map(|_| {
                let b = r.u8();
                (b & 0x0f) as f32 * 2f32.powi((b >> 4) as i32 - 8)
            })
            .collect()
    });
    let imat = imatrix.as_deref();
    let src = tile(&decode(r.rest(), mode), nrows * n_per_row);

    let row_bytes = f.row_bytes(n_per_row).unwrap();
    let mut q = vec![0u8; nrows * row_bytes];
    quantize_rows(ty, &src, n_per_row, &mut q, imat).expect("quantize_rows");

    // Byte identity with ggml. When two NaNs meet in an operation (an input
    // NaN and one made by inf·0 in a scale), which payload survives is up to
    // the compiler in C and in Rust alike, and the payload bits reach the
    // levels through `nearest_int`'s bit trick. So inputs with NaNs other
    // than the x86 default NaN are compared after replacing those NaNs by
    // it; the original input only has to quantize without panicking.
    let canonical = canonical_nans(&src);
    let (cmp_src, cmp_q) = match &canonical {
        None => (&src, q.clone()),
        Some(c) => {
            let mut cq = vec![0u8; q.len()];
            quantize_rows(ty, c, n_per_row, &mut cq, imat).expect("quantize_rows");
            (c, cq)
        }
    };
    let want = reference::quantize_chunk(ty, cmp_src, nrows, n_per_row, imat);
    if let Some((i, g, w)) = first_byte_diff(&cmp_q, &want) {
        panic!(
            "{ty:?} imatrix={}: byte {i} of {}: ours {g:#04x} ggml {w:#04x}",
            imat.is_some(),
            q.len()
        );
    }
    if flags & 0x20 != 0 {
        if let Some(scalar) = scalar_k(ty) {
            let mut s = vec![0u8; q.len()];
            for (x, y) in cmp_src.chunks(n_per_row).zip(s.chunks_mut(row_bytes)) {
                scalar(x, y, imat);
            }
            if let Some((i, g, w)) = first_byte_diff(&s, &cmp_q) {
                panic!("{ty:?}: scalar byte {i}: {g:#04x}, dispatched {w:#04x}");
            }
        }
    }

    let mut back = vec![0f32; src.len()];
    dequantize_rows(ty, &q, n_per_row, &mut back).expect("dequantize_rows");
    let want_back = common::ggml_to_float(ty, &q, src.len());
    if let Some((i, g, w)) = first_float_diff(&back, &want_back) {
        panic!("{ty:?}: dequantized value {i}: ours {g:e} ggml {w:e}");
    }

    // Round-trip bound on well-scaled groups (within each row).
    let report = std::env::var_os("FUZZ_REPORT_BOUNDS").is_some();
    let group = bound_group(ty).min(n_per_row);
    for (xr, yr) in src.chunks(n_per_row).zip(back.chunks(n_per_row)) {
        // With an importance matrix ggml weighs each element by
        // `w·sqrt(σ² + x²)`, σ² the mean square of the whole row: a
        // non-finite value or an overflowing square anywhere in the row
        // makes every weight of the row non-finite (ggml's bytes, too).
        if imat.is_some() && !xr.iter().map(|v| v * v).sum::<f32>().is_finite() {
            continue;
        }
        for (xs, ys) in xr.chunks(group).zip(yr.chunks(group)) {
            if xs.iter().any(|v| !v.is_finite()) {
                continue;
            }
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            if !(amax == 0.0 || (1.0..=8192.0).contains(&amax)) {
                continue;
            }
            let Some(bound) = error_bound(ty, xs, imat.is_some()) else {
                continue;
            };
            let k_quant = common::is_k_quant(ty);
            for (k, (x, y)) in xs.iter().zip(ys).enumerate() {
                let err = (x - y).abs();
                // `FUZZ_REPORT_BOUNDS=1`: print K-quant errors over the
                // suite's bound (to measure them) instead of only failing.
                if k_quant && err > bound && report {
                    eprintln!("EXCEED {ty:?} ratio {}", err / amax);
                }
                // The K-quant suite bounds are measured on typical data;
                // fuzzing finds inputs (quantized to ggml's very bytes) past
                // them, e.g. Q3_K 0.31·amax (suite 0.25), Q2_K 0.53·amax
                // (suite 0.40). On any input only `K_SANITY` is enforced.
                let bound = if k_quant {
                    bound.max(K_SANITY * amax)
                } else {
                    bound
                };
                assert!(
                    err <= bound,
                    "{ty:?} imatrix={} n_per_row={n_per_row}: element {k} of a group with \
                     amax {amax}: |{x} - {y}| = {err} > {bound}",
                    imat.is_some()
                );
            }
        }
    }
});
