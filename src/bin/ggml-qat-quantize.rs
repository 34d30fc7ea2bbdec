//! ggml-qat-quantize: a GGUF model in, a quantized GGUF model out, in
//! llama-quantize's shape: `ggml-qat-quantize [options] in.gguf out.gguf TYPE [nthreads]`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ggml_qat::model::planner::{Factors, SizeTarget};
use ggml_qat::model::preset::{self, Preset, Target};
use ggml_qat::model::sink;
use ggml_qat::model::{quantize_model, How, Params, Progress, Report, ReportParams, What};
use ggml_qat::qat::config::Config;
use ggml_qat::qat::layer::LayerClass;
use ggml_qat::quant::QuantType;

#[derive(Parser, Debug)]
#[command(
    name = "ggml-qat-quantize",
    version,
    about = "Quantize a GGUF model (llama-quantize's presets and options, ggml-qat's kernels)",
    after_help = "TYPE: a llama-quantize preset (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M Q3_K_L \
Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS F16 BF16 F32, or its number), or `classes`: \
ggml-qat's four layer classes (the types of ggml_qat_default_config(); change them with \
--class-types)."
)]
struct Args {
    /// Input model (GGUF; a shard NAME-0000i-of-0000N.gguf is quantized on its own).
    input: PathBuf,
    /// Output model (written to a temporary file beside it, renamed at the end).
    output: PathBuf,
    /// Preset, or `classes`.
    #[arg(value_name = "TYPE")]
    ty: String,
    /// Threads (default: all cores; at most 1024).
    nthreads: Option<usize>,
    /// Importance matrix (llama-imatrix's GGUF or legacy .dat).
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// Calibration file of ggml-qat-calibrate: its diagonal is the
    /// importance matrix (as --imatrix with the same file: the same bytes),
    /// and the role and depth factors it measured on the model, when it
    /// has them, are the planner's (--target-size, --target-bpw; the
    /// default ones otherwise). Not with --imatrix or --plan-factors.
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Per-tensor type: NAME=TYPE, NAME a regular expression searched in the tensor name; first match wins. Repeatable.
    #[arg(long = "tensor-type", value_name = "NAME=TYPE")]
    tensor_type: Vec<String>,
    /// Type of output.weight.
    #[arg(long = "output-tensor-type", value_name = "TYPE")]
    output_tensor_type: Option<String>,
    /// Type of token_embd.weight.
    #[arg(long = "token-embedding-type", value_name = "TYPE")]
    token_embedding_type: Option<String>,
    /// Allow requantizing tensors that are already quantized.
    #[arg(long = "allow-requantize")]
    allow_requantize: bool,
    /// The preset's default type for every tensor (no mixture).
    #[arg(long)]
    pure: bool,
    /// Keep output.weight as it is.
    #[arg(long = "leave-output-tensor")]
    leave_output_tensor: bool,
    /// Print the types and sizes; write nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Quantize every shard of a split model, each to OUT-0000i-of-0000N.gguf.
    #[arg(long = "keep-split")]
    keep_split: bool,
    /// Write the report (per tensor and totals) as JSON.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Bound on the working buffers, in MiB.
    #[arg(long = "max-buffer-size", value_name = "MiB", default_value_t = 32)]
    max_buffer_size: usize,
    /// For `classes`: EMB,ATTN,FFN,NORM types (e.g. q8_0,q4_K,q4_K,f32).
    #[arg(long = "class-types", value_name = "E,A,F,N")]
    class_types: Option<String>,
    /// Every quantized tensor through the output-aware search (weighted by the
    /// imatrix when given, weight-space error otherwise); ggml's bytes are
    /// kept wherever the search is not better. Prints the per-tensor gain.
    #[arg(long)]
    optimize: bool,
    /// With --optimize, for tensors without an imatrix entry: weight the
    /// input columns by the squared weight of the RMS norm that scales them
    /// (attn_q/k/v, ffn_gate/up, output). Off by default: on Gemma 3 270M it
    /// measured worse than the plain weight-space error (scripts/eval-kld.sh).
    #[arg(long = "norm-importance")]
    norm_importance: bool,
    /// Choose the per-tensor types so that the output file is at most BYTES
    /// (suffixes K, M, G: powers of 1024) with the least predicted error;
    /// TYPE then only says which tensors stay as they are. Each tensor's
    /// error is measured for every candidate type on a sample of its rows
    /// (with the imatrix when given). --dry-run shows the plan.
    #[arg(
        long = "target-size",
        value_name = "BYTES",
        conflicts_with = "target_bpw"
    )]
    target_size: Option<String>,
    /// As --target-size, for a number of bits per weight (8 x tensor data
    /// bytes / weights, as llama.cpp counts it).
    #[arg(long = "target-bpw", value_name = "X")]
    target_bpw: Option<f64>,
    /// The types the planner may choose, comma-separated (default: Q2_K,
    /// Q3_K, IQ4_XS, IQ4_NL, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0);
    /// NAME=T1,T2 for the tensors whose name NAME (a regular expression)
    /// is found in. Repeatable; the first that applies wins. A tensor is
    /// offered only the types whose block divides its rows, and always the
    /// preset's own type.
    #[arg(long = "plan-types", value_name = "[NAME=]T1,T2,..")]
    plan_types: Vec<String>,
    /// The planner's role and depth factors: a file of `ROLE VALUE` lines
    /// and `depth FIRST MIDDLE LAST` (scripts/measure-roles.sh writes one
    /// for its model); what it does not name keeps the default, measured on
    /// Gemma 3 270M. Not with --calibration (whose file gives them).
    #[arg(long = "plan-factors", value_name = "FILE")]
    plan_factors: Option<PathBuf>,
    /// Skip the per-tensor error measurement (a little faster).
    #[arg(long = "no-error")]
    no_error: bool,
    /// Print neither the per-tensor table nor (off a terminal) the per-tensor progress lines.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_type(what: &str, s: &str) -> Result<QuantType, String> {
    preset::parse_type(s).ok_or_else(|| format!("{what}: unknown type '{s}'"))
}

/// The model parameters of the arguments (checked further, with the C
/// API's, by `Params::validate`).
fn params(a: &Args) -> Result<Params, String> {
    let type_of =
        |opt: &str, v: &Option<String>| v.as_deref().map(|t| parse_type(opt, t)).transpose();
    let what = What {
        target: target(a)?,
        pure: a.pure,
        overrides: overrides(a)?,
        output_type: type_of("--output-tensor-type", &a.output_tensor_type)?,
        token_embd_type: type_of("--token-embedding-type", &a.token_embedding_type)?,
        leave_output: a.leave_output_tensor,
        imatrix: a.imatrix.clone(),
        calibration: a.calibration.clone(),
        allow_requantize: a.allow_requantize,
        keep_split: a.keep_split,
        optimize: a.optimize,
        norm_importance: a.norm_importance,
        size_target: match (&a.target_size, a.target_bpw) {
            (Some(s), _) => Some(SizeTarget::FileBytes(parse_size(s)?)),
            (None, Some(b)) if b.is_finite() && b > 0.0 => Some(SizeTarget::BitsPerWeight(b)),
            (None, Some(b)) => return Err(format!("--target-bpw {b}: a positive number expected")),
            (None, None) => None,
        },
        plan_factors: match &a.plan_factors {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--plan-factors {}: {e}", path.display()))?;
                Some(
                    Factors::parse(&text)
                        .map_err(|e| format!("--plan-factors {}: {e}", path.display()))?,
                )
            }
        },
        plan_types: a
            .plan_types
            .iter()
            .map(|arg| plan_types(arg))
            .collect::<Result<Vec<_>, String>>()?,
    };
    let how = How {
        threads: a.nthreads.unwrap_or(0),
        max_buffer: a
            .max_buffer_size
            .max(1)
            .checked_mul(1 << 20)
            .ok_or_else(|| format!("--max-buffer-size {}: too large", a.max_buffer_size))?,
        dry_run: a.dry_run,
    };
    let report = ReportParams {
        measure_error: !a.no_error && !a.dry_run,
        json_path: a.report.clone(),
    };
    Ok(Params { what, how, report })
}

/// The parameters, refused here (exit status 2) when they contradict each
/// other, as the library would refuse them.
fn checked_params(a: &Args) -> Result<Params, String> {
    let p = params(a)?;
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

/// The preset, or the classes (with `--class-types`).
fn target(a: &Args) -> Result<Target, String> {
    if !a.ty.eq_ignore_ascii_case("classes") {
        if a.class_types.is_some() {
            return Err(format!(
                "--class-types and TYPE {} cannot be used together: the class types are for TYPE classes",
                a.ty
            ));
        }
        return Preset::parse(&a.ty)
            .map(Target::Preset)
            .ok_or_else(|| format!("unknown TYPE '{}' (see --help for the presets)", a.ty));
    }
    let Some(s) = &a.class_types else {
        let c = Config::default();
        return Ok(Target::Classes([
            c.qtype_for(LayerClass::Embedding),
            c.qtype_for(LayerClass::Attention),
            c.qtype_for(LayerClass::Ffn),
            c.qtype_for(LayerClass::LayerNorm),
        ]));
    };
    let v = s
        .split(',')
        .map(|t| parse_type("--class-types", t.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    <[QuantType; 4]>::try_from(v)
        .map(Target::Classes)
        .map_err(|_| "--class-types needs four types".to_string())
}

/// `--tensor-type NAME=TYPE`, each.
fn overrides(a: &Args) -> Result<Vec<(String, QuantType)>, String> {
    a.tensor_type
        .iter()
        .map(|s| {
            let (n, t) = s
                .rsplit_once('=')
                .ok_or_else(|| format!("--tensor-type {s}: NAME=TYPE expected"))?;
            Ok((n.to_string(), parse_type("--tensor-type", t)?))
        })
        .collect()
}

/// One `--plan-types [NAME=]T1,T2,..`.
fn plan_types(arg: &str) -> Result<(Option<String>, Vec<QuantType>), String> {
    let (pattern, list) = match arg.split_once('=') {
        Some((p, l)) => (Some(p.to_string()), l),
        None => (None, arg),
    };
    let types = list
        .split(',')
        .map(|t| {
            let ty = parse_type("--plan-types", t.trim())?;
            if ty.format().block_size > 1 {
                Ok(ty)
            } else {
                Err(format!("--plan-types: {t} is not a block-quantized type"))
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((pattern, types))
}

/// BYTES with an optional K, M or G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&t[..i], 1u64 << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&t[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("--target-size {s}: a positive number of bytes expected"))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// The per-tensor table.
fn print_table(o: &mut dyn Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        o,
        "{:>5}  {:<40} {:<10} {:<22} {:>7} {:>7} {:>10} {:>10} {:>9}",
        "#", "tensor", "class", "shape", "from", "to", "MiB in", "MiB out", "rel.err"
    )?;
    for (i, t) in r.tensors.iter().enumerate() {
        let shape = t
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        writeln!(
            o,
            "{:>5}  {:<40} {:<10} {:<22} {:>7} {:>7} {:>10.3} {:>10.3} {:>9}{}",
            i + 1,
            t.name,
            t.class,
            shape,
            t.source_type,
            t.chosen_type,
            mib(t.bytes_in),
            mib(t.bytes_out),
            t.rel_rmse.map_or("-".into(), |e| format!("{e:.5}")),
            t.fallback
                .as_ref()
                .map_or(String::new(), |f| format!("  fallback: {f}"))
                + &t.objective.map_or(String::new(), |o| format!(
                    "  optimize: weights {} error {:.4e} -> {:.4e} ({:+.2}%, {} rows changed)",
                    o.weights,
                    o.ggml,
                    o.ours,
                    -100.0 * o.gain(),
                    o.rows_changed
                ))
        )?;
    }
    Ok(())
}

fn print_report(o: &mut dyn Write, r: &Report, table: bool) -> std::io::Result<()> {
    if table {
        print_table(o, r)?;
    }
    writeln!(
        o,
        "target {}{}: {} tensors, {} fell back",
        r.target,
        if r.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        },
        r.tensors.len(),
        r.n_fallback
    )?;
    writeln!(
        o,
        "model size: {:.2} MiB ({:.2} bpw) -> {:.2} MiB ({:.2} bpw); files {} -> {} bytes",
        mib(r.bytes_in),
        r.bits_per_weight_in,
        mib(r.bytes_out),
        r.bits_per_weight_out,
        r.file_bytes_in,
        r.file_bytes_out
    )?;
    if let Some(p) = &r.plan {
        print_plan(o, r, p)?;
    }
    let objs: Vec<_> = r.tensors.iter().filter_map(|t| t.objective).collect();
    if !objs.is_empty() {
        let better = objs.iter().filter(|o| o.ours < o.ggml).count();
        let mean_gain = objs.iter().map(|o| o.gain()).sum::<f64>() / objs.len() as f64;
        let rows: u64 = objs.iter().map(|o| o.rows_changed).sum();
        writeln!(
        o,
            "optimize: {} tensors searched, {better} improved on their objective, mean gain {:.2}%, {rows} rows changed",
            objs.len(),
            100.0 * mean_gain
        )?;
        let won = objs
            .iter()
            .filter_map(|o| o.won)
            .fold([0u64; 3], |a, w| [a[0] + w[0], a[1] + w[1], a[2] + w[2]]);
        if won.iter().sum::<u64>() > 0 {
            let n = objs.iter().filter(|o| o.won.is_some()).count();
            writeln!(
                o,
                "optimize: {n} tensors on their Gram matrix; rows kept from ggml {}, the diagonal search {}, the Gram quantizer {}",
                won[0], won[1], won[2]
            )?;
        }
    }
    writeln!(
        o,
        "time {:.3} s on {} threads, peak memory {:.1} MiB",
        r.seconds,
        r.threads,
        mib(r.peak_rss_bytes)
    )?;
    o.flush()
}

/// The planner's choice: types per role, and the preset's figures beside
/// the chosen ones.
fn print_plan(
    o: &mut dyn Write,
    r: &Report,
    p: &ggml_qat::model::planner::PlanSummary,
) -> std::io::Result<()> {
    use std::collections::BTreeMap;
    let mut roles: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for t in r.tensors.iter().filter(|t| t.plan.is_some()) {
        let role = t
            .name
            .strip_prefix("blk.")
            .and_then(|s| s.split_once('.'))
            .map_or(t.name.as_str(), |(_, rest)| rest)
            .to_string();
        *roles
            .entry(role)
            .or_default()
            .entry(t.chosen_type.clone())
            .or_default() += 1;
    }
    writeln!(o, "plan ({}), {} tensors planned:", p.target, p.n_planned)?;
    for (role, types) in &roles {
        let list = types
            .iter()
            .map(|(ty, n)| format!("{n} x {ty}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(o, "  {role:<28} {list}")?;
    }
    writeln!(
        o,
        "  predicted error {:.5} (preset {:.5}{}); file {} bytes, {:.3} bpw (preset {} bytes, {:.3} bpw){}",
        p.chosen_error.max(0.0),
        p.preset_error.max(0.0),
        if p.preset_error > 1e-4 {
            format!(", {:+.1}%", 100.0 * (p.chosen_error / p.preset_error - 1.0))
        } else {
            String::new()
        },
        p.chosen_file_bytes,
        p.chosen_bpw,
        p.preset_file_bytes,
        p.preset_bpw,
        if p.kept_preset {
            "; the preset's plan kept"
        } else {
            ""
        }
    )?;
    writeln!(
        o,
        "  measured on {} sampled values in {:.1} s",
        p.sampled_values, p.seconds
    )?;
    writeln!(o, "  factors: {}", describe_factors(&p.factors))
}

/// Where the planner's factors came from, in a few words.
fn describe_factors(f: &ggml_qat::model::planner::FactorsUsed) -> String {
    let mut s = f.source.to_string();
    if f.source == "default" {
        s += " (measured on Gemma 3 270M)";
        if f.calibration_file.is_some() {
            s += "; the calibration file has none";
        }
    }
    let info: Vec<String> = [
        f.probe_type.as_ref().map(|t| format!("probe {t}")),
        f.measure.clone(),
        f.tokens.map(|n| format!("{n} tokens")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !info.is_empty() {
        s += &format!(" ({})", info.join(", "));
    }
    s
}

fn main() -> ExitCode {
    // A file-size limit (RLIMIT_FSIZE) then gives a write error, reported
    // and cleaned up, instead of killing the process mid-write.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    if let Err(e) = sink::install_signal_cleanup() {
        say(format_args!("{e}"));
    }
    let args = Args::parse();
    let p = match checked_params(&args) {
        Ok(p) => p,
        Err(e) => {
            say(format_args!("{e}"));
            return ExitCode::from(2);
        }
    };
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    });
    let mut last = 0usize;
    let quiet = args.quiet;
    let mut cb = |pr: &Progress| -> bool {
        match &bar {
            Some(b) => {
                b.set_length(pr.bytes_total);
                b.set_position(pr.bytes_done);
                if pr.index != last {
                    b.set_message(format!("[{}/{}] {}", pr.index, pr.count, pr.name));
                }
            }
            None => {
                if !quiet && pr.index != last && !pr.name.is_empty() {
                    let _ = writeln!(
                        std::io::stderr(),
                        "[{:4}/{:4}] {}",
                        pr.index,
                        pr.count,
                        pr.name
                    );
                }
            }
        }
        last = pr.index;
        true
    };
    let result = quantize_model(&args.input, &args.output, &p, &mut cb);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match result {
        Ok(r) => finish(&r, &args),
        Err(e) => {
            say(format_args!("error: {e}"));
            ExitCode::from(1)
        }
    }
}

/// A message on stderr; a closed stderr is not an error worth a panic.
fn say(msg: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "ggml-qat-quantize: {msg}");
}

/// After the model (and the report) is written: the table on stdout. A
/// closed stdout is reported on stderr; the model is written (status 0).
fn finish(r: &Report, args: &Args) -> ExitCode {
    if let Err(e) = print_report(&mut std::io::stdout().lock(), r, !args.quiet) {
        say(format_args!("cannot print the summary: {e}"));
    }
    ExitCode::SUCCESS
}
