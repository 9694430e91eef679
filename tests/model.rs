//! The model: shapes for both decoders and presets, teacher forcing that only looks back, sampling
//! that agrees with teacher forcing, deterministic seeds, model files that round-trip bit for bit
//! and refuse broken files with a named reason, and an honest learning test on real GMD windows.

#[cfg(unix)]
#[path = "support/fifo.rs"]
mod fifo;

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use drumvae::dataset::{self, Split};
use drumvae::groove::{FEATURES, STEPS, VOICES};
use drumvae::latent::seeded_z;
use drumvae::model::file::{CONFIG_KEY, FORMAT_KEY, FORMAT_V2};
use drumvae::model::{
    BarState, Config, DecodeOptions, DecoderKind, FORMAT, ModelError, Vae, load_bytes, load_file,
    patterns_to_tensor, save, seeded_var_builder, to_bytes,
};
use drumvae::{Cell, Pattern, Voice};

const CPU: Device = Device::Cpu;

/// A model small enough that the tests stay fast in a debug build.
fn tiny(decoder: DecoderKind) -> Config {
    Config {
        encoder_hidden: 16,
        latent: 8,
        decoder,
        conductor_hidden: 16,
        conductor_layers: 2,
        decoder_hidden: 16,
        decoder_layers: 2,
        ..Config::small()
    }
}

/// The three decoders a model can have: hierarchical with the bar state reset at every bar line
/// (MusicVAE) or carried across it, and flat.
fn decoders(base: &Config) -> Vec<Config> {
    let with = |decoder, bar_state| Config {
        decoder,
        bar_state,
        ..base.clone()
    };
    vec![
        with(DecoderKind::Hierarchical, BarState::Reset),
        with(DecoderKind::Hierarchical, BarState::Carry),
        with(DecoderKind::Flat, BarState::Reset),
    ]
}

fn build(cfg: &Config, seed: u64) -> (Vae, VarMap) {
    let varmap = VarMap::new();
    let vae = Vae::new(cfg, seeded_var_builder(&varmap, seed, &CPU)).unwrap();
    (vae, varmap)
}

fn z(n: usize, latent: usize, seed: u64) -> Tensor {
    Tensor::from_vec(seeded_z(seed, n * latent), (n, latent), &CPU).unwrap()
}

/// A busy, humanised groove: kick, snare and hats with varying velocity and feel.
fn groove(shift: usize) -> Pattern {
    let mut p = Pattern::EMPTY;
    for step in 0..STEPS {
        let s = (step + shift) % STEPS;
        if step % 2 == 0 {
            let v = 0.4 + 0.1 * (step % 4) as f32;
            p.set(
                s,
                Voice::ClosedHiHat,
                Cell::hit(v, 0.02 * (step % 3) as f32),
            );
        }
        if step % 8 == 0 {
            p.set(s, Voice::Kick, Cell::hit(0.9, -0.03));
        }
        if step % 8 == 4 {
            p.set(s, Voice::Snare, Cell::hit(0.8, 0.05));
        }
    }
    p
}

fn batch(n: usize) -> Tensor {
    let patterns: Vec<Pattern> = (0..n).map(groove).collect();
    patterns_to_tensor(&patterns, &CPU).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn forward_shapes_for_every_decoder_and_both_presets() {
    for base in [Config::small(), Config::groovae()] {
        for cfg in decoders(&base) {
            let decoder = (cfg.decoder, cfg.bar_state);
            let (vae, _) = build(&cfg, 1);
            let x = batch(2);
            let fwd = vae.forward(&x, &z(2, cfg.latent, 3)).unwrap();
            let what = format!("{decoder:?} latent {}", cfg.latent);
            for t in [&fwd.mu, &fwd.sigma, &fwd.z] {
                assert_eq!(t.dims(), &[2, cfg.latent], "{what}");
            }
            for t in [&fwd.hit_logits, &fwd.velocity, &fwd.offset] {
                assert_eq!(t.dims(), &[2, STEPS, VOICES], "{what}");
            }
            assert!(values(&fwd.sigma).iter().all(|s| *s > 0.0), "{what}");
            assert!(
                values(&fwd.velocity)
                    .iter()
                    .all(|v| (0.0..=1.0).contains(v))
            );
            assert!(values(&fwd.offset).iter().all(|o| (-0.5..=0.5).contains(o)));
            let l = vae.loss(&x, &fwd, cfg.beta).unwrap();
            for t in [
                &l.total,
                &l.hit_bce,
                &l.velocity_mse,
                &l.offset_mse,
                &l.kl,
                &l.kl_penalty,
            ] {
                assert_eq!(t.rank(), 0, "{what}");
                assert!(t.to_scalar::<f32>().unwrap().is_finite(), "{what}");
            }
        }
    }
}

#[test]
fn decode_gives_one_pattern_per_z_for_every_decoder() {
    for cfg in decoders(&tiny(DecoderKind::Hierarchical)) {
        let (vae, _) = build(&cfg, 2);
        let patterns = vae.decode(&z(3, 8, 4), &DecodeOptions::default()).unwrap();
        assert_eq!(patterns.len(), 3);
        assert!(
            vae.decode(&z(0, 8, 4), &DecodeOptions::default())
                .unwrap()
                .is_empty()
        );
        assert!(
            vae.decode(&z(1, 7, 4), &DecodeOptions::default()).is_err(),
            "wrong latent size"
        );
        let mu = vae.encode(&[groove(0), groove(1)]).unwrap();
        assert_eq!(mu.dims(), &[2, 8]);
    }
}

/// Changing step t of the target may change predictions after t, never at or before it; for the
/// hierarchical decoder this also proves a bar's first input is the previous bar's last step.
#[test]
fn teacher_forcing_only_looks_at_earlier_steps_across_bar_boundaries() {
    for cfg in decoders(&tiny(DecoderKind::Hierarchical)) {
        let decoder = (cfg.decoder, cfg.bar_state);
        let (vae, _) = build(&cfg, 3);
        let zz = z(1, 8, 5);
        let x = batch(1);
        let base = vae.detach().decoder.teacher_forced(&zz, &x).unwrap();
        for t in [15, 20, 47] {
            let mut flat = values(&x);
            flat[t * FEATURES + Voice::HighTom.index()] = 1.0;
            flat[t * FEATURES + VOICES + Voice::HighTom.index()] = 0.7;
            let x2 = Tensor::from_vec(flat, (1, STEPS, FEATURES), &CPU).unwrap();
            let out = vae.detach().decoder.teacher_forced(&zz, &x2).unwrap();
            let a = base
                .hit_logits
                .squeeze(0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let b = out.hit_logits.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
            for s in 0..=t {
                assert_eq!(a[s], b[s], "{decoder:?}: step {s} saw step {t}");
            }
            assert_ne!(
                a[t + 1],
                b[t + 1],
                "{decoder:?}: step {} ignored step {t}",
                t + 1
            );
        }
    }
}

/// The bar state rule in one check: a change at step 5 reaches the second half of bar 2 (steps 24
/// to 31) only when the bar decoder carries its state across the bar line. With the reset rule
/// bar 2 restarts from its embedding and sees bar 1 only through its first input (step 15).
#[test]
fn only_a_carried_bar_state_lets_bar_two_remember_bar_one() {
    for (bar_state, remembers) in [(BarState::Reset, false), (BarState::Carry, true)] {
        let cfg = Config {
            bar_state,
            ..tiny(DecoderKind::Hierarchical)
        };
        let (vae, _) = build(&cfg, 3);
        let zz = z(1, 8, 5);
        let x = batch(1);
        let mut flat = values(&x);
        flat[5 * FEATURES + Voice::HighTom.index()] = 1.0;
        flat[5 * FEATURES + VOICES + Voice::HighTom.index()] = 0.7;
        let x2 = Tensor::from_vec(flat, (1, STEPS, FEATURES), &CPU).unwrap();
        let decoder = vae.detach().decoder;
        let logits = |x: &Tensor| {
            let out = decoder.teacher_forced(&zz, x).unwrap();
            out.hit_logits.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
        };
        let (a, b) = (logits(&x), logits(&x2));
        let changed = (24..32).any(|s| a[s] != b[s]);
        assert_eq!(changed, remembers, "{bar_state:?}");
    }
}

/// Decoding at temperature 0 and then teacher-forcing the decoded pattern must predict exactly the
/// hits that were sampled: the two code paths compute the same network.
#[test]
fn sampling_agrees_with_teacher_forcing_on_its_own_output() {
    for cfg in decoders(&tiny(DecoderKind::Hierarchical)) {
        let decoder = (cfg.decoder, cfg.bar_state);
        let (vae, _) = build(&cfg, 4);
        let zz = z(2, 8, 6);
        let density = 0.3;
        let opts = DecodeOptions {
            density,
            ..DecodeOptions::default()
        };
        let patterns = vae.decode(&zz, &opts).unwrap();
        let x = patterns_to_tensor(&patterns, &CPU).unwrap();
        let out = vae.detach().decoder.teacher_forced(&zz, &x).unwrap();
        let logits = out.hit_logits.to_vec3::<f32>().unwrap();
        let mut checked = 0;
        for (n, p) in patterns.iter().enumerate() {
            for (s, row) in logits[n].iter().enumerate() {
                for (v, &l) in row.iter().enumerate() {
                    if (l + density).abs() > 1e-4 {
                        assert_eq!(
                            p.cells[s][v].hit,
                            l + density > 0.0,
                            "{decoder:?} {n} {s} {v}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000);
    }
}

#[test]
fn decode_with_the_same_seed_is_deterministic_and_independent_of_the_other_rows() {
    let (vae, _) = build(&tiny(DecoderKind::Hierarchical), 5);
    let zz = z(3, 8, 7);
    let opts = |seed| DecodeOptions {
        temperature: 1.0,
        density: 0.0,
        seed,
    };
    let a = vae.decode(&zz, &opts(11)).unwrap();
    assert_eq!(a, vae.decode(&zz, &opts(11)).unwrap());
    assert_ne!(
        a,
        vae.decode(&zz, &opts(12)).unwrap(),
        "the seed matters at T=1"
    );
    // Row i draws from stream i of the seed: the other rows and the batch size do not matter.
    let first_two = vae.decode(&zz.narrow(0, 0, 2).unwrap(), &opts(11)).unwrap();
    assert_eq!(first_two, a[..2]);
    let alone = vae.decode(&zz.narrow(0, 0, 1).unwrap(), &opts(11)).unwrap();
    assert_eq!(alone[0], a[0]);
    // At temperature 0 the seed is irrelevant.
    let t0 = |seed| DecodeOptions {
        seed,
        ..DecodeOptions::default()
    };
    assert_eq!(
        vae.decode(&zz, &t0(1)).unwrap(),
        vae.decode(&zz, &t0(2)).unwrap()
    );
    // Rests carry no velocity or offset, as in the data.
    for p in &a {
        for c in p.cells.iter().flatten().filter(|c| !c.hit) {
            assert_eq!((c.velocity, c.offset), (0.0, 0.0));
        }
    }
}

/// A model whose bar decoder carries its state is written as format v2, so that a reader built
/// before the option existed refuses it instead of decoding it with the reset rule; models without
/// it stay v1, readable by those versions. This version reads both.
#[test]
fn only_models_that_carry_the_bar_state_need_the_v2_format() {
    let dir = tempfile::tempdir().unwrap();
    for (bar_state, format) in [(BarState::Reset, FORMAT), (BarState::Carry, FORMAT_V2)] {
        let cfg = Config {
            bar_state,
            ..tiny(DecoderKind::Hierarchical)
        };
        let (vae, varmap) = build(&cfg, 6);
        let path = dir.path().join(format!("{bar_state:?}.safetensors"));
        save(&path, &varmap, &cfg, HashMap::new()).unwrap();
        let (loaded, info) = load_file(&path, &CPU).unwrap();
        assert_eq!(info.metadata["format"], format, "{bar_state:?}");
        assert_eq!(loaded.config.bar_state, bar_state);
        let zz = z(1, cfg.latent, 2);
        let opts = DecodeOptions::default();
        assert_eq!(
            vae.decode(&zz, &opts).unwrap(),
            loaded.decode(&zz, &opts).unwrap()
        );
        // A file labelled v1 by an older build is brought up to date when it is rewritten (as
        // `drumvae anchors` does).
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        meta.insert(FORMAT_KEY.into(), FORMAT.into());
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let as_v1 = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
        let rewritten = drumvae::model::file::with_metadata(&as_v1, HashMap::new()).unwrap();
        let (_, info) = load_bytes(&rewritten, &CPU).unwrap();
        assert_eq!(info.metadata["format"], format, "{bar_state:?} rewritten");
    }
}

#[test]
fn save_then_load_gives_bit_identical_outputs() {
    let cfg = Config::small();
    let (vae, varmap) = build(&cfg, 6);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let extra = HashMap::from([("command".to_string(), "train --steps 1".to_string())]);
    save(&path, &varmap, &cfg, extra).unwrap();
    let (loaded, info) = load_file(&path, &CPU).unwrap();
    assert_eq!(info.config, cfg);
    assert_eq!(info.metadata["format"], FORMAT);
    assert_eq!(info.metadata["command"], "train --steps 1");

    let x = batch(2);
    let eps = z(2, cfg.latent, 8);
    let (a, b) = (
        vae.forward(&x, &eps).unwrap(),
        loaded.forward(&x, &eps).unwrap(),
    );
    for (p, q) in [
        (&a.mu, &b.mu),
        (&a.sigma, &b.sigma),
        (&a.hit_logits, &b.hit_logits),
        (&a.velocity, &b.velocity),
        (&a.offset, &b.offset),
    ] {
        assert_eq!(values(p), values(q));
    }
    let opts = DecodeOptions {
        temperature: 0.7,
        density: 0.0,
        seed: 3,
    };
    let zz = z(2, cfg.latent, 9);
    assert_eq!(
        vae.decode(&zz, &opts).unwrap(),
        loaded.decode(&zz, &opts).unwrap()
    );
}

/// A tiny model's file, with its tensors by name, for corrupting.
fn tiny_file() -> (Vec<u8>, HashMap<String, Tensor>, Config) {
    let cfg = tiny(DecoderKind::Hierarchical);
    let (_, varmap) = build(&cfg, 7);
    let bytes = to_bytes(&varmap, &cfg, HashMap::new()).unwrap();
    let tensors = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    (bytes, tensors, cfg)
}

fn file_with(tensors: &HashMap<String, Tensor>, metadata: &[(&str, String)]) -> Vec<u8> {
    let meta = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    safetensors::serialize(tensors.iter(), Some(meta)).unwrap()
}

fn proper_metadata(cfg: &Config) -> Vec<(&'static str, String)> {
    vec![
        (FORMAT_KEY, FORMAT.to_string()),
        (CONFIG_KEY, serde_json::to_string(cfg).unwrap()),
    ]
}

fn load_err(bytes: &[u8]) -> ModelError {
    match load_bytes(bytes, &CPU) {
        Ok(_) => panic!("a broken model file loaded"),
        Err(e) => e,
    }
}

#[test]
fn truncated_model_file_is_reported_as_truncated() {
    let (bytes, _, _) = tiny_file();
    let e = load_err(&bytes[..bytes.len() - 100]);
    assert!(matches!(e, ModelError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("copy it again"), "{e}");
    let e = load_err(&bytes[..40]);
    assert!(
        matches!(e, ModelError::Truncated { .. }),
        "cut in the header: {e}"
    );
}

#[test]
fn non_safetensors_files_are_rejected_as_such() {
    for bytes in [
        &b""[..],
        b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0",
        b"{\"not\": \"a model\"}",
        b"\x00\x00\x00\x00\x00\x00\x00\x00\xff\xfe garbage",
    ] {
        let e = load_err(bytes);
        assert!(
            matches!(e, ModelError::NotSafetensors { .. }),
            "{bytes:?}: {e}"
        );
    }
    let e = load_file(std::path::Path::new("/nonexistent/model.safetensors"), &CPU).unwrap_err();
    assert!(matches!(e, ModelError::Io { .. }), "{e}");
}

/// A saved session names the model path, so it is untrusted: devices, pipes and folders are
/// refused without being opened or read (a FIFO would block the open, /dev/zero never ends).
#[cfg(unix)]
#[test]
fn model_paths_that_are_not_regular_files_are_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo::mkfifo(dir.path(), "pipe.safetensors");
    for path in [
        std::path::PathBuf::from("/dev/zero"),
        std::path::PathBuf::from("/dev/urandom"),
        fifo,
        dir.path().to_path_buf(),
    ] {
        let e = load_file(&path, &CPU).unwrap_err();
        assert!(
            matches!(e, ModelError::NotAFile { .. }),
            "{}: {e}",
            path.display()
        );
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}

/// Size is capped before reading: a sparse file of MAX + 1 bytes is refused from its metadata.
#[test]
fn model_files_over_the_size_cap_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.safetensors");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(drumvae::model::file::MAX_MODEL_BYTES + 1)
        .unwrap();
    let e = load_file(&path, &CPU).unwrap_err();
    assert!(matches!(e, ModelError::TooLarge { .. }), "{e}");
}

/// Someone else's safetensors file (a valid header without our format key, and a large body) is
/// refused from its header; the body is never read, so the body here is a sparse hole that would
/// parse as zeros.
#[test]
fn an_unrelated_safetensors_file_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llm.safetensors");
    let body = 200_000_000u64;
    let header = format!(
        r#"{{"__metadata__":{{"format":"pt"}},"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{body}]}}}}"#,
        body / 4
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.set_len(bytes.len() as u64 + body).unwrap();
    let e = load_file(&path, &CPU).unwrap_err();
    assert!(
        matches!(e, ModelError::UnsupportedFormat { ref found } if found == "pt"),
        "{e}"
    );
    // Without any metadata it is not ours either.
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 4]);
    std::fs::write(&path, &bytes).unwrap();
    let e = load_file(&path, &CPU).unwrap_err();
    assert!(matches!(e, ModelError::NotDrumvae), "{e}");
}

#[test]
fn wrong_shape_tensor_is_named_with_both_shapes() {
    let (_, mut tensors, cfg) = tiny_file();
    let name = "decoder.bar.weight_ih_l0";
    tensors.insert(
        name.into(),
        Tensor::zeros((64, 5), DType::F32, &CPU).unwrap(),
    );
    match load_err(&file_with(&tensors, &proper_metadata(&cfg))) {
        ModelError::WrongShape {
            name: n,
            expected,
            found,
        } => {
            assert_eq!(n, name);
            assert_eq!(expected, vec![64, FEATURES + 16]);
            assert_eq!(found, vec![64, 5]);
        }
        e => panic!("expected WrongShape, got {e}"),
    }
}

#[test]
fn missing_and_extra_tensors_are_named() {
    let (_, mut tensors, cfg) = tiny_file();
    let t = tensors.remove("encoder.mu.bias").unwrap();
    let e = load_err(&file_with(&tensors, &proper_metadata(&cfg)));
    assert!(
        matches!(&e, ModelError::MissingTensor { name, expected } if name == "encoder.mu.bias" && expected == &[8]),
        "{e}"
    );
    tensors.insert("encoder.mu.bias".into(), t);
    tensors.insert(
        "optimizer.m".into(),
        Tensor::zeros(3, DType::F32, &CPU).unwrap(),
    );
    let e = load_err(&file_with(&tensors, &proper_metadata(&cfg)));
    assert!(
        matches!(&e, ModelError::UnexpectedTensors { names } if names == &["optimizer.m"]),
        "{e}"
    );
}

#[test]
fn nan_filled_weights_are_named() {
    let (_, mut tensors, cfg) = tiny_file();
    let name = "decoder.output.weight";
    let nan = Tensor::full(f32::NAN, (FEATURES, 16), &CPU).unwrap();
    tensors.insert(name.into(), nan);
    let e = load_err(&file_with(&tensors, &proper_metadata(&cfg)));
    assert!(
        matches!(&e, ModelError::NonFinite { name: n, count, index: 0, .. } if n == name && *count == FEATURES * 16),
        "{e}"
    );
    assert!(e.to_string().contains("earlier checkpoint"), "{e}");
}

#[test]
fn missing_or_bad_metadata_is_explained() {
    let (_, tensors, cfg) = tiny_file();
    let e = load_err(&file_with(&tensors, &[]));
    assert!(matches!(e, ModelError::NotDrumvae), "{e}");
    let e = load_err(&file_with(
        &tensors,
        &[(FORMAT_KEY, "drumvae-model-v9".into())],
    ));
    assert!(matches!(e, ModelError::UnsupportedFormat { .. }), "{e}");
    let e = load_err(&file_with(&tensors, &[(FORMAT_KEY, FORMAT.into())]));
    assert!(matches!(e, ModelError::MissingConfig), "{e}");
    let e = load_err(&file_with(
        &tensors,
        &[
            (FORMAT_KEY, FORMAT.into()),
            (CONFIG_KEY, "{\"latent\": 8}".into()),
        ],
    ));
    assert!(matches!(e, ModelError::BadConfig { .. }), "{e}");
    let bad = Config {
        latent: 0,
        ..cfg.clone()
    };
    let e = load_err(&file_with(&tensors, &proper_metadata(&bad)));
    assert!(e.to_string().contains("latent must be at least 1"), "{e}");
    // Reserved keys cannot be overwritten by the caller's metadata.
    let (_, varmap) = build(&cfg, 1);
    let extra = HashMap::from([(CONFIG_KEY.to_string(), "{}".to_string())]);
    assert!(matches!(
        to_bytes(&varmap, &cfg, extra),
        Err(ModelError::ReservedKey(_))
    ));
}

/// A few hundred AdamW steps with beta 0 on 8 real GMD windows (from different files) must
/// memorise them: >= 99% of the 4,608 hit cells right, teacher-forced, decoding from mu.
#[test]
fn learns_eight_gmd_windows_to_99_percent_hit_accuracy() {
    let start = Instant::now();
    let all = dataset::gmd_split_patterns(Split::Validation).expect("the GMD is readable");
    let windows: Vec<&Pattern> = all.iter().filter(|p| p.hit_count() > 0).collect();
    let stride = windows.len() / 8;
    let patterns: Vec<Pattern> = (0..8).map(|i| *windows[i * stride]).collect();
    let loaded = start.elapsed();

    let cfg = Config {
        encoder_hidden: 32,
        latent: 32,
        conductor_hidden: 64,
        conductor_layers: 1,
        decoder_hidden: 96,
        decoder_layers: 1,
        beta: 0.0,
        ..Config::small()
    };
    let (vae, varmap) = build(&cfg, 42);
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )
    .unwrap();
    let x = patterns_to_tensor(&patterns, &CPU).unwrap();
    let target: Vec<f32> = values(&x.narrow(2, 0, VOICES).unwrap());
    let accuracy = |vae: &Vae| {
        let rec = vae.reconstruct_teacher_forced(&x).unwrap();
        let right = values(&rec.hit_prob)
            .iter()
            .zip(&target)
            .filter(|(p, y)| (**p > 0.5) == (**y > 0.5))
            .count();
        right as f64 / target.len() as f64
    };
    let mut acc = accuracy(&vae);
    let mut step = 0;
    while step < 400 && acc < 0.99 {
        for _ in 0..20 {
            let eps = z(8, cfg.latent, 1000 + step as u64);
            let fwd = vae.forward(&x, &eps).unwrap();
            let loss = vae.loss(&x, &fwd, 0.0).unwrap();
            opt.backward_step(&loss.total).unwrap();
            step += 1;
        }
        acc = accuracy(&vae);
        eprintln!("step {step}: teacher-forced hit accuracy {acc:.4}");
    }
    eprintln!(
        "{} hits in 8 windows; data {:.1?}, training {:.1?}",
        target.iter().filter(|y| **y > 0.5).count(),
        loaded,
        start.elapsed() - loaded
    );
    assert!(acc >= 0.99, "accuracy {acc:.4} after {step} steps");
}
