//! Quantization and dequantization throughput, ours against the ggml we
//! link, on the same 32 MiB of F32 Gaussian weights (rows of 4096).
//!
//! For every type we implement: ggml's `ggml_quantize_chunk` (one thread,
//! as ggml runs it), our `quantize_rows` on a 1-thread rayon pool and on
//! all threads, whether the bytes are identical, and dequantization (ggml's
//! `to_float` against our `dequantize_rows` on one thread and on all). Throughput is
//! MB/s (10^6 bytes) of F32 data (input of quantization, output of
//! dequantization); each figure is the median of several samples of at
//! least 25 ms.
//!
//! The first row, F32, is a plain copy (ggml: `memcpy`; ours: the same row
//! driver as every format): the memory ceiling of the machine. A format
//! whose one-thread figure is near it is memory bound, and its all-threads
//! figure cannot scale further than the copy's does. The line above the
//! table measures the plainest memory-bound work, reading the 32 MiB once
//! (a sum), on one thread and on all: no conversion of them can scale
//! further than that.
//!
//! "One thread" is this thread, as for ggml (`quant::on_this_thread`): a
//! pool thread working while this one waits measured up to ~17% slower on
//! a virtual machine.
//!
//! `cargo bench --bench quantize`; set `QAT_BENCH_BUDGET_MS` to change the
//! time spent per measurement (default 600 ms, at least 5 runs), and
//! `QAT_BENCH_TYPES=Q4_0,IQ4_NL` to run some types only, `QAT_BENCH_MIB=1`
//! for a cache-resident data set.

mod common;

use common::{gaussian, mb_per_s, median_times};

use ggml_qat::ggml::ffi;
use ggml_qat::quant::{
    dequantize_rows, format, is_implemented, on_this_thread, quantize_rows, QuantType,
};

const N_PER_ROW: usize = 4096;

/// Sum of `x` with eight independent accumulators (vectorized): a pass
/// that only reads.
fn read_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// [`read_sum`] of `x` split over `threads` threads.
fn read_sum_on(x: &[f32], threads: usize) -> f32 {
    std::thread::scope(|s| {
        let part = x.len().div_ceil(threads);
        let handles: Vec<_> = x
            .chunks(part)
            .map(|c| s.spawn(move || read_sum(c)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("reader")).sum()
    })
}

fn ggml_quantize(ty: QuantType, src: &[f32], dst: &mut [u8]) {
    let nrows = src.len() / N_PER_ROW;
    // SAFETY: src holds nrows rows of N_PER_ROW floats and dst the exact
    // number of bytes of that many rows of `ty` (checked by the caller).
    let written = unsafe {
        ffi::ggml_quantize_chunk(
            ty.ggml_id(),
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            nrows as i64,
            N_PER_ROW as i64,
            std::ptr::null(),
        )
    };
    assert_eq!(written, dst.len());
}

fn ggml_to_float(ty: QuantType, src: &[u8], dst: &mut [f32]) {
    // SAFETY: src holds exactly the bytes of dst.len() elements of `ty`.
    let ok = unsafe {
        ffi::qat_shim_to_float(
            ty.ggml_id(),
            src.as_ptr().cast(),
            dst.as_mut_ptr(),
            dst.len() as i64,
        )
    };
    assert!(ok, "ggml has no to_float for {ty:?}");
}

fn main() {
    let budget = common::budget();
    // 32 MiB unless QAT_BENCH_MIB says otherwise (e.g. 1 to see in-cache
    // speed rather than memory bandwidth).
    let mib: usize = std::env::var("QAT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let nrows = (mib * 1024 * 1024 / 4 / N_PER_ROW).max(1);
    let src = gaussian(nrows * N_PER_ROW, 1);
    let src_bytes = src.len() * 4;
    let nthreads = rayon::current_num_threads();

    println!(
        "{} MiB of F32 N(0,1), {nrows} rows x {N_PER_ROW}; MB/s of F32 data; medians of samples of >= 25 ms; all = {nthreads} threads",
        src_bytes >> 20
    );
    let [t_read_one, t_read_all] = median_times(
        budget,
        [
            &mut || {
                std::hint::black_box(read_sum_on(&src, 1));
            },
            &mut || {
                std::hint::black_box(read_sum_on(&src, nthreads));
            },
        ],
    );
    let (r1, ra) = (
        mb_per_s(src_bytes, t_read_one),
        mb_per_s(src_bytes, t_read_all),
    );
    println!(
        "reading the data only (a sum): 1t {r1:.0} MB/s, all {ra:.0} MB/s, all/1t {:.2}",
        ra / r1
    );
    println!(
        "{:<7} {:>9} {:>9} {:>9} {:>7} {:>7} {:>5} | {:>9} {:>9} {:>9} {:>7}",
        "type",
        "ggml 1t",
        "ours 1t",
        "ours all",
        "1t/ggml",
        "all/1t",
        "same",
        "deq ggml",
        "deq 1t",
        "deq all",
        "1t/ggml"
    );
    for ty in QuantType::ALL {
        if !common::selected("QAT_BENCH_TYPES", &format!("{ty:?}")) {
            continue;
        }
        if !is_implemented(ty) {
            println!("{:<7} (not implemented)", format!("{ty:?}"));
            continue;
        }
        let row_bytes = format(ty)
            .row_bytes(N_PER_ROW)
            .expect("4096 is block-aligned");
        let mut want = vec![0u8; nrows * row_bytes];
        let mut got = vec![0u8; nrows * row_bytes];
        // Touch the buffers once so page faults stay out of the timings.
        ggml_quantize(ty, &src, &mut want);
        quantize_rows(ty, &src, N_PER_ROW, &mut got, None).expect("quantize");
        let mut got_all = got.clone();
        let same = want == got;

        let [t_ggml, t_one, t_all] = median_times(
            budget,
            [
                &mut || ggml_quantize(ty, &src, &mut want),
                &mut || {
                    on_this_thread(|| quantize_rows(ty, &src, N_PER_ROW, &mut got, None))
                        .expect("quantize")
                },
                &mut || quantize_rows(ty, &src, N_PER_ROW, &mut got_all, None).expect("quantize"),
            ],
        );

        let (g, o1, oa) = (
            mb_per_s(src_bytes, t_ggml),
            mb_per_s(src_bytes, t_one),
            mb_per_s(src_bytes, t_all),
        );
        print!(
            "{:<7} {:>9.0} {:>9.0} {:>9.0} {:>7.2} {:>7.2} {:>5} |",
            format!("{ty:?}"),
            g,
            o1,
            oa,
            o1 / g,
            oa / o1,
            if same { "yes" } else { "NO" },
        );
        if ty == QuantType::F32 {
            // ggml has no to_float for F32.
            println!(" {:>9} {:>9} {:>9} {:>7}", "-", "-", "-", "-");
            continue;
        }

        let mut back = vec![0f32; src.len()];
        let mut back1 = vec![0f32; src.len()];
        let mut back_all = vec![0f32; src.len()];
        ggml_to_float(ty, &want, &mut back);
        dequantize_rows(ty, &want, N_PER_ROW, &mut back1).expect("dequantize");
        dequantize_rows(ty, &want, N_PER_ROW, &mut back_all).expect("dequantize");
        let [t_deq_ggml, t_deq_one, t_deq_all] = median_times(
            budget,
            [
                &mut || ggml_to_float(ty, &want, &mut back),
                &mut || {
                    on_this_thread(|| dequantize_rows(ty, &want, N_PER_ROW, &mut back1))
                        .expect("dequantize")
                },
                &mut || dequantize_rows(ty, &want, N_PER_ROW, &mut back_all).expect("dequantize"),
            ],
        );

        let (dg, d1, da) = (
            mb_per_s(src_bytes, t_deq_ggml),
            mb_per_s(src_bytes, t_deq_one),
            mb_per_s(src_bytes, t_deq_all),
        );
        println!(" {dg:>9.0} {d1:>9.0} {da:>9.0} {:>7.2}", d1 / dg);
    }
}
