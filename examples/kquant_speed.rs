//! Single-thread throughput of our K-quant and IQ4 quantizers next to ggml's
//! `ggml_quantize_chunk`, in MB/s of f32 input (8 MiB of Gaussian rows of
//! 4096), measured as CPU time of one thread. Checks the bytes are equal
//! while at it.
//!
//! `cargo run --release --example kquant_speed [imatrix]`

use ggml_qat::ggml::reference;
use ggml_qat::quant::{format, quantize_rows, QuantType};

fn gaussian(n: usize, mut s: u64) -> Vec<f32> {
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (((z ^ (z >> 31)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((-2.0 * next().ln()).sqrt() * (2.0 * std::f64::consts::PI * next()).cos()) as f32)
        .collect()
}

/// CPU time of the calling thread, in seconds (immune to preemption by
/// other processes on a shared machine).
fn thread_cpu_time() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Best of `reps` runs on this thread, in MB/s of input (CPU time).
fn mbps(bytes: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = thread_cpu_time();
        f();
        best = best.min(thread_cpu_time() - t);
    }
    bytes as f64 / best / 1e6
}

fn main() {
    let with_imatrix = std::env::args().any(|a| a == "imatrix");
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "imatrix")
        .collect();
    let n_per_row = 4096;
    let nrows = 8 * 1024 * 1024 / 4 / n_per_row;
    let src = gaussian(nrows * n_per_row, 1);
    let imatrix: Vec<f32> = gaussian(n_per_row, 2)
        .iter()
        .map(|v| v.abs() + 0.01)
        .collect();
    let imat = with_imatrix.then_some(imatrix.as_slice());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!("imatrix: {with_imatrix}; {nrows} rows of {n_per_row}, one thread");
    for ty in [
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
        QuantType::IQ4_XS,
        QuantType::IQ4_NL,
    ] {
        if !only.is_empty() && !only.iter().any(|o| o.eq_ignore_ascii_case(format(ty).name)) {
            continue;
        }
        let len = format(ty).row_bytes(n_per_row).unwrap() * nrows;
        let mut ours = vec![0u8; len];
        let mut theirs = Vec::new();
        let bytes = src.len() * 4;
        let t_ggml = mbps(bytes, 5, || {
            theirs = reference::quantize_chunk(ty, &src, nrows, n_per_row, imat)
        });
        // Our row function on this thread (what a 1-thread pool runs).
        let row = format(ty).quantize_row;
        let row_bytes = len / nrows;
        let t_ours = mbps(bytes, 10, || {
            for (x, y) in src.chunks(n_per_row).zip(ours.chunks_mut(row_bytes)) {
                row(x, y, imat);
            }
        });
        let mut pooled = vec![0u8; len];
        pool.install(|| quantize_rows(ty, &src, n_per_row, &mut pooled, imat))
            .unwrap();
        assert!(pooled == ours, "the 1-thread pool gives other bytes");
        println!(
            "{:5} ggml {:8.1} MB/s   ours {:8.1} MB/s   x{:5.2}   {}",
            format(ty).name,
            t_ggml,
            t_ours,
            t_ours / t_ggml,
            if ours == theirs {
                "same bytes"
            } else {
                "BYTES DIFFER"
            }
        );
    }
}
