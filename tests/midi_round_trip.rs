//! Writing and re-reading MIDI: Pattern -> .mid -> Pattern is identical up to one tick of offset
//! rounding, and a real GMD file -> windows -> .mid -> windows is stable.

use drumvae::groove::{Cell, Pattern, STEPS, VOICES, Voice};
use drumvae::midi_file::{self, WriteOptions};
use rand::{Rng, SeedableRng};

/// One tick at 480 ticks per beat, in steps.
const TICK: f32 = 1.0 / 120.0;

fn random_pattern(rng: &mut impl Rng, first: bool) -> Pattern {
    let mut p = Pattern::EMPTY;
    for step in 0..STEPS {
        for voice in Voice::ALL {
            if rng.random_bool(0.3) {
                let velocity = rng.random_range(1..=127) as f32 / 127.0;
                // MIDI has no time before tick 0: the file's very first step cannot be early.
                let low = if first && step == 0 { 0.0 } else { -0.5 };
                p.set(step, voice, Cell::hit(velocity, rng.random_range(low..0.5)));
            }
        }
    }
    p
}

fn assert_same(a: &Pattern, b: &Pattern, tolerance: f32, what: &str) {
    for step in 0..STEPS {
        for v in 0..VOICES {
            let (x, y) = (a.cells[step][v], b.cells[step][v]);
            assert_eq!(x.hit, y.hit, "{what}: hit at step {step}, voice {v}");
            assert_eq!(
                x.velocity, y.velocity,
                "{what}: velocity at step {step}, voice {v}"
            );
            assert!(
                (x.offset - y.offset).abs() <= tolerance,
                "{what}: offset at step {step}, voice {v}: {} vs {}",
                x.offset,
                y.offset
            );
        }
    }
}

fn read_back(bytes: &[u8]) -> midi_file::Grid {
    let perf = midi_file::parse(bytes, "round-trip.mid").expect("our own file parses");
    perf.check_four_four("round-trip.mid")
        .expect("we write 4/4");
    perf.quantize()
}

#[test]
fn pattern_to_midi_to_pattern_is_identical_within_one_tick() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for round in 0..20 {
        let patterns = [
            random_pattern(&mut rng, true),
            random_pattern(&mut rng, false),
        ];
        let options = WriteOptions {
            bpm: rng.random_range(60.0..200.0),
            ..WriteOptions::default()
        };
        let grid = read_back(&midi_file::write_patterns(&patterns, &options));
        assert_eq!(grid.bars, 8, "round {round}: the file keeps its length");
        assert!((grid.bpm_at_bar(0) - options.bpm).abs() < 1e-3);
        for (i, p) in patterns.iter().enumerate() {
            let back = grid.pattern_at(4 * i);
            assert_same(
                p,
                &back,
                TICK + 1e-6,
                &format!("round {round}, pattern {i}"),
            );
        }
    }
}

#[test]
fn offsets_just_below_half_a_step_stay_on_their_step() {
    let mut p = Pattern::EMPTY;
    p.set(5, Voice::Snare, Cell::hit(1.0, 0.4999));
    p.set(9, Voice::Kick, Cell::hit(1.0, -0.5));
    let back = read_back(&midi_file::write_patterns(&[p], &WriteOptions::default())).pattern_at(0);
    assert!(
        back.get(5, Voice::Snare).hit,
        "a late hit must not round onto the next step"
    );
    assert!(back.get(9, Voice::Kick).hit);
    assert_same(&p, &back, TICK, "edge offsets");
}

#[test]
fn an_early_hit_on_the_first_step_is_written_at_tick_zero() {
    let mut p = Pattern::EMPTY;
    p.set(0, Voice::Kick, Cell::hit(1.0, -0.3));
    let back = read_back(&midi_file::write_patterns(&[p], &WriteOptions::default())).pattern_at(0);
    assert_eq!(back.get(0, Voice::Kick), Cell::hit(1.0, 0.0));
}

#[test]
fn written_files_use_the_chosen_channel_pitches_and_note_length() {
    let mut p = Pattern::EMPTY;
    p.set(0, Voice::Kick, Cell::hit(1.0, 0.0));
    p.set(0, Voice::Snare, Cell::hit(0.5, 0.0));
    let mut pitches = drumvae::groove::DEFAULT_OUTPUT_PITCHES;
    pitches[Voice::Kick.index()] = 35;
    let options = WriteOptions {
        channel: 3,
        pitches,
        ..WriteOptions::default()
    };
    let perf = midi_file::parse(&midi_file::write_patterns(&[p], &options), "w.mid").unwrap();
    let mut got: Vec<(u8, u8, u8)> = perf
        .onsets
        .iter()
        .map(|o| (o.pitch, o.velocity, o.channel))
        .collect();
    got.sort();
    assert_eq!(got, [(35, 127, 3), (38, 64, 3)]);
}

#[test]
fn gmd_file_to_windows_to_midi_to_windows_is_stable() {
    let root = drumvae::dataset::default_gmd_root();
    let path = root.join("drummer1/session1/1_funk_80_beat_4-4.mid");
    let grid = midi_file::read_grid(&path).expect("a GMD file");
    let windows: Vec<Pattern> = grid.windows().map(|(_, p)| p).collect();
    assert!(windows.len() > 10);
    let options = WriteOptions {
        bpm: grid.bpm_at_bar(0),
        ..WriteOptions::default()
    };
    let bytes = midi_file::write_patterns(&windows, &options);
    let back = read_back(&bytes);
    assert_eq!(back.bars, 4 * windows.len());
    let again: Vec<Pattern> = (0..windows.len()).map(|i| back.pattern_at(4 * i)).collect();
    for (i, (a, b)) in windows.iter().zip(&again).enumerate() {
        assert_same(a, b, TICK / 2.0 + 1e-6, &format!("window {i}"));
    }
    // A second pass is a fixed point: the same bytes.
    assert_eq!(midi_file::write_patterns(&again, &options), bytes);
}
