//! MIDI import edge cases, each on a small Standard MIDI File these tests write byte by byte
//! (so running status, velocity-0 note-ons and odd layouts are exactly what is under test).

use drumvae::groove::{STEPS_PER_BAR, Voice};
use drumvae::midi_file::{self, MidiErrorKind};

#[path = "support/smf.rs"]
mod smf;
use smf::*;

fn grid_of(bytes: &[u8]) -> midi_file::Grid {
    let performance = midi_file::parse(bytes, "test.mid").expect("parses");
    performance.check_four_four("test.mid").expect("4/4");
    performance.quantize()
}

#[test]
fn hit_just_before_a_windows_first_downbeat_stays_in_that_window_early() {
    // A snare 12 ticks (0.1 step) before bar 2's downbeat, in a 5-bar file.
    let bytes = drum_file(&[(BAR - 12, 38, 100)], 5 * BAR);
    let grid = grid_of(&bytes);
    assert_eq!(grid.bars, 5);
    let second = grid.pattern_at(1);
    let cell = second.get(0, Voice::Snare);
    assert!(cell.hit, "the early hit belongs to bar 2's first step");
    assert!((cell.offset + 0.1).abs() < 1e-6, "offset {}", cell.offset);
    let first = grid.pattern_at(0);
    assert!(
        first.get(STEPS_PER_BAR, Voice::Snare).hit,
        "and to step 16 of window 1"
    );
    assert!(!first.get(STEPS_PER_BAR - 1, Voice::Snare).hit);
}

#[test]
fn tempo_change_mid_file_keeps_steps_and_times_seconds_correctly() {
    // 120 BPM for one bar, then 60 BPM.
    let track = vec![
        (0, tempo(500_000)),
        (BAR, tempo(1_000_000)),
        (0, end_of_track()),
    ];
    let notes: Vec<(u32, Vec<u8>)> = vec![
        (0, note_on(9, 36, 100)),
        (BAR, note_on(9, 36, 0)), // velocity-0 note-on = note-off
        (4 * STEP + 30, note_on(9, 38, 90)),
        (4 * BAR, end_of_track()),
    ];
    let bytes = smf(1, TPB, &[track, notes]);
    let perf = midi_file::parse(&bytes, "tempo.mid").unwrap();
    assert_eq!(perf.onsets.len(), 2);
    let snare = perf.onsets[1];
    assert_eq!(snare.tick, (BAR + 4 * STEP + 30) as u64);
    // Bar 1 at 120 BPM = 2 s; then 1.25 beats (4 steps + 30 ticks) at 60 BPM = 1.0625 s.
    assert!((snare.seconds - 3.0625).abs() < 1e-9, "{}", snare.seconds);
    let grid = perf.quantize();
    let cell = grid.pattern_at(0).get(STEPS_PER_BAR + 4, Voice::Snare);
    assert!(cell.hit && (cell.offset - 0.25).abs() < 1e-6, "{cell:?}");
    assert_eq!(grid.bpm_at_bar(0), 120.0);
    assert_eq!(grid.bpm_at_bar(1), 60.0);
}

#[test]
fn two_hits_of_one_voice_on_one_step_keep_the_louder() {
    // Closed hi-hat pitches 42 and 44 are one voice; 44 is louder and 20 ticks late.
    let bytes = drum_file(&[(0, 42, 60), (20, 44, 110), (STEP, 42, 70)], 4 * BAR);
    let grid = grid_of(&bytes);
    assert_eq!(grid.merged_hits, 1);
    let cell = grid.pattern_at(0).get(0, Voice::ClosedHiHat);
    assert_eq!(cell.velocity, 110.0 / 127.0);
    assert!((cell.offset - 20.0 / 120.0).abs() < 1e-6);
    assert_eq!(grid.hit_count(), 2);
}

#[test]
fn unmapped_pitches_are_dropped_and_counted() {
    let bytes = drum_file(
        &[
            (0, 36, 100),
            (STEP, 56, 90),
            (2 * STEP, 56, 90),
            (0, 39, 80),
        ],
        4 * BAR,
    );
    let grid = grid_of(&bytes);
    assert_eq!(grid.hit_count(), 1);
    assert_eq!(grid.dropped_pitches.get(&56), Some(&2), "cowbell");
    assert_eq!(grid.dropped_pitches.get(&39), Some(&1), "hand clap");
}

#[test]
fn velocity_zero_note_on_is_a_note_off_not_a_hit() {
    let track = vec![
        (0, note_on(9, 38, 100)),
        (60, note_on(9, 38, 0)),
        (60, note_on(9, 38, 0)),
        (4 * BAR - 120, end_of_track()),
    ];
    let perf = midi_file::parse(&smf(0, TPB, &[track]), "vel0.mid").unwrap();
    assert_eq!(perf.onsets.len(), 1);
    assert_eq!(perf.quantize().hit_count(), 1);
}

#[test]
fn running_status_events_are_read() {
    // One status byte, then data bytes only: kick, snare, hat, and a running-status note-off.
    let track = vec![
        (0, vec![0x99, 36, 100]),
        (STEP, vec![38, 90]),
        (STEP, vec![42, 80]),
        (STEP, vec![42, 0]),
        (4 * BAR - 3 * STEP, end_of_track()),
    ];
    let perf = midi_file::parse(&smf(0, TPB, &[track]), "running.mid").unwrap();
    let pitches: Vec<u8> = perf.onsets.iter().map(|o| o.pitch).collect();
    assert_eq!(pitches, [36, 38, 42]);
    let p = perf.quantize().pattern_at(0);
    assert!(p.get(0, Voice::Kick).hit && p.get(1, Voice::Snare).hit);
    assert!(p.get(2, Voice::ClosedHiHat).hit);
}

#[test]
fn note_exactly_halfway_goes_to_the_later_step_with_offset_minus_half() {
    let bytes = drum_file(&[(STEP / 2, 36, 100)], 4 * BAR);
    let p = grid_of(&bytes).pattern_at(0);
    assert!(!p.get(0, Voice::Kick).hit);
    let cell = p.get(1, Voice::Kick);
    assert!(cell.hit);
    assert_eq!(cell.offset, -0.5, "offsets live in [-0.5, 0.5)");
}

#[test]
fn notes_on_any_channel_are_read() {
    let track = vec![
        (0, note_on(0, 36, 100)),
        (STEP, note_on(3, 38, 100)),
        (4 * BAR - STEP, end_of_track()),
    ];
    let perf = midi_file::parse(&smf(0, TPB, &[track]), "channels.mid").unwrap();
    let channels: Vec<u8> = perf.onsets.iter().map(|o| o.channel).collect();
    assert_eq!(channels, [0, 3]);
}

#[test]
fn other_metres_are_refused_with_the_metre_named() {
    let track = vec![
        (0, time_signature(3, 2)),
        (0, note_on(9, 36, 100)),
        (BAR, end_of_track()),
    ];
    let perf = midi_file::parse(&smf(0, TPB, &[track]), "waltz.mid").unwrap();
    let err = perf.check_four_four("waltz.mid").unwrap_err();
    assert!(err.is_unsupported_metre());
    assert_eq!(
        err.to_string(),
        "waltz.mid: is in 3/4 at bar 1; only 4/4 is modelled"
    );
}

#[test]
fn length_rounds_to_the_nearest_bar_and_windows_hop_one_bar() {
    // 6.6 bars of material -> 7 bars -> windows starting at bars 0..=3.
    let end = 6 * BAR + (BAR * 6 / 10);
    let grid = grid_of(&drum_file(&[(0, 36, 100)], end));
    assert_eq!(grid.bars, 7);
    let starts: Vec<usize> = grid.windows().map(|(b, _)| b).collect();
    assert_eq!(starts, [0, 1, 2, 3]);
    // 6.4 bars -> 6 bars -> 3 windows; a 3-bar file has none.
    assert_eq!(
        grid_of(&drum_file(&[(0, 36, 100)], 6 * BAR + BAR * 4 / 10)).window_count(),
        3
    );
    assert_eq!(
        grid_of(&drum_file(&[(0, 36, 100)], 3 * BAR)).window_count(),
        0
    );
}

#[test]
fn a_file_without_tempo_or_time_signature_is_120_bpm_four_four() {
    let track = vec![(0, note_on(9, 36, 100)), (4 * BAR, end_of_track())];
    let perf = midi_file::parse(&smf(0, TPB, &[track]), "bare.mid").unwrap();
    perf.check_four_four("bare.mid").unwrap();
    assert_eq!(perf.tempo.bpm_at(0), 120.0);
}

#[test]
fn errors_name_the_file_and_say_what_to_do() {
    let err = midi_file::read_file(std::path::Path::new("/nonexistent/groove.mid")).unwrap_err();
    assert!(matches!(err.kind, MidiErrorKind::Io(_)));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/groove.mid: cannot read the file")
    );
}

/// A loop of `bars` bars: kick on every downbeat, snare on beat 2 of the first bar only (so the
/// bars can be told apart), a closed hi-hat on the last 8th of its last bar.
fn loop_file(bars: u32) -> Vec<u8> {
    let mut notes: Vec<(u32, u8, u8)> = (0..bars).map(|b| (b * BAR, 36, 100)).collect();
    notes.push((4 * STEP, 38, 90));
    notes.push((bars * BAR - 2 * STEP, 42, 70));
    drum_file(&notes, bars * BAR)
}

#[test]
fn loops_of_one_two_and_three_bars_repeat_to_fill_four_bars() {
    for bars in 1..=3usize {
        let grid = grid_of(&loop_file(bars as u32));
        assert_eq!(grid.bars, bars);
        assert_eq!(grid.window_count(), 0, "shorter than one 4-bar window");
        assert_eq!(grid.groove_count(), 1);
        let p = grid
            .groove(0, "loop.mid")
            .expect("a short loop gives a groove");
        let len = bars * STEPS_PER_BAR;
        for step in 0..4 * STEPS_PER_BAR {
            // Each step plays what the loop plays at step mod its length.
            let source = step % len;
            assert_eq!(
                p.get(step, Voice::Kick).hit,
                source.is_multiple_of(STEPS_PER_BAR),
                "{bars}-bar loop, step {step}"
            );
            assert_eq!(
                p.get(step, Voice::Snare).hit,
                source == 4,
                "{bars}-bar loop, step {step}"
            );
            assert_eq!(
                p.get(step, Voice::ClosedHiHat).hit,
                source == len - 2,
                "{bars}-bar loop, step {step}"
            );
        }
    }
}

#[test]
fn a_partial_last_bar_rounds_to_the_nearest_bar_of_the_loop() {
    // 1.25 bars: the quarter bar is dropped (a hit in it is outside the 1-bar loop).
    let short = drum_file(&[(0, 36, 100), (BAR + 2 * STEP, 38, 100)], BAR + 4 * STEP);
    let grid = grid_of(&short);
    assert_eq!(grid.bars, 1);
    let p = grid.groove(0, "short.mid").unwrap();
    assert_eq!(
        p.hit_count(),
        4,
        "the kick four times, the snare past the loop dropped"
    );
    // 1.75 bars: a second bar, filled with rests after its played part.
    let long = drum_file(&[(0, 36, 100), (BAR + 2 * STEP, 38, 100)], BAR + 12 * STEP);
    let grid = grid_of(&long);
    assert_eq!(grid.bars, 2);
    let p = grid.groove(0, "long.mid").unwrap();
    assert!(p.get(STEPS_PER_BAR + 2, Voice::Snare).hit);
    assert!(p.get(3 * STEPS_PER_BAR + 2, Voice::Snare).hit);
    assert_eq!(p.hit_count(), 4);
}

#[test]
fn an_early_downbeat_at_a_loops_end_wraps_to_its_start() {
    // A 1-bar loop whose crash is played 0.2 step before the end: it is the next repetition's
    // downbeat, played early.
    let bytes = drum_file(&[(4 * STEP, 38, 100), (BAR - 24, 49, 110)], BAR);
    let grid = grid_of(&bytes);
    let p = grid.groove(0, "loop.mid").unwrap();
    for bar in 0..4 {
        let crash = p.get(bar * STEPS_PER_BAR, Voice::Crash);
        assert!(crash.hit, "bar {bar}");
        assert!((crash.offset + 0.2).abs() < 1e-6, "{crash:?}");
    }
}

#[test]
fn a_file_without_hits_and_a_missing_window_say_what_is_there() {
    let empty = grid_of(&drum_file(&[(0, 60, 100)], 2 * BAR));
    let e = empty.groove(0, "empty.mid").unwrap_err().to_string();
    assert!(e.contains("empty.mid has no drum hits"), "{e}");

    let two = grid_of(&loop_file(2));
    let e = two.groove(1, "two.mid").unwrap_err().to_string();
    assert!(e.contains("window 2 does not exist"), "{e}");
    assert!(e.contains("2-bar loop") && e.contains("window 1"), "{e}");

    let six = grid_of(&loop_file(6));
    assert_eq!(six.groove_count(), 3);
    assert_eq!(six.groove(2, "six.mid").unwrap(), six.pattern_at(2));
    let e = six.groove(3, "six.mid").unwrap_err().to_string();
    assert!(
        e.contains("window 4 does not exist") && e.contains("windows 1-3"),
        "{e}"
    );
}
