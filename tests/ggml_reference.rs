//! The ggml reference wrappers link and behave (the differential tests rely
//! on them).

use ggml_qat::ggml::reference;
use ggml_qat::quant::QuantType;

#[test]
fn q8_0_round_trip_through_ggml() {
    let src: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
    let q = reference::quantize_chunk(QuantType::Q8_0, &src, 2, 128, None);
    assert_eq!(q.len(), 8 * 34);
    let back = reference::to_float(QuantType::Q8_0, &q, 256);
    for (a, b) in src.iter().zip(&back) {
        assert!((a - b).abs() <= 1.0 / 127.0, "{a} vs {b}");
    }
}

#[test]
fn geometry_matches_ggml() {
    assert_eq!(reference::geometry(QuantType::Q4_K), (256, 144));
    assert_eq!(reference::geometry(QuantType::F16), (1, 2));
    assert_eq!(reference::type_geometry(4), None);
    assert_eq!(reference::type_geometry(-1), None);
    assert_eq!(reference::type_geometry(1000), None);
}
