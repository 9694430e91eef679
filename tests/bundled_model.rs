//! The model shipped in `models/` and embedded in the plugin: it loads, carries its metadata
//! (config, command, dataset report, metrics, style anchors), is the file the plugin embeds, and
//! decodes fixed latent points to fixed grooves. The golden grooves live in
//! `tests/fixtures/golden_decode.txt`; a new model changes them, so shipping one is a deliberate
//! act: `DRUMVAE_BLESS=1 cargo test --test bundled_model` rewrites the file, and the diff shows
//! what the new model plays.

use candle_core::{Device, Tensor};
use drumvae::latent;
use drumvae::model::decoder::DecodeOptions;
use drumvae::model::embedded::{DEFAULT_MODEL_BYTES, DEFAULT_MODEL_NAME};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(DEFAULT_MODEL_NAME)
}

#[test]
fn bundled_model_loads_with_metadata_and_style_anchors() {
    let (vae, info) = drumvae::model::file::load_file(&shipped(), &Device::Cpu).unwrap();
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

#[test]
fn the_plugin_embeds_the_shipped_file() {
    assert_eq!(
        std::fs::read(shipped()).unwrap(),
        DEFAULT_MODEL_BYTES,
        "models/{DEFAULT_MODEL_NAME} and the embedded bytes differ"
    );
}

/// Seeds 0-2 at temperature 0 and seed 3 at temperature 1 (hit draws seeded too), and the four
/// default corners' style anchors, as text grids.
fn golden_text() -> String {
    let (vae, info) = drumvae::model::file::load_file(&shipped(), &Device::Cpu).unwrap();
    let anchors: BTreeMap<String, Vec<f32>> =
        serde_json::from_str(&info.metadata["style_anchors"]).unwrap();
    let mut out = format!("golden decodes of models/{DEFAULT_MODEL_NAME}\n");
    let mut decode = |label: String, z: Vec<f32>, temperature: f32| {
        let z = Tensor::from_vec(z, (1, vae.config.latent), &Device::Cpu).unwrap();
        let opts = DecodeOptions {
            temperature,
            density: 0.0,
            seed: 7,
        };
        let p = vae.decode(&z, &opts).unwrap().remove(0);
        out.push_str(&format!("\n{label} ({} hits)\n", p.hit_count()));
        out.push_str(&p.to_text_grid(true));
    };
    for seed in 0..3 {
        decode(
            format!("seed {seed}, T=0"),
            latent::seeded_z(seed, vae.config.latent),
            0.0,
        );
    }
    decode(
        "seed 3, T=1".into(),
        latent::seeded_z(3, vae.config.latent),
        1.0,
    );
    for style in ["rock", "funk", "jazz", "latin"] {
        decode(format!("style {style}, T=0"), anchors[style].clone(), 0.0);
    }
    out
}

#[test]
fn the_shipped_model_decodes_fixed_points_to_the_golden_grooves() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_decode.txt");
    let text = golden_text();
    if std::env::var_os("DRUMVAE_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == text,
        "the shipped model decodes differently from tests/fixtures/golden_decode.txt: if the model \
         changed on purpose, rerun with DRUMVAE_BLESS=1 and review the diff.\n{text}"
    );
}
