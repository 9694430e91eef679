//! Shared plot set-up: plotters draws text with ab_glyph (pure Rust), which has no system fonts to
//! fall back on, so the one family every caption and label asks for (`sans-serif`) is registered
//! from a font compiled into the binary (epaint_default_fonts' Hack). Used by the training curves
//! and the evaluation report, on whichever thread draws.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use plotters::style::FontStyle;

/// Registers the compiled-in font as `sans-serif`, once per process. Call before drawing text.
pub fn register_fonts() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(
                "sans-serif",
                FontStyle::Normal,
                epaint_default_fonts::HACK_REGULAR,
            )
            .map_err(|_| "the compiled-in plot font does not parse".to_string())
        })
        .clone()
}

/// Draws an image with `draw(temporary path)` and renames it over `path`, so a reader never sees
/// half an image. The temporary file sits beside `path` (same file system), keeps its extension
/// (the bitmap backend picks the format from it) and carries the process id and a per-process
/// counter, so two plots drawn at once never share one.
pub fn write_atomically(
    path: &Path,
    draw: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{}-{n}.tmp.{name}", std::process::id()));
    register_fonts()?;
    let result = draw(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
