//! The model shipped in `models/` loads, carries its metadata (config, command, dataset report,
//! metrics, style anchors) and decodes deterministically.

use candle_core::{Device, Tensor};
use drumvae::model::decoder::DecodeOptions;
use std::collections::BTreeMap;

#[test]
fn bundled_model_loads_with_metadata_and_style_anchors() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/drumvae-small-3epoch.safetensors");
    let (vae, info) = drumvae::model::file::load_file(&path, &Device::Cpu).unwrap();
    for key in [
        "command",
        "dataset",
        "metrics",
        "training",
        "style_anchors",
        "config",
    ] {
        assert!(info.metadata.contains_key(key), "missing {key}");
    }
    let anchors: BTreeMap<String, Vec<f32>> =
        serde_json::from_str(&info.metadata["style_anchors"]).unwrap();
    for genre in ["rock", "funk", "jazz", "latin"] {
        assert_eq!(anchors[genre].len(), vae.config.latent, "{genre}");
    }
    // Decoding a style anchor twice gives the same groove, and it is a groove, not a few hits.
    let z = Tensor::from_vec(
        anchors["rock"].clone(),
        (1, vae.config.latent),
        &Device::Cpu,
    )
    .unwrap();
    let a = vae.decode(&z, &DecodeOptions::default()).unwrap();
    let b = vae.decode(&z, &DecodeOptions::default()).unwrap();
    assert_eq!(a, b);
    assert!(a[0].hit_count() >= 16, "{:?}", a[0]);
}
