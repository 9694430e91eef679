//! A named pipe for the tests that feed hostile paths: opening one for reading blocks until a
//! writer comes, which is what the code under test must never do.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Creates a FIFO named `name` in `dir` (with the system's `mkfifo`) and returns its path.
pub fn mkfifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
    path
}
