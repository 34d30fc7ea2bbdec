//! Whole-model quantization, side by side in the same run: ggml-qat-quantize,
//! a loop of ggml_quantize_chunk over the same tensors with the same types
//! (what llama-quantize does per tensor: the tensor loaded, converted to F32,
//! quantized, rows split over the threads), and llama.cpp's llama-quantize
//! when scripts/build-llama-tools.sh has built it. Wall time and peak RSS of
//! each, each in its own child process (wait4's ru_maxrss).
//!
//! Models: a synthesized llama-style F16 GGUF, 4096 wide (32 heads, 8 KV
//! heads, ffn 11008, 32000-token vocabulary, 5 layers: 2.3 GB) to Q4_K_M on
//! 2 threads; and the real Gemma 3 270M (scripts/fetch-gemma3.sh; its F16
//! copy made with this tool) to Q4_K_M, Q8_0 and Q4_0 on 1 and 2 threads.
//! GGML_QAT_BENCH_SKIP_SYNTH=1 / GGML_QAT_BENCH_SKIP_GEMMA=1 skip either,
//! GGML_QAT_BENCH_SKIP_LOOP=1 the chunk loop; GGML_QAT_BENCH_PRESETS picks the
//! Gemma presets ("all": every block preset). Ours runs as a user runs it
//! (defaults: the per-tensor error is measured), output on disk.
//! On Gemma, ours also runs with `--optimize` (the data-free output-aware
//! search; GGML_QAT_BENCH_OPTIMIZE=0 skips it), beside the plain conversion.
//! Each figure: the best time of GGML_QAT_BENCH_REPEAT runs (default 3) and
//! the largest peak RSS. Run: cargo bench --bench model

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ggml_qat::ggml::reference;
use ggml_qat::model::gguf::{self, Kv, OutTensor};
use ggml_qat::quant::{self, QuantType};

const QUANTIZE: &str = env!("CARGO_BIN_EXE_ggml-qat-quantize");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` GGML_QAT_BENCH_REPEAT times (default 3): the best time and
/// the largest peak RSS (bytes); panics when it fails.
fn run(cmd: &mut Command) -> (f64, u64) {
    let reps: usize = std::env::var("GGML_QAT_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (mut best, mut rss) = (f64::INFINITY, 0);
    for _ in 0..reps.max(1) {
        let (t, r) = run_once(cmd);
        best = best.min(t);
        rss = rss.max(r);
    }
    (best, rss)
}

/// Runs `cmd` once: (seconds, peak RSS in bytes). Its stderr goes to a
/// file (a pipe left unread could fill and stall a chatty child).
#[allow(clippy::zombie_processes)] // reaped by wait4 below, for ru_maxrss
fn run_once(cmd: &mut Command) -> (f64, u64) {
    let log = std::env::temp_dir().join(format!("ggml-qat-bench-{}.stderr", std::process::id()));
    let t = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("stderr log"))
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // Reaped with wait4 for the child's own ru_maxrss.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r, pid);
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed:\n{err}"
    );
    (secs, ru.ru_maxrss as u64 * 1024)
}

/// The synthesized llama-style F16 model (written once).
fn synth_model(path: &Path) {
    if path.exists() {
        return;
    }
    let (d, ff, vocab, kv, layers) = (4096u64, 11008u64, 32000u64, 1024u64, 5);
    let mut t: Vec<(String, [u64; 4], i32)> = vec![
        ("token_embd.weight".into(), [d, vocab, 1, 1], 1),
        ("output_norm.weight".into(), [d, 1, 1, 1], 0),
        ("output.weight".into(), [d, vocab, 1, 1], 1),
    ];
    for l in 0..layers {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        t.push((b("attn_norm"), [d, 1, 1, 1], 0));
        t.push((b("attn_q"), [d, d, 1, 1], 1));
        t.push((b("attn_k"), [d, kv, 1, 1], 1));
        t.push((b("attn_v"), [d, kv, 1, 1], 1));
        t.push((b("attn_output"), [d, d, 1, 1], 1));
        t.push((b("ffn_norm"), [d, 1, 1, 1], 0));
        t.push((b("ffn_gate"), [d, ff, 1, 1], 1));
        t.push((b("ffn_up"), [d, ff, 1, 1], 1));
        t.push((b("ffn_down"), [ff, d, 1, 1], 1));
    }
    let kvs = vec![
        Kv::string("general.architecture", "llama"),
        Kv::string("general.name", "synthetic-llama-4096"),
        Kv::u32("llama.block_count", layers as u32),
        Kv::u32("llama.context_length", 4096),
        Kv::u32("llama.embedding_length", d as u32),
        Kv::u32("llama.feed_forward_length", ff as u32),
        Kv::u32("llama.attention.head_count", 32),
        Kv::u32("llama.attention.head_count_kv", 8),
        Kv::f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
        Kv::u32("llama.rope.dimension_count", 128),
        Kv::u32("llama.vocab_size", vocab as u32),
        Kv::u32("general.file_type", 1),
    ];
    let out: Vec<OutTensor> = t
        .iter()
        .map(|(n, ne, ty)| OutTensor {
            name: n.clone(),
            ne: *ne,
            ty: *ty,
            nbytes: ne.iter().product::<u64>() * if *ty == 0 { 4 } else { 2 },
        })
        .collect();
    let (head, _) = gguf::encode_header(&kvs, &out, 32);
    let tmp = path.with_extension("part");
    let f = std::fs::File::create(&tmp).unwrap();
    let mut w = gguf::DataWriter::new(f, &head, 32).unwrap();
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut buf = Vec::with_capacity(1 << 22);
    for o in &out {
        let n = o.nbytes / if o.ty == 0 { 4 } else { 2 };
        let mut left = n;
        while left > 0 {
            let m = left.min(1 << 20);
            buf.clear();
            for _ in 0..m {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // roughly normal weights, scale 0.02
                let u = ((s & 0xffff) as f32
                    + ((s >> 16) & 0xffff) as f32
                    + ((s >> 32) & 0xffff) as f32)
                    / 65536.0
                    - 1.5;
                let v = u * 0.03;
                if o.ty == 0 {
                    buf.extend((1.0 + v).to_le_bytes());
                } else {
                    buf.extend(half::f16::from_f32(v).to_bits().to_le_bytes());
                }
            }
            w.write(&buf).unwrap();
            left -= m;
        }
        w.pad().unwrap();
    }
    w.finish().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The child: ggml_quantize_chunk over every tensor of `input` with the
/// types of `report` (a ggml-qat-quantize JSON report), rows split over
/// `threads` threads, each tensor loaded whole and converted to F32 first.
fn chunk_loop_child(input: &Path, report: &Path, threads: usize) {
    let h = gguf::read_header(input).unwrap();
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let f = std::fs::File::open(input).unwrap();
    let mut total = 0usize;
    for (t, rt) in h.tensors.iter().zip(r["tensors"].as_array().unwrap()) {
        let to = rt["chosen_type_id"].as_i64().unwrap() as i32;
        let mut raw = vec![0u8; t.nbytes as usize];
        gguf::read_at(&f, h.data_offset + t.offset, &mut raw).unwrap();
        if to == t.ty {
            total += raw.len();
            continue;
        }
        let n = t.nelements() as usize;
        let from = QuantType::from_ggml(t.ty).unwrap();
        let x = if from == QuantType::F32 {
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        } else {
            reference::to_float(from, &raw, n)
        };
        drop(raw);
        let to = QuantType::from_ggml(to).unwrap();
        let row = t.ne[0] as usize;
        let nrows = n / row;
        let per = nrows.div_ceil(threads);
        let outs: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|i| {
                    let x = &x;
                    s.spawn(move || {
                        let a = (i * per).min(nrows);
                        let b = ((i + 1) * per).min(nrows);
                        if a == b {
                            return Vec::new();
                        }
                        reference::quantize_chunk(to, &x[a * row..b * row], b - a, row, None)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        total += outs.iter().map(|o| o.len()).sum::<usize>();
    }
    println!("{total}");
}

struct Row {
    what: String,
    tool: &'static str,
    secs: f64,
    rss: u64,
    size: u64,
}

fn print_row(r: &Row) {
    println!(
        "{:<44} {:<30} {:>9.2} {:>11.1} {:>14}",
        r.what,
        r.tool,
        r.secs,
        r.rss as f64 / 1048576.0,
        if r.size > 0 {
            r.size.to_string()
        } else {
            "-".into()
        }
    );
}

fn push(rows: &mut Vec<Row>, r: Row) {
    print_row(&r);
    rows.push(r);
}

fn compare(
    input: &Path,
    preset: &str,
    threads: usize,
    work: &Path,
    rows: &mut Vec<Row>,
    llama: Option<&Path>,
    optimize: bool,
) {
    let what = format!(
        "{} -> {preset}, {threads}t",
        input.file_name().unwrap().to_string_lossy()
    );
    let out = work.join("out.gguf");
    let report = work.join("report.json");
    let t = threads.to_string();
    // Our tool on the same input and threads with `extra` options: a row.
    let mut ours = |tool: &'static str, extra: &[&str]| {
        let mut cmd = Command::new(QUANTIZE);
        cmd.args([input.to_str().unwrap(), out.to_str().unwrap(), preset, &t])
            .args(extra);
        let (secs, rss) = run(&mut cmd);
        let size = std::fs::metadata(&out).unwrap().len();
        std::fs::remove_file(&out).unwrap();
        let what = what.clone();
        push(
            rows,
            Row {
                what,
                tool,
                secs,
                rss,
                size,
            },
        );
    };
    ours("ggml-qat-quantize", &["--report", report.to_str().unwrap()]);
    if optimize {
        // The output-aware search, data-free (no calibration file).
        ours("ggml-qat-quantize --optimize", &["--optimize"]);
    }
    let exe = std::env::current_exe().unwrap();
    if std::env::var_os("GGML_QAT_BENCH_SKIP_LOOP").is_none() {
        let (secs, rss) = run(Command::new(exe)
            .env("GGML_QAT_BENCH_CHILD", "chunkloop")
            .env("GGML_QAT_BENCH_IN", input)
            .env("GGML_QAT_BENCH_REPORT", &report)
            .env("GGML_QAT_BENCH_THREADS", &t));
        push(
            rows,
            Row {
                what: what.clone(),
                tool: "ggml_quantize_chunk loop",
                secs,
                rss,
                size: 0,
            },
        );
    }
    if let Some(lq) = llama {
        let (secs, rss) = run(Command::new(lq).args([
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            preset,
            &t,
        ]));
        let size = std::fs::metadata(&out).unwrap().len();
        std::fs::remove_file(&out).unwrap();
        push(
            rows,
            Row {
                what,
                tool: "llama-quantize",
                secs,
                rss,
                size,
            },
        );
    }
}

/// GGML_QAT_BENCH_PRESETS: presets for Gemma, space-separated, or "all"
/// (default: Q4_K_M Q8_0 Q4_0).
fn presets() -> Vec<String> {
    let v = std::env::var("GGML_QAT_BENCH_PRESETS").unwrap_or("Q4_K_M Q8_0 Q4_0".into());
    if v.trim() == "all" {
        return [
            "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
            "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS",
        ]
        .map(String::from)
        .to_vec();
    }
    v.split_whitespace().map(String::from).collect()
}

/// Per Gemma preset: 2 threads against 1 for ggml-qat-quantize, and
/// llama-quantize's time over ours at each thread count.
fn ratios(rows: &[Row]) {
    let time = |what: &str, tool: &str| {
        rows.iter()
            .find(|r| r.what == what && r.tool == tool)
            .map(|r| r.secs)
    };
    println!(
        "\n{:<36} {:>12} {:>16} {:>16} {:>16}",
        "gemma preset", "ours 1t/2t", "llama/ours 1t", "llama/ours 2t", "optimize/ours 2t"
    );
    for p in presets() {
        let w = |t: usize| format!("gemma-3-270m-f16.gguf -> {p}, {t}t");
        let (o1, o2) = (
            time(&w(1), "ggml-qat-quantize"),
            time(&w(2), "ggml-qat-quantize"),
        );
        let (l1, l2) = (time(&w(1), "llama-quantize"), time(&w(2), "llama-quantize"));
        let f = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let opt2 = time(&w(2), "ggml-qat-quantize --optimize");
        println!(
            "{:<36} {:>12} {:>16} {:>16} {:>16}",
            p,
            f(o1, o2),
            f(l1, o1),
            f(l2, o2),
            f(opt2, o2)
        );
    }
}

fn main() {
    if std::env::var("GGML_QAT_BENCH_CHILD").as_deref() == Ok("chunkloop") {
        let v = |k: &str| std::env::var(k).unwrap();
        chunk_loop_child(
            Path::new(&v("GGML_QAT_BENCH_IN")),
            Path::new(&v("GGML_QAT_BENCH_REPORT")),
            v("GGML_QAT_BENCH_THREADS").parse().unwrap(),
        );
        return;
    }
    let _ = quant::is_implemented(QuantType::Q4_K);
    let work = root().join("target").join("model-bench");
    std::fs::create_dir_all(&work).unwrap();
    let llama = root().join(".deps/llama.cpp-build/bin/llama-quantize");
    let llama = llama.exists().then_some(llama);
    let optimize = std::env::var("GGML_QAT_BENCH_OPTIMIZE").as_deref() != Ok("0");
    let mut rows = Vec::new();
    println!(
        "{:<44} {:<30} {:>9} {:>11} {:>14}",
        "conversion", "tool", "time s", "peak MiB", "file bytes"
    );
    if std::env::var_os("GGML_QAT_BENCH_SKIP_GEMMA").is_none() {
        let q4 = root().join(".deps/models/gemma-3-270m-q4_k_m.gguf");
        if q4.exists() {
            let f16 = work.join("gemma-3-270m-f16.gguf");
            if !f16.exists() {
                run_once(Command::new(QUANTIZE).args([
                    q4.to_str().unwrap(),
                    f16.to_str().unwrap(),
                    "F16",
                    "--allow-requantize",
                ]));
            }
            for preset in presets() {
                for threads in [1, 2] {
                    compare(
                        &f16,
                        &preset,
                        threads,
                        &work,
                        &mut rows,
                        llama.as_deref(),
                        optimize,
                    );
                }
            }
            ratios(&rows);
        } else {
            eprintln!("(no Gemma 3 270M: run scripts/fetch-gemma3.sh)");
        }
    }
    if std::env::var_os("GGML_QAT_BENCH_SKIP_SYNTH").is_none() {
        let synth = work.join("synthetic-llama-4096-f16.gguf");
        synth_model(&synth);
        // minutes per run for llama-quantize and the loop: once
        std::env::set_var("GGML_QAT_BENCH_REPEAT", "1");
        compare(
            &synth,
            "Q4_K_M",
            2,
            &work,
            &mut rows,
            llama.as_deref(),
            false,
        );
        // the dry run's sizes against the real run's
        let o = Command::new(QUANTIZE)
            .args([
                synth.to_str().unwrap(),
                work.join("dry.gguf").to_str().unwrap(),
                "Q4_K_M",
                "2",
                "--dry-run",
                "-q",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("model size"))
            .unwrap_or("");
        println!("dry run: {line}");
    }
    println!(
        "{:<44} {:<30} {:>9} {:>11} {:>14}",
        "conversion", "tool", "time s", "peak MiB", "file bytes"
    );
    for r in &rows {
        print_row(r);
    }
}
