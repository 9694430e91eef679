//! The bundled example `tests/fixtures/example_groove.mid` (the README's first command inspects it)
//! is exactly what the MIDI writer makes of the groove defined here. Regenerate it after a
//! deliberate writer change with `DRUMVAE_BLESS=1 cargo test --test example_groove`.

use drumvae::groove::{Cell, Pattern, Voice};
use drumvae::midi_file::{self, WriteOptions};

/// A 4-bar rock groove with a laid-back snare, pushed hi-hat offbeats and a fill into bar 4.
fn example() -> Pattern {
    let mut p = Pattern::EMPTY;
    for bar in 0..4 {
        let s = bar * 16;
        for eighth in 0..8 {
            let accent = if eighth % 2 == 0 { 0.85 } else { 0.55 };
            let feel = if eighth % 2 == 0 { 0.0 } else { -0.08 };
            if !(bar == 3 && eighth >= 6) {
                p.set(s + eighth * 2, Voice::ClosedHiHat, Cell::hit(accent, feel));
            }
        }
        p.set(s, Voice::Kick, Cell::hit(1.0, 0.0));
        p.set(s + 8, Voice::Kick, Cell::hit(0.9, 0.02));
        p.set(s + 10, Voice::Kick, Cell::hit(0.7, 0.0));
        p.set(s + 4, Voice::Snare, Cell::hit(0.95, 0.1));
        p.set(s + 12, Voice::Snare, Cell::hit(0.95, 0.12));
    }
    p.set(0, Voice::Crash, Cell::hit(0.9, 0.0));
    p.set(61, Voice::HighTom, Cell::hit(0.8, 0.0));
    p.set(62, Voice::MidTom, Cell::hit(0.8, 0.05));
    p.set(63, Voice::LowTom, Cell::hit(0.85, 0.05));
    p.set(14, Voice::Snare, Cell::hit(0.2, 0.0));
    p
}

fn options() -> WriteOptions {
    WriteOptions {
        bpm: 96.0,
        ..WriteOptions::default()
    }
}

#[test]
fn bundled_example_is_the_writers_output_and_reads_back_as_the_groove() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/example_groove.mid");
    let bytes = midi_file::write_patterns(&[example()], &options());
    if std::env::var_os("DRUMVAE_BLESS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "fixture is stale: see this file's header"
    );
    let grid = midi_file::read_grid(&path).unwrap();
    assert_eq!(grid.window_count(), 1);
    let back = grid.pattern_at(0);
    assert_eq!(back.hit_count(), example().hit_count());
    assert_eq!(back.to_text_grid(true), example().to_text_grid(true));
}
