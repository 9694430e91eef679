//! Reproducible random tensors for the kernel equivalence tests (fused LSTM, bf16).

use candle_core::{Device, Tensor};

/// A CPU tensor of `shape` with values uniform in `-1..1`, from a small LCG seeded by `seed`:
/// the same inputs on every machine and run, with no dependence on a random crate's algorithm.
pub fn uniform(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}
