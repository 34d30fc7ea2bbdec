//! The shared library exports nothing but `ggml_qat_*`.

use std::process::Command;

#[test]
fn shared_library_exports_only_ggml_qat_symbols() {
    // target/<profile>/deps/<this test> -> target/<profile>/libggml_qat.so
    let exe = std::env::current_exe().unwrap();
    let lib = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("libggml_qat.so");
    assert!(lib.is_file(), "{} was not built", lib.display());
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("nm (binutils) is needed for this test");
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let foreign: Vec<&&str> = names
        .iter()
        .filter(|n| !n.starts_with("ggml_qat_"))
        .collect();
    assert!(foreign.is_empty(), "unexpected exports: {foreign:?}");
    for f in [
        "ggml_qat_init",
        "ggml_qat_free",
        "ggml_qat_quantize_layer",
        "ggml_qat_benchmark_inference_speed",
        "ggml_qat_last_error",
    ] {
        assert!(names.contains(&f), "{f} is not exported");
    }
    assert!(names.len() >= 21, "only {} exports", names.len());
}
