//! Seeded, counter-based random numbers: the value of element `i` of a
//! stream depends only on the stream key and `i`, so results are the same
//! whatever the number of threads that compute them.

/// SplitMix64's finalizer: a bijective 64-bit mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A sequence of stream keys drawn from one seed (the context's generator).
#[derive(Clone, Debug)]
pub struct SeedSequence {
    state: u64,
}

impl SeedSequence {
    pub fn new(seed: u64) -> Self {
        SeedSequence {
            state: mix64(seed ^ GOLDEN),
        }
    }

    /// The next independent stream.
    pub fn next_stream(&mut self) -> Stream {
        self.state = self.state.wrapping_add(GOLDEN);
        Stream {
            key: mix64(self.state),
            counter: 0,
        }
    }
}

/// An independent stream of random numbers, addressable by index.
#[derive(Clone, Debug)]
pub struct Stream {
    key: u64,
    counter: u64,
}

impl Stream {
    /// The stream of `key` under `seed`: the same pair always gives the
    /// same numbers, whatever else was drawn.
    pub fn keyed(seed: u64, key: u64) -> Stream {
        Stream {
            key: mix64(mix64(seed ^ GOLDEN) ^ mix64(key.wrapping_add(GOLDEN))),
            counter: 0,
        }
    }

    /// The `i`-th 64 random bits of this stream.
    pub fn bits_at(&self, i: u64) -> u64 {
        mix64(self.key ^ mix64(i.wrapping_mul(GOLDEN).wrapping_add(GOLDEN)))
    }

    /// The `i`-th uniform number of this stream, in (0, 1).
    pub fn uniform_at(&self, i: u64) -> f64 {
        ((self.bits_at(i) >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// The `i`-th standard normal number of this stream (Box-Muller on the
    /// uniforms `2*(i/2)` and `2*(i/2)+1`; even `i` takes the cosine, odd `i`
    /// the sine).
    pub fn normal_at(&self, i: u64) -> f64 {
        let j = i & !1;
        let r = (-2.0 * self.uniform_at(j).ln()).sqrt();
        let theta = std::f64::consts::TAU * self.uniform_at(j + 1);
        if i & 1 == 0 {
            r * theta.cos()
        } else {
            r * theta.sin()
        }
    }

    /// The next uniform number in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.counter += 1;
        self.uniform_at(self.counter - 1)
    }

    /// The next standard normal number.
    pub fn normal(&mut self) -> f64 {
        self.counter += 2;
        self.normal_at(self.counter - 2)
    }

    /// The next integer in `0..n` (`n > 0`), without modulo bias worth noting.
    pub fn below(&mut self, n: u64) -> u64 {
        self.counter += 1;
        ((self.bits_at(self.counter - 1) as u128 * n as u128) >> 64) as u64
    }
}

/// xorshift64 (13, 7, 17) for the unit tests' pseudo-random inputs.
#[cfg(test)]
pub(crate) struct TestRng(pub(crate) u64);
#[cfg(test)]
impl TestRng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub(crate) fn gauss(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * 1.7
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let mut a = SeedSequence::new(7);
        let mut b = SeedSequence::new(7);
        let (sa, sb) = (a.next_stream(), b.next_stream());
        assert_eq!(sa.bits_at(5), sb.bits_at(5));
        assert_ne!(a.next_stream().bits_at(5), sa.bits_at(5));
        assert_ne!(SeedSequence::new(8).next_stream().bits_at(5), sa.bits_at(5));
    }

    #[test]
    fn normal_moments() {
        let s = SeedSequence::new(1).next_stream();
        let n = 200_000u64;
        let (mut m, mut v) = (0.0, 0.0);
        for i in 0..n {
            let x = s.normal_at(i);
            m += x;
            v += x * x;
        }
        m /= n as f64;
        v = v / n as f64 - m * m;
        assert!(m.abs() < 0.01, "mean {m}");
        assert!((v - 1.0).abs() < 0.02, "var {v}");
    }

    #[test]
    fn below_stays_in_range() {
        let mut s = SeedSequence::new(3).next_stream();
        assert!((0..10_000).all(|_| s.below(7) < 7));
    }
}
