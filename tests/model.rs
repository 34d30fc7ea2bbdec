//! Whole-model quantization on small synthesized GGUF files: the outputs
//! read back by ggml's own gguf reader, their tensors equal to
//! ggml_quantize_chunk's bytes, llama-quantize's per-tensor types, and every
//! bad input handled (clear error, no partial output, input untouched).

use std::path::{Path, PathBuf};

use ggml_qat::ggml::reference;
use ggml_qat::model::gguf::{self, Kv, OutTensor};
use ggml_qat::model::preset::{Preset, Target};
use ggml_qat::model::{quantize_model, ModelError, Params, Progress};
use ggml_qat::quant::QuantType;

#[path = "common/tmp.rs"]
mod tmp;
use tmp::Tmp;

/// Deterministic values with a few outliers.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
            if i % 97 == 0 {
                u * 8.0
            } else {
                u
            }
        })
        .collect()
}

/// A source tensor: name, ne, type, its F32 values (what the tool should see).
struct Src {
    name: String,
    ne: [u64; 4],
    ty: QuantType,
    f32: Vec<f32>,
    bytes: Vec<u8>,
}

fn src(name: &str, ne: &[u64], ty: QuantType, seed: u64) -> Src {
    let mut full = [1u64; 4];
    full[..ne.len()].copy_from_slice(ne);
    let n: u64 = full.iter().product();
    let v = values(n as usize, seed);
    let row = full[0] as usize;
    let bytes = if ty == QuantType::F32 {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    } else {
        reference::quantize_chunk(ty, &v, v.len() / row, row, None)
    };
    // What the file holds, as F32 (ggml's own conversion).
    let f32 = if ty == QuantType::F32 {
        v
    } else {
        reference::to_float(ty, &bytes, n as usize)
    };
    Src {
        name: name.into(),
        ne: full,
        ty,
        f32,
        bytes,
    }
}

fn write_gguf(path: &Path, kvs: &[Kv], tensors: &[Src], alignment: u64) {
    let out: Vec<OutTensor> = tensors
        .iter()
        .map(|t| OutTensor {
            name: t.name.clone(),
            ne: t.ne,
            ty: t.ty.ggml_id(),
            nbytes: t.bytes.len() as u64,
        })
        .collect();
    let (mut b, offsets) = gguf::encode_header(kvs, &out, alignment);
    let base = b.len() as u64;
    for (t, off) in tensors.iter().zip(offsets) {
        assert_eq!(base + off, b.len() as u64);
        b.extend(&t.bytes);
        b.resize(
            (b.len() as u64).div_ceil(alignment) as usize * alignment as usize,
            0,
        );
    }
    std::fs::write(path, b).unwrap();
}

fn llama_kvs(arch: &str, n_layer: u32) -> Vec<Kv> {
    vec![
        Kv::string("general.architecture", arch),
        Kv::string("general.name", "synthetic"),
        Kv::u32(&format!("{arch}.block_count"), n_layer),
        Kv::u32(&format!("{arch}.embedding_length"), 256),
        Kv::u32(&format!("{arch}.attention.head_count"), 8),
        Kv::u32(&format!("{arch}.attention.head_count_kv"), 2),
        Kv::u32("general.file_type", 1),
    ]
}

/// A small llama-style model: F16 and BF16 weights, F32 norms, an odd row
/// length, a Q8_0 tensor, output and token embeddings.
fn llama_model(n_layer: u32) -> Vec<Src> {
    use QuantType::*;
    let mut t = vec![
        src("token_embd.weight", &[256, 64], F16, 1),
        src("output_norm.weight", &[256], F32, 2),
        src("output.weight", &[256, 64], BF16, 3),
    ];
    for l in 0..n_layer as u64 {
        let s = 100 * (l + 1);
        t.push(src(&format!("blk.{l}.attn_norm.weight"), &[256], F32, s));
        t.push(src(
            &format!("blk.{l}.attn_q.weight"),
            &[256, 32],
            F16,
            s + 1,
        ));
        t.push(src(
            &format!("blk.{l}.attn_k.weight"),
            &[256, 8],
            F32,
            s + 2,
        ));
        t.push(src(
            &format!("blk.{l}.attn_v.weight"),
            &[256, 8],
            BF16,
            s + 3,
        ));
        t.push(src(
            &format!("blk.{l}.attn_output.weight"),
            &[256, 16],
            F16,
            s + 4,
        ));
        t.push(src(&format!("blk.{l}.ffn_norm.weight"), &[256], F32, s + 5));
        t.push(src(
            &format!("blk.{l}.ffn_gate.weight"),
            &[256, 24],
            F16,
            s + 6,
        ));
        t.push(src(
            &format!("blk.{l}.ffn_up.weight"),
            &[256, 24],
            Q8_0,
            s + 7,
        ));
        // ne[0] = 96: not a multiple of 256 (Q4_K/Q6_K fall back)
        t.push(src(
            &format!("blk.{l}.ffn_down.weight"),
            &[96, 40],
            F16,
            s + 8,
        ));
    }
    t
}

/// `llama_model(n_layer)` written to `in.gguf` in `d`.
fn llama_file(d: &Tmp, n_layer: u32) -> (PathBuf, Vec<Src>) {
    let tensors = llama_model(n_layer);
    let inp = d.p("in.gguf");
    write_gguf(&inp, &llama_kvs("llama", n_layer), &tensors, 32);
    (inp, tensors)
}

fn params(p: Preset) -> Params {
    let mut params = Params::default();
    params.what.target = Target::Preset(p);
    params.what.allow_requantize = true;
    params.how.threads = 2;
    params.how.max_buffer = 4096; // many chunks per tensor
    params
}

fn no_progress() -> impl FnMut(&Progress) -> bool {
    |_: &Progress| true
}

/// Every output tensor equals ggml_quantize_chunk of the source's values (or
/// the source bytes when kept), ggml's gguf reader agrees on the layout.
fn check_output(out: &Path, tensors: &[Src], want_types: &[(String, i32)]) {
    let h = gguf::read_header(out).unwrap();
    let g = ggml_qat::ggml::gguf::read(out).expect("ggml's gguf reader refuses our output");
    assert_eq!(g.version, 3);
    assert_eq!(g.data_offset, h.data_offset);
    assert_eq!(g.alignment, h.alignment);
    assert_eq!(
        g.keys,
        h.kvs.iter().map(|k| k.key.clone()).collect::<Vec<_>>()
    );
    assert_eq!(g.tensors.len(), tensors.len());
    let data = std::fs::read(out).unwrap();
    for ((t, gt), (ht, (wn, wty))) in tensors
        .iter()
        .zip(&g.tensors)
        .zip(h.tensors.iter().zip(want_types))
    {
        assert_eq!(&gt.name, &t.name, "tensor order kept");
        assert_eq!(wn, &t.name);
        assert_eq!(gt.ty, *wty, "{}", t.name);
        assert_eq!(gt.offset, ht.offset);
        assert_eq!(gt.size, ht.nbytes);
        assert_eq!(ht.ne, t.ne);
        let got = &data[(h.data_offset + gt.offset) as usize..][..gt.size as usize];
        let want = if *wty == t.ty.ggml_id() {
            t.bytes.clone()
        } else {
            let ty = QuantType::from_ggml(*wty).unwrap();
            let row = t.ne[0] as usize;
            reference::quantize_chunk(ty, &t.f32, t.f32.len() / row, row, None)
        };
        assert!(
            got == &want[..],
            "{}: bytes differ from ggml_quantize_chunk",
            t.name
        );
    }
    assert_eq!(data.len() as u64 % h.alignment, 0);
}

/// Each tensor's name and chosen type, as the report says.
fn chosen(r: &ggml_qat::model::Report) -> Vec<(String, i32)> {
    r.tensors
        .iter()
        .map(|t| (t.name.clone(), t.chosen_type_id))
        .collect()
}

fn kv_u32(h: &gguf::Header, key: &str) -> Option<u64> {
    h.kv(key).and_then(|k| k.as_u64())
}

#[test]
fn llama_q4_k_m_matches_ggml_and_llama_quantize_types() {
    use QuantType::*;
    let d = Tmp::new("model-llama");
    let (inp, out) = (d.p("in.gguf"), d.p("out.gguf"));
    let tensors = llama_model(8);
    let kvs = llama_kvs("llama", 8);
    write_gguf(&inp, &kvs, &tensors, 32);
    let before = std::fs::read(&inp).unwrap();
    let r = quantize_model(&inp, &out, &params(Preset::Q4_K_M), &mut no_progress()).unwrap();
    assert_eq!(std::fs::read(&inp).unwrap(), before, "input untouched");
    // llama-quantize's Q4_K_M choices for this model (use_more_bits over 8
    // layers: 0, 2 (n/8 + 1 + ...), 5, 7 and the first/last eighth).
    let more = |l: i64| !(1..7).contains(&l) || (l - 1) % 3 == 2;
    let mut want = Vec::new();
    for t in &tensors {
        let n = &t.name;
        let l = ggml_qat::model::roles::layer_of(n);
        let ty = if n.ends_with("norm.weight") {
            t.ty
        } else if n == "token_embd.weight" {
            Q4_K
        } else if n == "output.weight" {
            Q6_K
        } else if n.contains("attn_v") {
            if more(l) {
                Q6_K
            } else {
                Q4_K
            }
        } else if n.contains("ffn_down") {
            // Q6_K or Q4_K asked, ne[0] = 96: Q8_0 / Q5_0 fallbacks
            if more(l) {
                Q8_0
            } else {
                Q5_0
            }
        } else {
            Q4_K
        };
        want.push((n.clone(), ty.ggml_id()));
    }
    check_output(&out, &tensors, &want);
    let h = gguf::read_header(&out).unwrap();
    assert_eq!(kv_u32(&h, "general.file_type"), Some(15));
    assert_eq!(kv_u32(&h, "general.quantization_version"), Some(2));
    for k in &kvs {
        if k.key != "general.file_type" {
            assert_eq!(h.kv(&k.key), Some(k), "key/value copied");
        }
    }
    assert_eq!(r.file_bytes_out, std::fs::metadata(&out).unwrap().len());
    assert_eq!(r.n_fallback, 8);
    assert!(r
        .tensors
        .iter()
        .filter(|t| t.chosen_type_id != t.source_type_id)
        .all(|t| t.rel_rmse.is_some_and(|e| e > 0.0 && e < 0.2)));
    // The dry run reports the same sizes and types, and writes nothing.
    let mut p = params(Preset::Q4_K_M);
    p.how.dry_run = true;
    let dry = quantize_model(&inp, &d.p("dry.gguf"), &p, &mut no_progress()).unwrap();
    assert_eq!(dry.file_bytes_out, r.file_bytes_out);
    assert_eq!(dry.bytes_out, r.bytes_out);
    assert!(!d.p("dry.gguf").exists());
    assert_eq!(d.files(), ["in.gguf", "out.gguf"]);
}

#[test]
fn presets_overrides_pure_and_classes() {
    use QuantType::*;
    let d = Tmp::new("model-presets");
    let inp = d.p("in.gguf");
    let tensors = llama_model(4);
    let mut kvs = llama_kvs("llama", 4);
    kvs.push(Kv::u32("general.alignment", 64));
    write_gguf(&inp, &kvs, &tensors, 64);
    for p in Preset::ALL {
        let out = d.p("o.gguf");
        let r = quantize_model(&inp, &out, &params(p), &mut no_progress()).unwrap();
        let h = gguf::read_header(&out).unwrap();
        assert_eq!(h.alignment, 64, "alignment kept");
        assert_eq!(kv_u32(&h, "general.file_type"), Some(p as u64));
        let want = chosen(&r);
        check_output(&out, &tensors, &want);
    }
    // overrides (first match wins), output and token types
    let mut p = params(Preset::Q4_K_M);
    p.what.overrides = vec![("attn_q".into(), Q8_0), ("attn_.*".into(), Q5_1)];
    p.what.output_type = Some(F16);
    p.what.token_embd_type = Some(Q4_0);
    let out = d.p("o.gguf");
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    let ty = |r: &ggml_qat::model::Report, n: &str| {
        let t = r.tensors.iter().find(|t| t.name == n).unwrap();
        (t.chosen_type.clone(), t.origin)
    };
    assert_eq!(ty(&r, "blk.0.attn_q.weight"), ("q8_0".into(), "manual"));
    assert_eq!(ty(&r, "blk.0.attn_v.weight"), ("q5_1".into(), "manual"));
    assert_eq!(ty(&r, "output.weight"), ("f16".into(), "manual"));
    assert_eq!(ty(&r, "token_embd.weight"), ("q4_0".into(), "manual"));
    assert_eq!(ty(&r, "blk.0.attn_norm.weight"), ("f32".into(), "kept"));
    // --pure: the default type everywhere (with llama.cpp's fallback)
    let mut p = params(Preset::Q4_K_M);
    p.what.pure = true;
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    assert_eq!(ty(&r, "blk.0.ffn_gate.weight"), ("q4_K".into(), "preset"));
    assert_eq!(ty(&r, "blk.0.ffn_down.weight"), ("q5_0".into(), "fallback"));
    assert_eq!(ty(&r, "blk.0.attn_v.weight").0, "q4_K");
    // --pure with --tensor-type contradict each other
    p.what.overrides = vec![("attn_q".into(), Q8_0)];
    let e = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap_err();
    assert!(e.to_string().contains("--pure and --tensor-type"), "{e}");
    // --leave-output-tensor
    let mut p = params(Preset::Q4_0);
    p.what.leave_output = true;
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    assert_eq!(r.tensors[2].chosen_type, "bf16");
    // classes: embedding / attention / ffn / layernorm types
    let mut p = params(Preset::Q4_0);
    p.what.target = Target::Classes([Q8_0, Q4_K, Q6_K, F32]);
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    let want = chosen(&r);
    check_output(&out, &tensors, &want);
    assert_eq!(ty_of(&r, "token_embd.weight"), "q8_0");
    assert_eq!(ty_of(&r, "blk.1.attn_k.weight"), "q4_K");
    assert_eq!(ty_of(&r, "blk.1.ffn_gate.weight"), "q6_K");
    assert_eq!(ty_of(&r, "blk.1.ffn_down.weight"), "q8_0"); // Q6_K fallback
    assert_eq!(ty_of(&r, "blk.1.ffn_norm.weight"), "f32");
    assert_eq!(
        r.tensors
            .iter()
            .find(|t| t.name == "blk.1.ffn_down.weight")
            .unwrap()
            .class,
        "ffn"
    );
}

fn ty_of(r: &ggml_qat::model::Report, n: &str) -> String {
    r.tensors
        .iter()
        .find(|t| t.name == n)
        .unwrap()
        .chosen_type
        .clone()
}

#[test]
fn other_architectures_moe_3d_tied_embeddings_and_1d() {
    use QuantType::*;
    let d = Tmp::new("model-arch");
    // gemma-style (tied embeddings: token_embd takes output's Q6_K / Q8_0),
    // qwen2moe-style 3-D experts, phi3-style fused qkv, a 1-D bias, ne0 = 48.
    let tensors = vec![
        src("token_embd.weight", &[256, 32], F16, 1),
        src("blk.0.attn_qkv.weight", &[256, 48], F16, 2),
        src("blk.0.attn_qkv.bias", &[48], F32, 3),
        src("blk.0.ffn_gate_inp.weight", &[256, 4], F32, 4),
        src("blk.0.ffn_up_exps.weight", &[256, 16, 4], BF16, 5),
        src("blk.0.ffn_down_exps.weight", &[64, 16, 4], F16, 6),
        src("blk.0.ffn_gate_exps.weight", &[48, 16, 4], F32, 7),
        src("blk.0.post_attention_norm.weight", &[256], F32, 8),
    ];
    let inp = d.p("in.gguf");
    let mut kvs = llama_kvs("qwen2moe", 1);
    kvs.push(Kv::u32("qwen2moe.expert_count", 4));
    write_gguf(&inp, &kvs, &tensors, 32);
    let out = d.p("out.gguf");
    let r = quantize_model(&inp, &out, &params(Preset::Q4_K_M), &mut no_progress()).unwrap();
    let want = chosen(&r);
    check_output(&out, &tensors, &want);
    assert_eq!(ty_of(&r, "token_embd.weight"), "q6_K"); // tied: output's rule
    assert_eq!(ty_of(&r, "blk.0.attn_qkv.weight"), "q6_K"); // attn_v-like, use_more_bits(0, 1)
    assert_eq!(ty_of(&r, "blk.0.attn_qkv.bias"), "f32");
    assert_eq!(ty_of(&r, "blk.0.ffn_gate_inp.weight"), "f32");
    assert_eq!(ty_of(&r, "blk.0.ffn_up_exps.weight"), "q4_K");
    assert_eq!(ty_of(&r, "blk.0.ffn_down_exps.weight"), "q8_0"); // Q6_K, ne0 64
    assert_eq!(ty_of(&r, "blk.0.ffn_gate_exps.weight"), "f16"); // ne0 48: no 32-block fits
    assert_eq!(r.tensors[4].shape, vec![256, 16, 4]);
    assert_eq!(r.tensors[4].class, "ffn");
    assert_eq!(r.tensors[7].class, "layernorm");
}

#[test]
fn imatrix_legacy_and_gguf_are_used_and_checked() {
    use QuantType::*;
    let d = Tmp::new("model-imatrix");
    let tensors = vec![
        src("blk.0.attn_q.weight", &[256, 8], F32, 1),
        src("blk.0.ffn_up_exps.weight", &[256, 4, 2], F32, 2),
    ];
    let inp = d.p("in.gguf");
    write_gguf(&inp, &llama_kvs("llama", 1), &tensors, 32);
    let w0: Vec<f32> = (0..256).map(|i| 1.0 + (i % 7) as f32).collect();
    let w1: Vec<f32> = (0..512).map(|i| 0.5 + (i % 5) as f32).collect();
    let dat = d.p("im.dat");
    ggml_qat::model::imatrix::write_legacy(
        &dat,
        &[
            ("blk.0.attn_q.weight", 2, &w0),
            ("blk.0.ffn_up_exps.weight", 1, &w1),
        ],
    )
    .unwrap();
    // the same matrix in the GGUF imatrix format (sums and counts)
    let gim = d.p("im.gguf");
    let mk = |name: &str, v: Vec<f32>, ne: &[u64]| {
        let mut s = src(name, ne, F32, 0);
        s.bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        s
    };
    write_gguf(
        &gim,
        &[Kv::string("general.type", "imatrix")],
        &[
            mk("blk.0.attn_q.weight.in_sum2", w0.clone(), &[256, 1]),
            mk("blk.0.attn_q.weight.counts", vec![2.0], &[1, 1]),
            mk("blk.0.ffn_up_exps.weight.in_sum2", w1.clone(), &[256, 2]),
            mk("blk.0.ffn_up_exps.weight.counts", vec![1.0, 1.0], &[1, 2]),
        ],
        32,
    );
    for im in [&dat, &gim] {
        let mut p = params(Preset::Q4_K_M);
        p.what.imatrix = Some(im.to_path_buf());
        let out = d.p("out.gguf");
        quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
        let h = gguf::read_header(&out).unwrap();
        let data = std::fs::read(&out).unwrap();
        let q = &h.tensors[0];
        let w0n: Vec<f32> = w0.iter().map(|x| x / 2.0).collect();
        let want = reference::quantize_chunk(Q4_K, &tensors[0].f32, 8, 256, Some(&w0n));
        assert_eq!(q.ty, Q4_K.ggml_id());
        let got = &data[(h.data_offset + q.offset) as usize..][..q.nbytes as usize];
        assert_eq!(got, &want[..]);
        let e = &h.tensors[1];
        let mut want = Vec::new();
        for x in 0..2 {
            want.extend(reference::quantize_chunk(
                Q4_K,
                &tensors[1].f32[x * 1024..(x + 1) * 1024],
                4,
                256,
                Some(&w1[x * 256..(x + 1) * 256]),
            ));
        }
        let got = &data[(h.data_offset + e.offset) as usize..][..e.nbytes as usize];
        assert_eq!(got, &want[..], "per-expert imatrix slices");
    }
    // an imatrix of another model
    let other = d.p("other.dat");
    ggml_qat::model::imatrix::write_legacy(&other, &[("blk.0.attn_q.weight", 1, &w0[..128])])
        .unwrap();
    let mut p = params(Preset::Q4_K_M);
    p.what.imatrix = Some(other.clone());
    let e = quantize_model(&inp, &d.p("x.gguf"), &p, &mut no_progress()).unwrap_err();
    assert!(e.to_string().contains("another model"), "{e}");
    ggml_qat::model::imatrix::write_legacy(&other, &[("blk.7.foo.weight", 1, &w0)]).unwrap();
    let e = quantize_model(&inp, &d.p("x.gguf"), &p, &mut no_progress()).unwrap_err();
    assert!(e.to_string().contains("another model"), "{e}");
    assert!(!d.p("x.gguf").exists());
}

/// A valid small model to corrupt.
fn small(d: &Tmp) -> (PathBuf, Vec<u8>) {
    let inp = d.p("in.gguf");
    write_gguf(&inp, &llama_kvs("llama", 1), &llama_model(1), 32);
    let b = std::fs::read(&inp).unwrap();
    (inp, b)
}

fn fails(d: &Tmp, inp: &Path, out: &Path, p: &Params, what: &str) {
    let before = std::fs::read(inp).ok();
    let files = d.files();
    let e = quantize_model(inp, out, p, &mut no_progress()).unwrap_err();
    assert!(e.to_string().contains(what), "'{e}' does not say '{what}'");
    assert_eq!(std::fs::read(inp).ok(), before, "input untouched");
    assert_eq!(d.files(), files, "no partial output");
}

#[test]
fn bad_inputs_give_clear_errors_and_no_output() {
    let d = Tmp::new("model-bad");
    let (inp, good) = small(&d);
    let out = d.p("out.gguf");
    let p = params(Preset::Q4_K_M);
    let bad = d.p("bad.gguf");
    let h = gguf::read_header(&inp).unwrap();
    // truncated, at many lengths (header and data)
    for cut in [0, 3, 7, 20, 100, h.data_offset as usize - 5, good.len() - 1] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        let e = quantize_model(&bad, &out, &p, &mut no_progress()).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("truncated") || s.contains("not a GGUF") || s.contains("past the end"),
            "{cut}: {s}"
        );
        assert!(!out.exists());
    }
    // wrong magic
    let mut b = good.clone();
    b[..4].copy_from_slice(b"GGML");
    std::fs::write(&bad, &b).unwrap();
    fails(&d, &bad, &out, &p, "not a GGUF file");
    // unknown type id / data past the end: patch the first tensor info
    let name = h.tensors[0].name.as_bytes();
    let at = good.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let n_dims = u32::from_le_bytes(good[at..at + 4].try_into().unwrap()) as usize;
    let ty_at = at + 4 + 8 * n_dims;
    let mut b = good.clone();
    b[ty_at..ty_at + 4].copy_from_slice(&77u32.to_le_bytes());
    std::fs::write(&bad, &b).unwrap();
    fails(&d, &bad, &out, &p, "unknown type id 77");
    let mut b = good.clone();
    b[ty_at + 4..ty_at + 12].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&bad, &b).unwrap();
    fails(&d, &bad, &out, &p, "past the end of the file");
    // a huge key/value count
    let mut b = good.clone();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&bad, &b).unwrap();
    fails(&d, &bad, &out, &p, "cannot fit");
    // random corruption never panics
    for i in 0..200usize {
        let mut b = good.clone();
        let pos = (i * 7919) % (h.data_offset as usize);
        b[pos] ^= 0x5a ^ (i as u8);
        std::fs::write(&bad, &b).unwrap();
        let _ = quantize_model(&bad, &out, &p, &mut no_progress());
        let _ = std::fs::remove_file(&out);
    }
    std::fs::remove_file(&bad).unwrap();
    // output folder missing; output == input (also through another path)
    fails(&d, &inp, &d.p("no/such/dir/out.gguf"), &p, "does not exist");
    fails(&d, &inp, &inp, &p, "is the input file");
    let link = d.p("link.gguf");
    std::os::unix::fs::symlink(&inp, &link).unwrap();
    fails(&d, &inp, &link, &p, "is the input file");
    std::fs::remove_file(&link).unwrap();
    // requantizing without permission
    let mut p2 = p.clone();
    p2.what.allow_requantize = false;
    fails(
        &d,
        &inp,
        &out,
        &p2,
        "requantizing from type q8_0 is disabled",
    );
    // cancel from the callback, at the start and in the middle
    for stop in [1usize, 9] {
        let mut calls = 0;
        let before = d.files();
        let e = quantize_model(&inp, &out, &p, &mut |_: &Progress| {
            calls += 1;
            calls < stop
        })
        .unwrap_err();
        assert!(matches!(e, ModelError::Cancelled), "{e}");
        assert_eq!(d.files(), before);
    }
    // NaN in the weights
    let mut t = llama_model(1);
    t[4].bytes = t[4]
        .bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| if i < 2 { 0xff } else { b })
        .collect();
    write_gguf(&bad, &llama_kvs("llama", 1), &t, 32);
    fails(&d, &bad, &out, &p, "non-finite");
}

#[test]
fn full_disk_leaves_no_output() {
    // RLIMIT_FSIZE in a child process running the command-line tool.
    use std::os::unix::process::CommandExt;
    let d = Tmp::new("model-fsize");
    let (inp, _) = llama_file(&d, 2);
    let before = std::fs::read(&inp).unwrap();
    let out = d.p("out.gguf");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ggml-qat-quantize"));
    cmd.args([
        inp.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q8_0",
        "1",
        "--allow-requantize",
    ]);
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 20_000,
                rlim_max: 20_000,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write") && err.contains("File too large"),
        "{err}"
    );
    assert_eq!(d.files(), ["in.gguf"]);
    assert_eq!(std::fs::read(&inp).unwrap(), before);
}

#[test]
fn split_shards_quantize_alone_or_together() {
    let d = Tmp::new("model-split");
    let t = llama_model(2);
    let (a, b) = t.split_at(6);
    let mut k1 = llama_kvs("llama", 2);
    let split = |no: u16| {
        vec![
            Kv::u16("split.no", no),
            Kv::u16("split.count", 2),
            Kv::i32("split.tensors.count", t.len() as i32),
        ]
    };
    k1.extend(split(0));
    write_gguf(&d.p("m-00001-of-00002.gguf"), &k1, a, 32);
    write_gguf(&d.p("m-00002-of-00002.gguf"), &split(1), b, 32);
    // one shard alone: split metadata kept
    let r = quantize_model(
        &d.p("m-00002-of-00002.gguf"),
        &d.p("q2.gguf"),
        &params(Preset::Q4_K_M),
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(r.tensors.len(), b.len());
    let h = gguf::read_header(&d.p("q2.gguf")).unwrap();
    assert_eq!(kv_u32(&h, "split.no"), Some(1));
    assert_eq!(kv_u32(&h, "split.count"), Some(2));
    // the whole set with keep_split: the same types as the unsplit model
    let mut p = params(Preset::Q4_K_M);
    p.what.keep_split = true;
    let r = quantize_model(
        &d.p("m-00001-of-00002.gguf"),
        &d.p("q.gguf"),
        &p,
        &mut no_progress(),
    )
    .unwrap();
    assert!(d.p("q-00001-of-00002.gguf").exists() && d.p("q-00002-of-00002.gguf").exists());
    write_gguf(&d.p("whole.gguf"), &llama_kvs("llama", 2), &t, 32);
    let w = quantize_model(
        &d.p("whole.gguf"),
        &d.p("qw.gguf"),
        &params(Preset::Q4_K_M),
        &mut no_progress(),
    )
    .unwrap();
    let types = |r: &ggml_qat::model::Report| {
        r.tensors
            .iter()
            .map(|t| t.chosen_type.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(types(&r), types(&w));
    assert_eq!(r.bytes_out, w.bytes_out);

    // A size target covers all the shards written (headers included); a
    // single shard of a set cannot take one.
    let shard_bytes = |r: &ggml_qat::model::Report| -> u64 {
        r.outputs
            .iter()
            .map(|o| std::fs::metadata(o).unwrap().len())
            .sum()
    };
    let target = shard_bytes(&r) * 9 / 10;
    p.what.size_target = Some(ggml_qat::model::planner::SizeTarget::FileBytes(target));
    let r = quantize_model(
        &d.p("m-00001-of-00002.gguf"),
        &d.p("q.gguf"),
        &p,
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(r.outputs.len(), 2);
    assert!(shard_bytes(&r) <= target, "{} > {target}", shard_bytes(&r));
    assert_eq!(shard_bytes(&r), r.file_bytes_out);
    p.what.keep_split = false;
    let e = quantize_model(
        &d.p("m-00001-of-00002.gguf"),
        &d.p("one.gguf"),
        &p,
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("--keep-split"), "{e}");
}

/// `--optimize`: the same file layout and types as without it; per tensor,
/// the objective (Σ imatrix·err² with an imatrix entry, Σ err² otherwise) of
/// the bytes written is never above ggml's bytes for the same type, and the
/// report's figures are those measured here; without it, every tensor is
/// still ggml's bytes.
#[test]
fn optimize_is_never_worse_per_tensor_and_off_changes_nothing() {
    use ggml_qat::qat::optimize::weighted_error;
    let d = Tmp::new("model-optimize");
    let (inp, tensors) = llama_file(&d, 2);
    // An imatrix for some tensors only (the others are searched data-free).
    let im_q: Vec<f32> = (0..256).map(|i| 0.1 + ((i * 37) % 11) as f32).collect();
    let im_g: Vec<f32> = (0..256).map(|i| 2.0 + ((i * 13) % 5) as f32).collect();
    let dat = d.p("im.dat");
    ggml_qat::model::imatrix::write_legacy(
        &dat,
        &[
            ("blk.0.attn_q.weight", 1, &im_q),
            ("blk.1.ffn_gate.weight", 1, &im_g),
        ],
    )
    .unwrap();
    // Data-free weights: the squared RMS-norm weight scaling the inputs
    // (floored at 1e-3 of its mean), for attn_q/k/v, ffn_gate/up, output.
    let norm_of = |name: &str| -> Option<Vec<f32>> {
        let norm = if name == "output.weight" {
            "output_norm.weight".to_string()
        } else {
            let (blk, role) = name.strip_prefix("blk.")?.split_once('.')?;
            let n = match role {
                "attn_q.weight" | "attn_k.weight" | "attn_v.weight" => "attn_norm",
                "ffn_gate.weight" | "ffn_up.weight" => "ffn_norm",
                _ => return None,
            };
            format!("blk.{blk}.{n}.weight")
        };
        let t = tensors.iter().find(|t| t.name == norm)?;
        let d: Vec<f32> = t.f32.iter().map(|x| x * x).collect();
        let mean = d.iter().map(|&x| x as f64).sum::<f64>() / d.len() as f64;
        Some(d.iter().map(|&x| x.max((1e-3 * mean) as f32)).collect())
    };
    let weights = |name: &str, with_im: bool, norms: bool| -> (Option<Vec<f32>>, &str) {
        match (with_im, name) {
            (true, "blk.0.attn_q.weight") => (Some(im_q.clone()), "imatrix"),
            (true, "blk.1.ffn_gate.weight") => (Some(im_g.clone()), "imatrix"),
            _ => match norm_of(name).filter(|_| norms) {
                Some(d) => (Some(d), "norm"),
                None => (None, "none"),
            },
        }
    };
    let cases = [(false, true), (true, true), (false, false)];
    for preset in [Preset::Q4_0, Preset::Q4_K_M, Preset::Q2_K] {
        for (with_im, norms) in cases {
            let mut p = params(preset);
            p.what.imatrix = with_im.then(|| dat.clone());
            let plain = d.p("plain.gguf");
            let rp = quantize_model(&inp, &plain, &p, &mut no_progress()).unwrap();
            assert!(rp.tensors.iter().all(|t| t.objective.is_none()));
            p.what.optimize = true;
            p.what.norm_importance = norms;
            let opt = d.p("opt.gguf");
            let ro = quantize_model(&inp, &opt, &p, &mut no_progress()).unwrap();
            let (hp, ho) = (
                gguf::read_header(&plain).unwrap(),
                gguf::read_header(&opt).unwrap(),
            );
            let (bp, bo) = (std::fs::read(&plain).unwrap(), std::fs::read(&opt).unwrap());
            assert_eq!(bp.len(), bo.len());
            assert_eq!(hp.data_offset, ho.data_offset);
            let mut improved = 0;
            for (((tp, to), s), rep) in hp
                .tensors
                .iter()
                .zip(&ho.tensors)
                .zip(&tensors)
                .zip(&ro.tensors)
            {
                assert_eq!((&tp.name, tp.ty, tp.offset), (&to.name, to.ty, to.offset));
                assert_eq!(tp.name, s.name);
                let a = &bp[(hp.data_offset + tp.offset) as usize..][..tp.nbytes as usize];
                let b = &bo[(ho.data_offset + to.offset) as usize..][..to.nbytes as usize];
                let ty = QuantType::from_ggml(tp.ty).unwrap();
                if tp.ty == s.ty.ggml_id() || ty.format().block_size == 1 {
                    // kept or converted to a float type: nothing searched
                    assert_eq!(a, b, "{}", tp.name);
                    continue;
                }
                let n = s.ne[0] as usize;
                let (wv, kind) = weights(&s.name, with_im, norms);
                let w = wv.as_deref();
                // without --optimize: ggml's bytes (its imatrix quantizer when given)
                let im = w.filter(|_| kind == "imatrix");
                let want = reference::quantize_chunk(ty, &s.f32, s.f32.len() / n, n, im);
                assert_eq!(a, &want[..], "{} plain", tp.name);
                let ep = weighted_error(ty, a, &s.f32, n, w).unwrap();
                let eo = weighted_error(ty, b, &s.f32, n, w).unwrap();
                assert!(eo <= ep, "{:?} {}: {eo} > {ep}", preset, tp.name);
                let o = rep.objective.expect("objective reported");
                assert_eq!(o.weights, kind, "{}", tp.name);
                assert!(
                    (o.ggml - ep).abs() <= 1e-9 * ep.max(1e-30),
                    "{} {} {ep}",
                    tp.name,
                    o.ggml
                );
                assert!(
                    (o.ours - eo).abs() <= 1e-9 * eo.max(1e-30),
                    "{} {} {eo}",
                    tp.name,
                    o.ours
                );
                assert_eq!(o.rows_changed > 0, a != b);
                improved += usize::from(eo < ep);
            }
            assert!(improved > 0, "{preset:?}: --optimize improved no tensor");
        }
    }
}

#[test]
fn size_target_meets_the_size_with_ggml_bytes_and_measured_errors() {
    use ggml_qat::model::planner::SizeTarget;
    let d = Tmp::new("model-plan");
    let (inp, tensors) = llama_file(&d, 3);
    let base = d.p("q4_0.gguf");
    let mut p0 = params(Preset::Q4_0);
    // fixed by hand: never planned
    p0.what.overrides = vec![("ffn_up".into(), QuantType::Q5_0)];
    quantize_model(&inp, &base, &p0, &mut no_progress()).unwrap();
    let size0 = std::fs::metadata(&base).unwrap().len();
    let mut last_error = f64::INFINITY;
    for frac in [0.8, 1.0, 1.3] {
        let target = (size0 as f64 * frac) as u64;
        let mut p = p0.clone();
        p.what.size_target = Some(SizeTarget::FileBytes(target));
        let out = d.p("plan.gguf");
        let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
        let size = std::fs::metadata(&out).unwrap().len();
        assert!(size <= target, "{frac}: {size} > {target}");
        assert_eq!(size, r.file_bytes_out);
        let s = r.plan.as_ref().expect("plan summary");
        assert_eq!(s.chosen_file_bytes, size);
        assert_eq!(s.preset_file_bytes, size0);
        // More room never predicts more error; at the preset's size no more
        // than the preset.
        assert!(s.chosen_error <= last_error, "{frac}");
        last_error = s.chosen_error;
        if frac >= 1.0 {
            assert!(s.chosen_error <= s.preset_error, "{frac}");
        }
        if frac > 1.0 {
            assert!(
                s.chosen_error < s.preset_error,
                "room to spare was not used"
            );
        }
        // Every tensor: ggml's bytes for the type chosen.
        let want = chosen(&r);
        check_output(&out, &tensors, &want);
        let mut predicted = 0.0;
        for t in &r.tensors {
            let free =
                t.name.ends_with(".weight") && t.shape.len() == 2 && !t.name.contains("ffn_up");
            assert_eq!(t.plan.is_some(), free, "{}", t.name);
            if t.name.contains("ffn_up") {
                assert_eq!(t.chosen_type, "q5_0");
            }
            let Some(tp) = &t.plan else { continue };
            let c = tp
                .candidates
                .iter()
                .find(|c| c.type_id == t.chosen_type_id)
                .expect("chosen among the candidates");
            // Small tensors are sampled whole: the measured error is the
            // written tensor's.
            let rel = t.rel_rmse.unwrap();
            assert!(
                (c.error - rel * rel).abs() <= 1e-6 * (rel * rel).max(1e-12),
                "{}: candidate {} written {}",
                t.name,
                c.error,
                rel * rel
            );
            assert!((tp.predicted_error - tp.factor * c.error).abs() <= 1e-12);
            // only types whose block divides the rows
            for c in &tp.candidates {
                let ty = QuantType::from_ggml(c.type_id).unwrap();
                assert_eq!(t.shape[0] % ty.format().block_size as u64, 0);
            }
            predicted += tp.predicted_error;
        }
        assert!((predicted - s.chosen_error).abs() <= 1e-9 * s.chosen_error.max(1e-12));
    }

    // Bits per weight, as llama.cpp counts them; a dry run writes nothing.
    let mut p = params(Preset::Q4_K_M);
    p.what.size_target = Some(SizeTarget::BitsPerWeight(5.0));
    p.how.dry_run = true;
    let out = d.p("dry.gguf");
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    assert!(r.bits_per_weight_out <= 5.0, "{}", r.bits_per_weight_out);
    assert!(!out.exists());
    assert!(r.tensors.iter().any(|t| t.plan.is_some()));

    // Restricted types, per name pattern.
    let mut p = params(Preset::Q4_0);
    p.what.size_target = Some(SizeTarget::FileBytes(size0));
    p.what.plan_types = vec![
        (Some("attn_".into()), vec![QuantType::Q4_0, QuantType::Q8_0]),
        (None, vec![QuantType::IQ4_NL, QuantType::Q8_0]),
    ];
    p.how.dry_run = true;
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    for t in r.tensors.iter().filter(|t| t.plan.is_some()) {
        let ok: &[&str] = if t.name.contains("attn_") {
            &["q4_0", "q8_0"]
        } else {
            // the preset's own type is always offered
            &["iq4_nl", "q8_0", "q4_0"]
        };
        assert!(
            ok.contains(&t.chosen_type.as_str()),
            "{} {}",
            t.name,
            t.chosen_type
        );
    }

    // The role factors steer the plan: a role made very costly gets the
    // largest type offered, made nearly free the smallest (with room for
    // the three attn_q at Q8_0: 3 x 4 KiB more than Q4_0).
    let mut p = params(Preset::Q4_0);
    p.what.size_target = Some(SizeTarget::FileBytes(size0 + 3 * 4096));
    p.what.plan_types = vec![(None, vec![QuantType::Q4_0, QuantType::Q8_0])];
    p.how.dry_run = true;
    for (role, factor, want) in [("attn_q", 1e6, "q8_0"), ("attn_q", 1e-9, "q4_0")] {
        p.what.plan_factors =
            Some(ggml_qat::model::planner::Factors::parse(&format!("{role} {factor}")).unwrap());
        let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
        for t in r.tensors.iter().filter(|t| t.name.contains(role)) {
            assert_eq!(t.chosen_type, want, "{role} {factor}: {}", t.name);
        }
    }

    // A source already quantized keeps its type unless requantizing is
    // allowed (ffn_up is Q8_0 in the file, and Q8_0 in the pure preset).
    let mut p = params(Preset::Q8_0);
    p.what.pure = true;
    p.what.allow_requantize = false;
    p.what.size_target = Some(SizeTarget::FileBytes(size0 * 2));
    p.how.dry_run = true;
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    for t in &r.tensors {
        if t.name.contains("ffn_up") {
            assert!(t.plan.is_none() && t.chosen_type == "q8_0", "{}", t.name);
        }
    }
    assert!(r.tensors.iter().any(|t| t.plan.is_some()));
    p.what.size_target = Some(SizeTarget::FileBytes(size0 / 4));
    let e = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap_err();
    assert!(e.to_string().contains("requantizing"), "{e}");

    // Classes have no preset rules to plan within.
    let mut p = params(Preset::Q4_0);
    p.what.target = Target::Classes([
        QuantType::Q8_0,
        QuantType::Q4_K,
        QuantType::Q4_K,
        QuantType::F32,
    ]);
    p.what.size_target = Some(SizeTarget::FileBytes(size0));
    let e = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap_err();
    assert!(e.to_string().contains("preset"), "{e}");

    // Too small: a clear error, no output.
    let mut p = params(Preset::Q4_0);
    p.what.size_target = Some(SizeTarget::FileBytes(size0 / 4));
    let out = d.p("small.gguf");
    let e = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap_err();
    assert!(e.to_string().contains("target"), "{e}");
    assert!(!out.exists());
}

#[test]
fn command_line_size_target_dry_run_shows_the_plan() {
    let d = Tmp::new("model-plan-cli");
    let (inp, _) = llama_file(&d, 2);
    let out = d.p("out.gguf");
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ggml-qat-quantize"));
        cmd.args(extra).arg("--allow-requantize").args([
            inp.to_str().unwrap(),
            out.to_str().unwrap(),
            "Q4_0",
            "1",
        ]);
        let o = cmd.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&[
        "--dry-run",
        "--target-size",
        "100K",
        "--plan-types",
        "attn_v=Q8_0",
        "--plan-types",
        "Q4_0,IQ4_NL,Q8_0",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("plan (file bytes 102400)"), "{stdout}");
    assert!(stdout.contains("predicted error"), "{stdout}");
    assert!(
        stdout.contains("attn_v.weight") && stdout.contains("x q8_0"),
        "{stdout}"
    );
    assert_eq!(d.files(), ["in.gguf"], "a dry run writes nothing");
    for (args, want) in [
        (&["--target-size", "12X"][..], "--target-size 12X"),
        (&["--target-bpw=-1"][..], "--target-bpw -1"),
        (&["--target-bpw=nan"][..], "--target-bpw NaN"),
        (
            &["--target-size", "1G", "--target-bpw", "4"][..],
            "cannot be used with",
        ),
        (
            &["--target-size", "1G", "--plan-types", "F16"][..],
            "not a block-quantized",
        ),
        (
            &["--target-size", "1G", "--plan-types", "(=Q4_0"][..],
            "--plan-types pattern",
        ),
        (&["--target-size", "1000"][..], "target"),
    ] {
        let (code, _, stderr) = run(args);
        assert_ne!(code, Some(0), "{args:?}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert_eq!(d.files(), ["in.gguf"], "{args:?}");
    }
}

/// A one-block model whose rows (96) fit no 256-value block.
fn narrow_model(d: &Tmp) -> (PathBuf, Vec<Src>) {
    use QuantType::*;
    let tensors = vec![
        src("token_embd.weight", &[96, 16], F16, 1),
        src("output.weight", &[96, 16], F16, 2),
        src("blk.0.attn_q.weight", &[96, 8], F16, 3),
    ];
    let inp = d.p("narrow.gguf");
    write_gguf(&inp, &llama_kvs("llama", 1), &tensors, 32);
    (inp, tensors)
}

#[test]
fn manual_types_fall_back_like_the_rules() {
    use QuantType::*;
    let d = Tmp::new("model-manual-fallback");
    let (inp, tensors) = narrow_model(&d);
    let mut p = params(Preset::Q8_0);
    p.what.token_embd_type = Some(Q4_K);
    p.what.output_type = Some(Q6_K);
    p.how.dry_run = true;
    let dry = quantize_model(&inp, &d.p("dry.gguf"), &p, &mut no_progress()).unwrap();
    p.how.dry_run = false;
    let out = d.p("out.gguf");
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    // The dry run's sizes are the real file's (it once counted 0 bytes).
    assert_eq!(dry.file_bytes_out, std::fs::metadata(&out).unwrap().len());
    assert_eq!(dry.bytes_out, r.bytes_out);
    let t = |n: &str| r.tensors.iter().find(|t| t.name == n).unwrap().clone();
    assert_eq!(
        (
            t("token_embd.weight").chosen_type.as_str(),
            t("token_embd.weight").origin
        ),
        ("q5_0", "fallback")
    );
    assert_eq!(t("output.weight").chosen_type, "q8_0");
    assert!(t("output.weight").fallback.is_some());
    let want = chosen(&r);
    check_output(&out, &tensors, &want);
}

#[test]
fn huge_numbers_in_names_and_shapes_are_no_panic() {
    use QuantType::*;
    let d = Tmp::new("model-huge-numbers");
    // A layer number beyond i64 arithmetic, an empty tensor whose other
    // dimensions overflow when multiplied.
    let mut tensors = llama_model(1);
    tensors.push(src(
        "blk.9223372036854775807.attn_q.weight",
        &[256, 8],
        F16,
        9,
    ));
    let empty = Src {
        name: "blk.0.ffn_up_exps.weight".into(),
        ne: [32, 0, 1 << 60, 1],
        ty: F32,
        f32: Vec::new(),
        bytes: Vec::new(),
    };
    tensors.push(empty);
    let inp = d.p("in.gguf");
    write_gguf(&inp, &llama_kvs("llama", 1), &tensors, 32);
    let dat = d.p("im.dat");
    let ones = vec![1f32; 256];
    ggml_qat::model::imatrix::write_legacy(
        &dat,
        &[
            ("blk.0.attn_q.weight", 1, &ones),
            ("blk.0.ffn_up_exps.weight", 1, &ones[..32]),
        ],
    )
    .unwrap();
    let mut p = params(Preset::Q4_0);
    p.what.size_target = Some(ggml_qat::model::planner::SizeTarget::BitsPerWeight(6.0));
    p.what.optimize = true;
    p.what.norm_importance = true;
    p.how.dry_run = true;
    // Refused or converted, never a panic or an abort.
    let _ = quantize_model(&inp, &d.p("o.gguf"), &p, &mut no_progress());
    p.what.imatrix = Some(dat);
    p.what.size_target = None;
    p.how.dry_run = false;
    let _ = quantize_model(&inp, &d.p("o.gguf"), &p, &mut no_progress());
}

#[test]
fn a_missing_shard_is_an_error() {
    let d = Tmp::new("model-missing-shard");
    let t = llama_model(1);
    let mut kvs = llama_kvs("llama", 1);
    kvs.push(Kv::u16("split.no", 0));
    kvs.push(Kv::u16("split.count", 2));
    let first = d.p("m-00001-of-00002.gguf");
    write_gguf(&first, &kvs, &t, 32);
    let e = quantize_model(
        &first,
        &d.p("o.gguf"),
        &params(Preset::Q4_0),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("m-00002-of-00002.gguf"), "{e}");
    assert!(!d.p("o.gguf").exists());
}

#[test]
fn token_embd_imatrix_of_another_size_is_ignored_as_llama_cpp_does() {
    let d = Tmp::new("model-embd-imatrix");
    let (inp, tensors) = llama_file(&d, 1);
    // Twice the row: llama.cpp quantizes token_embd without it. (Its first
    // row of weights was once used as if it fitted.)
    let skewed: Vec<f32> = (0..512)
        .map(|i| if i % 7 == 0 { 100.0 } else { 0.01 })
        .collect();
    let dat = d.p("im.dat");
    ggml_qat::model::imatrix::write_legacy(&dat, &[("token_embd.weight", 1, &skewed)]).unwrap();
    let mut p = params(Preset::Q4_0);
    p.what.imatrix = Some(dat);
    let out = d.p("o.gguf");
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    let want = chosen(&r);
    check_output(&out, &tensors, &want);
}

#[test]
fn conflicting_options_are_refused_naming_both() {
    use QuantType::*;
    let d = Tmp::new("model-conflicts");
    let (inp, _) = llama_file(&d, 1);
    type Case = (Box<dyn Fn(&mut Params)>, [&'static str; 2]);
    let cases: Vec<Case> = vec![
        (
            Box::new(|p| {
                p.what.leave_output = true;
                p.what.output_type = Some(Q8_0);
            }),
            ["--leave-output-tensor", "--output-tensor-type"],
        ),
        (
            Box::new(|p| {
                p.what.pure = true;
                p.what.overrides = vec![("attn".into(), Q8_0)];
            }),
            ["--pure", "--tensor-type"],
        ),
        (
            Box::new(|p| p.what.norm_importance = true),
            ["--norm-importance", "--optimize"],
        ),
        (
            Box::new(|p| p.what.plan_types = vec![(None, vec![Q4_0])]),
            ["--plan-types", "--target-size"],
        ),
        (
            Box::new(|p| p.what.keep_split = true),
            ["--keep-split", "split"],
        ),
        (
            Box::new(|p| p.how.threads = 100_000),
            ["100000 threads", "1024"],
        ),
        (
            Box::new(|p| {
                p.what.calibration = Some("calib.gguf".into());
                p.what.imatrix = Some("im.gguf".into());
            }),
            ["--calibration", "--imatrix"],
        ),
        (
            Box::new(|p| {
                p.what.calibration = Some("calib.gguf".into());
                p.what.plan_factors = Some(Default::default());
            }),
            ["--calibration", "--plan-factors"],
        ),
    ];
    for (set, words) in cases {
        let mut p = params(Preset::Q4_0);
        set(&mut p);
        let e = quantize_model(&inp, &d.p("o.gguf"), &p, &mut no_progress()).unwrap_err();
        for w in words {
            assert!(e.to_string().contains(w), "'{e}' does not name {w}");
        }
        assert!(!d.p("o.gguf").exists());
    }
}

/// The imatrix entries of a calibration file for `llama_model(n_layer)`:
/// every block weight and output.weight, one expert, count 2.
fn calib_entries(n_layer: u32) -> Vec<(String, Vec<f32>)> {
    let mut names = vec![("output.weight".to_string(), 256)];
    for l in 0..n_layer {
        for (w, n) in [
            ("attn_q", 256),
            ("attn_k", 256),
            ("attn_v", 256),
            ("attn_output", 256),
            ("ffn_gate", 256),
            ("ffn_up", 256),
            ("ffn_down", 96),
        ] {
            names.push((format!("blk.{l}.{w}.weight"), n));
        }
    }
    names
        .into_iter()
        .enumerate()
        .map(|(k, (name, n))| {
            let v = (0..n).map(|i| 0.25 + ((i * 7 + k) % 13) as f32).collect();
            (name, v)
        })
        .collect()
}

/// The keys ggml-qat-calibrate writes (no factors), for the Gram tensors
/// `grams` (the attention weights of block `l` read `grams[l]`).
fn calib_kvs(grams: &[(String, u64)]) -> Vec<Kv> {
    let (mut users, mut tensors) = (Vec::new(), Vec::new());
    for (l, (g, _)) in grams.iter().enumerate() {
        for w in ["attn_q", "attn_k", "attn_v"] {
            users.push(format!("blk.{l}.{w}.weight"));
            tensors.push(format!("{g}.gram"));
        }
    }
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(|s| s.as_str()).collect()
    }
    vec![
        Kv::string("general.type", "imatrix"),
        Kv::strs("imatrix.datasets", &["self-generated"]),
        Kv::u32("imatrix.chunk_count", 2),
        Kv::u32("imatrix.chunk_size", 512),
        Kv::u32("ggml_qat.calibration.version", 1),
        Kv::string("ggml_qat.calibration.seed", "42"),
        Kv::u32("ggml_qat.calibration.tokens", 1024),
        Kv::u32("ggml_qat.calibration.generated_tokens", 1024),
        Kv::u32("ggml_qat.gram.max", 4096),
        Kv::strs("ggml_qat.gram.weights", &strs(&users)),
        Kv::strs("ggml_qat.gram.tensors", &strs(&tensors)),
    ]
}

/// The model's own factors, as the calibrator measures them.
fn factor_kvs(roles: &[&str], values: &[f32], depth: &[f32]) -> Vec<Kv> {
    vec![
        Kv::strs("ggml_qat.factors.roles", roles),
        Kv::f32s("ggml_qat.factors.values", values),
        Kv::f32s("ggml_qat.factors.depth", depth),
        Kv::string("ggml_qat.factors.probe_type", "q4_0"),
        Kv::string("ggml_qat.factors.measure", "kl-divergence"),
        Kv::u32("ggml_qat.factors.tokens", 4096),
    ]
}

/// A calibration file: `NAME.in_sum2` / `NAME.counts` per entry, then a
/// `G.gram` tensor of d × d per gram, all NaN (they must never be read);
/// a Gram above 1024 × 1024 is left as a hole of the file (sparse).
fn write_calibration(
    path: &Path,
    entries: &[(String, Vec<f32>)],
    grams: &[(String, u64)],
    kvs: &[Kv],
) {
    let grams: Vec<(String, u64, Option<Vec<f32>>)> =
        grams.iter().map(|(g, d)| (g.clone(), *d, None)).collect();
    write_calibration_grams(path, entries, &grams, kvs);
}

/// [`write_calibration`] with the Gram tensors' values when given.
fn write_calibration_grams(
    path: &Path,
    entries: &[(String, Vec<f32>)],
    grams: &[(String, u64, Option<Vec<f32>>)],
    kvs: &[Kv],
) {
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut t: Vec<(OutTensor, Vec<u8>)> = Vec::new();
    let f32_tensor = |name: String, ne: [u64; 4], bytes: Vec<u8>| {
        let nbytes = 4 * ne.iter().product::<u64>();
        let ty = QuantType::F32.ggml_id();
        (
            OutTensor {
                name,
                ne,
                ty,
                nbytes,
            },
            bytes,
        )
    };
    for (name, v) in entries {
        let n = v.len() as u64;
        t.push(f32_tensor(format!("{name}.in_sum2"), [n, 1, 1, 1], le(v)));
        t.push(f32_tensor(
            format!("{name}.counts"),
            [1, 1, 1, 1],
            le(&[2.0]),
        ));
    }
    for (g, d, values) in grams {
        let nan = if let Some(v) = values {
            le(v)
        } else if *d <= 1024 {
            le(&vec![f32::NAN; (d * d) as usize])
        } else {
            Vec::new()
        };
        t.push(f32_tensor(format!("{g}.gram"), [*d, *d, 1, 1], nan));
    }
    let outs: Vec<OutTensor> = t.iter().map(|(o, _)| o.clone()).collect();
    let (mut b, offsets) = gguf::encode_header(kvs, &outs, 32);
    let base = b.len();
    let mut end = base as u64;
    for ((o, bytes), off) in t.iter().zip(offsets) {
        b.resize(base + off as usize, 0);
        b.extend(bytes);
        end = base as u64 + (off + o.nbytes).next_multiple_of(32);
    }
    std::fs::write(path, &b).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(end).unwrap();
}

/// `XᵀX / s` of strongly correlated inputs of width `d` (an AR(1) walk
/// along the columns), row-major.
fn correlated_gram(d: usize, seed: u64) -> Vec<f32> {
    let s = 512;
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut normal = || {
        let mut u = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (a, b) = (u(), u());
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    };
    let mut g = vec![0f64; d * d];
    let mut x = vec![0f64; d];
    for _ in 0..s {
        let mut walk = normal();
        for v in x.iter_mut() {
            walk = 0.9 * walk + 0.44 * normal();
            *v = walk;
        }
        for i in 0..d {
            for j in 0..d {
                g[i * d + j] += x[i] * x[j];
            }
        }
    }
    g.iter().map(|v| (v / s as f64) as f32).collect()
}

/// `--optimize --calibration` with Gram matrices: the attention weights
/// that read them are searched on their Gram objective (reported as such,
/// with the winners), which drops well below ggml's; the other tensors
/// keep the diagonal objective; a Gram of NaN or of the wrong size is an
/// error naming it, and nothing is left behind.
#[test]
fn optimize_with_calibration_searches_on_the_gram_matrix() {
    let d = Tmp::new("model-gram");
    let (inp, _) = llama_file(&d, 2);
    let entries = calib_entries(2);
    let names: Vec<(String, u64)> = (0..2).map(|l| (format!("blk.{l}.attn_in"), 256)).collect();
    let grams: Vec<(String, u64, Option<Vec<f32>>)> = names
        .iter()
        .enumerate()
        .map(|(l, (g, n))| (g.clone(), *n, Some(correlated_gram(256, l as u64))))
        .collect();
    let calib = d.p("calib.gguf");
    write_calibration_grams(&calib, &entries, &grams, &calib_kvs(&names));
    let mut p = params(Preset::Q4_K_M);
    p.what.optimize = true;
    p.what.calibration = Some(calib.clone());
    let r = quantize_model(&inp, &d.p("gram.gguf"), &p, &mut no_progress()).unwrap();
    let mut seen = 0;
    for t in &r.tensors {
        let Some(o) = t.objective else { continue };
        let attn_in = ["attn_q", "attn_k", "attn_v"]
            .iter()
            .any(|w| t.name.ends_with(&format!("{w}.weight")));
        if attn_in {
            seen += 1;
            assert_eq!(o.weights, "gram", "{}", t.name);
            let won = o.won.expect("winners");
            let rows: u64 = t.shape[1..].iter().product();
            assert_eq!(won.iter().sum::<u64>(), rows, "{}: every row", t.name);
            assert!(
                o.ours < 0.7 * o.ggml,
                "{}: {} vs ggml {}",
                t.name,
                o.ours,
                o.ggml
            );
        } else {
            assert_ne!(o.weights, "gram", "{}", t.name);
            assert!(o.won.is_none());
        }
    }
    assert_eq!(seen, 6);
    // The same file as an imatrix (no Gram): other bytes.
    p.what.calibration = None;
    p.what.imatrix = Some(calib.clone());
    quantize_model(&inp, &d.p("diag.gguf"), &p, &mut no_progress()).unwrap();
    assert!(std::fs::read(d.p("gram.gguf")).unwrap() != std::fs::read(d.p("diag.gguf")).unwrap());

    // A Gram of NaN, then one of the wrong size: errors naming it.
    p.what.imatrix = None;
    p.what.calibration = Some(calib.clone());
    let mut bad = grams.clone();
    bad[1].2 = None;
    write_calibration_grams(&calib, &entries, &bad, &calib_kvs(&names));
    let e = quantize_model(&inp, &d.p("nan.gguf"), &p, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(e.contains("blk.1.attn_in.gram") && e.contains("NaN"), "{e}");
    assert!(!d.p("nan.gguf").exists());
    let small: Vec<(String, u64, Option<Vec<f32>>)> = names
        .iter()
        .map(|(g, _)| (g.clone(), 128, Some(correlated_gram(128, 0))))
        .collect();
    write_calibration_grams(&calib, &entries, &small, &calib_kvs(&names));
    let e = quantize_model(&inp, &d.p("small.gguf"), &p, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("128 × 128") && e.contains("another model"),
        "{e}"
    );
    assert!(!d.p("small.gguf").exists());

    // The planner measures the same weights on their Gram objective: their
    // candidates' errors change with the Gram matrices, the others' not.
    use ggml_qat::model::planner::SizeTarget;
    let plan_errors = |grams: &[(String, u64, Option<Vec<f32>>)]| {
        write_calibration_grams(&calib, &entries, grams, &calib_kvs(&names));
        let mut p = params(Preset::Q4_0);
        p.what.optimize = true;
        p.what.calibration = Some(calib.clone());
        p.what.size_target = Some(SizeTarget::BitsPerWeight(6.0));
        p.how.dry_run = true;
        let r = quantize_model(&inp, &d.p("plan.gguf"), &p, &mut no_progress()).unwrap();
        r.tensors
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.plan.as_ref()?.candidates.clone())))
            .map(|(n, c)| (n, c.iter().map(|c| c.error).collect::<Vec<f64>>()))
            .collect::<Vec<_>>()
    };
    let with = plan_errors(&grams);
    let identity: Vec<(String, u64, Option<Vec<f32>>)> = names
        .iter()
        .map(|(g, n)| {
            let n = *n as usize;
            let eye = (0..n * n)
                .map(|i| f32::from(u8::from(i / n == i % n)))
                .collect();
            (g.clone(), n as u64, Some(eye))
        })
        .collect();
    let without = plan_errors(&identity);
    assert_eq!(with.len(), without.len());
    let mut changed = 0;
    for ((name, a), (_, b)) in with.iter().zip(&without) {
        let attn_in = ["attn_q", "attn_k", "attn_v"]
            .iter()
            .any(|w| name.contains(w));
        if attn_in {
            changed += usize::from(a != b);
        } else {
            assert_eq!(a, b, "{name}");
        }
    }
    assert_eq!(changed, 6, "the Gram matrices did not reach the planner");
}

#[test]
fn calibration_diagonal_gives_the_imatrix_bytes_and_grams_are_never_read() {
    let d = Tmp::new("model-calib");
    let (inp, _) = llama_file(&d, 2);
    let entries = calib_entries(2);
    // Gram entries named after a weight read by them: tensors
    // `blk.L.attn_q.weight.gram`, of NaN.
    let grams: Vec<(String, u64)> = (0..2)
        .map(|l| (format!("blk.{l}.attn_q.weight"), 256))
        .collect();
    let calib = d.p("calib.gguf");
    write_calibration(&calib, &entries, &grams, &calib_kvs(&grams));
    let c = ggml_qat::model::calibration::load(&calib, true).unwrap();
    let mut names: Vec<&String> = c.imatrix.keys().collect();
    names.sort();
    let mut want: Vec<&String> = entries.iter().map(|(n, _)| n).collect();
    want.sort();
    assert_eq!(names, want, "the entries, and no Gram tensor among them");
    assert!(c.factors.is_none());
    let run = |imatrix: Option<&Path>, calibration: Option<&Path>, out: &str| {
        let mut p = params(Preset::Q4_K_M);
        p.what.imatrix = imatrix.map(Path::to_path_buf);
        p.what.calibration = calibration.map(Path::to_path_buf);
        quantize_model(&inp, &d.p(out), &p, &mut no_progress()).unwrap();
        std::fs::read(d.p(out)).unwrap()
    };
    let with_imatrix = run(Some(&calib), None, "imatrix.gguf");
    let with_calibration = run(None, Some(&calib), "calibration.gguf");
    assert!(
        with_calibration == with_imatrix,
        "--calibration and --imatrix with the same file give other bytes"
    );
    assert!(
        run(None, None, "plain.gguf") != with_imatrix,
        "the diagonal changed nothing"
    );

    // The command line, on a file whose Gram tensor is 1 GiB (a hole):
    // the same bytes, and the Gram matrix is not loaded.
    let big = d.p("big.gguf");
    let grams = [("blk.0.attn_in".to_string(), 16384)];
    write_calibration(&big, &entries, &grams, &calib_kvs(&grams));
    assert!(std::fs::metadata(&big).unwrap().len() > 1 << 30);
    let out = d.p("cli.gguf");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ggml-qat-quantize"))
        .args([
            "--allow-requantize",
            "--max-buffer-size",
            "1",
            "--calibration",
        ])
        .arg(&big)
        .arg("--report")
        .arg(d.p("r.json"))
        .args([&inp, &out])
        .args(["Q4_K_M", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.p("r.json")).unwrap()).unwrap();
    let rss = j["peak_rss_bytes"].as_u64().unwrap();
    assert!(
        rss < 512 << 20,
        "peak RSS {rss} bytes: the Gram tensor was loaded?"
    );
    assert!(
        std::fs::read(&out).unwrap() == with_imatrix,
        "CLI bytes differ"
    );
}

#[test]
fn calibration_factors_steer_the_plan_and_the_report_names_their_source() {
    use ggml_qat::model::planner::{Factors, SizeTarget};
    let d = Tmp::new("model-calib-factors");
    let (inp, _) = llama_file(&d, 3);
    let entries = calib_entries(3);
    let calib = d.p("calib.gguf");
    let base = d.p("q4_0.gguf");
    let r = quantize_model(&inp, &base, &params(Preset::Q4_0), &mut no_progress()).unwrap();
    // room for the three attn_q at Q8_0 (3 x 4 KiB more than Q4_0)
    let mut p = params(Preset::Q4_0);
    p.what.size_target = Some(SizeTarget::FileBytes(r.file_bytes_out + 3 * 4096));
    p.what.plan_types = vec![(None, vec![QuantType::Q4_0, QuantType::Q8_0])];
    p.what.calibration = Some(calib.clone());
    p.how.dry_run = true;
    let out = d.p("out.gguf");
    for (factor, want) in [(1e6f32, "q8_0"), (1e-9, "q4_0")] {
        let mut kvs = calib_kvs(&[]);
        kvs.extend(factor_kvs(
            &["ffn_up", "attn_q"],
            &[3.0, factor],
            &[1.0, 2.0, 4.0],
        ));
        write_calibration(&calib, &entries, &[], &kvs);
        let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
        for t in r.tensors.iter().filter(|t| t.name.contains("attn_q")) {
            assert_eq!(t.chosen_type, want, "attn_q {factor}: {}", t.name);
        }
        let f = &r.plan.as_ref().unwrap().factors;
        let mut want_values = Factors::parse("ffn_up 3\ndepth 1 2 4").unwrap();
        want_values.roles[2] = factor as f64;
        assert_eq!(f.values, want_values);
        assert_eq!(f.source, "calibration file");
        assert_eq!(f.calibration_file.as_deref(), calib.to_str());
        assert_eq!(f.probe_type.as_deref(), Some("q4_0"));
        assert_eq!(f.measure.as_deref(), Some("kl-divergence"));
        assert_eq!(f.tokens, Some(4096));
    }

    // In the JSON report, beside the plan.
    p.report.json_path = Some(d.p("r.json"));
    quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.p("r.json")).unwrap()).unwrap();
    let f = &j["plan"]["factors"];
    assert_eq!(f["source"], "calibration file", "{f}");
    assert_eq!(f["probe_type"], "q4_0");
    assert_eq!(f["measure"], "kl-divergence");
    assert_eq!(f["tokens"], 4096);
    assert_eq!(f["roles"]["ffn_up"], 3.0);
    assert_eq!(f["roles"]["attn_v"], Factors::default().roles[4]);
    assert_eq!(f["depth"], serde_json::json!([1.0, 2.0, 4.0]));

    // Without factors in the file: the default ones, and the report says so.
    write_calibration(&calib, &entries, &[], &calib_kvs(&[]));
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    let f = &r.plan.as_ref().unwrap().factors;
    assert_eq!((f.source, &f.values), ("default", &Factors::default()));
    assert_eq!(f.calibration_file.as_deref(), calib.to_str());
    assert_eq!((&f.probe_type, f.tokens), (&None, None));
    // Factor keys naming no role and no depth (nothing measured): the same.
    let mut kvs = calib_kvs(&[]);
    kvs.extend(factor_kvs(&[], &[], &[]));
    kvs.retain(|k| k.key != "ggml_qat.factors.depth");
    write_calibration(&calib, &entries, &[], &kvs);
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    let f = &r.plan.as_ref().unwrap().factors;
    assert_eq!((f.source, &f.values), ("default", &Factors::default()));
    // A factors file, or nothing: named as such.
    p.what.calibration = None;
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    let f = &r.plan.as_ref().unwrap().factors;
    assert_eq!((f.source, &f.calibration_file), ("default", &None));
    p.what.plan_factors = Some(Factors::parse("attn_q 2").unwrap());
    let r = quantize_model(&inp, &out, &p, &mut no_progress()).unwrap();
    assert_eq!(r.plan.as_ref().unwrap().factors.source, "factors file");
    assert_eq!(d.files(), ["calib.gguf", "in.gguf", "q4_0.gguf", "r.json"]);
}

#[test]
fn command_line_calibration_prints_its_factors_and_refuses_conflicts() {
    let d = Tmp::new("model-calib-cli");
    let (inp, _) = llama_file(&d, 1);
    let calib = d.p("calib.gguf");
    let mut kvs = calib_kvs(&[]);
    kvs.extend(factor_kvs(&["attn_q"], &[2.0], &[1.0, 1.0, 1.0]));
    write_calibration(&calib, &calib_entries(1), &[], &kvs);
    let run = |extra: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ggml-qat-quantize"))
            .args(["--allow-requantize", "--dry-run", "--calibration"])
            .arg(&calib)
            .args(extra)
            .args([&inp, &d.p("out.gguf")])
            .args(["Q4_0", "1"])
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (o.status.code(), text(&o.stdout), text(&o.stderr))
    };
    let (code, stdout, stderr) = run(&["--target-bpw", "6"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("factors: calibration file (probe q4_0, kl-divergence, 4096 tokens)"),
        "{stdout}"
    );
    let factors = d.p("f.txt");
    std::fs::write(&factors, "attn_q 1\n").unwrap();
    for (args, words) in [
        (
            vec!["--imatrix", calib.to_str().unwrap()],
            ["--calibration", "--imatrix"],
        ),
        (
            vec!["--plan-factors", factors.to_str().unwrap()],
            ["--calibration", "--plan-factors"],
        ),
    ] {
        let (code, _, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        for w in words {
            assert!(stderr.contains(w), "{args:?}: '{stderr}' does not name {w}");
        }
    }
    assert_eq!(d.files(), ["calib.gguf", "f.txt", "in.gguf"]);
}

#[test]
fn malformed_calibration_files_are_refused_naming_the_key() {
    use ggml_qat::model::gguf::vt;
    let d = Tmp::new("model-calib-bad");
    let (inp, _) = llama_file(&d, 1);
    let entries = calib_entries(1);
    let calib = d.p("calib.gguf");
    let out = d.p("out.gguf");
    let mut p = params(Preset::Q4_0);
    p.what.calibration = Some(calib.clone());
    let good = factor_kvs(&["attn_q", "ffn_down"], &[1.0, 2.0], &[1.0, 1.0, 1.0]);
    let i32s = Kv {
        key: "ggml_qat.factors.values".into(),
        ty: vt::ARRAY,
        raw: [
            vt::I32.to_le_bytes(),
            2u32.to_le_bytes(),
            0u32.to_le_bytes(),
        ]
        .concat()
        .into_iter()
        .chain([1i32, 2].iter().flat_map(|x| x.to_le_bytes()))
        .collect(),
    };
    let cases: Vec<(Kv, &str, &str)> = vec![
        (
            Kv::string("ggml_qat.factors.roles", "attn_q"),
            "factors.roles",
            "array of strings",
        ),
        (i32s, "factors.values", "array of f32"),
        (
            Kv::f32s("ggml_qat.factors.values", &[1.0]),
            "factors.values",
            "1 values for 2 roles",
        ),
        (
            Kv::strs("ggml_qat.factors.roles", &["attn_q", "attn_x"]),
            "factors.roles",
            "unknown role 'attn_x'",
        ),
        (
            Kv::strs("ggml_qat.factors.roles", &["attn_q", "attn_q"]),
            "factors.roles",
            "named twice",
        ),
        (
            Kv::f32s("ggml_qat.factors.values", &[1.0, f32::NAN]),
            "factors.values",
            "NaN",
        ),
        (
            Kv::f32s("ggml_qat.factors.values", &[0.0, 1.0]),
            "factors.values",
            "above 0",
        ),
        (
            Kv::f32s("ggml_qat.factors.values", &[1.0, -2.0]),
            "factors.values",
            "above 0",
        ),
        (
            Kv::f32s("ggml_qat.factors.depth", &[1.0, 1.0]),
            "factors.depth",
            "2 values, 3 expected",
        ),
        (
            Kv::f32s("ggml_qat.factors.depth", &[1.0, f32::INFINITY, 1.0]),
            "factors.depth",
            "inf",
        ),
        (
            Kv::u32("ggml_qat.factors.probe_type", 2),
            "factors.probe_type",
            "a string",
        ),
        (
            Kv::f32("ggml_qat.factors.measure", 1.0),
            "factors.measure",
            "a string",
        ),
        (
            Kv::string("ggml_qat.factors.tokens", "many"),
            "factors.tokens",
            "a u32",
        ),
        (
            Kv::i32("ggml_qat.factors.tokens", 5),
            "factors.tokens",
            "a u32",
        ),
        (
            Kv::u32("ggml_qat.calibration.version", 2),
            "calibration.version",
            "version 2",
        ),
        (
            Kv::string("ggml_qat.calibration.version", "1"),
            "calibration.version",
            "u32",
        ),
    ];
    for (bad, key, what) in cases {
        let mut kvs = calib_kvs(&[]);
        kvs.extend(good.iter().filter(|k| k.key != bad.key).cloned());
        kvs.retain(|k| k.key != bad.key);
        kvs.push(bad);
        write_calibration(&calib, &entries, &[], &kvs);
        let e = quantize_model(&inp, &out, &p, &mut no_progress())
            .unwrap_err()
            .to_string();
        for w in ["calib.gguf", key, what] {
            assert!(e.contains(w), "'{e}' does not say '{w}'");
        }
        assert!(!out.exists());
    }
    // one of roles and values without the other
    for (drop, other) in [("values", "roles"), ("roles", "values")] {
        let mut kvs = calib_kvs(&[]);
        kvs.extend(good.iter().filter(|k| !k.key.ends_with(drop)).cloned());
        write_calibration(&calib, &entries, &[], &kvs);
        let e = quantize_model(&inp, &out, &p, &mut no_progress())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("factors.{drop}: missing")), "{e}");
        assert!(e.contains(other), "{e}");
    }
    // a plain imatrix is not a calibration file (it goes to --imatrix)
    let mut kvs = calib_kvs(&[]);
    kvs.retain(|k| !k.key.starts_with("ggml_qat."));
    write_calibration(&calib, &entries, &[], &kvs);
    let e = quantize_model(&inp, &out, &p, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ggml_qat.calibration.version: missing") && e.contains("--imatrix"),
        "{e}"
    );
}
