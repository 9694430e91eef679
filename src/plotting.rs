//! Shared plot set-up: plotters draws text with ab_glyph (pure Rust), which has no system fonts to
//! fall back on, so the one family every caption and label asks for (`sans-serif`) is registered
//! from a font compiled into the binary (epaint_default_fonts' Hack). Used by the training curves
//! and the evaluation report, on whichever thread draws.

use std::path::Path;

use plotters::chart::{ChartBuilder, ChartContext, SeriesLabelPosition};
use plotters::coord::{CoordTranslate, Shift};
use plotters::drawing::DrawingArea;
use plotters::prelude::{BLACK, Color, DrawingBackend, WHITE};
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
/// half an image: [`crate::atomic_file::write_with`], whose temporary file keeps the extension the
/// bitmap backend picks the format from.
pub fn write_atomically(
    path: &Path,
    draw: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    register_fonts()?;
    crate::atomic_file::write_with(path, |_, tmp| draw(tmp).map_err(std::io::Error::other))
        .map_err(|e| e.to_string())
}

/// A chart on `area` with the project's look: a 20 px caption and room for axis labels.
pub fn chart_on<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60);
    builder
}

/// Draws the labelled series' legend at `position`, on a light box.
pub fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}
