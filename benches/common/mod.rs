//! Shared by the benchmarks: deterministic data and the sampling method.
#![allow(dead_code)] // each bench uses part of it

use std::time::{Duration, Instant};

/// Deterministic N(0, 1) weights (SplitMix64 + Box-Muller).
pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 + 0.5 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (next(), next());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

/// Shortest sample of [`median_times`].
pub const MIN_SAMPLE: Duration = Duration::from_millis(25);

/// Median wall times per call of the given functions, run in turns (so
/// that a noisy neighbour slows all of them alike) until `budget` is spent:
/// 5 to 15 rounds. A sample repeats its function back to back for at least
/// [`MIN_SAMPLE`] (a memory-bound conversion of 32 MiB takes 1-3 ms, where
/// waking up and warming up would weigh). Each sample starts after a short
/// pause, so that the rayon workers of the one before have gone to sleep:
/// an idle worker spins and yields for a while, and on a 2-core machine it
/// would take CPU time from the next measurement (a 1-thread run after an
/// all-threads run, or ggml's).
pub fn median_times<const N: usize>(budget: Duration, fs: [&mut dyn FnMut(); N]) -> [Duration; N] {
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::new());
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 5 || (start.elapsed() < budget * N as u32 && rounds < 15) {
        // Rotate who goes first, so none always runs after the same one.
        for k in 0..N {
            let i = (k + rounds) % N;
            std::thread::sleep(Duration::from_millis(5));
            let s = Instant::now();
            let mut calls = 0;
            while calls == 0 || s.elapsed() < MIN_SAMPLE {
                fs[i]();
                calls += 1;
            }
            times[i].push(s.elapsed() / calls);
        }
        rounds += 1;
    }
    times.map(|mut t| {
        t.sort();
        t[t.len() / 2]
    })
}

/// MB/s (10^6 bytes) of `bytes` processed in `t`.
pub fn mb_per_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / 1e6 / t.as_secs_f64()
}

/// The time budget per measurement: `QAT_BENCH_BUDGET_MS` (default 600 ms).
pub fn budget() -> Duration {
    Duration::from_millis(
        std::env::var("QAT_BENCH_BUDGET_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600),
    )
}

/// Whether `name` is selected by the comma-separated list in the
/// environment variable `var` (everything is when it is unset).
pub fn selected(var: &str, name: &str) -> bool {
    std::env::var(var)
        .map(|o| o.split(',').any(|t| t.eq_ignore_ascii_case(name)))
        .unwrap_or(true)
}
