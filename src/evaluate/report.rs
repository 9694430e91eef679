//! `drumvae report`: what the model sounds like, in numbers. Prior samples at each temperature
//! against real grooves ([`super::samples`]) and the morph check ([`super::interpolation`]),
//! gathered in one serialisable report whose `Display` is the table the CLI prints. Runs on the
//! CLI's thread.

use std::fmt;

use candle_core::Result;
use serde::{Deserialize, Serialize};

use super::interpolation::{InterpolationReport, interpolation};
use super::samples::{PatternStats, prior_patterns};
use crate::groove::{Pattern, Voice};
use crate::model::Vae;

/// What to measure.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Prior samples per temperature.
    pub samples: usize,
    /// Sampling temperatures (0 = threshold at 0.5, the plugin's default).
    pub temperatures: Vec<f32>,
    /// Pairs of real grooves for the interpolation check, and points per path.
    pub pairs: usize,
    pub points: usize,
    pub seed: u64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            samples: 1000,
            temperatures: vec![0.0, 0.5, 1.0],
            pairs: 100,
            points: 9,
            seed: 0,
        }
    }
}

/// Prior samples against data, and the interpolation check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// What the grooves are (e.g. "GMD test split").
    pub data_label: String,
    pub data: PatternStats,
    /// One entry per temperature.
    pub priors: Vec<(f32, PatternStats)>,
    pub interpolation: InterpolationReport,
}

impl ModelReport {
    /// The largest |density error| over the voices that make up at least 1 % of the data's hits
    /// (rarer voices, like crashes, swing wildly on a few hits), per temperature.
    pub fn worst_density_error(&self) -> Vec<(f32, f64)> {
        let total: f64 = self.data.density.iter().sum();
        self.priors
            .iter()
            .map(|(t, s)| {
                let worst = s
                    .density_error(&self.data)
                    .iter()
                    .enumerate()
                    .filter(|(v, _)| self.data.density[*v] >= 0.01 * total)
                    .filter_map(|(_, e)| e.map(f64::abs))
                    .fold(0.0, f64::max);
                (*t, worst)
            })
            .collect()
    }
}

/// Measures `vae` against `grooves`.
pub fn model_report(
    vae: &Vae,
    data_label: &str,
    grooves: &[Pattern],
    options: &ReportOptions,
    mut progress: impl FnMut(&str),
) -> Result<ModelReport> {
    let mut priors = Vec::new();
    for &t in &options.temperatures {
        progress(&format!("{} prior samples at T = {t}", options.samples));
        let patterns = prior_patterns(vae, options.samples, t, options.seed, 256)?;
        priors.push((t, PatternStats::of(&patterns)));
    }
    progress(&format!(
        "interpolation: {} pairs x {} points",
        options.pairs, options.points
    ));
    let interpolation = interpolation(vae, grooves, options.pairs, options.points, options.seed)?;
    Ok(ModelReport {
        data_label: data_label.to_string(),
        data: PatternStats::of(grooves),
        priors,
        interpolation,
    })
}

impl fmt::Display for ModelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct =
            |e: Option<f64>| e.map_or("    -".to_string(), |e| format!("{:+5.0}%", 100.0 * e));
        write!(f, "hits per step    {:>8}", "data")?;
        for (t, _) in &self.priors {
            write!(f, "  {:>14}", format!("prior T={t}"))?;
        }
        writeln!(f)?;
        for v in Voice::ALL {
            write!(
                f,
                "  {:<13} {:>8.4}",
                v.name(),
                self.data.density[v.index()]
            )?;
            for (_, s) in &self.priors {
                let e = s.density_error(&self.data)[v.index()];
                write!(f, "  {:>7.4} {}", s.density[v.index()], pct(e))?;
            }
            writeln!(f)?;
        }
        write!(f, "  {:<13} {:>8}", "worst (>=1%)", "")?;
        for (_, worst) in self.worst_density_error() {
            write!(f, "  {:>14}", format!("{:.0}%", 100.0 * worst))?;
        }
        writeln!(f)?;
        let dist = |s: &PatternStats| {
            format!(
                "vel {:.0}±{:.0}, off {:+.3}±{:.3}",
                s.velocity_mean_midi, s.velocity_std_midi, s.offset_mean_steps, s.offset_std_steps
            )
        };
        writeln!(f, "hit velocity (MIDI) and offset (steps), mean ± sd:")?;
        writeln!(f, "  {:<14} {}", self.data_label, dist(&self.data))?;
        for (t, s) in &self.priors {
            writeln!(f, "  {:<14} {}", format!("prior T={t}"), dist(s))?;
        }
        let i = &self.interpolation;
        writeln!(
            f,
            "interpolation ({} pairs x {} slerp points, T=0): {:.0}% of paths monotone",
            i.pairs,
            i.points,
            100.0 * i.monotone_fraction
        )?;
        let row = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:5.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(f, "  distance to A   {}", row(&i.distance_to_a))?;
        writeln!(f, "  distance to B   {}", row(&i.distance_to_b))?;
        writeln!(f, "  hits            {}", row(&i.hits))?;
        writeln!(
            f,
            "  real grooves: {:.1} ± {:.1} hits per 4 bars",
            i.data_hits_mean, i.data_hits_std
        )
    }
}
