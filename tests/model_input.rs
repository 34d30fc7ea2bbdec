//! Hostile model and imatrix files: huge counts and lengths in sparse files
//! (no disk used), headers llama.cpp refuses, imatrix files that are not
//! regular files or hold values llama-quantize cannot use. Every case must
//! end in a clear error, never an abort, a hang or an unbounded allocation.
//! The cases that used to abort run in a child process (this test binary,
//! re-executed) under an address-space limit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ggml_qat::model::gguf::{self, Kv, OutTensor};
use ggml_qat::model::imatrix;
use ggml_qat::model::preset::Preset;

const GIB: u64 = 1 << 30;
const CHILD: &str = "MODEL_INPUT_CHILD";

#[path = "common/tmp.rs"]
mod tmp;
use tmp::Tmp;

/// Runs `body` in a child process (this test, re-executed) whose address
/// space is limited to `limit` bytes; fails when the child does not pass
/// within `timeout` (an abort, a hang, a failed assertion).
fn isolated(name: &str, limit: u64, timeout: Duration, body: impl FnOnce()) {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        let l = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &l) }, 0);
        body();
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{name}: the child did not finish within {timeout:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        status.success() && so.contains("1 passed"),
        "{name}: child failed ({status}):\n{so}\n{se}"
    );
}

/// `GGUF`, version 3 and the two counts.
fn head(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

/// Writes `bytes` and extends the file (sparse) to `len`.
fn sparse(path: &Path, bytes: &[u8], len: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    f.set_len(len.max(bytes.len() as u64)).unwrap();
}

fn header_err(path: &Path) -> String {
    match gguf::read_header(path) {
        Ok(_) => panic!("{}: accepted", path.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "'{p}' not in: {msg}");
    }
}

const LIMIT: u64 = 2 * GIB;
const T: Duration = Duration::from_secs(60);

#[test]
fn sparse_n_kv_near_the_file_bound_is_refused() {
    isolated(
        "sparse_n_kv_near_the_file_bound_is_refused",
        LIMIT,
        T,
        || {
            let d = Tmp::new("input-nkv");
            let p = d.p("m.gguf");
            let len = 10 * GIB;
            sparse(&p, &head(0, len / 13 - 1), len);
            let e = header_err(&p);
            assert_has(&e, &["m.gguf"]);
        },
    );
}

#[test]
fn sparse_n_tensors_near_the_file_bound_is_refused() {
    isolated(
        "sparse_n_tensors_near_the_file_bound_is_refused",
        LIMIT,
        T,
        || {
            let d = Tmp::new("input-nt");
            let p = d.p("m.gguf");
            let len = 10 * GIB;
            sparse(&p, &head(len / 32 - 1, 0), len);
            let e = header_err(&p);
            assert_has(&e, &["m.gguf"]);
        },
    );
}

#[test]
fn sparse_9_gib_key_is_refused() {
    isolated("sparse_9_gib_key_is_refused", LIMIT, T, || {
        let d = Tmp::new("input-key");
        let p = d.p("m.gguf");
        let mut b = head(0, 1);
        b.extend((9 * GIB).to_le_bytes());
        sparse(&p, &b, 10 * GIB);
        assert_has(&header_err(&p), &["m.gguf", "key"]);
    });
}

#[test]
fn sparse_9_gib_u8_array_is_refused() {
    isolated("sparse_9_gib_u8_array_is_refused", LIMIT, T, || {
        let d = Tmp::new("input-arr");
        let p = d.p("m.gguf");
        let mut b = head(0, 1);
        put_str(&mut b, "tokenizer.ggml.token_type");
        b.extend(9u32.to_le_bytes()); // array
        b.extend(0u32.to_le_bytes()); // of u8
        b.extend((9 * GIB).to_le_bytes());
        sparse(&p, &b, 10 * GIB);
        assert_has(&header_err(&p), &["m.gguf", "array"]);
    });
}

#[test]
fn sparse_3_gib_string_value_is_refused_before_reading_it() {
    let name = "sparse_3_gib_string_value_is_refused_before_reading_it";
    isolated(name, LIMIT, Duration::from_secs(20), || {
        let d = Tmp::new("input-str");
        let p = d.p("m.gguf");
        let mut b = head(0, 1);
        put_str(&mut b, "general.name");
        b.extend(8u32.to_le_bytes()); // string
        b.extend((3 * GIB).to_le_bytes());
        sparse(&p, &b, 4 * GIB);
        let start = Instant::now();
        assert_has(&header_err(&p), &["m.gguf", "string"]);
        assert!(start.elapsed() < Duration::from_secs(2), "read in full");
    });
}

/// Tensor infos `(name, ne, offset)`, F32, in a file of `data` data bytes.
fn tensors_file(path: &Path, kvs: &[Kv], ts: &[(&str, u64, u64)], data: u64) {
    let mut b = head(ts.len() as u64, kvs.len() as u64);
    for kv in kvs {
        put_str(&mut b, &kv.key);
        b.extend(kv.ty.to_le_bytes());
        b.extend(&kv.raw);
    }
    for (name, ne, off) in ts {
        put_str(&mut b, name);
        b.extend(1u32.to_le_bytes());
        b.extend(ne.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(off.to_le_bytes());
    }
    b.resize(b.len().div_ceil(32) * 32 + data as usize, 0);
    std::fs::write(path, b).unwrap();
}

/// Key/values, tensors `(name, ne, offset)`, data bytes, error words.
type StructCase<'a> = (Vec<Kv>, Vec<(&'a str, u64, u64)>, u64, &'a [&'a str]);

#[test]
fn structural_errors_are_refused_with_their_cause() {
    let d = Tmp::new("input-struct");
    let p = d.p("m.gguf");
    let kv = |k: &str| Kv::u32(k, 1);
    let cases: Vec<StructCase> = vec![
        (vec![kv("")], vec![], 0, &["empty key"]),
        (
            vec![Kv::u32("general.alignment", 1 << 29)],
            vec![],
            0,
            &["alignment"],
        ),
        (
            vec![Kv::u32("general.alignment", 48)],
            vec![],
            0,
            &["alignment"],
        ),
        (vec![kv("a"), kv("a")], vec![], 0, &["duplicate key 'a'"]),
        (
            vec![],
            vec![("t", 32, 0), ("t", 32, 128)],
            256,
            &["duplicate tensor name 't'"],
        ),
        (
            vec![],
            vec![("a", 32, 0), ("b", 32, 96)],
            256,
            &["overlap", "'a'", "'b'"],
        ),
        (
            vec![],
            vec![("a", 64, 0), ("b", 32, 0)],
            256,
            &["overlap", "'a'", "'b'"],
        ),
        (
            vec![],
            vec![("a", 32, 0), ("b", 32, 256)],
            256,
            &["'b'", "past the end"],
        ),
        (vec![], vec![("a", 32, u64::MAX - 31)], 256, &["'a'"]),
    ];
    for (kvs, ts, data, want) in cases {
        tensors_file(&p, &kvs, &ts, data);
        let e = header_err(&p);
        assert_has(&e, &["m.gguf"]);
        assert_has(&e, want);
    }
    // a valid one, for contrast
    tensors_file(&p, &[], &[("a", 32, 0), ("b", 32, 128)], 256);
    gguf::read_header(&p).unwrap();
}

#[test]
fn tensor_shapes_llama_cpp_refuses_are_refused() {
    let d = Tmp::new("input-shape");
    let p = d.p("m.gguf");
    let one = |n_dims: u32, ne: &[u64]| {
        let mut b = head(1, 0);
        put_str(&mut b, "t");
        b.extend(n_dims.to_le_bytes());
        for x in ne {
            b.extend(x.to_le_bytes());
        }
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.resize(4096, 0);
        b
    };
    let cases: [(u32, &[u64]); 5] = [
        (5, &[1, 1, 1, 1, 1]),
        (2, &[1, u64::MAX]),
        (4, &[1 << 20, 1 << 20, 1 << 20, 1 << 20]),
        // a zero dimension: no data, but ne[0] * ne[2] would overflow
        (3, &[1 << 40, 0, 1 << 40]),
        (0, &[]),
    ];
    for (n_dims, ne) in cases {
        std::fs::write(&p, one(n_dims, ne)).unwrap();
        assert_has(&header_err(&p), &["m.gguf", "'t'"]);
    }
}

/// A valid model header with F32 tensors (zeros).
fn model_file(path: &Path, kvs: &[Kv], tensors: &[(&str, u64)]) {
    let out: Vec<OutTensor> = tensors
        .iter()
        .map(|(n, ne0)| OutTensor {
            name: n.to_string(),
            ne: [*ne0, 1, 1, 1],
            ty: 0,
            nbytes: 4 * ne0,
        })
        .collect();
    let (mut b, _) = gguf::encode_header(kvs, &out, 32);
    for t in &out {
        b.resize(b.len() + t.nbytes.div_ceil(32) as usize * 32, 0);
    }
    std::fs::write(path, b).unwrap();
}

fn model_kvs(arch: &str) -> Vec<Kv> {
    vec![
        Kv::string("general.architecture", arch),
        Kv::u32(&format!("{arch}.block_count"), 2),
        Kv::u32(&format!("{arch}.embedding_length"), 64),
    ]
}

#[test]
fn model_headers_llama_cpp_refuses_are_refused() {
    let d = Tmp::new("input-arch");
    let p = d.p("m.gguf");
    let check = |kvs: &[Kv]| {
        model_file(&p, kvs, &[("blk.0.attn_q.weight", 64)]);
        let h = gguf::read_header(&p).unwrap();
        gguf::check_model_header(&h, &p).map_err(|e| e.to_string())
    };
    for arch in ["llama", "gemma3", "qwen2moe", "clip"] {
        check(&model_kvs(arch)).unwrap();
    }
    let mut no_arch = model_kvs("llama");
    no_arch.remove(0);
    let e = check(&no_arch).unwrap_err();
    assert_has(&e, &["m.gguf", "general.architecture"]);
    let e = check(&model_kvs("")).unwrap_err();
    assert_has(&e, &["m.gguf", "general.architecture", "empty"]);
    let e = check(&model_kvs("llama9")).unwrap_err();
    assert_has(&e, &["m.gguf", "'llama9'", "unknown"]);
    let mut not_str = model_kvs("llama");
    not_str[0] = Kv::u32("general.architecture", 3);
    assert_has(&check(&not_str).unwrap_err(), &["general.architecture"]);
    for (n, ok) in [
        (0, false),
        (1, true),
        (512, true),
        (513, false),
        (1 << 30, false),
    ] {
        let mut kvs = model_kvs("llama");
        kvs[1] = Kv::u32("llama.block_count", n);
        let r = check(&kvs);
        assert_eq!(r.is_ok(), ok, "block_count {n}: {r:?}");
        if !ok {
            assert_has(&r.unwrap_err(), &["m.gguf", "llama.block_count"]);
        }
    }
    let mut kvs = model_kvs("llama");
    kvs.remove(1);
    assert_has(&check(&kvs).unwrap_err(), &["llama.block_count"]);
    let mut kvs = model_kvs("llama");
    kvs[2] = Kv::u32("llama.embedding_length", 0);
    assert_has(
        &check(&kvs).unwrap_err(),
        &["m.gguf", "llama.embedding_length"],
    );
}

fn imatrix_err(path: &Path) -> String {
    match imatrix::load(path) {
        Ok(_) => panic!("{}: accepted", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn imatrix_dev_zero_is_refused() {
    isolated("imatrix_dev_zero_is_refused", LIMIT, T, || {
        let e = imatrix_err(Path::new("/dev/zero"));
        assert_has(&e, &["/dev/zero", "not a regular file"]);
    });
}

#[test]
fn imatrix_fifo_is_refused_without_blocking() {
    let name = "imatrix_fifo_is_refused_without_blocking";
    isolated(name, LIMIT, Duration::from_secs(20), || {
        let d = Tmp::new("input-fifo");
        let p = d.p("im.dat");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_has(&imatrix_err(&p), &["im.dat", "not a regular file"]);
    });
}

#[test]
fn model_fifo_is_refused_without_blocking() {
    let name = "model_fifo_is_refused_without_blocking";
    isolated(name, LIMIT, Duration::from_secs(20), || {
        let d = Tmp::new("input-mfifo");
        let p = d.p("m.gguf");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_has(&header_err(&p), &["m.gguf", "not a regular file"]);
    });
}

/// A GGUF imatrix: `(name, in_sum2, counts)` per entry, one expert each.
fn gguf_imatrix(path: &Path, entries: &[(&str, &[f32], &[f32])]) {
    let mut out = Vec::new();
    let mut data = Vec::new();
    for (name, sums, counts) in entries {
        for (suffix, v) in [("in_sum2", sums), ("counts", counts)] {
            let ne1 = counts.len() as u64;
            out.push(OutTensor {
                name: format!("{name}.{suffix}"),
                ne: [v.len() as u64 / ne1, ne1, 1, 1],
                ty: 0,
                nbytes: 4 * v.len() as u64,
            });
            let mut b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            b.resize(b.len().div_ceil(32) * 32, 0);
            data.push(b);
        }
    }
    let kvs = [Kv::string("general.type", "imatrix")];
    let (mut b, _) = gguf::encode_header(&kvs, &out, 32);
    for x in data {
        b.extend(x);
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn imatrix_values_llama_quantize_cannot_use_are_refused() {
    let d = Tmp::new("input-imval");
    let p = d.p("im.gguf");
    let good = [1.0f32; 32];
    gguf_imatrix(&p, &[("a.weight", &good, &[2.0])]);
    assert_eq!(imatrix::load(&p).unwrap().get("a.weight").unwrap()[0], 0.5);
    // an expert never routed: count 0, sums 0, weights 1 (as llama-quantize)
    gguf_imatrix(&p, &[("a.weight", &[0.0; 64], &[0.0, 0.0])]);
    assert_eq!(imatrix::load(&p).unwrap()["a.weight"], vec![1.0; 64]);
    let mut neg = good;
    neg[3] = -1.0;
    let mut nan = good;
    nan[5] = f32::NAN;
    let mut inf = good;
    inf[0] = f32::INFINITY;
    let cases: [(&[f32], &[f32], &str); 7] = [
        (&neg, &[1.0], "negative"),
        (&nan, &[1.0], "in_sum2"),
        (&inf, &[1.0], "in_sum2"),
        (&good, &[f32::NAN], "counts"),
        (&good, &[-2.0], "counts"),
        (&good, &[f32::INFINITY], "counts"),
        (&good, &[0.0], "counts"),
    ];
    for (sums, counts, what) in cases {
        gguf_imatrix(&p, &[("blk.0.x.weight", sums, counts)]);
        assert_has(&imatrix_err(&p), &["im.gguf", "'blk.0.x.weight'", what]);
    }
    let l = d.p("im.dat");
    imatrix::write_legacy(&l, &[("blk.0.x.weight", 1, &neg)]).unwrap();
    assert_has(
        &imatrix_err(&l),
        &["im.dat", "'blk.0.x.weight'", "negative"],
    );
    imatrix::write_legacy(&l, &[("blk.0.x.weight", 1, &nan)]).unwrap();
    assert_has(&imatrix_err(&l), &["im.dat", "'blk.0.x.weight'"]);
}

#[test]
fn imatrix_duplicate_legacy_entry_is_refused() {
    let d = Tmp::new("input-imdup");
    let l = d.p("im.dat");
    let v = [1.0f32; 32];
    imatrix::write_legacy(&l, &[("a.weight", 1, &v), ("a.weight", 1, &v)]).unwrap();
    assert_has(&imatrix_err(&l), &["im.dat", "duplicate", "'a.weight'"]);
}

#[test]
fn imatrix_sizes_are_bounded_by_the_file() {
    isolated("imatrix_sizes_are_bounded_by_the_file", LIMIT, T, || {
        let d = Tmp::new("input-imsize");
        let l = d.p("im.dat");
        // one entry of i32::MAX values (8 GiB), the file sparse and big enough
        let mut b = 1i32.to_le_bytes().to_vec();
        b.extend(1i32.to_le_bytes());
        b.extend(b"a");
        b.extend(1i32.to_le_bytes());
        b.extend(i32::MAX.to_le_bytes());
        sparse(&l, &b, 9 * GIB);
        let e = imatrix_err(&l);
        assert_has(&e, &["im.dat"]);
        // a name longer than the file
        let mut b = 1i32.to_le_bytes().to_vec();
        b.extend(i32::MAX.to_le_bytes());
        sparse(&l, &b, 64);
        assert_has(&imatrix_err(&l), &["im.dat"]);
    });
}

/// Writes the seed corpora of the fuzz targets (fuzz/corpus/gguf_header,
/// imatrix_file, quantize_model): small valid files, a few KB each.
/// `cargo test --test model_input write_fuzz_seeds -- --ignored`
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let dir = |t: &str| {
        let d = root.join(t);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (g, im, qm) = (
        dir("gguf_header"),
        dir("imatrix_file"),
        dir("quantize_model"),
    );
    // a small llama-style model: F32, F16 and Q8_0 tensors
    let kvs = |arch: &str| {
        let mut k = model_kvs(arch);
        k.push(Kv::u32(&format!("{arch}.attention.head_count"), 4));
        k.push(Kv::u32("general.alignment", 32));
        let mut toks = 8u32.to_le_bytes().to_vec(); // an array of 2 strings
        toks.extend(2u64.to_le_bytes());
        for s in ["<s>", "a"] {
            toks.extend((s.len() as u64).to_le_bytes());
            toks.extend(s.as_bytes());
        }
        let mut types = 0u32.to_le_bytes().to_vec(); // an array of 2 u8
        types.extend(2u64.to_le_bytes());
        types.extend([1, 3]);
        for (key, raw) in [
            ("tokenizer.ggml.tokens", toks),
            ("tokenizer.ggml.token_type", types),
        ] {
            k.push(Kv {
                key: key.into(),
                ty: 9,
                raw,
            });
        }
        k
    };
    let model = |arch: &str, ts: &[(&str, [u64; 4], i32)]| -> Vec<u8> {
        let out: Vec<OutTensor> = ts
            .iter()
            .map(|(n, ne, ty)| OutTensor {
                name: n.to_string(),
                ne: *ne,
                ty: *ty,
                nbytes: gguf::type_nbytes(*ty, ne[0], ne[1] * ne[2] * ne[3]).unwrap(),
            })
            .collect();
        let (mut b, _) = gguf::encode_header(&kvs(arch), &out, 32);
        for (i, t) in out.iter().enumerate() {
            let n = t.nbytes.div_ceil(32) as usize * 32;
            // small deterministic values: F32 1.0s, F16 0x3c00s
            let fill: &[u8] = match t.ty {
                0 => &[0, 0, 0x80, 0x3f],
                1 => &[0, 0x3c],
                _ => &[0x00, 0x2c, 1, 2, 3, 0xfe, 0xfd],
            };
            b.extend((0..n).map(|j| fill[(i + j) % fill.len()]));
        }
        b
    };
    let small = model(
        "llama",
        &[
            ("token_embd.weight", [32, 4, 1, 1], 1),
            ("blk.0.attn_norm.weight", [32, 1, 1, 1], 0),
            ("blk.0.attn_q.weight", [32, 4, 1, 1], 8),
            ("output.weight", [32, 2, 1, 1], 0),
        ],
    );
    let kquant = model(
        "qwen2moe",
        &[
            ("blk.0.ffn_up_exps.weight", [256, 1, 2, 1], 1),
            ("blk.0.attn_v.weight", [256, 2, 1, 1], 0),
        ],
    );
    std::fs::write(g.join("llama-small"), &small).unwrap();
    let q4_k_m = Preset::ALL
        .iter()
        .position(|&p| p == Preset::Q4_K_M)
        .unwrap() as u8;
    let q4_0 = Preset::ALL.iter().position(|&p| p == Preset::Q4_0).unwrap() as u8;
    std::fs::write(g.join("qwen2moe-kquant"), &kquant).unwrap();
    for (name, b) in [("q4_k_m-llama", &small), ("q4_k_m-moe", &kquant)] {
        let mut v = vec![q4_k_m, 2];
        v.extend(b.iter());
        std::fs::write(qm.join(name), v).unwrap();
    }
    let mut v = vec![q4_0, 1 | 32];
    v.extend(small.iter());
    std::fs::write(qm.join("q4_0-pure-rowwise"), v).unwrap();
    let p = im.join("gguf");
    gguf_imatrix(&p, &[("blk.0.attn_q.weight", &[1.0; 32], &[2.0])]);
    let p = im.join("gguf-experts");
    gguf_imatrix(&p, &[("e.weight", &[0.5; 64], &[1.0, 3.0])]);
    calibration_seed(&im.join("calibration"));
    let w = [0.25f32; 32];
    imatrix::write_legacy(
        &im.join("legacy"),
        &[("blk.0.attn_q.weight", 2, &w), ("b", 1, &w[..8])],
    )
    .unwrap();
}

/// A calibration file of ggml-qat-calibrate: one imatrix entry, a Gram
/// tensor (8 x 8, rank 1), the calibration, Gram and factor keys.
fn calibration_seed(path: &Path) {
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let ts = [
        (
            "blk.0.attn_q.weight.in_sum2",
            [32, 1, 1, 1],
            f32s(&[1.0; 32]),
        ),
        ("blk.0.attn_q.weight.counts", [1, 1, 1, 1], f32s(&[2.0])),
        ("blk.0.attn_q.weight.gram", [8, 8, 1, 1], f32s(&[0.5; 64])),
    ];
    let out: Vec<OutTensor> = ts
        .iter()
        .map(|(n, ne, b)| OutTensor {
            name: n.to_string(),
            ne: *ne,
            ty: 0,
            nbytes: b.len() as u64,
        })
        .collect();
    let kvs = [
        Kv::string("general.type", "imatrix"),
        Kv::u32("ggml_qat.calibration.version", 1),
        Kv::u32("ggml_qat.gram.max", 8),
        Kv::strs("ggml_qat.gram.weights", &["blk.0.attn_q.weight"]),
        Kv::strs("ggml_qat.gram.tensors", &["blk.0.attn_q.weight.gram"]),
        Kv::strs("ggml_qat.factors.roles", &["attn_q", "ffn_down"]),
        Kv::f32s("ggml_qat.factors.values", &[1.5, 7.0]),
        Kv::f32s("ggml_qat.factors.depth", &[0.1, 0.1, 0.2]),
        Kv::string("ggml_qat.factors.measure", "kl-divergence"),
        Kv::u32("ggml_qat.factors.tokens", 512),
    ];
    let (mut b, _) = gguf::encode_header(&kvs, &out, 32);
    for (_, _, data) in &ts {
        b.extend(data);
        b.resize(b.len().div_ceil(32) * 32, 0);
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn calibration_file_with_any_byte_flipped_is_no_panic() {
    use ggml_qat::model::calibration;
    let d = Tmp::new("input-calib");
    let p = d.p("calib.gguf");
    calibration_seed(&p);
    let c = calibration::load(&p, true).unwrap();
    assert_eq!(c.imatrix["blk.0.attn_q.weight"], vec![0.5; 32]);
    let f = c.factors.unwrap();
    assert_eq!((f.values.roles[2], f.values.depth[2]), (1.5, 0.2f32 as f64));
    let g = c.grams.unwrap();
    let f = g.factor("blk.0.attn_q.weight").unwrap().unwrap();
    assert_eq!((f.n(), f.diag()), (8, &[0.5f32; 8][..]));
    let good = std::fs::read(&p).unwrap();
    let bad = d.p("bad.gguf");
    // Every byte, the Gram matrix's included: read and factored, or refused.
    for i in 0..good.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[i] ^= x;
            std::fs::write(&bad, &b).unwrap();
            if let Ok(Some(g)) = calibration::load(&bad, true).map(|c| c.grams) {
                for w in g.weights().map(String::from).collect::<Vec<_>>() {
                    let _ = g.factor(&w);
                }
            }
        }
    }
}

#[path = "../fuzz/fuzz_targets/common/model.rs"]
mod fuzz_model;

/// Every committed input of the model fuzz targets (seeds and the
/// reproducers of the crashes fuzzing found, `regress-*`) through the same
/// cases as the targets: no panic.
#[test]
fn fuzz_corpora_replay_cleanly() {
    let d = Tmp::new("input-replay");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let files = |t: &str| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(corpus.join(t))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        assert!(!v.is_empty(), "{t}: no corpus");
        v
    };
    for p in files("gguf_header") {
        fuzz_model::gguf_header(&p, &d.p("back.gguf"));
    }
    for p in files("imatrix_file") {
        fuzz_model::imatrix_file(&p);
    }
    for p in files("quantize_model") {
        let data = std::fs::read(&p).unwrap();
        let input = d.p("in.gguf");
        std::fs::write(&input, &data[2..]).unwrap();
        fuzz_model::quantize(&input, &d.p("out.gguf"), data[0], data[1]);
    }
}

#[test]
fn empty_tensors_keep_their_shape_through_the_writer() {
    let d = Tmp::new("input-empty");
    let p = d.p("m.gguf");
    let t = |name: &str, ne: [u64; 4], nbytes: u64| OutTensor {
        name: name.into(),
        ne,
        ty: 0,
        nbytes,
    };
    let out = [t("e", [512, 1, 0, 1], 0), t("f", [8, 1, 1, 1], 32)];
    let (mut b, offsets) = gguf::encode_header(&[], &out, 32);
    b.resize(b.len() + offsets[1] as usize + 32, 0);
    std::fs::write(&p, b).unwrap();
    let h = gguf::read_header(&p).unwrap();
    assert_eq!(h.tensors[0].ne, [512, 1, 0, 1]);
    assert_eq!(h.tensors[0].nbytes, 0);
}

#[test]
fn kv_accessors_never_index_past_their_bytes() {
    assert_eq!(Kv::i32("k", 7).as_u64(), Some(7));
    assert_eq!(Kv::i32("k", -3).as_u64(), None);
    assert_eq!(Kv::u16("k", 65535).as_u64(), Some(65535));
    let kv = |ty: u32, raw: &[u8]| Kv {
        key: "k".into(),
        ty,
        raw: raw.to_vec(),
    };
    assert_eq!(kv(1, &[0xff]).as_u64(), None); // i8 -1
    assert_eq!(kv(1, &[0x7f]).as_u64(), Some(127));
    for ty in 0..13 {
        assert_eq!(kv(ty, &[]).as_u64(), None);
        assert_eq!(kv(ty, &[]).as_str(), None);
    }
    let mut arr = 4u32.to_le_bytes().to_vec(); // u32 array, first element 9
    arr.extend(2u64.to_le_bytes());
    arr.extend(9u32.to_le_bytes());
    assert_eq!(kv(9, &arr).as_u64(), Some(9));
}
