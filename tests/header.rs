//! The committed header is exactly what cbindgen generates from the sources.

#[test]
fn committed_header_matches_generated() {
    let fresh = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/ggml-qat.h")).unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/ggml-qat.h"))
            .unwrap();
    assert!(
        fresh == committed,
        "include/ggml-qat.h is stale: regenerate it with `GGML_QAT_UPDATE_HEADER=1 cargo build` and commit it"
    );
}
