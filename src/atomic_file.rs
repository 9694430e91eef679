//! Atomic file writes (temporary file in the same folder + rename), so that a crash or Ctrl-C never
//! leaves half a model, checkpoint, cache or MIDI file where a whole one was expected.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a mix.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |file, _| file.write_all(bytes))
}

/// Fills a new file for `path` with `fill(open file, its path)` and renames it over `path`, so
/// readers see the old file or the new one, never a mix. The temporary file is created first,
/// exclusively, beside `path`; `fill` may write through the handle or reopen the path (the plot
/// backend writes by path and picks the format from the extension, which the temporary name
/// keeps). It is synced before the rename and removed if anything fails.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File, &Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let (tmp, mut file) = create_temp(path)?;
    let result = (|| {
        fill(&mut file, &tmp)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Numbers the temporary files of this process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary name of attempt `n` for `path`: `dir/.PID-N.tmp.name`, beside the target (so
/// the rename never crosses file systems), hidden, and ending in the target's own extension.
fn temp_name(path: &Path, n: u64) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{}-{n}.tmp.{name}", std::process::id()))
}

/// Creates the next temporary file for `path` exclusively: two writers in one process (plugin
/// instances in one host) or in two never share a temporary file, and a symlink planted at that
/// name is refused rather than followed.
fn create_temp(path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    loop {
        let tmp = temp_name(path, COUNTER.fetch_add(1, Ordering::Relaxed));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        super::write(&path, b"old").unwrap();
        super::write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn concurrent_writers_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.bin");
        std::thread::scope(|s| {
            for k in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        super::write(path, &[k; 4096]).unwrap();
                    }
                });
            }
        });
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert!(
            bytes.iter().all(|&b| b == bytes[0]),
            "one writer's bytes, not a mix"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_a_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("a.bin");
        // Plant links at the next few temporary names this process could pick.
        let next = super::COUNTER.load(super::Ordering::Relaxed);
        for n in next..next + 16 {
            std::os::unix::fs::symlink(&victim, super::temp_name(&path, n)).unwrap();
        }
        super::write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
