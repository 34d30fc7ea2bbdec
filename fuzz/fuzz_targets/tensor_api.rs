//! The tensor-facing API through the safe wrappers: ggml tensors of fuzzed
//! shapes, types, data and layouts (views included) in owned contexts, a
//! session of a fuzzed configuration, and a fuzzed sequence of `Session`
//! calls and OpenCog constructors. Errors are fine; panics, aborts and
//! crashes are not. Sizes stay small (at most 2^13 elements per tensor, a
//! 4 MiB output context) so runs stay fast.
//!
//! Besides "no panic", a few promises of the design are checked: the result
//! of `quantize_layer` has the source's shape and exactly the bytes
//! `estimate_memory` announced; the KL divergence of a tensor with itself
//! is 0 and otherwise not negative; the OpenCog structures keep their
//! invariants.

#![no_main]

mod common;

use std::ffi::c_int;

use common::{decode, tile, Decode, Reader};
use ggml_qat::ggml::ffi::{GgmlContext, GgmlTensor};
use ggml_qat::ggml::{Context, Tensor};
use ggml_qat::opencog::{AtomSpace, Ecan, MosesTree, MAX_ELEMENTS};
use ggml_qat::qat::config::{Config, RawConfig};
use ggml_qat::qat::layer::LayerClass;
use ggml_qat::qat::session::Session;
use ggml_qat::quant::float::fp32_to_fp16;
use ggml_qat::quant::QuantType;
use libfuzzer_sys::fuzz_target;

extern "C" {
    fn ggml_transpose(ctx: *mut GgmlContext, a: *mut GgmlTensor) -> *mut GgmlTensor;
    fn ggml_permute(
        ctx: *mut GgmlContext,
        a: *mut GgmlTensor,
        axis0: c_int,
        axis1: c_int,
        axis2: c_int,
        axis3: c_int,
    ) -> *mut GgmlTensor;
    fn ggml_view_2d(
        ctx: *mut GgmlContext,
        a: *mut GgmlTensor,
        ne0: i64,
        ne1: i64,
        nb1: usize,
        offset: usize,
    ) -> *mut GgmlTensor;
    fn ggml_row_size(ty: c_int, ne: i64) -> usize;
}

const MAX_ELEMS: i64 = 1 << 13;

/// ggml type ids a tensor may have: every format of the registry, then
/// types ggml knows but we do not implement, then ids ggml does not know.
fn pick_type_id(b: u8) -> i32 {
    const OTHERS: [i32; 9] = [9, 15, 16, 24, 26, 28, 4, 99, -1];
    let n = QuantType::ALL.len();
    let i = b as usize % (n + OTHERS.len());
    if i < n {
        QuantType::ALL[i].ggml_id()
    } else {
        OTHERS[i - n]
    }
}

/// A type id for a config field: mostly valid, sometimes not.
fn pick_config_type(b: u8) -> i32 {
    if b < 240 {
        QuantType::ALL[b as usize % QuantType::ALL.len()].ggml_id()
    } else {
        [
            4,
            9,
            16,
            99,
            -1,
            1000,
            i32::MIN,
            39,
            24,
            26,
            28,
            15,
            0,
            1,
            30,
            2,
        ][(b - 240) as usize]
    }
}

/// A count for the OpenCog constructors: any i32, except that counts that
/// would be accepted but large are folded to at most 4096 so runs stay fast.
fn opencog_count(v: i32) -> i32 {
    if v > 4096 && v as usize <= MAX_ELEMENTS {
        v % 4097
    } else {
        v
    }
}

fn block_size(ty: i32) -> i64 {
    ggml_qat::ggml::reference::type_geometry(ty).map_or(1, |(b, _)| b as i64)
}

/// A shape of 1–4 dims whose row is a whole number of blocks of `ty` and
/// whose element count is at most `MAX_ELEMS`.
fn shape(r: &mut Reader, ty: i32) -> Vec<i64> {
    let n_dims = r.u8() as usize % 4 + 1;
    let blk = block_size(ty);
    let b = r.u8() as i64;
    let ne0 = if blk == 1 {
        b % 300 + 1
    } else {
        (b % 8 + 1) * blk
    };
    let mut ne = vec![ne0];
    let mut total = ne0;
    for _ in 1..n_dims {
        let n = (r.u8() as i64 % 6 + 1).min((MAX_ELEMS / total).max(1));
        total *= n;
        ne.push(n);
    }
    ne
}

/// A fuzzed tensor in `ctx`, or `None` when the context refuses it.
fn make_tensor(r: &mut Reader, ctx: &Context, session: &Session) -> Option<Tensor> {
    let ty = pick_type_id(r.u8());
    let ne = shape(r, ty);
    let fill = r.u8();
    let t = if fill % 5 == 4 {
        // Calibration data instead of fuzzed bytes.
        session
            .calibration_data(ctx, &ne, (fill as f32 - 128.0) / 8.0, (fill % 7) as f32)
            .ok()?
    } else {
        let mut t = ctx.new_tensor(ty, &ne).ok()?;
        let bytes = t.bytes_mut().ok()?;
        let len = (r.u8() as usize) * 4 + 4;
        let chunk: Vec<u8> = (0..len).map(|_| r.u8()).collect();
        if ty == QuantType::F32.ggml_id() && fill % 5 != 0 {
            // Finite F32 values, so the numeric paths run past the check.
            let vals = tile(
                &decode(&chunk, Decode::I8(fill as i32 % 9 - 4)),
                bytes.len() / 4,
            );
            for (d, v) in bytes.chunks_exact_mut(4).zip(vals) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        } else if ty == QuantType::F16.ggml_id() && fill % 5 != 0 {
            for (i, d) in bytes.chunks_exact_mut(2).enumerate() {
                let v = chunk[i % chunk.len()] as i8 as f32 / 16.0;
                d.copy_from_slice(&fp32_to_fp16(v).to_le_bytes());
            }
        } else {
            for (d, s) in bytes.iter_mut().zip(chunk.iter().cycle()) {
                *d = *s;
            }
        }
        t.finish()
    };
    // Sometimes a view of it: transposed, permuted, some rows, every other row.
    let raw = t.as_ptr();
    let ne = t.ne();
    let view = match r.u8() % 8 {
        0 => unsafe { ggml_transpose(ctx.as_ptr(), raw) },
        1 => unsafe { ggml_permute(ctx.as_ptr(), raw, 0, 2, 1, 3) },
        2 if ne[1] > 1 && ne[2] == 1 && ne[3] == 1 => {
            let rows = ne[1] / 2;
            let nb1 = unsafe { ggml_row_size(t.type_id(), ne[0]) };
            unsafe {
                ggml_view_2d(
                    ctx.as_ptr(),
                    raw,
                    ne[0],
                    rows,
                    nb1,
                    nb1 * (ne[1] - rows) as usize,
                )
            }
        }
        3 if ne[1] > 1 && ne[2] == 1 && ne[3] == 1 => {
            let nb1 = unsafe { ggml_row_size(t.type_id(), ne[0]) };
            unsafe { ggml_view_2d(ctx.as_ptr(), raw, ne[0], ne[1] / 2, 2 * nb1, 0) }
        }
        _ => return Some(t),
    };
    unsafe { Tensor::from_raw(view, "view") }.ok()
}

fn pick_class(b: u8) -> LayerClass {
    LayerClass::ALL[b as usize % LayerClass::ALL.len()]
}

fn config(r: &mut Reader) -> Config {
    let b = r.u8();
    if b & 1 == 0 {
        return Config::default();
    }
    let raw = RawConfig {
        qtypes: [
            pick_config_type(r.u8()),
            pick_config_type(r.u8()),
            pick_config_type(r.u8()),
            pick_config_type(r.u8()),
        ],
        kl_divergence_weight: if b & 2 != 0 { r.f32() } else { 0.0 },
        temperature: if b & 4 != 0 {
            r.f32()
        } else {
            (r.u8() % 8) as f32 * 0.5
        },
        progressive_layers: (r.u8() as i32) - 8,
        calibration_samples: (r.u8() % 40) as i32 - 4,
        memory_reduction_target: if b & 8 != 0 { r.f32() } else { 0.0 },
        accuracy_threshold: if b & 16 != 0 {
            r.f32()
        } else {
            (r.u8() % 11) as f32 / 10.0
        },
        enables: [b & 32 != 0, b & 64 != 0, b & 128 != 0],
    };
    raw.validate().unwrap_or_default()
}

fn check_atomspace(a: &AtomSpace, n: i32, c: i32) {
    assert_eq!(a.truth_values.len(), n as usize);
    assert_eq!(a.atom_types.len(), n as usize);
    assert_eq!(a.connections.len(), 2 * c as usize);
    assert!(a.connections.iter().all(|&i| (0..n as i64).contains(&i)));
    assert!(a.truth_values.iter().all(|v| (0.0..=1.0).contains(v)));
}

fn check_moses(t: &MosesTree, n: i32, depth: i32) {
    let n = n as usize;
    assert_eq!(t.connections.len(), 2 * n);
    let mut seen = vec![false; n];
    let mut stack = vec![(0usize, 0i64)];
    while let Some((v, d)) = stack.pop() {
        assert!(
            !std::mem::replace(&mut seen[v], true),
            "node {v} reached twice"
        );
        assert!(d <= depth as i64, "depth {d} > {depth}");
        for c in [t.connections[2 * v], t.connections[2 * v + 1]] {
            if c >= 0 {
                assert!((c as usize) < n);
                stack.push((c as usize, d + 1));
            }
        }
    }
    assert!(seen.iter().all(|&s| s), "not every node is in the tree");
    assert!(t.weights.iter().all(|w| (-4.0..=4.0).contains(w)));
}

fn check_ecan(e: &Ecan, n: i32) {
    assert_eq!(e.attention_scores.len(), n as usize);
    let sum: f64 = e.attention_scores.iter().map(|&v| v as f64).sum();
    assert!((sum - 1.0).abs() < 1e-4, "scores sum to {sum}");
    assert!(e.attention_scores.iter().all(|&v| v > 0.0));
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let session = Session::new(config(&mut r));
    let gmem = (r.u16() as usize) * 64;
    let no_alloc = r.u8() == 0xA5;
    let Ok(gctx) = Context::new_owned(gmem, no_alloc) else {
        return;
    };
    // Sources live in their own context, with room for views.
    let Ok(sctx) = Context::new_owned(1 << 20, false) else {
        return;
    };
    let Some(src) = make_tensor(&mut r, &sctx, &session) else {
        return;
    };
    let mut made: Vec<(Tensor, LayerClass)> = Vec::new();

    for _ in 0..4 {
        if r.is_empty() {
            break;
        }
        match r.u8() % 9 {
            0 | 1 => {
                let class = pick_class(r.u8());
                let before = session.estimate_memory(&[src], &[class]);
                if let Ok(out) = session.quantize_layer(&gctx, &src, class) {
                    assert_eq!(out.ne(), src.ne(), "quantize_layer changed the shape");
                    let ty = src.quant_type().unwrap();
                    if !ggml_qat::qat::plan::is_block_quantized(ty) {
                        assert_eq!(
                            before.as_ref().ok(),
                            Some(&out.nbytes()),
                            "estimate_memory differs from the output's bytes"
                        );
                    }
                    made.push((out, class));
                }
            }
            2 => {
                let t = match r.u8() % 4 {
                    0 => r.f32(),
                    k => [0.5, 1.0, 4.0][k as usize - 1],
                };
                let other = made.last().map_or(src, |m| m.0);
                let normal_t = (1e-3..=1e3).contains(&t);
                if let Ok(v) = session.kl_divergence(&src, &src, t) {
                    if normal_t {
                        assert!(v == 0.0, "KL(x, x) = {v} at T = {t}");
                    }
                }
                if let Ok(v) = session.kl_divergence(&src, &other, t) {
                    if normal_t {
                        assert!(v.is_finite() && v >= -1e-6, "KL = {v} at T = {t}");
                    }
                }
            }
            3 => {
                let n_dims = r.u8() as usize % 6;
                let ne: Vec<i64> = (0..n_dims)
                    .map(|_| match r.u8() {
                        0 => 0,
                        1 => -1,
                        2 => i64::MAX,
                        3 => 1 << 40,
                        b => b as i64 % 40 + 1,
                    })
                    .collect();
                let mean = if r.u8() & 1 == 0 { r.f32() } else { 0.0 };
                let std = if r.u8() & 1 == 0 { r.f32() } else { 1.0 };
                if let Ok(t) = session.calibration_data(&gctx, &ne, mean, std) {
                    assert_eq!(&t.ne()[..ne.len()], &ne[..]);
                }
            }
            4 => {
                let mut ts = vec![src];
                let mut cs = vec![pick_class(r.u8())];
                for (t, c) in &made {
                    ts.push(*t);
                    cs.push(*c);
                }
                let _ = session.estimate_memory(&ts, &cs);
            }
            5 => {
                let class = pick_class(r.u8());
                let calib = if r.u8() & 1 == 0 {
                    make_tensor(&mut r, &sctx, &session)
                } else {
                    None
                };
                if let Ok(out) = session.quantize_optimized(&gctx, &src, class, calib.as_ref()) {
                    assert_eq!(out.ne(), src.ne());
                    made.push((out, class));
                }
            }
            6 => {
                let (n, c) = (opencog_count(r.i32()), opencog_count(r.i32()));
                let mut s = session.next_stream();
                if let Ok(a) = AtomSpace::generate(n, c, &mut s) {
                    check_atomspace(&a, n, c);
                }
                let e = opencog_count(r.i32());
                if let Ok(x) = Ecan::generate(e, &mut s) {
                    check_ecan(&x, e);
                }
            }
            7 => {
                let (n, d) = (opencog_count(r.i32()), r.i32());
                let mut s = session.next_stream();
                if let Ok(t) = MosesTree::generate(n, d, &mut s) {
                    check_moses(&t, n, d);
                }
            }
            _ => {
                // Measured validation on ggml's CPU backend (small shapes).
                if src.nelements() <= 1024 {
                    let other = made.last().map_or(src, |m| m.0);
                    let x = if r.u8() & 1 == 0 {
                        make_tensor(&mut r, &sctx, &session)
                    } else {
                        None
                    };
                    let _ = session.validate(&src, &other, x.as_ref());
                }
            }
        }
    }
});
