//! Peak memory of `Session::quantize_layer` on a 1 GiB F32 tensor.
//!
//! Not a timed test: run with `cargo bench --bench memory`. For each class
//! type it builds a 16384 × 16384 F32 tensor (1 GiB) in its own ggml
//! context, an output context sized for the result, and reports the peak
//! RSS (`VmHWM`) against the input and output sizes. The peak is reset
//! (`/proc/self/clear_refs` ← 5) after the input is filled, so the figure
//! is what quantizing adds on top of a resident input. Sizes can be
//! changed with `GGML_QAT_MEM_ROWS` / `GGML_QAT_MEM_COLS`.

use ggml_qat::ggml::Context;
use ggml_qat::qat::config::Config;
use ggml_qat::qat::layer::LayerClass;
use ggml_qat::qat::session::Session;

const MIB: f64 = 1024.0 * 1024.0;

/// A field of `/proc/self/status` in bytes (`VmHWM`, `VmRSS`).
fn status_bytes(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

/// Resets the peak RSS to the current RSS; false when the kernel refuses.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rows = env_usize("GGML_QAT_MEM_ROWS", 16384) as i64;
    let cols = env_usize("GGML_QAT_MEM_COLS", 16384) as i64;
    let session = Session::new(Config::default());
    let input_bytes = (rows * cols * 4) as usize;
    println!(
        "quantize_layer on a {cols} x {rows} F32 tensor ({:.1} MiB), {} threads",
        input_bytes as f64 / MIB,
        rayon::current_num_threads()
    );
    println!(
        "{:<10} {:>6} {:>10} {:>10} {:>12} {:>12} {:>10} {:>8}",
        "class", "type", "input MiB", "output MiB", "RSS before", "peak RSS", "overhead", "time s"
    );
    let classes = [
        LayerClass::Attention,
        LayerClass::Ffn,
        LayerClass::Embedding,
    ];
    let base_rss = status_bytes("VmRSS");
    for class in classes {
        let sctx =
            Context::new_owned(Context::tensor_cost(input_bytes), false).expect("input context");
        let src = session
            .calibration_data(&sctx, &[cols, rows], 0.0, 0.02)
            .expect("input tensor");
        src.set_name("blk.0.weight");
        let out_bytes = session.estimate_memory(&[src], &[class]).expect("estimate");
        let gctx =
            Context::new_owned(Context::tensor_cost(out_bytes), false).expect("output context");
        let reset = reset_peak();
        let before = status_bytes("VmRSS");
        let t0 = std::time::Instant::now();
        let out = session
            .quantize_layer(&gctx, &src, class)
            .expect("quantize_layer");
        let secs = t0.elapsed().as_secs_f64();
        let peak = status_bytes("VmHWM");
        assert_eq!(out.nbytes(), out_bytes);
        let ty = out.quant_type().unwrap().format().name;
        // What the peak holds beyond the resident input and the output.
        let overhead = peak as i64 - before as i64 - out_bytes as i64;
        println!(
            "{:<10} {:>6} {:>10.1} {:>10.1} {:>12.1} {:>12.1} {:>10.1} {:>8.2}",
            class.name(),
            ty,
            input_bytes as f64 / MIB,
            out_bytes as f64 / MIB,
            before as f64 / MIB,
            peak as f64 / MIB,
            overhead as f64 / MIB,
            secs
        );
        if !reset {
            println!("  (peak RSS could not be reset: the peak includes earlier runs)");
        }
        drop(gctx);
        drop(sctx);
    }
    println!(
        "RSS before any tensor: {:.1} MiB; overhead = peak RSS - RSS with the input resident - output bytes",
        base_rss as f64 / MIB
    );
}
