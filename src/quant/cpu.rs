//! Which SIMD kernels may run: the CPU's features, checked once, and the two
//! testing switches, read once from the environment. Every format asks here
//! before it takes a SIMD path; the kernels themselves only state the
//! features they are compiled for (`#[target_feature]`).
//!
//! - `GGML_QAT_FORCE_SCALAR` (set to anything): no SIMD kernel runs, every
//!   format takes its portable scalar code.
//! - `GGML_QAT_NO_AVX512`: no AVX-512 kernel runs; the AVX2 ones do.
//!
//! Both exist for the differential tests (`scripts/test.sh` runs the suites
//! against ggml under each), so that a machine with AVX-512 also checks the
//! AVX2 and the scalar code. Every path gives the same bytes; the switches
//! change only the speed.

// Off x86-64 no SIMD kernel exists, and nothing asks.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use std::sync::atomic::{AtomicU8, Ordering};

/// The features, once known: [`KNOWN`] plus the bits below.
static FEATURES: AtomicU8 = AtomicU8::new(0);

/// Set once the features have been checked.
const KNOWN: u8 = 1;
/// AVX2, unless `GGML_QAT_FORCE_SCALAR`.
const AVX2: u8 = 2;
/// AVX2 and F16C, unless `GGML_QAT_FORCE_SCALAR`.
const AVX2_F16C: u8 = 4;
/// AVX2 and AVX-512 F, BW, DQ and VL, unless either switch is set.
const AVX512: u8 = 8;

/// The feature bits (checked on the first call; a relaxed load afterwards,
/// cheap enough for a kernel to ask once per row).
#[inline]
fn features() -> u8 {
    match FEATURES.load(Ordering::Relaxed) {
        0 => {
            let f = detect();
            FEATURES.store(f, Ordering::Relaxed);
            f
        }
        f => f,
    }
}

#[cold]
fn detect() -> u8 {
    let mut f = KNOWN;
    if std::env::var_os("GGML_QAT_FORCE_SCALAR").is_some() {
        return f;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        f |= AVX2;
        if is_x86_feature_detected!("f16c") {
            f |= AVX2_F16C;
        }
        if std::env::var_os("GGML_QAT_NO_AVX512").is_none()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
        {
            f |= AVX512;
        }
    }
    f
}

/// Whether the AVX2 kernels may run.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn avx2() -> bool {
    features() & AVX2 != 0
}

/// Whether the AVX2 + F16C kernels (fp16 conversions in registers) may run.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn avx2_f16c() -> bool {
    features() & AVX2_F16C != 0
}

/// Whether the AVX-512 kernels (F, BW, DQ, VL; AVX2 too) may run.
#[cfg(all(target_arch = "x86_64", ggml_qat_avx512))]
#[inline]
pub(crate) fn avx512() -> bool {
    features() & AVX512 != 0
}
