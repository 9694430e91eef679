//! What the model plays when nobody steers it: statistics of patterns decoded from the prior
//! N(0, I) at a temperature, beside the same statistics of real grooves. Per voice, hits per step
//! (a prior that plays 20 % fewer hi-hats than drummers sounds thin); over all hits, the velocity
//! and micro-timing distributions (a prior with soft, flat velocities sounds like a machine).
//! Runs on the CLI's thread (`drumvae report`).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::groove::{Pattern, STEPS, VOICES};
use crate::latent;
use crate::model::Vae;
use crate::model::decoder::DecodeOptions;

/// Histogram bins for velocities (over 0..1) and offsets (over -0.5..0.5 steps).
pub const BINS: usize = 16;

/// Hit statistics of a set of 4-bar patterns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PatternStats {
    /// Patterns counted.
    pub patterns: usize,
    /// Hits per step, per voice.
    pub density: [f64; VOICES],
    /// Share of all hits whose velocity falls in each of [`BINS`] equal bins over 0..1.
    pub velocity_histogram: [f64; BINS],
    /// Share of all hits whose offset falls in each of [`BINS`] equal bins over -0.5..0.5 steps.
    pub offset_histogram: [f64; BINS],
    /// Mean and standard deviation of hit velocities, in MIDI units (0-127).
    pub velocity_mean_midi: f64,
    pub velocity_std_midi: f64,
    /// Mean and standard deviation of hit offsets, in steps (positive = late).
    pub offset_mean_steps: f64,
    pub offset_std_steps: f64,
}

fn bin(value: f32, low: f32, high: f32) -> usize {
    let t = ((value - low) / (high - low) * BINS as f32).floor();
    (t.max(0.0) as usize).min(BINS - 1)
}

impl PatternStats {
    /// Counts every hit of `patterns`.
    pub fn of(patterns: &[Pattern]) -> PatternStats {
        let mut s = PatternStats {
            patterns: patterns.len(),
            ..PatternStats::default()
        };
        let (mut n, mut v_sum, mut v_sq, mut o_sum, mut o_sq) = (0u64, 0.0, 0.0, 0.0, 0.0);
        for p in patterns {
            for row in &p.cells {
                for (voice, cell) in row.iter().enumerate() {
                    if !cell.hit {
                        continue;
                    }
                    n += 1;
                    s.density[voice] += 1.0;
                    s.velocity_histogram[bin(cell.velocity, 0.0, 1.0)] += 1.0;
                    s.offset_histogram[bin(cell.offset, -0.5, 0.5)] += 1.0;
                    let v = f64::from(cell.velocity) * 127.0;
                    let o = f64::from(cell.offset);
                    (v_sum, v_sq, o_sum, o_sq) = (v_sum + v, v_sq + v * v, o_sum + o, o_sq + o * o);
                }
            }
        }
        let steps = (patterns.len().max(1) * STEPS) as f64;
        s.density.iter_mut().for_each(|d| *d /= steps);
        let hits = n.max(1) as f64;
        s.velocity_histogram.iter_mut().for_each(|h| *h /= hits);
        s.offset_histogram.iter_mut().for_each(|h| *h /= hits);
        s.velocity_mean_midi = v_sum / hits;
        s.velocity_std_midi = (v_sq / hits - s.velocity_mean_midi.powi(2)).max(0.0).sqrt();
        s.offset_mean_steps = o_sum / hits;
        s.offset_std_steps = (o_sq / hits - s.offset_mean_steps.powi(2)).max(0.0).sqrt();
        s
    }

    /// Per voice, this set's density over `reference`'s, minus 1 (0 = the same; `None` where the
    /// reference never plays the voice).
    pub fn density_error(&self, reference: &PatternStats) -> [Option<f64>; VOICES] {
        std::array::from_fn(|v| {
            (reference.density[v] > 0.0).then(|| self.density[v] / reference.density[v] - 1.0)
        })
    }
}

/// `count` patterns decoded from seeded prior draws (groove `i` from seed `seed + i`, as `drumvae
/// sample` does) at `temperature`, in batches of `batch` (batch `k` draws its hits with seed
/// `seed + k * batch`, so the batch size is part of what is reproduced).
pub fn prior_patterns(
    vae: &Vae,
    count: usize,
    temperature: f32,
    seed: u64,
    batch: usize,
) -> Result<Vec<Pattern>> {
    let latent_size = vae.config.latent;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let batch = (count - out.len()).min(batch.max(1));
        let first = out.len();
        let z: Vec<f32> = (0..batch)
            .flat_map(|i| latent::seeded_z(seed.wrapping_add((first + i) as u64), latent_size))
            .collect();
        let z = Tensor::from_vec(z, (batch, latent_size), vae.device())?;
        let opts = DecodeOptions {
            temperature,
            density: 0.0,
            seed: seed.wrapping_add(first as u64),
        };
        out.extend(vae.decode(&z, &opts)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groove::Cell;

    #[test]
    fn stats_count_density_and_distributions_of_hits_only() {
        let mut p = Pattern::default();
        p.cells[0][0] = Cell::hit(1.0, -0.5);
        p.cells[8][0] = Cell::hit(0.5, 0.25);
        p.cells[8][1] = Cell::hit(0.0, 0.0);
        let s = PatternStats::of(&[p, Pattern::default()]);
        assert_eq!(s.patterns, 2);
        assert!((s.density[0] - 2.0 / 128.0).abs() < 1e-12);
        assert!((s.density[1] - 1.0 / 128.0).abs() < 1e-12);
        // Velocities 1.0 (last bin), 0.5 (bin 8), 0.0 (bin 0): a third each.
        assert!((s.velocity_histogram[BINS - 1] - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.velocity_histogram[8] - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.velocity_histogram[0] - 1.0 / 3.0).abs() < 1e-12);
        assert!(
            (s.offset_histogram[0] - 1.0 / 3.0).abs() < 1e-12,
            "-0.5 is the first bin"
        );
        assert!((s.velocity_mean_midi - 63.5).abs() < 1e-9);
        assert!((s.offset_mean_steps + 0.25 / 3.0).abs() < 1e-9);
        let twice = PatternStats::of(&[p, p]);
        let e = twice.density_error(&s);
        assert!((e[0].unwrap() - 1.0).abs() < 1e-12, "twice as dense");
        assert_eq!(e[2], None, "the reference never plays voice 2");
    }
}
