use super::gptq::gptq_factor;
use super::gram::Gram;
use super::model::{kind, Model};
use super::*;
use crate::quant::dequantize_rows;

fn rng(seed: &mut u64) -> f64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

fn normal(seed: &mut u64) -> f32 {
    let (u1, u2) = (rng(seed), rng(seed));
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

#[test]
fn models_round_trip_ggml_bytes() {
    let n = 512;
    let mut s = 7u64;
    let w: Vec<f32> = (0..n).map(|_| normal(&mut s)).collect();
    for ty in [
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
    ] {
        let kind = kind(ty).unwrap();
        let rb = format(ty).row_bytes(n).unwrap();
        let mut bytes = vec![0u8; rb];
        quantize_rows(ty, &w, n, &mut bytes, None).unwrap();
        let m = Model::decode(kind, &bytes, n);
        let mut again = vec![0u8; rb];
        m.encode(&mut again);
        assert_eq!(bytes, again, "{ty:?} re-encoding");
        let mut deq = vec![0f32; n];
        dequantize_rows(ty, &bytes, n, &mut deq).unwrap();
        for i in 0..n {
            assert_eq!(m.value(i).to_bits(), deq[i].to_bits(), "{ty:?} value {i}");
        }
    }
}

#[test]
fn gptq_factor_inverts() {
    // One block of the factorisation, and several with a partial one.
    for (n, s) in [(24, 40), (150, 400)] {
        let mut seed = 3u64;
        let x: Vec<f32> = (0..n * s).map(|_| normal(&mut seed)).collect();
        let h = Gram::new(Some(&x), n, s, Some(0.0)).h.unwrap();
        let u = gptq_factor(&h, n, 0.01).unwrap();
        let lam = 0.01 * (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        let mut utu = vec![0f64; n * n];
        for i in 0..n {
            for k in 0..n {
                utu[i * n + k] = (0..n).map(|t| u[t * n + i] * u[t * n + k]).sum();
            }
        }
        // (UᵀU)(H + λI) = I, U upper triangular.
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..n)
                    .map(|k| utu[i * n + k] * (h[k * n + j] + if k == j { lam } else { 0.0 }))
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-8, "n {n} {i},{j}: {s}");
            }
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0);
            }
        }
    }
}

#[test]
fn never_worse_in_weight_space() {
    let (rows, n) = (8, 512);
    let mut s = 11u64;
    let w: Vec<f32> = (0..rows * n).map(|_| normal(&mut s)).collect();
    for ty in [QuantType::Q2_K, QuantType::Q4_K, QuantType::Q6_K] {
        let ours = quantize_output_aware(ty, &w, n, None, 0).unwrap();
        let rb = format(ty).row_bytes(n).unwrap();
        let mut theirs = vec![0u8; rows * rb];
        quantize_rows(ty, &w, n, &mut theirs, None).unwrap();
        let a = output_mse(ty, &ours, &w, n, None, 0).unwrap();
        let b = output_mse(ty, &theirs, &w, n, None, 0).unwrap();
        assert!(a <= b, "{ty:?}: {a} > {b}");
    }
}

#[test]
fn bad_shapes_are_errors() {
    let w = vec![0f32; 256];
    assert!(quantize_output_aware(QuantType::Q4_K, &w, 100, None, 0).is_err());
    assert!(quantize_output_aware(QuantType::Q4_K, &w, 256, Some(&[0.0; 10]), 1).is_err());
    assert!(quantize_output_aware(QuantType::Q4_K, &w, 256, Some(&[]), 0).is_err());
}

#[test]
fn round_matches_std_bit_for_bit() {
    use super::model::round;
    let mut s = 5u64;
    let mut xs: Vec<f64> = vec![
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        0.49999999999999994,
        -0.49999999999999994,
        4503599627370495.5,
        -4503599627370495.5,
        4503599627370497.0,
        1e300,
        -1e300,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        -0.3,
    ];
    for _ in 0..100_000 {
        let scale = [1.0, 8.0, 100.0, 1e6, 1e12][(rng(&mut s) * 5.0) as usize];
        xs.push((rng(&mut s) * 2.0 - 1.0) * scale);
        // half-integers exactly
        xs.push(((rng(&mut s) * 200.0) as i64 - 100) as f64 + 0.5);
    }
    for &x in &xs {
        // equal values (+0 and −0 compare equal; both convert alike)
        assert_eq!(round(x), x.round(), "{x}");
    }
    assert!(round(f64::NAN).is_nan());
    // Q4_0's branch-free code rounding against the plain one
    let mut q = [0i8; 32];
    for c in xs.chunks_exact(32) {
        let x: Vec<f32> = c.iter().map(|&v| v as f32).collect();
        for d in [1.0f32, -1.0, 0.37, -3e-3, 1e-30, 0.0] {
            super::legacy::round_codes(&x, d, &mut q);
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for i in 0..32 {
                let want = (x[i] * id).round().clamp(-8.0, 7.0) as i8;
                assert_eq!(q[i], want, "{} / {d}", x[i]);
            }
        }
    }
}

/// Q4_0's starting scales: re-rounding the codes at the best of them (no
/// fp16 rounding) is at least as good as any scale of a dense grid in the
/// sweep's window, i.e. the sweep finds the least-squares optimum over the
/// window's code vectors; over a wider grid, nearly so.
#[test]
fn q4_0_starts_contain_the_optimum() {
    use super::legacy::{err, round_codes, starts, T_HI, T_LO};
    let mut s = 17u64;
    let mut total = (0f64, 0f64);
    for b in 0..300 {
        let x: Vec<f32> = (0..32)
            .map(|i| {
                let v = normal(&mut s);
                // a few outliers, and some exact zeros
                if b % 3 == 0 && i == 5 {
                    v * 6.0
                } else if b % 7 == 0 && i % 4 == 0 {
                    0.0
                } else {
                    v
                }
            })
            .collect();
        let w: Vec<f64> = (0..32)
            .map(|i| {
                if b % 2 == 0 {
                    1.0
                } else {
                    0.1 + rng(&mut s) * (i % 3) as f64
                }
            })
            .collect();
        let mut ds = [0f32; 2];
        let k = starts(&x, &w, &mut ds);
        assert_eq!(k, 2, "block {b}: {k} starts");
        let mut q = [0i8; 32];
        let ours = ds[..k]
            .iter()
            .map(|&d| {
                round_codes(&x, d, &mut q);
                err(&x, &w, &q, d)
            })
            .fold(f64::INFINITY, f64::min);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut grid = f64::INFINITY;
        for t in 0..8000 {
            // the extreme value on level 0.5 … 16, either sign
            let lev = 0.5 + 15.5 * (t / 2) as f32 / 3999.0;
            let d = amax / lev * if t % 2 == 0 { 1.0 } else { -1.0 };
            round_codes(&x, d, &mut q);
            let e = err(&x, &w, &q, d);
            grid = grid.min(e);
            // exact inside the sweep's window
            if (T_LO..=T_HI).contains(&lev) {
                assert!(
                    ours <= e * (1.0 + 1e-9),
                    "block {b}: {ours} > {e} at d = {d}"
                );
            }
        }
        total.0 += ours;
        total.1 += grid;
    }
    // and the window loses nothing that matters
    assert!(total.0 <= total.1 * (1.0 + 1e-4), "{total:?}");
}

/// The row choice's short-circuit: where ggml's reference and imatrix
/// bytes agree and no search follows (Q8_0 ignores the weights), the
/// result is those bytes; where they differ (Q5_0), each row keeps the
/// better of the two; Q4_0 still searches.
#[test]
fn weighted_skips_only_when_nothing_can_change() {
    let (rows, n) = (16, 256);
    let mut s = 23u64;
    let w: Vec<f32> = (0..rows * n).map(|_| normal(&mut s) * 0.02).collect();
    let d: Vec<f32> = (0..n).map(|_| 0.1 + rng(&mut s) as f32).collect();
    let opts = Options::default();
    for (ty, weights) in [
        (QuantType::Q8_0, None),
        (QuantType::Q8_0, Some(&d[..])),
        (QuantType::Q5_0, None),
        (QuantType::Q5_0, Some(&d[..])),
        (QuantType::Q4_0, None),
    ] {
        let rb = format(ty).row_bytes(n).unwrap();
        let mut reference = vec![0u8; rows * rb];
        quantize_rows(ty, &w, n, &mut reference, None).unwrap();
        let ones = vec![1f32; n];
        let mut imat = vec![0u8; rows * rb];
        quantize_rows(ty, &w, n, &mut imat, Some(weights.unwrap_or(&ones))).unwrap();
        let (bytes, choice) = quantize_weighted(ty, &w, n, weights, &opts).unwrap();
        assert_eq!(choice.reference + choice.imatrix + choice.refined, rows);
        for r in 0..rows {
            let (wr, b) = (&w[r * n..(r + 1) * n], &bytes[r * rb..(r + 1) * rb]);
            let (a, i) = (
                &reference[r * rb..(r + 1) * rb],
                &imat[r * rb..(r + 1) * rb],
            );
            let e = |q: &[u8]| weighted_error(ty, q, wr, n, weights).unwrap();
            if ty == QuantType::Q4_0 {
                assert!(e(b) < e(a).min(e(i)), "{ty:?} row {r}: no search");
            } else if a == i {
                assert_eq!(b, a, "{ty:?} row {r}");
            } else {
                let want = if e(i) < e(a) { i } else { a };
                assert_eq!(b, want, "{ty:?} row {r}");
            }
        }
        if ty == QuantType::Q8_0 {
            assert_eq!(bytes, reference);
            assert_eq!(choice.reference, rows);
        }
    }
}
