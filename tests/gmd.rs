//! The real Groove MIDI Dataset at `../shared/data/groove` (or `$DRUMVAE_GMD`): every file loads or
//! is skipped for a stated reason, and the windows per split are what we measured and documented.

use drumvae::dataset::{self, BeatType, CacheUse, Dataset, Filter, Source, Split};

fn gmd() -> Source {
    Source::Gmd {
        root: dataset::default_gmd_root(),
    }
}

#[test]
fn every_gmd_file_loads_or_is_skipped_as_non_four_four() {
    let data = Dataset::load(&gmd(), &Filter::default(), |_, _| {}).expect("the GMD is readable");
    let report = &data.report;
    eprintln!("{report}");
    assert_eq!(report.files_listed, 1150);
    assert_eq!(data.files.len() + report.skipped.len(), 1150);
    assert_eq!(data.files.len(), 1138, "1,138 files are in 4/4");
    for (file, reason) in &report.skipped {
        assert!(reason.contains("only 4/4 is modelled"), "{file}: {reason}");
    }
    let files: Vec<usize> = Split::ALL
        .iter()
        .map(|s| report.files_per_split[s])
        .collect();
    assert_eq!(files, [887, 122, 129]);
    // Measured with this importer; the TFDS groove/4bar-midionly counts are 17,261 / 2,121 /
    // 2,033 because TFDS also cuts the 12 non-4/4 files (see the README's dataset section).
    let windows: Vec<usize> = Split::ALL
        .iter()
        .map(|s| report.windows_per_split[s])
        .collect();
    assert_eq!(windows, [16_682, 1_989, 2_034]);
    assert_eq!(data.windows.len(), windows.iter().sum::<usize>());
    // Every window came from a file of the split it is counted in, and every file has a style.
    for split in Split::ALL {
        assert_eq!(data.split(split).count(), report.windows_per_split[&split]);
    }
    assert!(
        data.files
            .iter()
            .all(|f| f.style.is_some() && f.bpm.is_some())
    );
    // The TD-11 map covers the whole kit: no GMD note is dropped.
    assert!(
        report.dropped_pitches.is_empty(),
        "{:?}",
        report.dropped_pitches
    );
}

#[test]
fn window_tempo_matches_the_info_csv_tempo() {
    let filter = Filter {
        splits: vec![Split::Validation],
        beat_type: None,
    };
    let data = Dataset::load(&gmd(), &filter, |_, _| {}).unwrap();
    for w in &data.windows {
        let listed = data.file_of(w).bpm.unwrap();
        assert!((w.bpm as f64 - listed).abs() < 1.0, "{} vs {listed}", w.bpm);
    }
}

#[test]
fn filters_select_split_and_beat_type() {
    let filter = Filter {
        splits: vec![Split::Test],
        beat_type: Some(BeatType::Fill),
    };
    let data = Dataset::load(&gmd(), &filter, |_, _| {}).unwrap();
    assert!(!data.files.is_empty());
    assert!(
        data.files
            .iter()
            .all(|f| f.split == Split::Test && f.beat_type == Some(BeatType::Fill))
    );
}

#[test]
fn cache_is_reused_and_gives_the_same_windows() {
    let dir = tempfile::tempdir().unwrap();
    let filter = Filter {
        splits: vec![Split::Validation],
        beat_type: None,
    };
    let (first, used) = Dataset::load_cached(&gmd(), &filter, dir.path(), |_, _| {}).unwrap();
    assert_eq!(used, CacheUse::Rebuilt);
    let (second, used) = Dataset::load_cached(&gmd(), &filter, dir.path(), |_, _| {}).unwrap();
    assert_eq!(used, CacheUse::Hit);
    assert_eq!(first.windows, second.windows);
    assert_eq!(first.files, second.files);
    assert_eq!(first.report, second.report);
}
