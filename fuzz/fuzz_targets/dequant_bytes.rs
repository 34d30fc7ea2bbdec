//! Dequantize arbitrary bytes with every registered format, and call the
//! slice API with arbitrary (often inconsistent) lengths.
//!
//! Input: `[type, mode, a(2), b(2), c(2), bytes…]`.
//! - mode bit 0 clear: the bytes are whole blocks of `type` (the tail that
//!   does not fill a block is dropped), split into rows of `a % blocks + 1`
//!   blocks when that divides; our floats must equal ggml's `to_float` bit
//!   for bit (NaN/∞ scales included).
//! - mode bit 0 set: `dequantize_rows` and `quantize_rows` with row length
//!   `a`, destination length `b` and importance-matrix length `c` taken as
//!   given: they must return an error or succeed, never panic, and succeed
//!   exactly when the lengths are consistent.

#![no_main]

mod common;

use common::{first_float_diff, pick_type, Reader};
use ggml_qat::quant::{dequantize_rows, format, quantize_rows};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let ty = pick_type(r.u8());
    let mode = r.u8();
    let (a, b, c) = (r.u16() as usize, r.u16() as usize, r.u16() as usize);
    let bytes = r.rest();
    let f = format(ty);

    if mode & 1 == 0 {
        let n_blocks = (bytes.len() / f.block_bytes).min(4096);
        if n_blocks == 0 {
            return;
        }
        let src = &bytes[..n_blocks * f.block_bytes];
        let blocks_per_row = a % n_blocks + 1;
        let blocks_per_row = if n_blocks % blocks_per_row == 0 {
            blocks_per_row
        } else {
            n_blocks
        };
        let n = n_blocks * f.block_size;
        let mut got = vec![0f32; n];
        dequantize_rows(ty, src, blocks_per_row * f.block_size, &mut got)
            .expect("consistent lengths");
        let want = common::ggml_to_float(ty, src, n);
        if let Some((i, g, w)) = first_float_diff(&got, &want) {
            panic!(
                "{ty:?}: value {i} (bits {:#010x} vs {:#010x}): ours {g:e} ggml {w:e}",
                g.to_bits(),
                w.to_bits()
            );
        }
        return;
    }

    // Arbitrary lengths: dequantize `bytes` as rows of `a` into `b` floats.
    let n_per_row = a;
    let mut dst = vec![0f32; b];
    let consistent = n_per_row > 0
        && n_per_row % f.block_size == 0
        && b % n_per_row == 0
        && bytes.len() == b / n_per_row * (n_per_row / f.block_size * f.block_bytes);
    let res = dequantize_rows(ty, bytes, n_per_row, &mut dst);
    assert_eq!(res.is_ok(), consistent, "{ty:?} dequantize {res:?}");

    // And quantize `b` floats (from the bytes) as rows of `a` into the
    // bytes' length, with an importance matrix of `c` weights when mode
    // bit 1 is set.
    let src: Vec<f32> = (0..b)
        .map(|i| bytes.get(i).map_or(0.0, |&v| v as i8 as f32))
        .collect();
    let imatrix = vec![1.0f32; c];
    let imat = (mode & 2 != 0).then_some(imatrix.as_slice());
    let mut q = bytes.to_vec();
    let consistent = n_per_row > 0
        && n_per_row % f.block_size == 0
        && b % n_per_row == 0
        && q.len() == b / n_per_row * (n_per_row / f.block_size * f.block_bytes)
        && imat.is_none_or(|w| w.len() == n_per_row);
    let res = quantize_rows(ty, &src, n_per_row, &mut q, imat);
    assert_eq!(res.is_ok(), consistent, "{ty:?} quantize {res:?}");
});
