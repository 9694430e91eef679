//! Model evaluation on a set of windows: hit precision/recall/F1 and step accuracy (teacher-forced
//! and sampled), velocity and micro-timing errors on true hits (in steps and milliseconds), KL and
//! active latent units, and per-voice density of prior samples against the data. Runs on the CLI's
//! thread (`drumvae evaluate`, and `train` at the end of a run).

pub mod interpolation;
pub mod report;
pub mod report_plots;
pub mod samples;

use std::fmt;

use candle_core::{D, DType, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::dataset::Window;
use crate::groove::{Pattern, STEPS, STEPS_PER_BEAT, VOICES, Voice};
use crate::latent;
use crate::model::decoder::DecodeOptions;
use crate::model::{Vae, patterns_to_tensor};

/// A latent dimension is "active" when the variance of its posterior mean across the data exceeds
/// this (Burda et al., 2016): below it the dimension carries no information about the input.
pub const ACTIVE_UNIT_THRESHOLD: f64 = 0.01;

/// What to evaluate and how.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Windows per forward pass.
    pub batch_size: usize,
    /// Patterns drawn from the prior N(0, I) for the density comparison.
    pub prior_samples: usize,
    /// Seed of the prior samples and their hit draws.
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            batch_size: 256,
            prior_samples: 256,
            seed: 0,
        }
    }
}

/// Hit, velocity and timing accuracy of predicted patterns against the data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Predicted hits that are real.
    pub hit_precision: f64,
    /// Real hits that were predicted.
    pub hit_recall: f64,
    /// Harmonic mean of the two.
    pub hit_f1: f64,
    /// Cells (step x voice) whose hit/rest is right.
    pub cell_accuracy: f64,
    /// Steps where all nine voices are right.
    pub step_accuracy: f64,
    /// Mean |velocity error| on every true hit (predicted or not: a missed hit counts with the
    /// velocity the model put there), in MIDI velocity / 127.
    pub velocity_mae: f64,
    /// Mean |offset error| on every true hit, in steps.
    pub offset_mae_steps: f64,
    /// The same in milliseconds at each window's tempo.
    pub offset_mae_ms: f64,
    /// Cells where both the truth and the prediction hit: what a listener compares velocity and
    /// timing on.
    #[serde(default)]
    pub matched_hits: u64,
    /// Mean |velocity error| on matched hits, in MIDI velocity units (0-127).
    #[serde(default)]
    pub matched_velocity_mae_midi: f64,
    /// Mean |offset error| on matched hits, in milliseconds at each window's tempo.
    #[serde(default)]
    pub matched_offset_mae_ms: f64,
}

/// Everything `drumvae evaluate` reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub windows: usize,
    /// Decoding from z = mu with the true previous step as input.
    pub teacher_forced: Scores,
    /// Decoding from z = mu autoregressively (temperature 0): what a user hears for an encoded file.
    pub sampled: Scores,
    /// Mean KL(q(z|x) || N(0, I)) per window, in nats.
    pub kl_nats: f64,
    /// Latent dimensions whose posterior mean varies across the data.
    pub active_units: usize,
    pub latent_size: usize,
    /// Hits per step, per voice, in the data.
    pub density_data: [f64; VOICES],
    /// Hits per step, per voice, in patterns decoded from prior samples at temperature 1.
    pub density_prior: [f64; VOICES],
}

#[derive(Default)]
struct Tally {
    tp: u64,
    fp: u64,
    fn_: u64,
    cells_right: u64,
    cells: u64,
    steps_right: u64,
    steps: u64,
    velocity_error: f64,
    offset_error: f64,
    offset_error_ms: f64,
    true_hits: u64,
    matched_velocity_error: f64,
    matched_offset_error_ms: f64,
}

impl Tally {
    /// Scores one window. `hit`, `velocity`, `offset` are the prediction at (step, voice).
    fn add(
        &mut self,
        truth: &Pattern,
        bpm: f32,
        hit: impl Fn(usize, usize) -> bool,
        velocity: impl Fn(usize, usize) -> f32,
        offset: impl Fn(usize, usize) -> f32,
    ) {
        let ms_per_step = 60_000.0 / (bpm.max(1.0) as f64 * STEPS_PER_BEAT as f64);
        for step in 0..STEPS {
            let mut all_right = true;
            for v in 0..VOICES {
                let t = truth.cells[step][v];
                let p = hit(step, v);
                match (t.hit, p) {
                    (true, true) => self.tp += 1,
                    (false, true) => self.fp += 1,
                    (true, false) => self.fn_ += 1,
                    (false, false) => {}
                }
                all_right &= t.hit == p;
                self.cells_right += (t.hit == p) as u64;
                if t.hit {
                    self.true_hits += 1;
                    let ev = (velocity(step, v) - t.velocity).abs() as f64;
                    let e = (offset(step, v) - t.offset).abs() as f64;
                    self.velocity_error += ev;
                    self.offset_error += e;
                    self.offset_error_ms += e * ms_per_step;
                    if p {
                        self.matched_velocity_error += ev;
                        self.matched_offset_error_ms += e * ms_per_step;
                    }
                }
            }
            self.cells += VOICES as u64;
            self.steps += 1;
            self.steps_right += all_right as u64;
        }
    }

    fn scores(&self) -> Scores {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(self.tp, self.tp + self.fp);
        let recall = ratio(self.tp, self.tp + self.fn_);
        let hits = self.true_hits.max(1) as f64;
        Scores {
            hit_precision: precision,
            hit_recall: recall,
            hit_f1: if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            },
            cell_accuracy: ratio(self.cells_right, self.cells),
            step_accuracy: ratio(self.steps_right, self.steps),
            velocity_mae: self.velocity_error / hits,
            offset_mae_steps: self.offset_error / hits,
            offset_mae_ms: self.offset_error_ms / hits,
            matched_hits: self.tp,
            matched_velocity_mae_midi: 127.0 * self.matched_velocity_error / self.tp.max(1) as f64,
            matched_offset_mae_ms: self.matched_offset_error_ms / self.tp.max(1) as f64,
        }
    }
}

/// Evaluates `vae` on `windows`. `progress(done, total)` is called after each batch.
pub fn evaluate(
    vae: &Vae,
    windows: &[Window],
    options: &EvalOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Evaluation> {
    let model = vae.detach();
    let latent_size = model.config.latent;
    let mut teacher = Tally::default();
    let mut sampled = Tally::default();
    let mut kl_sum = 0.0f64;
    let mut mu_sum = vec![0.0f64; latent_size];
    let mut mu_sq = vec![0.0f64; latent_size];
    let mut data_hits = [0u64; VOICES];
    for (done, chunk) in windows.chunks(options.batch_size.max(1)).enumerate() {
        let patterns: Vec<Pattern> = chunk.iter().map(|w| w.pattern).collect();
        let x = patterns_to_tensor(&patterns, model.device())?;
        let (mu, sigma) = model.encoder.forward(&x)?;
        let kl = (((mu.sqr()? + sigma.sqr()?)? - 1.0)? - (sigma.log()? * 2.0)?)?
            .sum(D::Minus1)?
            .affine(0.5, 0.0)?;
        kl_sum += kl.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        for row in mu.to_dtype(DType::F64)?.to_vec2::<f64>()? {
            for (d, m) in row.into_iter().enumerate() {
                mu_sum[d] += m;
                mu_sq[d] += m * m;
            }
        }

        let out = model.decoder.teacher_forced(&mu, &x)?;
        let flat = |t: &Tensor| -> Result<Vec<f32>> { t.flatten_all()?.to_vec1::<f32>() };
        let (logits, velocity, offset) = (
            flat(&out.hit_logits)?,
            flat(&out.velocity)?,
            flat(&out.offset)?,
        );
        let decoded = model.decode(&mu, &DecodeOptions::default())?;
        for (i, w) in chunk.iter().enumerate() {
            let at = |s: usize, v: usize| (i * STEPS + s) * VOICES + v;
            teacher.add(
                &w.pattern,
                w.bpm,
                |s, v| logits[at(s, v)] > 0.0,
                |s, v| velocity[at(s, v)],
                |s, v| offset[at(s, v)],
            );
            let d = &decoded[i];
            sampled.add(
                &w.pattern,
                w.bpm,
                |s, v| d.cells[s][v].hit,
                |s, v| d.cells[s][v].velocity,
                |s, v| d.cells[s][v].offset,
            );
            for (v, n) in w.pattern.hits_per_voice().into_iter().enumerate() {
                data_hits[v] += n as u64;
            }
        }
        progress(
            (done * options.batch_size + chunk.len()).min(windows.len()),
            windows.len(),
        );
    }
    let n = windows.len().max(1) as f64;
    let active_units = (0..latent_size)
        .filter(|&d| mu_sq[d] / n - (mu_sum[d] / n).powi(2) > ACTIVE_UNIT_THRESHOLD)
        .count();
    let density_prior = prior_density(&model, options)?;
    let mut density_data = [0.0; VOICES];
    for v in 0..VOICES {
        density_data[v] = data_hits[v] as f64 / (n * STEPS as f64);
    }
    Ok(Evaluation {
        windows: windows.len(),
        teacher_forced: teacher.scores(),
        sampled: sampled.scores(),
        kl_nats: kl_sum / n,
        active_units,
        latent_size,
        density_data,
        density_prior,
    })
}

/// Hits per step per voice of `prior_samples` patterns decoded from seeded N(0, I) draws.
fn prior_density(model: &Vae, options: &EvalOptions) -> Result<[f64; VOICES]> {
    let patterns = samples::prior_patterns(
        model,
        options.prior_samples,
        1.0,
        options.seed,
        options.batch_size,
    )?;
    Ok(samples::PatternStats::of(&patterns).density)
}

impl fmt::Display for Scores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hit P {:.3} R {:.3} F1 {:.3} | cell acc {:.4} | step acc {:.3} | matched hits: velocity MAE {:.1} MIDI, offset MAE {:.1} ms | all true hits: velocity MAE {:.3} ({:.1} MIDI), offset MAE {:.3} steps ({:.1} ms)",
            self.hit_precision,
            self.hit_recall,
            self.hit_f1,
            self.cell_accuracy,
            self.step_accuracy,
            self.matched_velocity_mae_midi,
            self.matched_offset_mae_ms,
            self.velocity_mae,
            127.0 * self.velocity_mae,
            self.offset_mae_steps,
            self.offset_mae_ms
        )
    }
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "windows: {}", self.windows)?;
        writeln!(f, "teacher-forced: {}", self.teacher_forced)?;
        writeln!(f, "sampled (T=0):  {}", self.sampled)?;
        writeln!(
            f,
            "KL {:.2} nats/window, active latent units {}/{}",
            self.kl_nats, self.active_units, self.latent_size
        )?;
        writeln!(f, "hits per step    data   prior")?;
        for v in Voice::ALL {
            writeln!(
                f,
                "  {:<13} {:.4}  {:.4}",
                v.name(),
                self.density_data[v.index()],
                self.density_prior[v.index()]
            )?;
        }
        Ok(())
    }
}

/// Named points in latent space for the plugin's presets: for each GMD genre (the part of the
/// `style` label before the slash, e.g. `rock`, `funk`, `jazz`), the posterior mean of one real
/// validation window of that genre, the medoid: among the genre's windows with at least the
/// genre's median number of hits, the one whose code is nearest the genre's mean code.
///
/// Why not the mean code itself (as before): averaging many codes shrinks them toward the origin
/// and blurs them, and the decoder, thresholding at 0.5, turned the mean of the jazz windows into
/// silence and the mean rock groove into hi-hats on the backbeat only. A medoid is a groove a
/// drummer actually played in that style, so it decodes to something recognisable, while still
/// sitting at the centre of the style. Uses the validation split so anchors reflect held-out
/// playing.
pub fn style_anchors(
    vae: &Vae,
    data: &crate::dataset::Dataset,
) -> Result<std::collections::BTreeMap<String, Vec<f32>>> {
    let mut by_genre: std::collections::BTreeMap<String, Vec<Pattern>> = Default::default();
    for w in data.split(crate::dataset::Split::Validation) {
        if let Some(genre) = data.file_of(w).genre() {
            by_genre
                .entry(genre.to_string())
                .or_default()
                .push(w.pattern);
        }
    }
    let mut anchors = std::collections::BTreeMap::new();
    for (genre, patterns) in by_genre {
        let mut mus = Vec::new();
        for chunk in patterns.chunks(256) {
            mus.extend(vae.encode(chunk)?.to_vec2::<f32>()?);
        }
        anchors.insert(genre, medoid(&patterns, &mus));
    }
    Ok(anchors)
}

/// The code of the pattern nearest the mean code among the patterns with at least the median
/// number of hits (see [`style_anchors`]).
fn medoid(patterns: &[Pattern], codes: &[Vec<f32>]) -> Vec<f32> {
    let mut counts: Vec<usize> = patterns.iter().map(Pattern::hit_count).collect();
    counts.sort_unstable();
    let median = counts.get(counts.len() / 2).copied().unwrap_or(0);
    let centre = latent::mean(codes);
    let distance =
        |z: &[f32]| -> f32 { z.iter().zip(&centre).map(|(a, b)| (a - b) * (a - b)).sum() };
    patterns
        .iter()
        .zip(codes)
        .filter(|(p, _)| p.hit_count() >= median)
        .map(|(_, z)| z)
        .min_by(|a, b| distance(a).total_cmp(&distance(b)))
        .cloned()
        .unwrap_or(centre)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groove::Cell;

    /// Two true hits, one predicted: the matched figures see only the predicted one, the
    /// all-true-hits figures both (the missed one with whatever the heads put there).
    #[test]
    fn matched_hit_errors_count_only_hits_both_sides_played() {
        let mut truth = Pattern::default();
        truth.cells[0][0] = Cell {
            hit: true,
            velocity: 100.0 / 127.0,
            offset: 0.1,
        };
        truth.cells[4][1] = Cell {
            hit: true,
            velocity: 0.5,
            offset: 0.0,
        };
        let mut tally = Tally::default();
        // 120 BPM: a 16th is 125 ms.
        tally.add(
            &truth,
            120.0,
            |s, v| (s, v) == (0, 0),
            |s, _| if s == 0 { 90.0 / 127.0 } else { 0.0 },
            |s, _| if s == 0 { 0.0 } else { 0.4 },
        );
        let s = tally.scores();
        assert_eq!(s.matched_hits, 1);
        assert!((s.matched_velocity_mae_midi - 10.0).abs() < 1e-4, "{s:?}");
        assert!((s.matched_offset_mae_ms - 12.5).abs() < 1e-4, "{s:?}");
        assert!((s.velocity_mae - (10.0 / 127.0 + 0.5) / 2.0).abs() < 1e-6);
        assert!((s.offset_mae_ms - (12.5 + 50.0) / 2.0).abs() < 1e-4);
        assert!((s.hit_precision - 1.0).abs() < 1e-12 && (s.hit_recall - 0.5).abs() < 1e-12);
    }

    /// The medoid is a real code (not the average), nearest the centre among the busier half.
    #[test]
    fn the_style_medoid_is_the_busy_groove_nearest_the_centre() {
        let with_hits = |n: usize| {
            let mut p = Pattern::default();
            for step in 0..n {
                p.cells[step][0] = Cell::hit(1.0, 0.0);
            }
            p
        };
        let patterns = [with_hits(2), with_hits(10), with_hits(12), with_hits(11)];
        let codes = vec![
            vec![0.0, 0.0], // nearest the centre, but sparse: not eligible
            vec![3.0, 0.0],
            vec![-1.0, 1.0], // eligible and nearest the centre (0.25, 0.5)
            vec![-1.0, 1.0 + 1e-3],
        ];
        assert_eq!(medoid(&patterns, &codes), vec![-1.0, 1.0]);
    }
}
