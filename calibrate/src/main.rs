//! `ggml-qat-calibrate MODEL.gguf -o CALIB.gguf`: runs a model through
//! llama.cpp's libllama (self-generated or given text, evaluated in chunks;
//! for an embedding model, `embed.rs`) and writes activation statistics:
//! llama-imatrix's per-column sums of squares, Gram matrices of the inputs
//! of the dense weights, and the model's sensitivities.
//!
//! Its own executable, linking the ggml of its llama.cpp tree: that ggml
//! never meets the one libggml-qat links; the two meet only in the file.

mod cli;
mod collect;
mod corpus;
mod embed;
mod error;
mod evaluate;
mod ffi;
mod generate;
mod gram;
mod llama;
mod output;
mod probe;
mod progress;
mod report;
mod sensitivity;

use error::{Error, Result};
use progress::Progress;
use std::time::Instant;

fn main() {
    passive_openmp();
    // Past a file-size limit, a write error (and the cleanup) rather than
    // death by SIGXFSZ.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let args = cli::parse();
    if let Err(e) = run(&args) {
        eprintln!("ggml-qat-calibrate: error: {e}");
        std::process::exit(1);
    }
}

/// ggml's CPU backend runs on OpenMP, whose idle threads spin by default:
/// on a shared machine that wastes most of the time (measured on Gemma 3
/// 270M, 2 threads on a busy 2-core machine: 3.6 tokens/s generated with
/// spinning, 22 without). libgomp reads `OMP_WAIT_POLICY` when it loads,
/// before `main`, so the process re-executes itself once with `passive`
/// unless the user chose a policy.
fn passive_openmp() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", "passive")
        .exec();
    // Only reached when exec failed: run as we are.
    let _ = err;
}

fn run(args: &cli::Args) -> Result<()> {
    args.check()?;
    if let Some(fd) = args.progress_fd {
        progress::machine_fd(fd)?;
    }
    let t0 = Instant::now();
    llama::init(args.verbose);
    // The cleanup knows the temporary files before they exist.
    llama::on_fatal(&output::Output::temp_for(&args.output)?);
    if let Some(r) = &args.report {
        llama::cleanup_also(&report::temp_for(r));
    }
    let out = output::Output::prepare(&args.output)?;
    let probe_type = probe_type(args)?;
    let model = llama::Model::load(&args.model, args.n_gpu_layers, probe_type.is_some())?;
    if args.n_gpu_layers != 0 && !llama::gpu_offload() && !args.quiet {
        eprintln!("calibrate: this llama.cpp has no GPU backend; -ngl ignored, running on the CPU");
    }
    let kind = model.kind()?;
    let ctx = args.ctx_size;
    let threads = args.threads();
    check_kind(args, &model, kind)?;
    let plan = corpus::Plan::new(model.vocab(), &args.files, args.tokens, ctx)?;
    let mut collector = collect::Collector::new(collect::Options {
        gram_max: args.gram_max,
        process_output: args.process_output,
        threads,
    });
    let shape = evaluate::Shape {
        ctx,
        ubatch: args.ubatch_size.min(ctx),
        threads: threads as i32,
    };
    let probe = probe_type.is_some();
    let mut pass = if kind.is_embedding() {
        embedding_pass(args, &model, kind, &plan, &shape, probe, &mut collector)?
    } else {
        text_pass(args, &model, &plan, &shape, probe, &mut collector)?
    };
    if collector.imatrix_weights() == 0 {
        return Err(Error::Statistics(
            "no matrix product read a model weight named blk.* in the graphs llama.cpp ran: \
             this architecture's weights could not be matched"
                .into(),
        ));
    }
    let mut stream = plan.text[..pass.text_chunks * ctx].to_vec();
    stream.extend(pass.generated.iter().flatten());
    if let Some(path) = &args.save_text {
        let text = model.vocab().detokenize(&stream);
        std::fs::write(path, text).map_err(|e| Error::Io(path.clone(), e))?;
    }
    if let (Some(path), Some(Scoring::Pooled(p))) = (&args.save_embeddings, &pass.scoring) {
        p.save(path)?;
    }
    let sensitivity = match (probe_type, pass.scoring.as_mut()) {
        (Some(t), Some(s)) => Some(measure_sensitivity(args, &model, &shape, t, s)?),
        _ => None,
    };
    finish(
        args,
        t0,
        out,
        &pass,
        stream.len(),
        sensitivity,
        &mut collector,
    )
}

/// Refuses what an embedding model (or one with an LM head) cannot do.
fn check_kind(args: &cli::Args, model: &llama::Model, kind: llama::Kind) -> Result<()> {
    let n_pos = model.n_ctx_train();
    if kind.is_embedding() && n_pos > 0 && args.ctx_size > n_pos {
        return Err(Error::Usage(format!(
            "--ctx-size {}: this embedding model reads at most {} positions; \
             give -c {} or less",
            args.ctx_size, n_pos, n_pos
        )));
    }
    if args.save_embeddings.is_some() && !kind.is_embedding() {
        return Err(Error::Usage(
            "--save-embeddings: this model has a language-model head; its \
             sensitivities compare next-token distributions, not embeddings"
                .into(),
        ));
    }
    Ok(())
}

/// What the statistics pass did: text chunks evaluated, the sequences
/// added (self-generated, or drawn from the vocabulary for an embedding
/// model), seconds, and the sensitivities' reference.
struct Pass {
    text_chunks: usize,
    generated: Vec<Vec<ffi::Token>>,
    drawn: bool,
    eval_secs: f64,
    gen_secs: f64,
    scoring: Option<Scoring>,
}

/// The sensitivities' reference: next-token distributions, or pooled
/// embeddings.
enum Scoring {
    Logits(sensitivity::Reference),
    Pooled(embed::Pooled),
}

/// A model with a language-model head: the text in chunks, then
/// self-generated sequences.
fn text_pass(
    args: &cli::Args,
    model: &llama::Model,
    plan: &corpus::Plan,
    shape: &evaluate::Shape,
    probe: bool,
    collector: &mut collect::Collector,
) -> Result<Pass> {
    let ctx = shape.ctx;
    let mut reference = probe.then(|| {
        sensitivity::Reference::new(
            args.sensitivity_tokens,
            SCORE_STRIDE,
            model.vocab().n_tokens(),
        )
    });
    let text_chunks = plan.text.len() / ctx;
    let mut bar = Progress::new("evaluate", "tokens", text_chunks * ctx, args.quiet);
    evaluate::evaluate(
        model,
        &plan.text,
        shape,
        collector,
        reference.as_mut(),
        &mut |d| bar.update(d * ctx),
    )?;
    let eval_secs = if text_chunks > 0 { bar.finish() } else { 0.0 };
    let missing = (plan.chunks * ctx).saturating_sub(text_chunks * ctx);
    let mut sinks = generate::Sinks {
        collector,
        reference: reference.as_mut(),
    };
    let t_gen = Instant::now();
    let threads = shape.threads as usize;
    let generated = generate_text(args, model, missing, threads, &mut sinks)?;
    let gen_secs = if missing > 0 {
        t_gen.elapsed().as_secs_f64()
    } else {
        0.0
    };
    Ok(Pass {
        text_chunks,
        generated,
        drawn: false,
        eval_secs,
        gen_secs,
        scoring: reference.map(Scoring::Logits),
    })
}

/// An embedding model (`embed.rs`): the text's chunks, then sequences drawn
/// from the vocabulary, each one batch, embeddings on.
fn embedding_pass(
    args: &cli::Args,
    model: &llama::Model,
    kind: llama::Kind,
    plan: &corpus::Plan,
    shape: &evaluate::Shape,
    probe: bool,
    collector: &mut collect::Collector,
) -> Result<Pass> {
    let (ctx, vocab) = (shape.ctx, model.vocab());
    let text_chunks = plan.text.len() / ctx;
    let mut seqs: Vec<Vec<ffi::Token>> = plan.text[..text_chunks * ctx]
        .chunks_exact(ctx)
        .map(|c| {
            let mut c = c.to_vec();
            embed::frame(vocab, &mut c);
            c
        })
        .collect();
    let drawn = embed::draw(vocab, plan.chunks - text_chunks, ctx, args.seed)?;
    seqs.extend(drawn.iter().cloned());
    let mut reference = match probe || args.save_embeddings.is_some() {
        true => Some(embed::Pooled::new(
            args.sensitivity_tokens,
            model.n_embd_out(),
            kind.pooling,
        )?),
        false => None,
    };
    let mut bar = Progress::new("evaluate", "tokens", seqs.len() * ctx, args.quiet);
    embed::evaluate(
        model,
        &seqs,
        shape.threads,
        collector,
        reference.as_mut(),
        &mut |d| bar.update(d * ctx),
    )?;
    Ok(Pass {
        text_chunks,
        generated: drawn,
        drawn: true,
        eval_secs: bar.finish(),
        gen_secs: 0.0,
        scoring: reference.map(Scoring::Pooled),
    })
}

/// The file, the report and the summary line.
fn finish(
    args: &cli::Args,
    t0: Instant,
    out: output::Output,
    pass: &Pass,
    tokens: usize,
    sensitivity: Option<(output::Sensitivity, sensitivity::Measure)>,
    collector: &mut collect::Collector,
) -> Result<()> {
    let ctx = args.ctx_size;
    let n_gen: usize = pass.generated.iter().map(Vec::len).sum();
    let measure = sensitivity.as_ref().map(|s| s.1);
    let meta = output::Meta {
        datasets: datasets(args, n_gen, pass.drawn),
        chunk_count: (pass.text_chunks + pass.generated.len()) as u32,
        chunk_size: ctx as u32,
        seed: args.seed,
        tokens,
        generated: n_gen,
        gram_max: args.gram_max,
        sensitivity: sensitivity.map(|s| s.0),
    };
    collector.flush();
    let mut rep = report(args, pass, &meta, measure, collector);
    let bytes = out.commit(&meta, collector, |bytes| match &args.report {
        None => Ok(()),
        Some(path) => {
            rep.output_bytes = bytes;
            rep.seconds.total = t0.elapsed().as_secs_f64();
            rep.peak_rss_bytes = report::peak_rss();
            report::write(path, &rep)
        }
    })?;
    let gram_floats: usize = collector.grams.iter().map(|g| g.d * g.d).sum();
    let added = match pass.drawn {
        true => "drawn uniformly from the vocabulary (embedding model)",
        false => "self-generated",
    };
    println!(
        "calibrate: {tokens} tokens ({} of text in {} chunks of {ctx}, {n_gen} {added} in {} sequences), {} weights, {} Gram matrices ({:.1} MiB), statistics {:.1} s{}, total {:.1} s -> {} ({:.1} MiB)",
        pass.text_chunks * ctx,
        pass.text_chunks,
        pass.generated.len(),
        collector.imatrix_weights(),
        collector.grams.len(),
        gram_floats as f64 * 4.0 / (1 << 20) as f64,
        pass.eval_secs + pass.gen_secs,
        summary(meta.sensitivity.as_ref(), measure),
        t0.elapsed().as_secs_f64(),
        args.output.display(),
        bytes as f64 / (1 << 20) as f64,
    );
    Ok(())
}

/// The summary line's part on the sensitivities.
fn summary(s: Option<&output::Sensitivity>, m: Option<sensitivity::Measure>) -> String {
    let (Some(s), Some(m)) = (s, m) else {
        return String::new();
    };
    let scored = match m {
        sensitivity::Measure::Kld => format!("{} positions", s.positions),
        sensitivity::Measure::OneMinusCos => format!("{} sequences", s.positions),
    };
    format!(
        ", sensitivities ({}) of {} groups at {} on {} tokens ({scored}, {:.1} MiB of reference, floor {:.1e}) {:.1} s",
        m.name(),
        s.groups.len(),
        s.probe_type,
        s.tokens,
        s.reference_bytes as f64 / (1 << 20) as f64,
        s.floor,
        s.seconds
    )
}

/// The `--report` JSON (output bytes, total time and peak memory are
/// filled in when the file is written).
fn report(
    args: &cli::Args,
    pass: &Pass,
    meta: &output::Meta,
    measure: Option<sensitivity::Measure>,
    collector: &collect::Collector,
) -> report::Report {
    let ctx = args.ctx_size;
    let gram_floats: usize = collector.grams.iter().map(|g| g.d * g.d).sum();
    report::Report {
        model: args.model.display().to_string(),
        output: args.output.display().to_string(),
        tokens: meta.tokens,
        text_tokens: pass.text_chunks * ctx,
        generated_tokens: meta.generated,
        drawn_tokens: pass.drawn,
        sequences: pass.generated.len(),
        chunks: meta.chunk_count as usize,
        chunk_size: ctx,
        seed: args.seed,
        weights: collector.imatrix_weights(),
        grams: collector.grams.len(),
        gram_bytes: gram_floats as u64 * 4,
        sensitivity: meta.sensitivity.as_ref().map(|s| report::Sensitivity {
            probe_type: s.probe_type.clone(),
            measure: measure.map_or("", |m| m.name()).to_string(),
            tokens: s.tokens,
            positions: s.positions,
            floor: s.floor,
            groups: s
                .groups
                .iter()
                .map(|g| report::Group {
                    name: g.name.clone(),
                    kld: g.kld,
                    nsr: g.nsr,
                })
                .collect(),
        }),
        seconds: report::Seconds {
            evaluate: pass.eval_secs,
            generate: pass.gen_secs,
            sensitivity: meta.sensitivity.as_ref().map_or(0.0, |s| s.seconds),
            total: 0.0,
        },
        ..Default::default()
    }
}

/// Every how many positions the sensitivities score a distribution.
const SCORE_STRIDE: usize = 4;

/// The probe type, checked; `None` with `--no-sensitivity`.
fn probe_type(args: &cli::Args) -> Result<Option<i32>> {
    if args.no_sensitivity {
        return Ok(None);
    }
    let c = std::ffi::CString::new(args.probe_type.as_str()).unwrap_or_default();
    let t = unsafe { ffi::qc_type_from_name(c.as_ptr()) };
    if t < 0 || !unsafe { ffi::qc_type_quantizable(t) } {
        return Err(Error::Usage(format!(
            "--probe-type {}: not a type ggml quantizes to without an importance matrix \
             (q4_0, q5_0, q8_0, q4_k, q6_k, iq4_nl, f16, …)",
            args.probe_type
        )));
    }
    Ok(Some(t))
}

/// The model's sensitivities: its weights found, each group probed, by
/// the KL divergence or, for an embedding model, 1 − cosine.
fn measure_sensitivity(
    args: &cli::Args,
    model: &llama::Model,
    shape: &evaluate::Shape,
    probe_type: i32,
    scoring: &mut Scoring,
) -> Result<(output::Sensitivity, sensitivity::Measure)> {
    let found = evaluate::weights_read(model)?;
    let weights = probe::Weights::new(&args.model, &found, probe_type)?;
    let groups = sensitivity::groups(&weights);
    if groups.is_empty() {
        return Err(Error::Statistics(
            "no weight of a known role (attn_q, ffn_down, …) to measure the sensitivities on; \
             pass --no-sensitivity"
                .into(),
        ));
    }
    let mut bar = Progress::new("sensitivity", "groups", groups.len(), args.quiet);
    let mut progress = |d| bar.update(d);
    let (measure, (tokens, positions, reference_bytes), result) = match scoring {
        Scoring::Logits(r) => {
            let mut s = sensitivity::Kld::new(model, shape.ubatch, shape.threads, r)?;
            let m = sensitivity::measure(&weights, probe_type, &mut s, &mut progress);
            (
                sensitivity::Measure::Kld,
                (r.tokens(), r.positions(), r.bytes()),
                m,
            )
        }
        Scoring::Pooled(p) => {
            let mut s = embed::Cosine::new(model, shape.threads, p)?;
            let m = sensitivity::measure(&weights, probe_type, &mut s, &mut progress);
            let figures = (p.tokens(), p.sequences(), p.bytes());
            (sensitivity::Measure::OneMinusCos, figures, m)
        }
    };
    let (measured, floor) = result?;
    let seconds = bar.finish();
    let s = output::Sensitivity {
        probe_type: args.probe_type.to_lowercase(),
        measure: measure.name(),
        tokens,
        positions,
        reference_bytes,
        seconds,
        floor,
        groups: measured,
    };
    Ok((s, measure))
}

/// Self-generated sequences adding at least `missing` tokens (none when 0).
fn generate_text(
    args: &cli::Args,
    model: &llama::Model,
    missing: usize,
    threads: usize,
    sinks: &mut generate::Sinks,
) -> Result<Vec<Vec<ffi::Token>>> {
    if missing == 0 {
        return Ok(Vec::new());
    }
    let p = generate::Params {
        tokens: missing,
        seq_len: args.ctx_size,
        parallel: args.parallel,
        seed: args.seed,
        sampling: llama::Sampling {
            temp: args.temp,
            top_k: args.top_k,
            top_p: args.top_p,
        },
        threads: threads as i32,
    };
    let mut bar = Progress::new("generate", "tokens", missing, args.quiet);
    let seqs = generate::generate(model, &p, sinks, &mut |d| bar.update(d))?;
    bar.finish();
    Ok(seqs)
}

/// `imatrix.datasets`: the text files, and how the rest was generated
/// (or, `drawn`, drawn from the vocabulary).
fn datasets(args: &cli::Args, generated: usize, drawn: bool) -> Vec<String> {
    let mut v: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
    if generated > 0 && drawn {
        v.push(format!(
            "data-free (embedding model): tokens drawn uniformly from the vocabulary's \
             normal tokens, seed {}, {generated} tokens",
            args.seed
        ));
    } else if generated > 0 {
        v.push(format!(
            "self-generated: seed {}, temp {}, top-k {}, top-p {}, {generated} tokens",
            args.seed, args.temp, args.top_k, args.top_p
        ));
    }
    v
}
