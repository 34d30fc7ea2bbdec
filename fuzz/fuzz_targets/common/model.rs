//! The model-file cases of the fuzz targets gguf_header, imatrix_file (the
//! imatrix readers and the calibration file's) and quantize_model, on a
//! file. tests/model_input.rs includes this file too
//! and replays the committed corpora (seeds and crash reproducers) through
//! the same cases in `cargo test`.

use std::path::Path;

use ggml_qat::model::gguf::{self, OutTensor};
use ggml_qat::model::preset::{Preset, Target};
use ggml_qat::model::{calibration, imatrix, quantize_model, How, Params, ReportParams, What};

/// The header reader: an error is fine. An accepted header survives the
/// model checks, every accessor, and a round trip through the writer
/// (`encode_header`) to the same keys and tensors.
pub fn gguf_header(path: &Path, scratch: &Path) {
    let Ok(h) = gguf::read_header(path) else {
        return;
    };
    let _ = gguf::check_model_header(&h, path);
    for kv in &h.kvs {
        let _ = (kv.as_u64(), kv.as_str());
    }
    let _ = (h.arch(), h.arch_u64("block_count"));
    for t in &h.tensors {
        let _ = (t.nelements(), t.nrows(), t.ggml_n_dims());
        for ty in [0, 1, 2, 8, 12, 14, 30] {
            let _ = t.nbytes_as(ty);
        }
    }
    let out: Vec<OutTensor> = h
        .tensors
        .iter()
        .map(|t| OutTensor {
            name: t.name.clone(),
            ne: t.ne,
            ty: t.ty,
            nbytes: t.nbytes,
        })
        .collect();
    let (mut b, offsets) = gguf::encode_header(&h.kvs, &out, h.alignment);
    let end = out.iter().zip(&offsets).map(|(t, o)| o + t.nbytes).max();
    b.resize(b.len() + end.unwrap_or(0) as usize, 0);
    std::fs::write(scratch, &b).expect("write the round trip");
    let h2 = gguf::read_header(scratch).expect("the writer's header reads back");
    assert_eq!(h2.kvs, h.kvs);
    assert_eq!(h2.tensors.len(), h.tensors.len());
    for (a, b) in h.tensors.iter().zip(&h2.tensors) {
        assert_eq!(
            (&a.name, a.ne, a.ty, a.nbytes),
            (&b.name, b.ne, b.ty, b.nbytes)
        );
    }
}

/// Both imatrix readers and the calibration file's: an error is fine; an
/// accepted imatrix holds only finite, non-negative weights, accepted
/// factors are finite and positive.
pub fn imatrix_file(path: &Path) {
    if let Ok(m) = imatrix::load(path) {
        check_imatrix(&m);
    }
    let Ok(c) = calibration::load(path, true) else {
        return;
    };
    check_imatrix(&c.imatrix);
    // Every Gram matrix read and factored, or refused.
    if let Some(g) = &c.grams {
        for w in g.weights() {
            let _ = g.factor(w);
        }
    }
    if let Some(f) = c.factors {
        let v = f.values;
        assert!(
            v.roles
                .iter()
                .chain(&v.depth)
                .all(|x| x.is_finite() && *x > 0.0),
            "{v:?}"
        );
    }
}

fn check_imatrix(m: &imatrix::Imatrix) {
    assert!(!m.is_empty());
    for (name, v) in m {
        assert!(!v.is_empty(), "{name}: empty");
        assert!(
            v.iter().all(|x| x.is_finite() && *x >= 0.0),
            "{name}: {v:?}"
        );
    }
}

/// The whole pipeline on the model `input`, written for real to `output`,
/// with a preset and flags (pure, measure, leave output, requantize,
/// optimize, one-row chunks) from two bytes. Any `Err` is fine.
pub fn quantize(input: &Path, output: &Path, preset: u8, flags: u8) {
    let params = Params {
        what: What {
            target: Target::Preset(Preset::ALL[preset as usize % Preset::ALL.len()]),
            pure: flags & 1 != 0,
            leave_output: flags & 4 != 0,
            allow_requantize: flags & 8 != 0,
            optimize: flags & 16 != 0,
            ..Default::default()
        },
        how: How {
            threads: 1,
            max_buffer: if flags & 32 != 0 { 1 } else { 1 << 20 },
            dry_run: false,
        },
        report: ReportParams {
            measure_error: flags & 2 != 0,
            json_path: None,
        },
    };
    let _ = quantize_model(input, output, &params, &mut |_| true);
    let _ = std::fs::remove_file(output);
}
