//! A plain folder of MIDI files as a dataset: recursive listing, by-file seeded split, broken
//! files skipped with their reason, and a cache that notices when a file changes.

use drumvae::dataset::{CacheUse, Dataset, Filter, Source};
use drumvae::groove::{Cell, Pattern, Voice};
use drumvae::midi_file::{self, WriteOptions};

fn groove(kicks: usize) -> Vec<u8> {
    let mut p = Pattern::EMPTY;
    for i in 0..kicks {
        p.set(i * 4, Voice::Kick, Cell::hit(0.8, 0.0));
    }
    midi_file::write_patterns(&[p, p], &WriteOptions::default())
}

fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
    std::fs::write(dir.path().join("a.mid"), groove(4)).unwrap();
    std::fs::write(dir.path().join("sub/b.MID"), groove(8)).unwrap();
    std::fs::write(dir.path().join("sub/deeper/c.midi"), groove(2)).unwrap();
    std::fs::write(dir.path().join("sub/broken.mid"), b"MThd\0\0").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not midi").unwrap();
    dir
}

#[test]
fn folder_is_listed_recursively_and_broken_files_are_skipped_with_reasons() {
    let dir = folder();
    let data = Dataset::load(
        &Source::folder(dir.path(), 3),
        &Filter::default(),
        |_, _| {},
    )
    .unwrap();
    let mut paths: Vec<&str> = data.files.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["a.mid", "sub/b.MID", "sub/deeper/c.midi"]);
    assert_eq!(data.report.skipped.len(), 1);
    let (file, reason) = &data.report.skipped[0];
    assert_eq!(file, "sub/broken.mid");
    assert!(
        reason.contains("not a valid Standard MIDI File"),
        "{reason}"
    );
    // 8 bars each -> 5 windows each.
    assert_eq!(data.windows.len(), 15);
}

#[test]
fn an_empty_folder_is_an_error_that_says_what_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::load(
        &Source::folder(dir.path(), 0),
        &Filter::default(),
        |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("no MIDI files found"), "{err}");
}

#[test]
fn stale_cache_is_detected_and_rebuilt_when_a_file_changes() {
    let dir = folder();
    let cache = tempfile::tempdir().unwrap();
    let source = Source::folder(dir.path(), 3);
    let load =
        || Dataset::load_cached(&source, &Filter::default(), cache.path(), |_, _| {}).unwrap();
    assert_eq!(load().1, CacheUse::Rebuilt);
    assert_eq!(load().1, CacheUse::Hit);
    std::fs::write(dir.path().join("a.mid"), groove(16)).unwrap();
    let (data, used) = load();
    assert_eq!(
        used,
        CacheUse::Rebuilt,
        "a changed file invalidates the cache"
    );
    let a = data.files.iter().position(|f| f.path == "a.mid").unwrap() as u32;
    let first = data.windows.iter().find(|w| w.file == a).unwrap();
    assert_eq!(first.pattern.hit_count(), 16);
    // A corrupt cache file is rebuilt, not trusted.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    assert_eq!(load().1, CacheUse::Rebuilt);
}
