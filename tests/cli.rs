//! The `drumvae` binary end to end, as a user runs it: inspect the bundled example, and sample,
//! morph and evaluate with the model in `models/`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> PathBuf {
    root()
        .join("models")
        .join(drumvae::model::embedded::DEFAULT_MODEL_NAME)
}

fn drumvae(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drumvae"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_prints_the_example_groove_as_a_grid() {
    let (ok, out, err) = drumvae(&["inspect", "tests/fixtures/example_groove.mid"]);
    assert!(ok, "{err}");
    assert!(out.contains("96.00 BPM"), "{out}");
    assert!(out.contains("BD  |X-------X-O-----|"), "{out}");
}

#[test]
fn inspect_of_a_broken_file_fails_with_a_message_not_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.mid");
    std::fs::write(&bad, b"MThd garbage").unwrap();
    let (ok, _, err) = drumvae(&["inspect", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("bad.mid: not a valid Standard MIDI File"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn sample_writes_reproducible_grooves() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.mid"), dir.path().join("b.mid"));
    for out in [&a, &b] {
        let (ok, _, err) = drumvae(&[
            "sample",
            "--model",
            model().to_str().unwrap(),
            "--count",
            "3",
            "--seed",
            "9",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
    }
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same seed, same file"
    );
    let grid = drumvae::midi_file::read_grid(&a).unwrap();
    assert_eq!(grid.bars, 12);
    assert!(grid.hit_count() > 0, "the model plays something");
}

/// A tempo a MIDI file cannot store (NaN, below 3.58 BPM, absurdly fast) is refused with the
/// range, before anything is written.
#[test]
fn sample_and_morph_refuse_tempos_a_midi_file_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.mid");
    for bpm in ["NaN", "3", "0", "inf", "5000"] {
        let (ok, _, err) = drumvae(&[
            "sample",
            "--model",
            model().to_str().unwrap(),
            "--bpm",
            bpm,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!ok, "--bpm {bpm} was accepted");
        assert!(
            err.contains("3.58 to 999 BPM") || err.contains("invalid"),
            "{bpm}: {err}"
        );
        assert!(!out.exists());
    }
    let (ok, _, err) = drumvae(&[
        "sample",
        "--model",
        model().to_str().unwrap(),
        "--bpm",
        "3.6",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let grid = drumvae::midi_file::read_grid(&out).unwrap();
    assert!(
        (grid.bpm_at_bar(0) - 3.6).abs() < 0.01,
        "{}",
        grid.bpm_at_bar(0)
    );
}

#[test]
fn morph_starts_near_a_and_writes_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("morph.mid");
    let gmd = drumvae::dataset::default_gmd_root();
    let a = gmd.join("drummer1/session1/1_funk_80_beat_4-4.mid");
    let b = gmd.join("drummer1/session1/102_funk_95_beat_4-4.mid");
    let (ok, _, err) = drumvae(&[
        "morph",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--model",
        model().to_str().unwrap(),
        "--steps",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(drumvae::midi_file::read_grid(&out).unwrap().bars, 16);
}

#[test]
fn evaluate_json_is_one_machine_readable_object() {
    let dir = tempfile::tempdir().unwrap();
    let src = drumvae::dataset::default_gmd_root().join("drummer1/session1/1_funk_80_beat_4-4.mid");
    std::fs::copy(&src, dir.path().join("one.mid")).unwrap();
    let (ok, out, err) = drumvae(&[
        "evaluate",
        model().to_str().unwrap(),
        "--data",
        dir.path().to_str().unwrap(),
        "--split",
        "all",
        "--prior-samples",
        "8",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let f1 = v["teacher_forced"]["hit_f1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&f1));
    assert!(v["windows"].as_u64().unwrap() > 10);
    assert_eq!(v["latent_size"].as_u64(), Some(128));
}
