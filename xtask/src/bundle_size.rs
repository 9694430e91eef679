//! The size of the bundles users download: printed after every bundle, and an error above
//! [`LIMIT_BYTES`], so that debug info or a grown model cannot creep into a release unnoticed.

use std::path::{Path, PathBuf};

/// 25 MB: the plugin with its embedded model, without debug info, is well under it.
pub const LIMIT_BYTES: u64 = 25_000_000;

fn bundled_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("bundled")
}

/// nice-plug's bundler also wraps a binary named after the package as a "standalone" app
/// (`target/bundled/DrumVAE`, `DrumVAE.app` on macOS). Ours is the `drumvae` CLI, left by any
/// earlier `cargo run --release --bin drumvae`, not the plugin's standalone build
/// (`drumvae-standalone`), so that bundle is removed rather than shipped under the plugin's name.
pub fn drop_cli_bundle(root: &Path) -> Result<(), String> {
    let dir = bundled_dir(root);
    for name in ["DrumVAE", "DrumVAE.app"] {
        let path = dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => eprintln!("removed {} (the drumvae CLI, not a plugin)", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
        }
    }
    Ok(())
}

/// Total size of the regular files under `path` (a file or a bundle folder).
fn size_of(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut total = 0;
        for entry in std::fs::read_dir(path)? {
            total += size_of(&entry?.path())?;
        }
        Ok(total)
    } else if meta.is_file() {
        Ok(meta.len())
    } else {
        Ok(0)
    }
}

/// Prints the size of every bundle in `target/bundled` and fails if one is over the limit.
/// Universal macOS bundles hold two architectures, so they get twice the limit.
pub fn report(root: &Path, universal: bool) -> Result<(), String> {
    let dir = bundled_dir(root);
    let limit = if universal {
        2 * LIMIT_BYTES
    } else {
        LIMIT_BYTES
    };
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut too_big = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let size = size_of(&path).map_err(|e| format!("cannot measure {}: {e}", path.display()))?;
        println!("{:>8.1} MB  {}", size as f64 / 1e6, path.display());
        if size > limit {
            too_big.push(path.display().to_string());
        }
    }
    if too_big.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "over the {:.0} MB bundle limit: {} (debug info left in, or a model stored in f32 that should be f16?)",
            limit as f64 / 1e6,
            too_big.join(", ")
        ))
    }
}
