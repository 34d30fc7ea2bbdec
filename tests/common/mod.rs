//! Shared test inputs: deterministic generators for every input class the
//! differential tests cover. No external RNG crate: SplitMix64.
#![allow(dead_code)]

/// A small deterministic generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn laplace(&mut self) -> f64 {
        let u = self.uniform() - 0.5;
        -u.signum() * (1.0 - 2.0 * u.abs()).ln()
    }
}

/// The input classes of the differential tests.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Gaussian,
    Laplace,
    /// Student-t with 2 degrees of freedom: heavy tails.
    HeavyTails,
    /// Gaussian with about one element in 500 multiplied by 1000.
    RareOutliers,
    Zeros,
    Constant,
    /// |Gaussian|: all values of one sign (positive), a second class negative.
    OnePositive,
    OneNegative,
    /// Gaussian scaled to ~1e-20.
    Tiny,
    /// Gaussian scaled to ~1e20.
    Huge,
    /// -1, -1 + h, ..., 1 and back, sign alternating by element.
    AlternatingRamp,
}

impl Input {
    pub const ALL: [Input; 11] = [
        Input::Gaussian,
        Input::Laplace,
        Input::HeavyTails,
        Input::RareOutliers,
        Input::Zeros,
        Input::Constant,
        Input::OnePositive,
        Input::OneNegative,
        Input::Tiny,
        Input::Huge,
        Input::AlternatingRamp,
    ];
}

/// `n` values of class `class`, deterministic in `seed`.
pub fn make_input(class: Input, n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed.wrapping_mul(31).wrapping_add(class as u64));
    (0..n)
        .map(|i| {
            let v = match class {
                Input::Gaussian => r.normal(),
                Input::Laplace => r.laplace(),
                Input::HeavyTails => {
                    let z = r.normal();
                    let chi2 = r.normal().powi(2) + r.normal().powi(2);
                    z / (chi2 / 2.0).sqrt().max(1e-3)
                }
                Input::RareOutliers => {
                    let z = r.normal();
                    if r.next_u64() % 500 == 0 {
                        z * 1000.0
                    } else {
                        z
                    }
                }
                Input::Zeros => 0.0,
                Input::Constant => 0.7315,
                Input::OnePositive => r.normal().abs() + 0.01,
                Input::OneNegative => -r.normal().abs() - 0.01,
                Input::Tiny => r.normal() * 1e-20,
                Input::Huge => r.normal() * 1e20,
                Input::AlternatingRamp => {
                    let t = (i % 64) as f64 / 63.0 * 2.0 - 1.0;
                    if i % 2 == 0 {
                        t
                    } else {
                        -t
                    }
                }
            };
            v as f32
        })
        .collect()
}

/// A random importance matrix of `n` non-negative weights, about a fifth of
/// them exactly zero.
pub fn make_imatrix(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed ^ 0xABCD);
    (0..n)
        .map(|_| {
            if r.next_u64() % 5 == 0 {
                0.0
            } else {
                (r.normal().abs() * 3.0 + r.uniform() * 0.1) as f32
            }
        })
        .collect()
}

/// Shapes `(nrows, n_per_row)` for a format of block size `block`: one block,
/// one row of several blocks, and many rows.
pub fn shapes(block: usize) -> Vec<(usize, usize)> {
    let bs = block.max(32);
    vec![(1, bs), (1, bs * 8), (3, bs * 2), (17, bs * 4), (2048, bs)]
}

/// Weight distributions of the output-aware quantizer's tests and report.
#[derive(Copy, Clone, Debug)]
pub enum Weights {
    Gaussian,
    /// Student-t, 3 degrees of freedom.
    StudentT,
}

/// `len` weights of `class`, deterministic in `seed`.
pub fn weights(class: Weights, len: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len)
        .map(|_| match class {
            Weights::Gaussian => r.normal() as f32,
            Weights::StudentT => {
                let z = r.normal();
                let chi2: f64 = (0..3).map(|_| r.normal().powi(2)).sum();
                (z / (chi2 / 3.0).sqrt().max(1e-3)) as f32
            }
        })
        .collect()
}

/// Position and values of the first differing byte, if any.
pub fn first_byte_diff(a: &[u8], b: &[u8]) -> Option<(usize, u8, u8)> {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, *x, *y))
}

/// Position and values of the first float whose bits differ, if any.
pub fn first_float_diff(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x.to_bits() != y.to_bits())
        .map(|(i, (x, y))| (i, *x, *y))
}
