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
    let (n, s) = (24, 40);
    let mut seed = 3u64;
    let x: Vec<f32> = (0..n * s).map(|_| normal(&mut seed)).collect();
    let h = Gram::new(Some(&x), n, s, Some(0.0)).h.unwrap();
    let u = gptq_factor(&h, n, 0.01).unwrap();
    let lam = 0.01 * (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    // (UᵀU)(H + λI) = I.
    for i in 0..n {
        for j in 0..n {
            let mut s = 0.0;
            for k in 0..n {
                let mut utu = 0.0;
                for t in 0..n {
                    utu += u[t * n + i] * u[t * n + k];
                }
                s += utu * (h[k * n + j] + if k == j { lam } else { 0.0 });
            }
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((s - want).abs() < 1e-8, "{i},{j}: {s}");
        }
        for j in 0..i {
            assert_eq!(u[i * n + j], 0.0);
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
    use super::model::{round, roundf};
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
        let xf = x as f32;
        assert_eq!(roundf(xf), xf.round(), "{xf}");
    }
    assert!(round(f64::NAN).is_nan());
    assert!(roundf(f32::NAN).is_nan());
}
