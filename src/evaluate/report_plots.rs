//! The model report's two pictures, for people who would rather look than read tables:
//! `samples.png` (per-voice hit density, velocity and timing distributions of prior samples at
//! each temperature beside the data) and `interpolation.png` (distance to each end and busyness
//! along the morph path). Drawn with plotters on the CLI's thread.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::interpolation::InterpolationReport;
use super::samples::{BINS, PatternStats};
use crate::groove::{VOICES, Voice};
use crate::plotting::{chart_on, draw_legend, write_atomically};

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Colours: the data first (black), then one per temperature.
const PALETTE: [RGBColor; 5] = [
    BLACK,
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `samples.png`: three panels, 1500 x 500.
pub fn samples_png(
    path: &Path,
    data_label: &str,
    data: &PatternStats,
    priors: &[(f32, PatternStats)],
) -> Result<(), String> {
    write_atomically(path, |tmp| {
        let root = BitMapBackend::new(tmp, (1500, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((1, 3));
        let mut sets: Vec<(String, &PatternStats)> = vec![(data_label.to_string(), data)];
        for (t, s) in priors {
            sets.push((format!("prior T={t}"), s));
        }
        density_panel(&panels[0], &sets)?;
        histogram_panel(
            &panels[1],
            "Velocity of hits",
            "MIDI velocity",
            (0.0, 127.0),
            &sets,
            |s| s.velocity_histogram,
        )?;
        histogram_panel(
            &panels[2],
            "Timing of hits",
            "offset (16th steps, + = late)",
            (-0.5, 0.5),
            &sets,
            |s| s.offset_histogram,
        )?;
        root.present().map_err(err)
    })
}

fn density_panel(area: &Area<'_>, sets: &[(String, &PatternStats)]) -> Result<(), String> {
    let top = sets
        .iter()
        .flat_map(|(_, s)| s.density)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let mut chart = chart_on(area, "Hits per step, by voice")
        .build_cartesian_2d(-0.5..VOICES as f64 - 0.5, 0.0..top)
        .map_err(err)?;
    // Voice v's bars are centred on x = v, where the mesh puts its labels.
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(VOICES)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && (0.0..VOICES as f64).contains(&i) {
                Voice::ALL[i as usize].short().trim().to_string()
            } else {
                String::new()
            }
        })
        .y_desc("hits per step")
        .draw()
        .map_err(err)?;
    let width = 0.8 / sets.len() as f64;
    for (k, (label, stats)) in sets.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        chart
            .draw_series((0..VOICES).map(|v| {
                let x0 = v as f64 - 0.4 + k as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, stats.density[v])], colour.filled())
            }))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}

fn histogram_panel(
    area: &Area<'_>,
    title: &str,
    x_desc: &str,
    (low, high): (f64, f64),
    sets: &[(String, &PatternStats)],
    histogram: impl Fn(&PatternStats) -> [f64; BINS],
) -> Result<(), String> {
    let top = sets
        .iter()
        .flat_map(|(_, s)| histogram(s))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let mut chart = chart_on(area, title)
        .build_cartesian_2d(low..high, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("share of hits")
        .draw()
        .map_err(err)?;
    let step = (high - low) / BINS as f64;
    for (k, (label, stats)) in sets.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let h = histogram(stats);
        let points = (0..BINS).map(move |i| (low + (i as f64 + 0.5) * step, h[i]));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// `interpolation.png`: distance to each end (left) and hits per pattern with the data's mean
/// and one standard deviation (right) along the path, 1200 x 500.
pub fn interpolation_png(path: &Path, report: &InterpolationReport) -> Result<(), String> {
    write_atomically(path, |tmp| {
        let root = BitMapBackend::new(tmp, (1200, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((1, 2));
        let t = |i: usize| i as f64 / (report.points.max(2) - 1) as f64;
        let top = report
            .distance_to_a
            .iter()
            .chain(&report.distance_to_b)
            .fold(1.0f64, |m, &d| m.max(d))
            * 1.1;
        let title = format!(
            "Distance to each end ({} pairs, {:.0} % monotone)",
            report.pairs,
            100.0 * report.monotone_fraction
        );
        let mut chart = chart_on(&panels[0], &title)
            .build_cartesian_2d(0.0..1.0, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("position on the path (A = 0, B = 1)")
            .y_desc("cells that differ in hit")
            .draw()
            .map_err(err)?;
        for (label, values, colour) in [
            ("to A", &report.distance_to_a, PALETTE[1]),
            ("to B", &report.distance_to_b, PALETTE[2]),
        ] {
            chart
                .draw_series(LineSeries::new(
                    values.iter().enumerate().map(|(i, &d)| (t(i), d)),
                    colour.stroke_width(2),
                ))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;

        let (mean, std) = (report.data_hits_mean, report.data_hits_std);
        let top = report.hits.iter().fold(mean + 2.0 * std, |m, &h| m.max(h)) * 1.1;
        let mut chart = chart_on(&panels[1], "Hits per 4-bar pattern along the path")
            .build_cartesian_2d(0.0..1.0, 0.0..top.max(1.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("position on the path (A = 0, B = 1)")
            .y_desc("hits")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, (mean - std).max(0.0)), (1.0, mean + std)],
                BLACK.mix(0.1).filled(),
            )))
            .map_err(err)?
            .label("real grooves: mean ± 1 sd")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], BLACK.mix(0.2).filled())
            });
        chart
            .draw_series(LineSeries::new(
                report.hits.iter().enumerate().map(|(i, &h)| (t(i), h)),
                PALETTE[3].stroke_width(2),
            ))
            .map_err(err)?
            .label("decoded along the path")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[3].stroke_width(2))
            });
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root.present().map_err(err)
    })
}
