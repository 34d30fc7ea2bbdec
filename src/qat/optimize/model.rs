//! The block models of the K-quant family (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)
//! as the optimizer sees them: a [`Kind`] per format (sub-block size, code
//! range, how sub-block scales are stored) and a [`Model`] of one row (codes,
//! fp16 super-scales, integer sub-block scales and mins), decoded from and
//! encoded to ggml's bytes exactly, with the value ggml's dequantizer gives
//! each element.

use crate::quant::format;
use crate::quant::kquants::q2k::BlockQ2K;
use crate::quant::kquants::q3k::{get_scale, put_scale, BlockQ3K};
use crate::quant::kquants::q4k::{pack_q4, BlockQ4K};
use crate::quant::kquants::q5k::{pack_q5, BlockQ5K};
use crate::quant::kquants::q6k::{pack_q6, BlockQ6K};
use crate::quant::kquants::scale_min::{get_scale_min_k4, pack_scales_mins};
use crate::quant::kquants::{as_blocks, as_blocks_mut, fp16_to_fp32, QK_K};
use crate::quant::QuantType;

/// How a format's sub-block scales are stored.
#[derive(Clone, Copy, Debug)]
pub(super) enum Scales {
    /// `a_j = d·ls_j`, `b_j = dmin·lm_j`, `ls, lm ∈ [0, smax]`, value `a·q − b`.
    WithMin { smax: i32 },
    /// `a_j = d·ls_j`, `ls ∈ [lo, hi]`, value `a·(code + lev0)`.
    Signed { lo: i32, hi: i32 },
}

/// A K-quant as the optimizer sees it: super-blocks of 256, sub-blocks of
/// `group` values, codes `0..nlev` standing for levels `lev0 + code`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Kind {
    pub(super) ty: QuantType,
    pub(super) group: usize,
    pub(super) lev0: i32,
    pub(super) nlev: i32,
    pub(super) scales: Scales,
}

/// The model of `ty`; `None` outside the K-quants.
pub(super) fn kind(ty: QuantType) -> Option<Kind> {
    let (group, lev0, nlev, scales) = match ty {
        QuantType::Q2_K => (16, 0, 4, Scales::WithMin { smax: 15 }),
        QuantType::Q3_K => (16, -4, 8, Scales::Signed { lo: -32, hi: 31 }),
        QuantType::Q4_K => (32, 0, 16, Scales::WithMin { smax: 63 }),
        QuantType::Q5_K => (32, 0, 32, Scales::WithMin { smax: 63 }),
        QuantType::Q6_K => (16, -32, 64, Scales::Signed { lo: -128, hi: 127 }),
        _ => return None,
    };
    Some(Kind {
        ty,
        group,
        lev0,
        nlev,
        scales,
    })
}

/// `x.round()` (half away from zero), bit for bit, without the libm call
/// that `f64::round` is on baseline x86-64 (the search's hottest
/// operation).
#[inline(always)]
pub(super) fn round(x: f64) -> f64 {
    // Beyond 2^52 (and for NaN, ±inf) x is its own rounding.
    let fractional = x.abs() < 4_503_599_627_370_496.0;
    if !fractional {
        return x;
    }
    let t = x as i64 as f64; // truncation, exact here
    let f = x - t; // exact
    if f >= 0.5 {
        t + 1.0
    } else if f <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// The decoded parameters of one row.
#[derive(Clone, Debug)]
pub(super) struct Model {
    pub(super) kind: Kind,
    pub(super) codes: Vec<u8>,
    /// Per super-block, fp16 bits.
    pub(super) d: Vec<u16>,
    pub(super) dmin: Vec<u16>,
    /// Per sub-block.
    pub(super) ls: Vec<i32>,
    pub(super) lm: Vec<i32>,
}

impl Model {
    pub(super) fn new(kind: Kind, n: usize) -> Model {
        let nsb = n / QK_K;
        let ng = n / kind.group;
        Model {
            kind,
            codes: vec![0; n],
            d: vec![0; nsb],
            dmin: vec![0; nsb],
            ls: vec![0; ng],
            lm: vec![0; ng],
        }
    }

    #[inline]
    pub(super) fn a(&self, j: usize) -> f32 {
        fp16_to_fp32(self.d[j * self.kind.group / QK_K]) * self.ls[j] as f32
    }

    #[inline]
    pub(super) fn b(&self, j: usize) -> f32 {
        match self.kind.scales {
            Scales::WithMin { .. } => {
                fp16_to_fp32(self.dmin[j * self.kind.group / QK_K]) * self.lm[j] as f32
            }
            Scales::Signed { .. } => 0.0,
        }
    }

    #[inline]
    pub(super) fn lev(&self, code: u8) -> f32 {
        (self.kind.lev0 + code as i32) as f32
    }

    /// The value ggml's dequantizer gives element `i` (same f32 operations).
    #[inline]
    pub(super) fn value(&self, i: usize) -> f32 {
        let j = i / self.kind.group;
        self.a(j) * self.lev(self.codes[i]) - self.b(j)
    }

    /// The code whose value `a·lev − b` is nearest to `t`; `None` when the
    /// sub-block's scale is zero (every code gives the same value).
    #[inline]
    pub(super) fn nearest_code(&self, t: f64, a: f32, b: f32) -> Option<u8> {
        if a == 0.0 || !a.is_finite() {
            return None;
        }
        let u = (t + b as f64) / a as f64 - self.kind.lev0 as f64;
        if !u.is_finite() {
            return None;
        }
        Some(round(u).clamp(0.0, (self.kind.nlev - 1) as f64) as u8)
    }

    /// Read super-block `sb` (its parameters and codes) from ggml bytes.
    pub(super) fn decode_block(&mut self, sb: usize, blk: &[u8]) {
        let base = sb * QK_K;
        let gpb = QK_K / self.kind.group;
        let p = Params {
            d: &mut self.d[sb],
            dmin: &mut self.dmin[sb],
            ls: &mut self.ls[sb * gpb..(sb + 1) * gpb],
            lm: &mut self.lm[sb * gpb..(sb + 1) * gpb],
            codes: &mut self.codes[base..base + QK_K],
        };
        match self.kind.ty {
            QuantType::Q2_K => decode_q2k(&as_blocks::<BlockQ2K>(blk)[0], p),
            QuantType::Q3_K => decode_q3k(&as_blocks::<BlockQ3K>(blk)[0], p),
            QuantType::Q4_K => {
                let b = &as_blocks::<BlockQ4K>(blk)[0];
                decode_q45k(b.d, b.dmin, b.scales, &b.qs, None, p);
            }
            QuantType::Q5_K => {
                let b = &as_blocks::<BlockQ5K>(blk)[0];
                decode_q45k(b.d, b.dmin, b.scales, &b.qs, Some(&b.qh), p);
            }
            QuantType::Q6_K => decode_q6k(&as_blocks::<BlockQ6K>(blk)[0], p),
            _ => unreachable!("no model for {:?}", self.kind.ty),
        }
    }

    pub(super) fn decode(kind: Kind, bytes: &[u8], n: usize) -> Model {
        let mut m = Model::new(kind, n);
        let bb = format(kind.ty).block_bytes;
        for (sb, blk) in bytes.chunks_exact(bb).enumerate() {
            m.decode_block(sb, blk);
        }
        m
    }

    /// Write the row in ggml's layout.
    pub(super) fn encode(&self, out: &mut [u8]) {
        let bb = format(self.kind.ty).block_bytes;
        let gpb = QK_K / self.kind.group;
        for (sb, blk) in out.chunks_exact_mut(bb).enumerate() {
            let mut l = [0u8; QK_K];
            l.copy_from_slice(&self.codes[sb * QK_K..(sb + 1) * QK_K]);
            let ls = &self.ls[sb * gpb..(sb + 1) * gpb];
            let lm = &self.lm[sb * gpb..(sb + 1) * gpb];
            let d = self.d[sb].to_le_bytes();
            let dmin = self.dmin[sb].to_le_bytes();
            match self.kind.ty {
                QuantType::Q2_K => {
                    encode_q2k(&mut as_blocks_mut::<BlockQ2K>(blk)[0], d, dmin, ls, lm, &l)
                }
                QuantType::Q3_K => encode_q3k(&mut as_blocks_mut::<BlockQ3K>(blk)[0], d, ls, l),
                QuantType::Q4_K => {
                    let b = &mut as_blocks_mut::<BlockQ4K>(blk)[0];
                    b.d = d;
                    b.dmin = dmin;
                    b.scales = packed_scales_mins(ls, lm);
                    pack_q4::<true>(&l, &mut b.qs);
                }
                QuantType::Q5_K => {
                    let b = &mut as_blocks_mut::<BlockQ5K>(blk)[0];
                    b.d = d;
                    b.dmin = dmin;
                    b.scales = packed_scales_mins(ls, lm);
                    pack_q5::<true>(&l, &mut b.qh, &mut b.qs);
                }
                QuantType::Q6_K => encode_q6k(&mut as_blocks_mut::<BlockQ6K>(blk)[0], d, ls, &l),
                _ => unreachable!(),
            }
        }
    }
}

/// The parameters and codes of one super-block of a [`Model`], as the
/// decoders fill them.
struct Params<'a> {
    d: &'a mut u16,
    dmin: &'a mut u16,
    ls: &'a mut [i32],
    lm: &'a mut [i32],
    codes: &'a mut [u8],
}

fn decode_q2k(b: &BlockQ2K, p: Params) {
    *p.d = u16::from_le_bytes(b.d);
    *p.dmin = u16::from_le_bytes(b.dmin);
    for j in 0..16 {
        p.ls[j] = (b.scales[j] & 0xF) as i32;
        p.lm[j] = (b.scales[j] >> 4) as i32;
    }
    unpack_2bit(&b.qs, p.codes);
}

fn decode_q3k(b: &BlockQ3K, p: Params) {
    *p.d = u16::from_le_bytes(b.d);
    for j in 0..16 {
        p.ls[j] = get_scale(&b.scales, j);
    }
    unpack_2bit(&b.qs, p.codes);
    for (i, c) in p.codes.iter_mut().enumerate() {
        if b.hmask[i % 32] & (1 << (i / 32)) != 0 {
            *c += 4;
        }
    }
}

/// Q4_K (`qh` None) and Q5_K: the same scales and low nibbles, Q5_K's fifth
/// bits in `qh`.
fn decode_q45k(
    d: [u8; 2],
    dmin: [u8; 2],
    scales: [u8; 12],
    qs: &[u8; QK_K / 2],
    qh: Option<&[u8; QK_K / 8]>,
    p: Params,
) {
    *p.d = u16::from_le_bytes(d);
    *p.dmin = u16::from_le_bytes(dmin);
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, &scales);
        p.ls[j] = s as i32;
        p.lm[j] = m as i32;
    }
    for g in 0..4 {
        for k in 0..32 {
            let mut c1 = qs[32 * g + k] & 0xF;
            let mut c2 = qs[32 * g + k] >> 4;
            if let Some(qh) = qh {
                c1 += ((qh[k] >> (2 * g)) & 1) << 4;
                c2 += ((qh[k] >> (2 * g + 1)) & 1) << 4;
            }
            p.codes[64 * g + k] = c1;
            p.codes[64 * g + 32 + k] = c2;
        }
    }
}

fn decode_q6k(b: &BlockQ6K, p: Params) {
    *p.d = u16::from_le_bytes(b.d);
    for j in 0..16 {
        p.ls[j] = b.scales[j] as i8 as i32;
    }
    for h in 0..2 {
        let ql = &b.ql[64 * h..64 * h + 64];
        let qh = &b.qh[32 * h..32 * h + 32];
        let c = &mut p.codes[128 * h..128 * h + 128];
        for k in 0..32 {
            c[k] = (ql[k] & 0xF) | ((qh[k] & 3) << 4);
            c[k + 32] = (ql[k + 32] & 0xF) | (((qh[k] >> 2) & 3) << 4);
            c[k + 64] = (ql[k] >> 4) | (((qh[k] >> 4) & 3) << 4);
            c[k + 96] = (ql[k + 32] >> 4) | (((qh[k] >> 6) & 3) << 4);
        }
    }
}

fn encode_q2k(b: &mut BlockQ2K, d: [u8; 2], dmin: [u8; 2], ls: &[i32], lm: &[i32], l: &[u8; QK_K]) {
    b.d = d;
    b.dmin = dmin;
    for j in 0..16 {
        b.scales[j] = ls[j] as u8 | ((lm[j] as u8) << 4);
    }
    crate::quant::kquants::pack_2bit(l, &mut b.qs);
}

fn encode_q3k(b: &mut BlockQ3K, d: [u8; 2], ls: &[i32], mut l: [u8; QK_K]) {
    b.d = d;
    b.scales = [0; 12];
    for j in 0..16 {
        put_scale(&mut b.scales, j, ls[j] + 32);
    }
    b.hmask = [0; QK_K / 8];
    for j in 0..QK_K {
        if l[j] > 3 {
            b.hmask[j % 32] |= 1 << (j / 32);
            l[j] -= 4;
        }
    }
    crate::quant::kquants::pack_2bit(&l, &mut b.qs);
}

/// Q4_K's and Q5_K's 12 bytes of 6-bit scales and mins.
fn packed_scales_mins(ls: &[i32], lm: &[i32]) -> [u8; 12] {
    let mut s8 = [0u8; 8];
    let mut m8 = [0u8; 8];
    for j in 0..8 {
        s8[j] = ls[j] as u8;
        m8[j] = lm[j] as u8;
    }
    pack_scales_mins(&s8, &m8)
}

fn encode_q6k(b: &mut BlockQ6K, d: [u8; 2], ls: &[i32], l: &[u8; QK_K]) {
    b.d = d;
    for j in 0..16 {
        b.scales[j] = ls[j] as i8 as u8;
    }
    pack_q6::<true>(l, &mut b.ql, &mut b.qh);
}

/// Inverse of `pack_2bit`.
fn unpack_2bit(qs: &[u8; QK_K / 4], l: &mut [u8]) {
    for h in 0..2 {
        for k in 0..32 {
            let q = qs[32 * h + k];
            for s in 0..4 {
                l[128 * h + 32 * s + k] = (q >> (2 * s)) & 3;
            }
        }
    }
}
