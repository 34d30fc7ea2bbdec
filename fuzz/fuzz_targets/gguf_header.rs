//! The GGUF header reader on arbitrary bytes (written to a file): an error
//! is fine; a panic, an abort or a large allocation is a bug. A header that
//! is accepted must survive the model checks, every accessor, and a round
//! trip through the writer (`encode_header`) to the same keys and tensors.

#![no_main]

mod common;

use ggml_qat::model::gguf::{self, OutTensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("gguf_header", data);
    let Ok(h) = gguf::read_header(&path) else {
        return;
    };
    let _ = gguf::check_model_header(&h, &path);
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
    let back = common::input_file("gguf_header-back", &b);
    let h2 = gguf::read_header(&back).expect("the writer's header reads back");
    assert_eq!(h2.kvs, h.kvs);
    assert_eq!(h2.tensors.len(), h.tensors.len());
    for (a, b) in h.tensors.iter().zip(&h2.tensors) {
        assert_eq!(
            (&a.name, a.ne, a.ty, a.nbytes),
            (&b.name, b.ne, b.ty, b.nbytes)
        );
    }
});
