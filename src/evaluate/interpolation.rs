//! Does the latent space morph? Between two real grooves A and B, the patterns decoded at equally
//! spaced points of the spherical path from A's code to B's should move away from A and towards
//! B step by step (distance to A never falls, distance to B never rises), and the in-between
//! patterns should be as busy as real grooves, not empty or cluttered, which is what a producer
//! hears when automating the morph. Runs on the CLI's thread (`drumvae report`).

use candle_core::{Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::groove::Pattern;
use crate::latent;
use crate::model::Vae;
use crate::model::decoder::DecodeOptions;

/// Cells (step x voice) where one pattern hits and the other does not.
pub fn hit_distance(a: &Pattern, b: &Pattern) -> usize {
    a.cells
        .iter()
        .flatten()
        .zip(b.cells.iter().flatten())
        .filter(|(x, y)| x.hit != y.hit)
        .count()
}

/// What the interpolation check measured, averaged over the pairs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InterpolationReport {
    /// Pairs of grooves walked.
    pub pairs: usize,
    /// Points per path, both ends included.
    pub points: usize,
    /// Share of paths along which the distance to A never falls and the distance to B never
    /// rises.
    pub monotone_fraction: f64,
    /// Mean hit distance of point `i` to the decoded A, and to the decoded B.
    pub distance_to_a: Vec<f64>,
    pub distance_to_b: Vec<f64>,
    /// Mean hits per pattern at point `i`.
    pub hits: Vec<f64>,
    /// Mean and standard deviation of hits per real groove (the grooves the pairs come from).
    pub data_hits_mean: f64,
    pub data_hits_std: f64,
}

/// Walks `pairs` seeded pairs of `grooves` (each with at least 8 hits) in `points` slerp steps,
/// decoding at temperature 0.
pub fn interpolation(
    vae: &Vae,
    grooves: &[Pattern],
    pairs: usize,
    points: usize,
    seed: u64,
) -> Result<InterpolationReport> {
    let candidates: Vec<&Pattern> = grooves.iter().filter(|p| p.hit_count() >= 8).collect();
    if candidates.len() < 2 || points < 2 {
        return Err(candle_core::Error::Msg(
            "the interpolation check needs two grooves with 8 or more hits, and 2 or more points"
                .into(),
        ));
    }
    let counts: Vec<f64> = candidates.iter().map(|p| p.hit_count() as f64).collect();
    let mean = counts.iter().sum::<f64>() / counts.len() as f64;
    let std = (counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / counts.len() as f64).sqrt();
    let mut report = InterpolationReport {
        pairs,
        points,
        distance_to_a: vec![0.0; points],
        distance_to_b: vec![0.0; points],
        hits: vec![0.0; points],
        data_hits_mean: mean,
        data_hits_std: std,
        ..InterpolationReport::default()
    };
    let latent_size = vae.config.latent;
    let mut monotone = 0usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..pairs {
        let ia = rng.random_range(0..candidates.len());
        let ib = (ia + rng.random_range(1..candidates.len())) % candidates.len();
        let codes = vae
            .encode(&[*candidates[ia], *candidates[ib]])?
            .to_vec2::<f32>()?;
        let path: Vec<f32> = (0..points)
            .flat_map(|i| latent::slerp(&codes[0], &codes[1], i as f32 / (points - 1) as f32))
            .collect();
        let z = Tensor::from_vec(path, (points, latent_size), vae.device())?;
        let decoded = vae.decode(&z, &DecodeOptions::default())?;
        let (a, b) = (&decoded[0], &decoded[points - 1]);
        let to_a: Vec<usize> = decoded.iter().map(|p| hit_distance(p, a)).collect();
        let to_b: Vec<usize> = decoded.iter().map(|p| hit_distance(p, b)).collect();
        if to_a.windows(2).all(|w| w[1] >= w[0]) && to_b.windows(2).all(|w| w[1] <= w[0]) {
            monotone += 1;
        }
        for i in 0..points {
            report.distance_to_a[i] += to_a[i] as f64 / pairs as f64;
            report.distance_to_b[i] += to_b[i] as f64 / pairs as f64;
            report.hits[i] += decoded[i].hit_count() as f64 / pairs as f64;
        }
    }
    report.monotone_fraction = monotone as f64 / pairs.max(1) as f64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groove::Cell;

    #[test]
    fn hit_distance_counts_cells_that_differ_in_hit_only() {
        let mut a = Pattern::default();
        let mut b = Pattern::default();
        a.cells[0][0] = Cell::hit(1.0, 0.0);
        b.cells[0][0] = Cell::hit(0.2, 0.3);
        assert_eq!(hit_distance(&a, &b), 0, "velocity and timing do not count");
        b.cells[5][3] = Cell::hit(1.0, 0.0);
        a.cells[7][8] = Cell::hit(1.0, 0.0);
        assert_eq!(hit_distance(&a, &b), 2);
    }
}
