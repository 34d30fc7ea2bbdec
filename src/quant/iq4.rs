//! The 4-bit non-linear formats IQ4_NL (blocks of 32) and IQ4_XS
//! (super-blocks of 256 with a 6-bit scale per 32), both on ggml's 16-entry
//! grid [`KVALUES_IQ4NL`].
//!
//! Both go through one search, ggml's `quantize_row_iq4_nl_impl` as
//! `quantize_iq4_nl` / `quantize_iq4_xs` call it (`ntry = 7`, with or
//! without importance matrix): for each block of 32, a first scale from the
//! extreme value, then 15 more candidate scales, keeping the one that
//! maximises the weighted correlation; IQ4_XS then quantizes the eight block
//! scales to 6 bits against a super-block scale and re-picks every element.
//! The weights are `x^2` without importance matrix and
//! `imatrix[j] * sqrt(sigma2 + x^2)` with one (`sigma2` = twice the
//! super-block's mean square).
//!
//! The scale candidates are independent, so the AVX2 path evaluates them in
//! parallel, one per lane; within a lane, sums run in ggml's element order,
//! so the arithmetic is the same operation for operation.

use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::legacy::{blocks, blocks_mut, ByteBlock};
use super::search::{nearest_int, GROUP_MAX_EPS};
use super::{Format, QuantType};

/// ggml's non-linear 4-bit grid (`kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Elements per IQ4_NL block, and per sub-block of IQ4_XS.
pub const QK4_NL: usize = 32;
/// Elements per IQ4_XS super-block.
pub const QK_K: usize = 256;

/// Scale candidates tried on each side of the first one (ggml's `ntry`).
const NTRY: i32 = 7;

/// IQ4_NL block: `d * KVALUES_IQ4NL[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockIq4Nl {
    /// Scale, IEEE half, little-endian.
    pub d: [u8; 2],
    /// Element j in the low nibble of byte j, element j+16 in the high one.
    pub qs: [u8; QK4_NL / 2],
}

/// IQ4_XS super-block: `d * (ls - 32) * KVALUES_IQ4NL[q]`, `ls` a 6-bit
/// scale per 32 elements.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockIq4Xs {
    pub d: [u8; 2],
    /// High 2 bits of the eight scales (u16, little-endian), 2 bits each.
    pub scales_h: [u8; 2],
    /// Low 4 bits of the eight scales, two per byte.
    pub scales_l: [u8; QK_K / 64],
    /// Nibbles, laid out per 32 elements as in IQ4_NL.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == 18);
const _: () = assert!(std::mem::size_of::<BlockIq4Xs>() == 136);

// SAFETY: both are #[repr(C)] structs of u8 arrays.
unsafe impl ByteBlock for BlockIq4Nl {}
unsafe impl ByteBlock for BlockIq4Xs {}

/// Formats registered by this module.
pub static FORMATS: &[Format] = &[
    Format {
        ty: QuantType::IQ4_NL,
        name: "iq4_nl",
        block_size: QK4_NL,
        block_bytes: std::mem::size_of::<BlockIq4Nl>(),
        quantize_row: quantize_row_iq4_nl,
        dequantize_row: dequantize_row_iq4_nl,
    },
    Format {
        ty: QuantType::IQ4_XS,
        name: "iq4_xs",
        block_size: QK_K,
        block_bytes: std::mem::size_of::<BlockIq4Xs>(),
        quantize_row: quantize_row_iq4_xs,
        dequantize_row: dequantize_row_iq4_xs,
    },
];

/// Index of the grid value nearest to `x` (ggml's `best_index_int8`):
/// clamps to the ends, binary search, then ties go to the upper value.
/// A NaN gives 15, as in C.
#[inline]
pub fn best_index_int8(val: &[i8; 16], x: f32) -> usize {
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < (val[mu] as f32) - x {
        mu - 1
    } else {
        mu
    }
}

/// The best scale of one block of 32 (the first half of ggml's
/// `quantize_row_iq4_nl_impl` loop body, `ntry > 0`), or 0 for a block of
/// (near) zeros.
fn block_scale_scalar(xb: &[f32], weight: &[f32; QK4_NL]) -> f32 {
    let values = &KVALUES_IQ4NL;
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in xb {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let d = -max / values[0] as f32;
    let id = 1.0 / d;
    let (sumqx, sumq2) = correlation(xb, weight, id);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + values[0] as i32) as f32 / max;
        let (sumqx, sumq2) = correlation(xb, weight, id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// `(Σ w·q·x, Σ w·q²)` in element order, `q` the grid value nearest `id·x`.
#[inline]
fn correlation(xb: &[f32], weight: &[f32; QK4_NL], id: f32) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (&x, &w) in xb.iter().zip(weight) {
        let q = KVALUES_IQ4NL[best_index_int8(&KVALUES_IQ4NL, id * x)] as f32;
        sumqx += w * q * x;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The weights of one block: `x^2`, or `qw * sqrt(sigma2 + x^2)`.
#[inline]
fn block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32) -> [f32; QK4_NL] {
    let mut w = [0.0f32; QK4_NL];
    match qw {
        Some(qw) => {
            for j in 0..QK4_NL {
                w[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
            }
        }
        None => {
            for j in 0..QK4_NL {
                w[j] = xb[j] * xb[j];
            }
        }
    }
    w
}

/// ggml's `sigma2` of a super-block: `Σ x² · (2 / size)`, summed in order.
fn super_block_sigma2(x: &[f32]) -> f32 {
    let mut sigma2 = 0.0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 * (2.0 / x.len() as f32)
}

/// Packs 32 grid indices per 16 bytes (element j low, j+16 high).
fn pack_nibbles(l: &[u8], q4: &mut [u8]) {
    for (lb, qb) in l.chunks_exact(32).zip(q4.chunks_exact_mut(16)) {
        for j in 0..16 {
            qb[j] = lb[j] | (lb[16 + j] << 4);
        }
    }
}

/// Grid indices of `x` at inverse scale `id` (ggml's final re-pick).
fn pick_indices(x: &[f32], id: f32, l: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { simd::pick_indices(x, id, l) };
        return;
    }
    for (lj, &xj) in l.iter_mut().zip(x) {
        *lj = best_index_int8(&KVALUES_IQ4NL, id * xj) as u8;
    }
}

fn block_scale(xb: &[f32], weight: &[f32; QK4_NL]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 is available (checked just above).
        return unsafe { simd::block_scale(xb, weight) };
    }
    block_scale_scalar(xb, weight)
}

/// One IQ4_NL block (`quantize_row_iq4_nl_impl(32, 32, …, ntry = 7)`).
fn quantize_block_iq4_nl(x: &[f32], qw: Option<&[f32]>, y: &mut BlockIq4Nl) {
    let sigma2 = if qw.is_some() {
        super_block_sigma2(x)
    } else {
        0.0
    };
    let weight = block_weights(x, qw, sigma2);
    let scale = block_scale(x, &weight);
    y.d = fp32_to_fp16(scale).to_le_bytes();
    let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let mut l = [0u8; QK4_NL];
    pick_indices(x, id, &mut l);
    pack_nibbles(&l, &mut y.qs);
}

/// One IQ4_XS super-block (`quantize_row_iq4_nl_impl(256, 32, …, ntry = 7)`).
fn quantize_block_iq4_xs(x: &[f32], qw: Option<&[f32]>, y: &mut BlockIq4Xs) {
    const NB: usize = QK_K / QK4_NL;
    let sigma2 = if qw.is_some() {
        super_block_sigma2(x)
    } else {
        0.0
    };
    let mut scales = [0.0f32; NB];
    let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
    for ib in 0..NB {
        let xb = &x[ib * QK4_NL..(ib + 1) * QK4_NL];
        let weight = block_weights(xb, qw.map(|w| &w[ib * QK4_NL..(ib + 1) * QK4_NL]), sigma2);
        let d = block_scale(xb, &weight);
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }

    let d = -max_scale / 32.0;
    y.d = fp32_to_fp16(d).to_le_bytes();
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut scales_h = 0u16;
    let mut l = [0u8; QK_K];
    for ib in 0..NB {
        let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
        let dl = d * ls as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        pick_indices(
            &x[ib * QK4_NL..(ib + 1) * QK4_NL],
            idl,
            &mut l[ib * QK4_NL..(ib + 1) * QK4_NL],
        );
        let ls = (ls + 32) as u8;
        if ib % 2 == 0 {
            y.scales_l[ib / 2] = ls & 0x0F;
        } else {
            y.scales_l[ib / 2] |= (ls & 0x0F) << 4;
        }
        scales_h |= ((ls >> 4) as u16) << (2 * (ib % 8));
    }
    y.scales_h = scales_h.to_le_bytes();
    pack_nibbles(&l, &mut y.qs);
}

/// Quantize a row to IQ4_NL (`quantize_iq4_nl` on one row).
pub fn quantize_row_iq4_nl(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let ys = blocks_mut::<BlockIq4Nl>(dst);
    assert_eq!(src.len(), ys.len() * QK4_NL);
    if let Some(w) = imatrix {
        assert_eq!(w.len(), src.len());
    }
    for (ib, (x, y)) in src.chunks_exact(QK4_NL).zip(ys).enumerate() {
        let qw = imatrix.map(|w| &w[ib * QK4_NL..(ib + 1) * QK4_NL]);
        quantize_block_iq4_nl(x, qw, y);
    }
}

/// Quantize a row to IQ4_XS (`quantize_iq4_xs` on one row).
pub fn quantize_row_iq4_xs(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let ys = blocks_mut::<BlockIq4Xs>(dst);
    assert_eq!(src.len(), ys.len() * QK_K);
    if let Some(w) = imatrix {
        assert_eq!(w.len(), src.len());
    }
    for (ib, (x, y)) in src.chunks_exact(QK_K).zip(ys).enumerate() {
        let qw = imatrix.map(|w| &w[ib * QK_K..(ib + 1) * QK_K]);
        quantize_block_iq4_xs(x, qw, y);
    }
}

/// Dequantize an IQ4_NL row (`dequantize_row_iq4_nl`).
pub fn dequantize_row_iq4_nl(src: &[u8], dst: &mut [f32]) {
    let xs = blocks::<BlockIq4Nl>(src);
    assert_eq!(dst.len(), xs.len() * QK4_NL);
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK4_NL)) {
        let d = fp16_to_fp32(u16::from_le_bytes(b.d));
        let (lo, hi) = y.split_at_mut(QK4_NL / 2);
        for j in 0..QK4_NL / 2 {
            lo[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0x0F) as usize] as f32;
            hi[j] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
        }
    }
}

/// Dequantize an IQ4_XS row (`dequantize_row_iq4_xs`).
pub fn dequantize_row_iq4_xs(src: &[u8], dst: &mut [f32]) {
    let xs = blocks::<BlockIq4Xs>(src);
    assert_eq!(dst.len(), xs.len() * QK_K);
    for (b, y) in xs.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(u16::from_le_bytes(b.d));
        let scales_h = u16::from_le_bytes(b.scales_h) as i32;
        for ib in 0..QK_K / 32 {
            let ls = ((b.scales_l[ib / 2] as i32 >> (4 * (ib % 2))) & 0xF)
                | (((scales_h >> (2 * ib)) & 3) << 4);
            let dl = d * (ls - 32) as f32;
            let qs = &b.qs[16 * ib..16 * ib + 16];
            let (lo, hi) = y[32 * ib..32 * ib + 32].split_at_mut(16);
            for j in 0..16 {
                lo[j] = dl * KVALUES_IQ4NL[(qs[j] & 0x0F) as usize] as f32;
                hi[j] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;

    /// Whether the AVX2 paths can run.
    #[inline]
    pub fn available() -> bool {
        false
    }

    pub unsafe fn pick_indices(x: &[f32], id: f32, l: &mut [u8]) {
        for (lj, &xj) in l.iter_mut().zip(x) {
            *lj = best_index_int8(&KVALUES_IQ4NL, id * xj) as u8;
        }
    }

    pub unsafe fn block_scale(xb: &[f32], weight: &[f32; QK4_NL]) -> f32 {
        block_scale_scalar(xb, weight)
    }
}
