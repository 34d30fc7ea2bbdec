//! The grid of one row in any block format, as the Gram quantizer
//! ([`super::feedback`]) sees it: a block's parameters (scale, min,
//! sub-block scales) are taken from ggml's own bytes for that block, and
//! then the code of each element is chosen one at a time, nearest to a
//! target value, and written into those bytes. What comes out is ggml's
//! layout with ggml's parameters and other codes: a valid tensor of the
//! type, read by ggml's dequantizer.
//!
//! Legacy formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and IQ4_NL / IQ4_XS are
//! handled on their bytes here; the K-quants through their block model
//! ([`super::model`]).

use super::model::{kind, Model};
use crate::quant::float::fp16_to_fp32;
use crate::quant::iq4::KVALUES_IQ4NL;
use crate::quant::kquants::QK_K;
use crate::quant::{format, QuantType};

/// A row being coded: [`Grid::set_block`] takes a block's parameters from
/// ggml's bytes, [`Grid::pick`] chooses element codes, [`Grid::encode`]
/// writes the row.
pub(super) enum Grid {
    Bytes(ByteGrid),
    K(Model),
}

/// Whether `ty` has a grid (every block format; not the float types).
pub(super) fn supports(ty: QuantType) -> bool {
    kind(ty).is_some() || Layout::of(ty).is_some()
}

impl Grid {
    /// A grid for rows of `n` of `ty`; `None` for types without one (floats).
    pub(super) fn new(ty: QuantType, n: usize) -> Option<Grid> {
        if let Some(k) = kind(ty) {
            return Some(Grid::K(Model::new(k, n)));
        }
        let layout = Layout::of(ty)?;
        let f = format(ty);
        Some(Grid::Bytes(ByteGrid {
            layout,
            block_bytes: f.block_bytes,
            bytes: vec![0; n / f.block_size * f.block_bytes],
            a: 0.0,
            b: 0.0,
            sub: [0.0; 8],
        }))
    }

    /// Elements per block of parameters (what one call of ggml's
    /// quantizer chooses scales for).
    pub(super) fn block(&self) -> usize {
        match self {
            Grid::K(_) => QK_K,
            Grid::Bytes(g) => g.layout.block(),
        }
    }

    /// Takes block `b`'s parameters (and codes) from ggml's bytes `blk`.
    pub(super) fn set_block(&mut self, b: usize, blk: &[u8]) {
        match self {
            Grid::K(m) => m.decode_block(b, blk),
            Grid::Bytes(g) => g.set_block(b, blk),
        }
    }

    /// Chooses element `i`'s code nearest to `t` (inside the block last
    /// set); returns the value ggml will decode.
    pub(super) fn pick(&mut self, i: usize, t: f32) -> f32 {
        match self {
            Grid::K(m) => {
                let j = i / m.kind.group;
                let (a, b) = (m.a(j), m.b(j));
                if let Some(c) = m.nearest_code(t as f64, a, b) {
                    m.codes[i] = c;
                }
                m.value(i)
            }
            Grid::Bytes(g) => g.pick(i, t),
        }
    }

    /// The row's bytes.
    pub(super) fn encode(&self, out: &mut [u8]) {
        match self {
            Grid::K(m) => m.encode(out),
            Grid::Bytes(g) => out.copy_from_slice(&g.bytes),
        }
    }
}

/// Where the parameters and codes of a non-K format sit in a block.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// `d·(q − off)` (+ `m` when `min`), `bits` 4 or 5, 32 per block.
    Affine { bits: u32, off: i32, min: bool },
    /// Q8_0: `d·q`, q an i8.
    Q8,
    /// IQ4_NL: `d·kvalues[q]`, 32 per block.
    Nl,
    /// IQ4_XS: `d·(ls − 32)·kvalues[q]`, 8 sub-blocks of 32.
    Xs,
}

impl Layout {
    fn of(ty: QuantType) -> Option<Layout> {
        Some(match ty {
            QuantType::Q4_0 => Layout::Affine {
                bits: 4,
                off: 8,
                min: false,
            },
            QuantType::Q4_1 => Layout::Affine {
                bits: 4,
                off: 0,
                min: true,
            },
            QuantType::Q5_0 => Layout::Affine {
                bits: 5,
                off: 16,
                min: false,
            },
            QuantType::Q5_1 => Layout::Affine {
                bits: 5,
                off: 0,
                min: true,
            },
            QuantType::Q8_0 => Layout::Q8,
            QuantType::IQ4_NL => Layout::Nl,
            QuantType::IQ4_XS => Layout::Xs,
            _ => return None,
        })
    }

    fn block(self) -> usize {
        match self {
            Layout::Xs => QK_K,
            _ => 32,
        }
    }
}

/// A non-K row as bytes, and the decoded parameters of the current block.
pub(super) struct ByteGrid {
    layout: Layout,
    block_bytes: usize,
    bytes: Vec<u8>,
    /// Scale and min of the current block.
    a: f32,
    b: f32,
    /// IQ4_XS: each sub-block's scale `d·(ls − 32)`.
    sub: [f32; 8],
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    fp16_to_fp32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Index of the value of `grid · scale` nearest to `t`.
fn nearest_nl(t: f32, scale: f32) -> (u8, f32) {
    let mut best = (0u8, f32::INFINITY, 0f32);
    for (k, &g) in KVALUES_IQ4NL.iter().enumerate() {
        let v = scale * g as f32;
        let e = (v - t).abs();
        if e < best.1 {
            best = (k as u8, e, v);
        }
    }
    (best.0, best.2)
}

impl ByteGrid {
    fn set_block(&mut self, b: usize, blk: &[u8]) {
        let at = b * self.block_bytes;
        self.bytes[at..at + self.block_bytes].copy_from_slice(blk);
        self.a = f16_at(blk, 0);
        self.b = 0.0;
        match self.layout {
            Layout::Affine { min: true, .. } => self.b = f16_at(blk, 2),
            Layout::Xs => {
                let sh = u16::from_le_bytes([blk[2], blk[3]]);
                for ib in 0..8 {
                    let lo = (blk[4 + ib / 2] >> (4 * (ib % 2))) & 0x0F;
                    let ls = (lo as i32) | ((((sh >> (2 * ib)) & 3) as i32) << 4);
                    self.sub[ib] = self.a * (ls - 32) as f32;
                }
            }
            _ => {}
        }
    }

    fn pick(&mut self, i: usize, t: f32) -> f32 {
        let bs = self.layout.block();
        let blk = &mut self.bytes[i / bs * self.block_bytes..][..self.block_bytes];
        let j = i % bs;
        match self.layout {
            Layout::Affine { bits, off, min } => {
                let d = self.a;
                let hi = (1i32 << bits) - 1;
                let q = if d != 0.0 && d.is_finite() {
                    let u = (t - self.b) / d + off as f32;
                    if u.is_finite() {
                        (u.round() as i32).clamp(0, hi)
                    } else {
                        code_affine(blk, bits, min, j)
                    }
                } else {
                    code_affine(blk, bits, min, j)
                };
                set_affine(blk, bits, min, j, q as u8);
                if min {
                    q as f32 * d + self.b
                } else {
                    (q - off) as f32 * d
                }
            }
            Layout::Q8 => {
                let d = self.a;
                let mut q = blk[2 + j] as i8 as i32;
                if d != 0.0 && d.is_finite() {
                    let u = t / d;
                    if u.is_finite() {
                        q = (u.round() as i32).clamp(-128, 127);
                    }
                }
                blk[2 + j] = q as i8 as u8;
                q as f32 * d
            }
            Layout::Nl => {
                let (q, v) = nearest_nl(t, self.a);
                set_nibble(&mut blk[2..18], j, q);
                v
            }
            Layout::Xs => {
                let ib = j / 32;
                let (q, v) = nearest_nl(t, self.sub[ib]);
                set_nibble(&mut blk[8 + 16 * ib..8 + 16 * ib + 16], j % 32, q);
                v
            }
        }
    }
}

/// Sets element `j` (of 32) in 16 bytes of nibbles: low nibbles hold
/// elements 0..16, high nibbles 16..32.
fn set_nibble(qs: &mut [u8], j: usize, q: u8) {
    let (k, shift) = if j < 16 { (j, 0) } else { (j - 16, 4) };
    qs[k] = (qs[k] & !(0x0F << shift)) | ((q & 0x0F) << shift);
}

/// Offset of the nibbles and of the high bits in a legacy block.
fn affine_offsets(bits: u32, min: bool) -> (usize, usize) {
    let head = if min { 4 } else { 2 };
    if bits == 5 {
        (head + 4, head)
    } else {
        (head, 0)
    }
}

fn code_affine(blk: &[u8], bits: u32, min: bool, j: usize) -> i32 {
    let (qs, qh) = affine_offsets(bits, min);
    let (k, shift) = if j < 16 { (j, 0) } else { (j - 16, 4) };
    let mut q = ((blk[qs + k] >> shift) & 0x0F) as i32;
    if bits == 5 {
        let h = u32::from_le_bytes([blk[qh], blk[qh + 1], blk[qh + 2], blk[qh + 3]]);
        q |= (((h >> j) & 1) as i32) << 4;
    }
    q
}

fn set_affine(blk: &mut [u8], bits: u32, min: bool, j: usize, q: u8) {
    let (qs, qh) = affine_offsets(bits, min);
    set_nibble(&mut blk[qs..qs + 16], j, q);
    if bits == 5 {
        let mut h = u32::from_le_bytes([blk[qh], blk[qh + 1], blk[qh + 2], blk[qh + 3]]);
        h = (h & !(1 << j)) | (((q as u32 >> 4) & 1) << j);
        blk[qh..qh + 4].copy_from_slice(&h.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_rows;

    const TYPES: [QuantType; 12] = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::IQ4_NL,
        QuantType::IQ4_XS,
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
    ];

    fn row(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * 3.0
            })
            .collect()
    }

    /// Picking every element's value as ggml dequantizes it gives back
    /// ggml's bytes, and `pick` returns exactly the dequantized value.
    #[test]
    fn picking_ggml_values_gives_ggml_bytes() {
        let n = 512;
        for ty in TYPES {
            let w = row(n, ty as u32);
            let f = format(ty);
            let mut q = vec![0u8; f.row_bytes(n).unwrap()];
            quantize_rows(ty, &w, n, &mut q, None).unwrap();
            let mut deq = vec![0f32; n];
            (f.dequantize_row)(&q, &mut deq);
            let mut g = Grid::new(ty, n).unwrap();
            let bs = g.block();
            let bb = f.block_bytes * bs / f.block_size;
            for b in 0..n / bs {
                g.set_block(b, &q[b * bb..(b + 1) * bb]);
                for i in b * bs..(b + 1) * bs {
                    assert_eq!(g.pick(i, deq[i]), deq[i], "{ty:?} element {i}");
                }
            }
            let mut out = vec![0u8; q.len()];
            g.encode(&mut out);
            let mut back = vec![0f32; n];
            (f.dequantize_row)(&out, &mut back);
            assert_eq!(back, deq, "{ty:?}");
        }
    }

    /// Other targets give other codes, and the value `pick` returns is
    /// what ggml's dequantizer reads from the bytes written.
    #[test]
    fn picked_values_are_what_ggml_reads() {
        let n = 512;
        for ty in TYPES {
            let w = row(n, 7 + ty as u32);
            let t = row(n, 99 + ty as u32);
            let f = format(ty);
            let mut q = vec![0u8; f.row_bytes(n).unwrap()];
            quantize_rows(ty, &w, n, &mut q, None).unwrap();
            let mut g = Grid::new(ty, n).unwrap();
            let bs = g.block();
            let bb = f.block_bytes * bs / f.block_size;
            let mut picked = vec![0f32; n];
            for b in 0..n / bs {
                g.set_block(b, &q[b * bb..(b + 1) * bb]);
                for i in b * bs..(b + 1) * bs {
                    picked[i] = g.pick(i, t[i]);
                }
            }
            let mut out = vec![0u8; q.len()];
            g.encode(&mut out);
            assert_ne!(out, q, "{ty:?}: the codes should change");
            let mut back = vec![0f32; n];
            (f.dequantize_row)(&out, &mut back);
            assert_eq!(back, picked, "{ty:?}");
        }
    }
}
