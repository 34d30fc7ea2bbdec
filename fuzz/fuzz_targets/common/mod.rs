//! Shared helpers of the fuzz targets: a byte reader that never fails
//! (missing bytes read as zeros) and the round-trip error bounds the test
//! suites state per format.

#![allow(dead_code)]

pub mod model;

use ggml_qat::quant::QuantType;

/// Reads little-endian values from the fuzz input; past the end it yields
/// zeros, so every input decodes to something.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub fn remaining(&self) -> &'a [u8] {
        &self.data[self.pos.min(self.data.len())..]
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn i32(&mut self) -> i32 {
        self.u32() as i32
    }

    pub fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }

    /// Takes the rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let r = self.remaining();
        self.pos = self.data.len();
        r
    }
}

/// The type `b` selects among every format of the registry.
pub fn pick_type(b: u8) -> QuantType {
    QuantType::ALL[b as usize % QuantType::ALL.len()]
}

/// How a byte string becomes floats.
#[derive(Clone, Copy, Debug)]
pub enum Decode {
    /// Raw little-endian f32 bits: NaN, ±∞, subnormals, huge values.
    Raw,
    /// Signed bytes times 2^e.
    I8(i32),
    /// Signed 16-bit values times 2^e.
    I16(i32),
    /// Raw f32 bits with non-finite values replaced by 0 and the rest
    /// clamped to ±2^e.
    Clamped(i32),
}

/// Decodes floats from `bytes` with `mode`.
pub fn decode(bytes: &[u8], mode: Decode) -> Vec<f32> {
    match mode {
        Decode::Raw => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Decode::I8(e) => {
            let s = 2f32.powi(e);
            bytes.iter().map(|&b| b as i8 as f32 * s).collect()
        }
        Decode::I16(e) => {
            let s = 2f32.powi(e);
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 * s)
                .collect()
        }
        Decode::Clamped(e) => {
            let lim = 2f32.powi(e);
            bytes
                .chunks_exact(4)
                .map(|c| {
                    let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    if v.is_finite() {
                        v.clamp(-lim, lim)
                    } else {
                        0.0
                    }
                })
                .collect()
        }
    }
}

/// `n` values: `vals` repeated (zeros when `vals` is empty).
pub fn tile(vals: &[f32], n: usize) -> Vec<f32> {
    if vals.is_empty() {
        return vec![0.0; n];
    }
    vals.iter().copied().cycle().take(n).collect()
}

/// Elements that share one bound: a block (a 256-value super-block for the
/// K-quants and IQ4_XS, 32 values otherwise).
pub fn bound_group(ty: QuantType) -> usize {
    match ty {
        QuantType::Q2_K
        | QuantType::Q3_K
        | QuantType::Q4_K
        | QuantType::Q5_K
        | QuantType::Q6_K
        | QuantType::IQ4_XS => 256,
        _ => 32,
    }
}

/// Largest |x - deq(q(x))| allowed for one element of the group `x`, or
/// `None` when the test suites promise no per-element bound (K-quants with
/// an importance matrix).
///
/// Legacy, IQ4 and float formats: `error_bound` of
/// `tests/quant_vs_ggml_legacy.rs`. K-quants: `max · amax` of
/// `round_trip_bound` in `tests/quant_vs_ggml_k.rs`.
/// Valid for finite inputs whose scales are normal F16 numbers; the callers
/// check it only for groups with `amax` in [1, 2^13] (or all zeros).
pub fn error_bound(ty: QuantType, x: &[f32], imatrix: bool) -> Option<f32> {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let min = x.iter().fold(f32::MAX, |m, &v| m.min(v));
    let max = x.iter().fold(-f32::MAX, |m, &v| m.max(v));
    let range = max - min;
    let h = 1.0 / 2048.0; // relative rounding of an F16 scale
    let tiny = 1e-6 * amax;
    let k = |f: f32| Some(f * amax);
    match ty {
        QuantType::Q2_K | QuantType::Q3_K | QuantType::Q4_K | QuantType::Q5_K | QuantType::Q6_K
            if imatrix =>
        {
            None
        }
        QuantType::Q2_K => k(0.40),
        QuantType::Q3_K => k(0.25),
        QuantType::Q4_K => k(0.10),
        QuantType::Q5_K => k(0.06),
        QuantType::Q6_K => k(0.025),
        QuantType::Q4_0
        | QuantType::Q4_1
        | QuantType::Q5_0
        | QuantType::Q5_1
        | QuantType::IQ4_NL
        | QuantType::IQ4_XS
            if imatrix =>
        {
            Some(amax.max(range) + tiny)
        }
        QuantType::F32 => Some(0.0),
        QuantType::F16 => Some(amax * h),
        QuantType::BF16 => Some(amax / 256.0),
        QuantType::Q4_0 => Some(amax / 8.0 + 8.0 * (amax / 8.0) * h + tiny),
        QuantType::Q5_0 => Some(amax / 16.0 + 16.0 * (amax / 16.0) * h + tiny),
        QuantType::Q4_1 => {
            let d = range / 15.0;
            Some(d / 2.0 + 15.0 * d * h + min.abs() * h + tiny)
        }
        QuantType::Q5_1 => {
            let d = range / 31.0;
            Some(d / 2.0 + 31.0 * d * h + min.abs() * h + tiny)
        }
        QuantType::Q8_0 => {
            let d = amax / 127.0;
            Some(d / 2.0 + 127.0 * d * h + tiny)
        }
        QuantType::IQ4_NL | QuantType::IQ4_XS => Some(amax / 4.0),
    }
}

/// Position and values of the first float whose bits differ.
pub fn first_float_diff(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x.to_bits() != y.to_bits())
        .map(|(i, (x, y))| (i, *x, *y))
}

/// Position and values of the first differing byte.
pub fn first_byte_diff(a: &[u8], b: &[u8]) -> Option<(usize, u8, u8)> {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, *x, *y))
}

/// ggml's floats for `n` elements of `ty` in `bytes`: its `to_float`, or the
/// bytes themselves for F32 (ggml has no `to_float` for F32).
pub fn ggml_to_float(ty: QuantType, bytes: &[u8], n: usize) -> Vec<f32> {
    if ty == QuantType::F32 {
        assert_eq!(bytes.len(), 4 * n);
        return bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
    }
    ggml_qat::ggml::reference::to_float(ty, bytes, n)
}

/// Q2_K … Q6_K.
pub fn is_k_quant(ty: QuantType) -> bool {
    matches!(
        ty,
        QuantType::Q2_K | QuantType::Q3_K | QuantType::Q4_K | QuantType::Q5_K | QuantType::Q6_K
    )
}

/// Writes `data` to this process's file `tag` (in /dev/shm when there is
/// one) and returns its path: the model readers take paths.
pub fn input_file(tag: &str, data: &[u8]) -> std::path::PathBuf {
    let dir = std::path::Path::new("/dev/shm");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let p = dir.join(format!("ggml-qat-fuzz-{tag}-{}", std::process::id()));
    std::fs::write(&p, data).expect("write the fuzz input");
    p
}
