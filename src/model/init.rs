//! Seeded weight initialisation for training: a `VarBuilder` that fills a `VarMap` like
//! `VarBuilder::from_varmap` does (same initialisers, same shapes), but from a ChaCha8 generator,
//! because Candle's CPU random generator cannot be seeded. Used by the training CLI and tests.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A builder whose new variables are drawn from `seed`: the same seed and config give the same
/// initial weights on every machine. Each tensor draws from its own stream (derived from its name),
/// so adding a tensor does not change the others. Variables already in `varmap` are reused as is.
pub fn seeded_var_builder(varmap: &VarMap, seed: u64, device: &Device) -> VarBuilder<'static> {
    let backend = Seeded {
        varmap: varmap.clone(),
        seed,
    };
    VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone())
}

struct Seeded {
    varmap: VarMap,
    seed: u64,
}

impl Seeded {
    fn rng(&self, name: &str) -> ChaCha8Rng {
        let hash = blake3::hash(name.as_bytes());
        let stream = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }
}

/// Draws `shape`'s values the way `init` describes (mirrors `candle_nn::Init::var`).
fn sample(init: Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = shape.elem_count();
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
            .collect()
    };
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let x: f64 = StandardNormal.sample(rng);
                (mean + std * x) as f32
            })
            .collect()
    };
    match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

impl SimpleBackend for Seeded {
    fn get(&self, s: Shape, name: &str, init: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape());
            }
            return Ok(var.as_tensor().clone());
        }
        let values = sample(init, &s, &mut self.rng(name));
        let t = Tensor::from_vec(values, s, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)?;
        let var = Var::from_tensor(&t)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        match data.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("no variable {name} and no shape to create it"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        data.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Config, Vae};

    fn weights(seed: u64) -> Vec<(String, Vec<f32>)> {
        let varmap = VarMap::new();
        let cfg = Config {
            encoder_hidden: 8,
            latent: 4,
            conductor_hidden: 8,
            decoder_hidden: 8,
            ..Config::small()
        };
        Vae::new(&cfg, seeded_var_builder(&varmap, seed, &Device::Cpu)).unwrap();
        let data = varmap.data().lock().unwrap();
        let mut out: Vec<(String, Vec<f32>)> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let a = weights(1);
        assert_eq!(a, weights(1));
        assert_ne!(a, weights(2));
        // PyTorch's LSTM init: uniform in +-1/sqrt(H).
        let (_, w) = a
            .iter()
            .find(|(k, _)| k == "decoder.bar.weight_hh_l1")
            .unwrap();
        let k = 1.0 / 8f32.sqrt();
        assert!(w.iter().all(|x| x.abs() <= k) && w.iter().any(|x| x.abs() > k / 2.0));
    }
}
