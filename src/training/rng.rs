//! Derived randomness for exact resume: every random draw of a training run comes from a ChaCha8
//! generator keyed by (run seed, purpose) and positioned on the stream of an index (the epoch for
//! shuffling, the global step for the reparameterisation noise). A resumed run therefore needs only
//! (seed, epoch, position, step) to reproduce everything; no generator state is carried along.
//! It runs on the training CLI's thread.

use candle_core::{Device, Result, Shape, Tensor};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// What a generator is for. The tag is part of the key, so streams never overlap; the numbers are
/// stored nowhere but must never change, or resumed runs would draw different numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The epoch's example order; index = epoch.
    Shuffle = 1,
    /// The training step's noise (the VAE's eps); index = global step.
    Noise = 2,
    /// Validation noise; index = batch number within the validation set, the same every epoch so
    /// that validation losses are comparable.
    Validation = 3,
    /// Anything else a run wants (samples drawn for listening); index chosen by the caller.
    Other = 4,
    /// The decoder input dropout mask of a training step; index = global step.
    InputDropout = 5,
}

/// The generator for `purpose` number `index` of the run seeded by `seed`.
pub fn derived_rng(seed: u64, purpose: Purpose, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(index);
    rng
}

/// The order of `n` examples in `epoch`: a Fisher-Yates shuffle driven by raw ChaCha8 output (with
/// a multiply-shift reduction whose bias is below n / 2^64), so it does not depend on how a `rand`
/// release implements `shuffle`.
pub fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
    assert!(u32::try_from(n).is_ok(), "more than 2^32 examples");
    let mut rng = derived_rng(seed, Purpose::Shuffle, epoch);
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

/// A tensor of standard normal samples drawn from `rng`, on `device`.
pub fn standard_normal(
    rng: &mut ChaCha8Rng,
    shape: impl Into<Shape>,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let values: Vec<f32> = StandardNormal
        .sample_iter(rng)
        .take(shape.elem_count())
        .collect();
    Tensor::from_vec(values, shape, device)
}

/// The noise of training step `step`: [`standard_normal`] from the step's own generator.
pub fn step_noise(
    seed: u64,
    step: u64,
    shape: impl Into<Shape>,
    device: &Device,
) -> Result<Tensor> {
    standard_normal(&mut derived_rng(seed, Purpose::Noise, step), shape, device)
}

/// The decoder input dropout mask of training step `step`: `[batch, steps, 1]`, each entry 0 with
/// probability `p`, else 1, from the step's own generator (so a resumed run draws the same).
pub fn input_keep_mask(
    seed: u64,
    step: u64,
    batch: usize,
    steps: usize,
    p: f64,
    device: &Device,
) -> Result<Tensor> {
    let mut rng = derived_rng(seed, Purpose::InputDropout, step);
    // Raw ChaCha8 output against a threshold, like `epoch_permutation`: independent of how a
    // `rand` release implements `random_bool`.
    let threshold = (p.clamp(0.0, 1.0) * 2f64.powi(64)) as u128;
    let keep: Vec<f32> = (0..batch * steps)
        .map(|_| f32::from(u128::from(rng.next_u64()) >= threshold))
        .collect();
    Tensor::from_vec(keep, (batch, steps, 1), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_reproducible_and_differ_between_epochs_and_seeds() {
        let a = epoch_permutation(7, 3, 100);
        assert_eq!(a, epoch_permutation(7, 3, 100));
        assert_ne!(a, epoch_permutation(7, 4, 100));
        assert_ne!(a, epoch_permutation(8, 3, 100));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>(), "not a permutation");
        assert!(epoch_permutation(1, 0, 0).is_empty());
    }

    #[test]
    fn purposes_and_indices_give_independent_streams() {
        let first = |p, i| derived_rng(5, p, i).next_u64();
        assert_ne!(first(Purpose::Noise, 0), first(Purpose::Shuffle, 0));
        assert_ne!(first(Purpose::Noise, 0), first(Purpose::Noise, 1));
        assert_eq!(first(Purpose::Noise, 9), first(Purpose::Noise, 9));
    }

    #[test]
    fn input_keep_masks_drop_about_p_and_are_reproducible() {
        let draw = |step| {
            input_keep_mask(3, step, 64, 64, 0.25, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let a = draw(9);
        assert_eq!(a, draw(9));
        assert_ne!(a, draw(10));
        assert!(a.iter().all(|&k| k == 0.0 || k == 1.0));
        let dropped = a.iter().filter(|&&k| k == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "dropped {dropped}");
        let none = input_keep_mask(3, 9, 8, 64, 0.0, &Device::Cpu).unwrap();
        assert_eq!(none.sum_all().unwrap().to_scalar::<f32>().unwrap(), 512.0);
    }

    #[test]
    fn step_noise_is_reproducible_and_roughly_standard() {
        let a = step_noise(1, 42, (64, 32), &Device::Cpu).unwrap();
        let b = step_noise(1, 42, (64, 32), &Device::Cpu).unwrap();
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a, b);
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / a.len() as f32;
        assert!(
            mean.abs() < 0.1 && (var - 1.0).abs() < 0.1,
            "mean {mean}, variance {var}"
        );
    }
}
