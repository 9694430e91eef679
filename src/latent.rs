//! Operations on latent vectors: spherical interpolation, four-corner blends, seeded points and
//! attribute vectors. Plain `f32` slices, no tensors, so the GUI's requests can be turned into z on
//! the worker thread (or in the offline CLI) without touching the model.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Below this `sin(angle)` the two vectors count as parallel and [`slerp`] falls back to a linear
/// blend, where the spherical formula would divide by almost zero.
const PARALLEL_SIN: f64 = 1e-6;

/// Spherical interpolation from `a` (t = 0) to `b` (t = 1), as MusicVAE interpolates: the angle
/// comes from the directions, and the unnormalised vectors are blended with the sine weights, so two
/// vectors of equal norm keep that norm all the way (a straight line would pass through the
/// low-density centre of the Gaussian prior and sound bland). Endpoints are exact. Falls back to a
/// linear blend when the vectors are (nearly) parallel or either is zero.
///
/// # Panics
/// If `a` and `b` differ in length.
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "slerp between vectors of different sizes");
    let t = f64::from(t);
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    let (wa, wb) = if na == 0.0 || nb == 0.0 {
        (1.0 - t, t)
    } else {
        let omega = (dot / (na * nb)).clamp(-1.0, 1.0).acos();
        let s = omega.sin();
        if s < PARALLEL_SIN {
            (1.0 - t, t)
        } else {
            (((1.0 - t) * omega).sin() / s, (t * omega).sin() / s)
        }
    };
    a.iter()
        .zip(b)
        .map(|(x, y)| (wa * f64::from(*x) + wb * f64::from(*y)) as f32)
        .collect()
}

/// A point in the square spanned by four corners: `A` top-left, `B` top-right, `C` bottom-left,
/// `D` bottom-right; `x` runs left to right and `y` top to bottom, both in `0..=1`. Slerps along
/// `x` on the top and bottom rows, then along `y` between the two results. Each corner is exact.
///
/// # Panics
/// If the corners differ in length.
pub fn blend4(corners: [&[f32]; 4], x: f32, y: f32) -> Vec<f32> {
    let [a, b, c, d] = corners;
    let top = slerp(a, b, x);
    let bottom = slerp(c, d, x);
    slerp(&top, &bottom, y)
}

/// A reproducible point from the prior N(0, I): the same seed always gives the same z (ChaCha8 is
/// specified, so this holds across platforms and versions of this crate).
pub fn seeded_z(seed: u64, dim: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// The element-wise mean of `vectors`, accumulated in f64; empty input gives an empty vector.
///
/// # Panics
/// If the vectors differ in length.
pub fn mean(vectors: &[Vec<f32>]) -> Vec<f32> {
    let Some(first) = vectors.first() else {
        return Vec::new();
    };
    let mut sum = vec![0f64; first.len()];
    for v in vectors {
        assert_eq!(v.len(), sum.len(), "mean of vectors of different sizes");
        for (s, x) in sum.iter_mut().zip(v) {
            *s += f64::from(*x);
        }
    }
    let n = vectors.len() as f64;
    sum.into_iter().map(|s| (s / n) as f32).collect()
}

/// An attribute vector: mean z of the examples that have the attribute (e.g. busy grooves) minus
/// mean z of those that lack it. Adding it to a z adds the attribute.
///
/// # Panics
/// If either set is empty or the vectors differ in length.
pub fn attribute_vector(with: &[Vec<f32>], without: &[Vec<f32>]) -> Vec<f32> {
    assert!(
        !with.is_empty() && !without.is_empty(),
        "an attribute vector needs examples with and without the attribute"
    );
    let (a, b) = (mean(with), mean(without));
    assert_eq!(a.len(), b.len(), "attribute sets of different sizes");
    a.iter().zip(&b).map(|(x, y)| x - y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    #[test]
    fn slerp_endpoints_are_exact() {
        let a = seeded_z(1, 64);
        let b = seeded_z(2, 64);
        assert_eq!(slerp(&a, &b, 0.0), a);
        assert_eq!(slerp(&a, &b, 1.0), b);
    }

    #[test]
    fn slerp_keeps_the_norm_of_equal_norm_vectors_where_lerp_would_shrink_it() {
        let a = [3.0, 0.0, 0.0];
        let b = [0.0, 3.0, 0.0];
        for t in [0.1, 0.25, 0.5, 0.9] {
            let m = slerp(&a, &b, t);
            assert!((norm(&m) - 3.0).abs() < 1e-5, "t={t}: {m:?}");
        }
        let mid = slerp(&a, &b, 0.5);
        let s = 3.0 / 2f32.sqrt();
        assert!(
            (mid[0] - s).abs() < 1e-5 && (mid[1] - s).abs() < 1e-5,
            "{mid:?}"
        );
    }

    #[test]
    fn slerp_of_parallel_or_zero_vectors_is_linear() {
        let a = [1.0, 2.0];
        let b = [2.0, 4.0];
        assert_eq!(slerp(&a, &b, 0.5), vec![1.5, 3.0]);
        assert_eq!(slerp(&[0.0, 0.0], &b, 0.25), vec![0.5, 1.0]);
        assert!(slerp(&a, &a, 0.3).iter().all(|x| x.is_finite()));
    }

    #[test]
    fn blend4_corners_are_exact_and_centre_is_symmetric() {
        let c: Vec<Vec<f32>> = (0..4).map(|i| seeded_z(10 + i, 16)).collect();
        let corners = [&c[0][..], &c[1][..], &c[2][..], &c[3][..]];
        assert_eq!(blend4(corners, 0.0, 0.0), c[0]);
        assert_eq!(blend4(corners, 1.0, 0.0), c[1]);
        assert_eq!(blend4(corners, 0.0, 1.0), c[2]);
        assert_eq!(blend4(corners, 1.0, 1.0), c[3]);
        // Along the top edge, the blend is the top row's slerp.
        assert_eq!(blend4(corners, 0.3, 0.0), slerp(&c[0], &c[1], 0.3));
    }

    #[test]
    fn seeded_z_is_deterministic_and_standard_normal() {
        assert_eq!(seeded_z(42, 256), seeded_z(42, 256));
        assert_ne!(seeded_z(42, 256), seeded_z(43, 256));
        assert_eq!(seeded_z(42, 8), seeded_z(42, 256)[..8], "prefix-stable");
        let z = seeded_z(7, 20_000);
        let m = z.iter().sum::<f32>() / z.len() as f32;
        let var = z.iter().map(|x| (x - m).powi(2)).sum::<f32>() / z.len() as f32;
        assert!(
            m.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {m}, var {var}"
        );
    }

    #[test]
    fn mean_and_attribute_vector_are_element_wise() {
        let with = vec![vec![1.0, 2.0], vec![3.0, 4.0]];
        let without = vec![vec![0.0, 1.0]];
        assert_eq!(mean(&with), vec![2.0, 3.0]);
        assert_eq!(mean(&[]), Vec::<f32>::new());
        assert_eq!(attribute_vector(&with, &without), vec![2.0, 2.0]);
    }
}
