//! Peak memory of `Session::quantize_layer` on 1 GiB source tensors: F32
//! (16384 × 16384), F16 and BF16 (16384 × 32768).
//!
//! Not a timed test: run with `cargo bench --bench memory`. For each source
//! type and class type it builds the source tensor in its own ggml
//! context, an output context sized for the result, and reports the peak
//! RSS (`VmHWM`) against the input and output sizes. The peak is reset
//! (`/proc/self/clear_refs` ← 5) after the input is filled, so the figure
//! is what quantizing adds on top of a resident input. Sizes can be
//! changed with `GGML_QAT_MEM_ROWS` / `GGML_QAT_MEM_COLS`.

use ggml_qat::ggml::Context;
use ggml_qat::qat::config::Config;
use ggml_qat::qat::layer::LayerClass;
use ggml_qat::qat::session::Session;
use ggml_qat::quant::{quantize_rows, QuantType};

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
    println!(
        "quantize_layer on 1 GiB source tensors, {} threads",
        rayon::current_num_threads()
    );
    println!(
        "{:<6} {:<10} {:>6} {:>10} {:>10} {:>12} {:>12} {:>10} {:>8}",
        "source",
        "class",
        "type",
        "input MiB",
        "output MiB",
        "RSS before",
        "peak RSS",
        "overhead",
        "time s"
    );
    let classes = [
        LayerClass::Attention,
        LayerClass::Ffn,
        LayerClass::Embedding,
    ];
    let base_rss = status_bytes("VmRSS");
    // Rows of N(0, 0.02) values, tiled into the sources.
    let tile_ctx = Context::new_owned(Context::tensor_cost((cols * 256 * 4) as usize), false)
        .expect("tile context");
    let tile = session
        .calibration_data(&tile_ctx, &[cols, 256], 0.0, 0.02)
        .expect("tile");
    let tile = tile.read_f32().expect("tile values");
    for src_ty in [QuantType::F32, QuantType::F16, QuantType::BF16] {
        // The same 1 GiB for every source type: twice the rows at 2 bytes.
        let src_rows = rows * 4 / (src_ty.format().block_bytes as i64);
        let input_bytes = (src_rows * cols) as usize * src_ty.format().block_bytes;
        for class in classes {
            let sctx = Context::new_owned(Context::tensor_cost(input_bytes), false)
                .expect("input context");
            let mut src = sctx
                .new_tensor(src_ty.ggml_id(), &[cols, src_rows])
                .expect("input tensor");
            src.set_name("blk.0.weight");
            let bytes = src.bytes_mut().expect("input bytes");
            let tile_bytes = tile.len() * src_ty.format().block_bytes;
            for chunk in bytes.chunks_mut(tile_bytes) {
                let n = chunk.len() / src_ty.format().block_bytes;
                quantize_rows(src_ty, &tile[..n], cols as usize, chunk, None).expect("fill");
            }
            let src = src.finish();
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
                "{:<6} {:<10} {:>6} {:>10.1} {:>10.1} {:>12.1} {:>12.1} {:>10.1} {:>8.2}",
                src_ty.format().name,
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
    }
    println!(
        "RSS before any tensor: {:.1} MiB; overhead = peak RSS - RSS with the input resident - output bytes",
        base_rss as f64 / MIB
    );
}
