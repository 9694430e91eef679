//! `drumvae render` and the library's `render`: the README's main job. With the embedded model it
//! writes a playable file whose notes are paired and deterministic, independent of the block size;
//! morph automation changes the pattern only at bar lines, and the bars after the automation ends
//! are exactly what a constant render at the end point plays.

use candle_core::Device;
use drumvae::generator::{Engine, Point, Slot, Slots};
use drumvae::midi_file;
use drumvae::render::{RenderOptions, Rendered, render, to_midi};
use drumvae::sequencer::Settings;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

#[path = "support/smf.rs"]
mod smf;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::embedded(&Device::Cpu).expect("embedded model loads"))
}

fn options(morph_x: &str, bars: u32, block: u32) -> RenderOptions {
    RenderOptions {
        tempo_bpm: 120.0,
        bars,
        sample_rate: 48_000.0,
        block_size: block,
        point: Point::default(),
        morph_x: morph_x.parse().unwrap(),
        morph_y: "0".parse().unwrap(),
        settings: Settings::default(),
    }
}

/// Samples per 16th step at 120 BPM and 48 kHz.
const STEP_SAMPLES: f64 = 6_000.0;

/// The grid step a note belongs to: offsets are within half a step, so the nearest one.
fn step_of(sample: u64) -> u64 {
    (sample as f64 / STEP_SAMPLES).round() as u64
}

/// Note-ons (sample, pitch, velocity) per bar, a note counted in the bar of its grid step.
fn ons_by_bar(r: &Rendered) -> BTreeMap<u64, Vec<(u64, u8, u8)>> {
    let mut bars: BTreeMap<u64, Vec<(u64, u8, u8)>> = BTreeMap::new();
    for n in r.notes.iter().filter(|n| n.event.on) {
        bars.entry(step_of(n.sample) / 16).or_default().push((
            n.sample,
            n.event.pitch,
            n.event.velocity,
        ));
    }
    bars
}

/// Everything about a note except its offset inside the block it was sent in.
fn timeline(r: &Rendered) -> Vec<(u64, u8, u8, u8, bool)> {
    r.notes
        .iter()
        .map(|n| {
            let e = n.event;
            (n.sample, e.pitch, e.velocity, e.channel, e.on)
        })
        .collect()
}

#[test]
fn every_note_on_gets_a_note_off_and_the_file_reads_back() {
    let opts = options("0:0,8:1", 16, 512);
    let r = render(engine(), &opts).unwrap();
    let mut sounding: BTreeMap<(u8, u8), u32> = BTreeMap::new();
    for n in &r.notes {
        let key = (n.event.channel, n.event.pitch);
        if n.event.on {
            *sounding.entry(key).or_default() += 1;
        } else {
            let c = sounding.entry(key).or_default();
            assert!(*c > 0, "note-off without a note-on at {}", n.sample);
            *c -= 1;
        }
    }
    assert!(sounding.values().all(|&c| c == 0), "hanging notes");
    let ons = r.notes.iter().filter(|n| n.event.on).count();
    assert!(ons > 64, "a 16-bar groove has notes: {ons}");
    // Early hits of the step after the last bar sound inside the render but belong to bar 17.
    let inside = r
        .notes
        .iter()
        .filter(|n| n.event.on && step_of(n.sample) < 16 * 16)
        .count();
    assert!(r.notes.windows(2).all(|w| w[0].sample <= w[1].sample));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.mid");
    std::fs::write(&path, to_midi(&r, &opts, 960)).unwrap();
    let grid = midi_file::read_grid(&path).unwrap();
    assert_eq!(grid.bars, 16);
    let hits: usize = (0..grid.window_count())
        .step_by(4)
        .map(|w| grid.pattern_at(w).hit_count())
        .sum();
    assert_eq!(hits, inside, "every note-on is a hit of the written file");
}

#[test]
fn output_does_not_depend_on_the_block_size() {
    let reference = timeline(&render(engine(), &options("0:0,8:1", 12, 512)).unwrap());
    for block in [1, 7, 64, 4096, 1000] {
        let r = render(engine(), &options("0:0,8:1", 12, block)).unwrap();
        assert!(timeline(&r) == reference, "block {block} differs");
    }
}

#[test]
fn morph_changes_the_pattern_only_at_bar_lines_and_ends_on_the_end_point() {
    let start = ons_by_bar(&render(engine(), &options("0", 16, 512)).unwrap());
    let end = ons_by_bar(&render(engine(), &options("1", 16, 512)).unwrap());
    let morph_r = render(engine(), &options("0:0,8:1", 16, 512)).unwrap();
    let morph = ons_by_bar(&morph_r);
    assert_ne!(
        start, end,
        "the two corners must differ for this test to mean anything"
    );
    // Bar 0 plays x = 0; bars 8.. play x = 1, exactly.
    assert_eq!(morph.get(&0), start.get(&0));
    for bar in 8..16 {
        assert_eq!(morph.get(&bar), end.get(&bar), "bar {bar}");
    }
    // One decode per bar line while x moves, none after.
    let bars: Vec<u32> = morph_r.decodes.iter().map(|(b, _)| *b).collect();
    assert_eq!(bars, (0..=8).collect::<Vec<u32>>());
}

#[test]
fn a_style_the_model_lacks_falls_back_to_a_seeded_groove_with_a_warning() {
    let mut opts = options("0", 4, 512);
    opts.point.slots = Slots([
        Slot::Style {
            name: "polka".into(),
        },
        Slot::Seed { seed: 1 },
        Slot::Seed { seed: 2 },
        Slot::Seed { seed: 3 },
    ]);
    let r = render(engine(), &opts).unwrap();
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("polka"), "{:?}", r.warnings);
}

#[test]
fn out_of_range_options_are_refused_with_a_reason() {
    for (mutate, word) in [
        (
            (|o: &mut RenderOptions| o.tempo_bpm = 0.0) as fn(&mut RenderOptions),
            "tempo",
        ),
        (|o| o.sample_rate = f64::NAN, "sample rate"),
        (|o| o.bars = 0, "bar"),
        (|o| o.block_size = 0, "block size"),
    ] {
        let mut o = options("0", 4, 512);
        mutate(&mut o);
        let err = render(engine(), &o).unwrap_err().to_string();
        assert!(err.contains(word), "{err}");
    }
}

fn drumvae(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drumvae"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_readme_render_command_writes_the_same_file_twice() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.mid");
    let b = dir.path().join("b.mid");
    for out in [&a, &b] {
        let (ok, stdout, err) = drumvae(&[
            "render",
            "--tempo",
            "120",
            "--bars",
            "16",
            "--morph-x",
            "0:0,8:1",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        assert!(stdout.contains("16 bars at 120 BPM"), "{stdout}");
    }
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    assert_eq!(midi_file::read_grid(&a).unwrap().bars, 16);
}

#[test]
fn render_with_a_midi_file_corner_and_bad_flags_reports_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.mid");
    let (ok, _, err) = drumvae(&[
        "render",
        "--bars",
        "4",
        "--a",
        "file:tests/fixtures/example_groove.mid",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    for (flag, value, word) in [
        ("--morph-x", "0:0,0:1", "bars must increase"),
        ("--a", "style", "not a slot"),
        ("--b", "file:missing.mid", "missing.mid"),
        ("--tempo", "5000", "tempo"),
    ] {
        let (ok, _, err) = drumvae(&["render", flag, value, "--out", out.to_str().unwrap()]);
        assert!(!ok, "{flag} {value}");
        assert!(err.contains(word), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A 1-, 2- or 3-bar drum loop as a producer would drag out of a DAW: kick on every downbeat,
/// snare on 2 and 4, eighth hi-hats.
fn short_loop(dir: &Path, bars: u32) -> std::path::PathBuf {
    let mut notes = Vec::new();
    for bar in 0..bars {
        notes.push((bar * smf::BAR, 36, 110));
        notes.push((bar * smf::BAR + 4 * smf::STEP, 38, 100));
        notes.push((bar * smf::BAR + 12 * smf::STEP, 38, 100));
        for eighth in 0..8 {
            notes.push((bar * smf::BAR + 2 * eighth * smf::STEP, 42, 70));
        }
    }
    let path = dir.join(format!("loop{bars}.mid"));
    std::fs::write(&path, smf::drum_file(&notes, bars * smf::BAR)).unwrap();
    path
}

#[test]
fn loops_of_one_to_three_bars_load_into_a_render_corner_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.mid");
    for bars in 1..=3 {
        let file = short_loop(dir.path(), bars);
        let corner = format!("file:{}", file.display());
        let (ok, stdout, err) = drumvae(&[
            "render",
            "--bars",
            "4",
            "--a",
            &corner,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{bars}-bar loop: {err}");
        assert!(stdout.contains("4 bars"), "{stdout}");
        assert!(midi_file::read_grid(&out).unwrap().hit_count() > 0);

        let (ok, stdout, err) = drumvae(&["inspect", file.to_str().unwrap()]);
        assert!(ok, "{err}");
        assert!(
            stdout.contains(&format!("the {bars}-bar loop repeated to 4 bars")),
            "{stdout}"
        );
        assert!(
            stdout.contains(
                "BD  |X---------------|X---------------|X---------------|X---------------|"
            ),
            "{stdout}"
        );

        // Window 2 of a short loop does not exist, and the error says which one does.
        let (ok, _, err) = drumvae(&[
            "render",
            "--a",
            &format!("{corner}@2"),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!ok);
        assert!(
            err.contains("window 2 does not exist") && err.contains("window 1"),
            "{err}"
        );
    }
    // A loop with no drum hits says so.
    let silent = dir.path().join("silent.mid");
    std::fs::write(&silent, smf::drum_file(&[(0, 60, 100)], smf::BAR)).unwrap();
    let (ok, _, err) = drumvae(&[
        "render",
        "--a",
        &format!("file:{}", silent.display()),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("no drum hits"), "{err}");
}
