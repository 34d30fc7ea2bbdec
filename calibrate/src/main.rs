//! `ggml-qat-calibrate MODEL.gguf -o CALIB.gguf`: runs a model through
//! llama.cpp's libllama (self-generated or given text, evaluated in chunks)
//! and writes activation statistics: llama-imatrix's per-column sums of
//! squares, and Gram matrices of the inputs of the dense weights.
//!
//! Its own executable, linking the ggml of its llama.cpp tree: that ggml
//! never meets the one libggml-qat links; the two meet only in the file.

mod cli;
mod collect;
mod corpus;
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
    let ctx = args.ctx_size;
    let threads = args.threads();
    let plan = corpus::Plan::new(model.vocab(), &args.files, args.tokens, ctx)?;
    let mut collector = collect::Collector::new(collect::Options {
        gram_max: args.gram_max,
        process_output: args.process_output,
        threads,
    });
    let mut reference = probe_type.map(|_| {
        sensitivity::Reference::new(
            args.sensitivity_tokens,
            SCORE_STRIDE,
            model.vocab().n_tokens(),
        )
    });
    let shape = evaluate::Shape {
        ctx,
        ubatch: args.ubatch_size.min(ctx),
        threads: threads as i32,
    };
    let text_chunks = plan.text.len() / ctx;
    let mut bar = Progress::new("evaluate", "tokens", text_chunks * ctx, args.quiet);
    evaluate::evaluate(
        &model,
        &plan.text,
        &shape,
        &mut collector,
        reference.as_mut(),
        &mut |d| bar.update(d * ctx),
    )?;
    let eval_secs = if text_chunks > 0 { bar.finish() } else { 0.0 };
    let missing = (plan.chunks * ctx).saturating_sub(text_chunks * ctx);
    let mut sinks = generate::Sinks {
        collector: &mut collector,
        reference: reference.as_mut(),
    };
    let t_gen = Instant::now();
    let generated = generate_text(args, &model, missing, threads, &mut sinks)?;
    let gen_secs = if missing > 0 {
        t_gen.elapsed().as_secs_f64()
    } else {
        0.0
    };
    let secs = eval_secs + gen_secs;
    if collector.imatrix_weights() == 0 {
        return Err(Error::Statistics(
            "no matrix product read a model weight named blk.* in the graphs llama.cpp ran: \
             this architecture's weights could not be matched"
                .into(),
        ));
    }
    let n_gen: usize = generated.iter().map(Vec::len).sum();
    let mut stream = plan.text[..text_chunks * ctx].to_vec();
    stream.extend(generated.iter().flatten());
    if let Some(path) = &args.save_text {
        let text = model.vocab().detokenize(&stream);
        std::fs::write(path, text).map_err(|e| Error::Io(path.clone(), e))?;
    }
    let sensitivity = match (probe_type, reference.as_mut()) {
        (Some(t), Some(r)) => Some(measure_sensitivity(args, &model, &shape, t, r)?),
        _ => None,
    };
    let meta = output::Meta {
        datasets: datasets(args, n_gen),
        chunk_count: (text_chunks + generated.len()) as u32,
        chunk_size: ctx as u32,
        seed: args.seed,
        tokens: stream.len(),
        generated: n_gen,
        gram_max: args.gram_max,
        sensitivity,
    };
    let sens = meta.sensitivity.as_ref().map_or(String::new(), |s| {
        format!(
            ", sensitivities of {} groups at {} on {} tokens ({} positions, {:.0} MiB of reference, floor {:.1e}) {:.1} s",
            s.groups.len(),
            s.probe_type,
            s.tokens,
            s.positions,
            s.reference_bytes as f64 / (1 << 20) as f64,
            s.floor,
            s.seconds
        )
    });
    collector.flush();
    let gram_floats: usize = collector.grams.iter().map(|g| g.d * g.d).sum();
    let mut rep = report::Report {
        model: args.model.display().to_string(),
        output: args.output.display().to_string(),
        tokens: stream.len(),
        text_tokens: text_chunks * ctx,
        generated_tokens: n_gen,
        sequences: generated.len(),
        chunks: meta.chunk_count as usize,
        chunk_size: ctx,
        seed: args.seed,
        weights: collector.imatrix_weights(),
        grams: collector.grams.len(),
        gram_bytes: gram_floats as u64 * 4,
        sensitivity: meta.sensitivity.as_ref().map(|s| report::Sensitivity {
            probe_type: s.probe_type.clone(),
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
            evaluate: eval_secs,
            generate: gen_secs,
            sensitivity: meta.sensitivity.as_ref().map_or(0.0, |s| s.seconds),
            total: 0.0,
        },
        ..Default::default()
    };
    let bytes = out.commit(&meta, &collector, |bytes| match &args.report {
        None => Ok(()),
        Some(path) => {
            rep.output_bytes = bytes;
            rep.seconds.total = t0.elapsed().as_secs_f64();
            rep.peak_rss_bytes = report::peak_rss();
            report::write(path, &rep)
        }
    })?;
    println!(
        "calibrate: {} tokens ({} of text in {text_chunks} chunks of {ctx}, {n_gen} self-generated in {} sequences), {} weights, {} Gram matrices ({:.1} MiB), statistics {secs:.1} s{sens}, total {:.1} s -> {} ({:.1} MiB)",
        stream.len(),
        text_chunks * ctx,
        generated.len(),
        collector.imatrix_weights(),
        collector.grams.len(),
        gram_floats as f64 * 4.0 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64(),
        args.output.display(),
        bytes as f64 / (1 << 20) as f64,
    );
    Ok(())
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

/// The model's sensitivities: its weights found, each group probed.
fn measure_sensitivity(
    args: &cli::Args,
    model: &llama::Model,
    shape: &evaluate::Shape,
    probe_type: i32,
    reference: &mut sensitivity::Reference,
) -> Result<output::Sensitivity> {
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
    let probe = sensitivity::Probe {
        model,
        step: shape.ubatch,
        threads: shape.threads,
        probe_type,
    };
    let (measured, floor) =
        sensitivity::measure(&probe, &weights, reference, &mut |d| bar.update(d))?;
    let seconds = bar.finish();
    Ok(output::Sensitivity {
        probe_type: args.probe_type.to_lowercase(),
        tokens: reference.tokens(),
        positions: reference.positions(),
        reference_bytes: reference.bytes(),
        seconds,
        floor,
        groups: measured,
    })
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

/// `imatrix.datasets`: the text files, and how the rest was generated.
fn datasets(args: &cli::Args, generated: usize) -> Vec<String> {
    let mut v: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
    if generated > 0 {
        v.push(format!(
            "self-generated: seed {}, temp {}, top-k {}, top-p {}, {generated} tokens",
            args.seed, args.temp, args.top_k, args.top_p
        ));
    }
    v
}
