//! Hostile and broken MIDI files: each one gives a clear error that names the file, or loads;
//! none panics. (The `fuzz/` target keeps hunting beyond these.)

#[cfg(unix)]
#[path = "support/fifo.rs"]
mod fifo;
#[path = "support/smf.rs"]
mod smf;

use smf::*;

use drumvae::midi_file::{self, MAX_BARS, MidiErrorKind};
use rand::{Rng, SeedableRng};

fn parse_and_window(bytes: &[u8]) -> Result<usize, midi_file::MidiError> {
    let perf = midi_file::parse(bytes, "bad.mid")?;
    perf.check_four_four("bad.mid")?;
    let grid = perf.quantize();
    Ok(grid.windows().map(|(_, p)| p.hit_count()).sum())
}

fn valid_file() -> Vec<u8> {
    drum_file(
        &[(0, 36, 100), (4 * STEP, 38, 90), (2 * STEP, 42, 70)],
        4 * BAR,
    )
}

#[test]
fn empty_file_is_a_malformed_error() {
    let err = midi_file::parse(&[], "empty.mid").unwrap_err();
    assert!(matches!(err.kind, MidiErrorKind::Malformed(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("empty.mid: not a valid Standard MIDI File")
    );
}

#[test]
fn truncated_header_is_a_malformed_error() {
    let bytes = valid_file();
    for len in [4, 8, 13] {
        let err = midi_file::parse(&bytes[..len], "cut.mid").unwrap_err();
        assert!(
            matches!(err.kind, MidiErrorKind::Malformed(_)),
            "{len}: {err}"
        );
    }
}

#[test]
fn truncated_track_errors_or_loads_the_part_that_is_there() {
    let bytes = valid_file();
    // Every cut inside the track chunks: either a clear error or a shorter performance.
    for len in 14..bytes.len() {
        match midi_file::parse(&bytes[..len], "cut.mid") {
            Ok(perf) => assert!(perf.onsets.len() <= 3),
            Err(err) => assert!(err.to_string().starts_with("cut.mid: "), "{err}"),
        }
    }
}

#[test]
fn garbage_bytes_never_panic() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for _ in 0..2000 {
        let len = rng.random_range(0..512);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = parse_and_window(&bytes);
    }
}

#[test]
fn mutated_valid_files_never_panic() {
    let base = valid_file();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    for _ in 0..5000 {
        let mut bytes = base.clone();
        for _ in 0..rng.random_range(1..8) {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = rng.random();
        }
        let _ = parse_and_window(&bytes);
    }
}

#[test]
fn smpte_timing_is_refused_with_a_reason() {
    // Division with the top bit set: -25 fps, 40 ticks per frame.
    let track = vec![(0, note_on(9, 36, 100)), (100, end_of_track())];
    let bytes = smf(0, 0xE728, &[track]);
    let err = midi_file::parse(&bytes, "smpte.mid").unwrap_err();
    assert!(matches!(err.kind, MidiErrorKind::SmpteTiming), "{err}");
    assert!(err.to_string().contains("SMPTE"));
}

#[test]
fn format_2_is_refused_with_a_reason() {
    let track = vec![(0, note_on(9, 36, 100)), (100, end_of_track())];
    let bytes = smf(2, TPB, &[track.clone(), track]);
    let err = midi_file::parse(&bytes, "seq.mid").unwrap_err();
    assert!(matches!(err.kind, MidiErrorKind::Format2), "{err}");
}

#[test]
fn zero_ticks_per_beat_is_refused() {
    let track = vec![(0, note_on(9, 36, 100)), (100, end_of_track())];
    let err = midi_file::parse(&smf(0, 0, &[track]), "zero.mid").unwrap_err();
    assert!(matches!(err.kind, MidiErrorKind::ZeroTicksPerBeat), "{err}");
}

#[test]
fn a_100_million_tick_delta_is_refused_as_too_long_without_allocating_a_grid() {
    let track = vec![
        (0, note_on(9, 36, 100)),
        (100_000_000, note_on(9, 38, 100)),
        (0, end_of_track()),
    ];
    let err = midi_file::parse(&smf(0, TPB, &[track]), "long.mid").unwrap_err();
    match err.kind {
        MidiErrorKind::TooLong { bars } => assert!(bars > MAX_BARS, "{bars}"),
        other => panic!("expected TooLong, got {other}"),
    }
}

#[test]
fn maximal_deltas_summed_over_many_events_are_refused() {
    // 0x0FFFFFFF is the largest delta a file can hold; twenty of them overflow any grid.
    let track: Vec<(u32, Vec<u8>)> = (0..20).map(|_| (0x0FFF_FFFF, note_on(9, 36, 1))).collect();
    let err = midi_file::parse(&smf(0, 1, &[track]), "max.mid").unwrap_err();
    assert!(matches!(err.kind, MidiErrorKind::TooLong { .. }), "{err}");
}

#[test]
fn a_sysex_event_claiming_100_megabytes_is_a_malformed_error() {
    let mut event = vec![0xF0];
    event.extend(vlq(100 << 20));
    event.extend([1, 2, 3]);
    let bytes = smf(0, TPB, &[vec![(0, event)]]);
    match midi_file::parse(&bytes, "sysex.mid") {
        Err(err) => assert!(err.to_string().starts_with("sysex.mid: "), "{err}"),
        Ok(perf) => assert!(perf.onsets.is_empty()),
    }
}

#[test]
fn a_file_with_a_million_notes_loads() {
    // 16 notes per step (all mapped pitches cycle), 62,500 steps = 3,906 bars.
    let pitches: Vec<u8> = (0..=127)
        .filter(|&p| drumvae::Voice::from_pitch(p).is_some())
        .collect();
    let mut track = Vec::with_capacity(1_000_001);
    for i in 0..1_000_000u32 {
        let delta = if i % 16 == 0 && i > 0 { STEP } else { 0 };
        track.push((delta, note_on(9, pitches[i as usize % pitches.len()], 64)));
    }
    track.push((STEP, end_of_track()));
    let bytes = smf(0, TPB, &[track]);
    let perf = midi_file::parse(&bytes, "million.mid").unwrap();
    assert_eq!(perf.onsets.len(), 1_000_000);
    let grid = perf.quantize();
    assert_eq!(grid.bars, 62_500 / 16);
    assert_eq!(grid.window_count(), grid.bars - 3);
    assert!(grid.pattern_at(100).hit_count() > 0);
}

#[test]
fn smpte_frame_rate_byte_0x80_is_refused_not_overflowed() {
    // midly negates this byte as an i8 (-128): found by `mutated_valid_files_never_panic`.
    let track = vec![(0, note_on(9, 36, 100)), (100, end_of_track())];
    let err = midi_file::parse(&smf(0, 0x8028, &[track]), "fps.mid").unwrap_err();
    assert!(matches!(err.kind, MidiErrorKind::SmpteTiming), "{err}");
}

#[test]
fn a_second_header_chunk_with_frame_rate_0x80_is_refused_not_overflowed() {
    // Found by the fuzz target after ~2 million runs: midly reads an `MThd` chunk among the
    // tracks as a header and negates its frame-rate byte.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz_second_header.mid");
    let err = midi_file::read_file(&path).unwrap_err();
    assert!(matches!(err.kind, MidiErrorKind::Malformed(_)), "{err}");
    let mut bytes = valid_file();
    bytes.extend(b"MThd\0\0\0\x06\0\0\0\x01\x80\x28");
    assert!(midi_file::parse(&bytes, "two.mid").is_err());
}

/// A MIDI path from the editor or a session is untrusted: devices, pipes and folders are refused
/// without being opened (a FIFO would block `open` on the worker thread), and files over the size
/// cap before being read.
#[cfg(unix)]
#[test]
fn midi_paths_that_are_not_regular_files_or_too_large_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo::mkfifo(dir.path(), "pipe.mid");
    for path in [
        std::path::PathBuf::from("/dev/zero"),
        fifo,
        dir.path().to_path_buf(),
    ] {
        let err = midi_file::read_file(&path).unwrap_err();
        assert!(
            matches!(err.kind, MidiErrorKind::NotAFile),
            "{}: {err}",
            path.display()
        );
    }
    let huge = dir.path().join("huge.mid");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(midi_file::MAX_FILE_BYTES + 1)
        .unwrap();
    let err = midi_file::read_file(&huge).unwrap_err();
    assert!(matches!(err.kind, MidiErrorKind::TooLarge { .. }), "{err}");
}
