//! The training curves as an 800x600 PNG: training vs validation loss by epoch (top) and the KL
//! term by epoch (bottom), from the metrics log's epoch rows. Drawn with plotters' bitmap backend
//! and pure-Rust text (ab_glyph) in a font compiled into the binary, so plotting needs no system
//! font libraries. It runs on the training CLI's thread.

use std::path::Path;

use plotters::prelude::*;

use super::metrics::{MetricsRow, RowKind};

/// Why the plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot plot {path}: {problem}")]
pub struct PlotError {
    path: String,
    problem: String,
}

/// Width and height of the image.
pub const SIZE: (u32, u32) = (800, 600);

/// Draws the epoch rows of `rows` into `path` (PNG). The image is drawn to a temporary file beside
/// `path` and renamed over it, so a reader never sees half an image.
pub fn plot(path: &Path, rows: &[MetricsRow]) -> Result<(), PlotError> {
    let fail = |problem: String| PlotError {
        path: path.display().to_string(),
        problem,
    };
    crate::plotting::write_atomically(path, |tmp| draw(tmp, rows)).map_err(fail)
}

/// One curve: legend label, colour, (epoch, value) points.
type Curve<'a> = (&'a str, RGBColor, Vec<(u64, f64)>);

fn draw(path: &Path, rows: &[MetricsRow]) -> Result<(), String> {
    let epochs: Vec<&MetricsRow> = rows.iter().filter(|r| r.kind == RowKind::Epoch).collect();
    // x = epochs completed (1-based), so the first epoch is drawn at 1.
    let series = |f: &dyn Fn(&MetricsRow) -> Option<f64>| -> Vec<(u64, f64)> {
        epochs
            .iter()
            .filter_map(|r| f(r).filter(|y| y.is_finite()).map(|y| (r.epoch + 1, y)))
            .collect()
    };
    let train = series(&|r| Some(r.train.total));
    let val = series(&|r| r.val.map(|v| v.total));
    let train_kl = series(&|r| Some(r.train.kl));
    let val_kl = series(&|r| r.val.map(|v| v.kl));

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);
    panel(
        &top,
        "Loss",
        "loss",
        &[("train", BLUE, train), ("validation", RED, val)],
    )?;
    panel(
        &bottom,
        "KL divergence",
        "KL (nats)",
        &[("train", BLUE, train_kl), ("validation", RED, val_kl)],
    )?;
    root.present().map_err(|e| e.to_string())
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    curves: &[Curve<'_>],
) -> Result<(), String> {
    let points = curves.iter().flat_map(|c| c.2.iter());
    let (mut x_max, mut y_min, mut y_max) = (1u64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if y_min > y_max {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(y_max.abs() * 1e-3).max(1e-9);
    let mut chart = crate::plotting::chart_on(area, title)
        .build_cartesian_2d(1..x_max.max(2), (y_min - pad)..(y_max + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .draw()
        .map_err(|e| e.to_string())?;
    for (label, colour, points) in curves {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| e.to_string())?;
    }
    crate::plotting::draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::metrics::tests::sample_rows;

    #[test]
    fn plotting_writes_a_non_empty_png() {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = sample_rows();
        for epoch in 1..6 {
            let mut r = rows[1];
            r.epoch = epoch;
            r.train.total = 50.0 / (epoch as f64 + 1.0);
            r.val = r.val.map(|mut v| {
                v.total = 55.0 / (epoch as f64 + 1.0);
                v
            });
            rows.push(r);
        }
        let path = dir.path().join("curves.png");
        plot(&path, &rows).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 1000, "PNG of {} bytes", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary left behind"
        );
        // No rows at all still gives an (empty) plot rather than an error.
        plot(&dir.path().join("empty.png"), &[]).unwrap();
    }
}
