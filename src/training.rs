//! Model-agnostic training machinery: the optimizer, schedules, derived randomness, batching,
//! checkpoints, the metrics log and its plot. Everything here runs on the training CLI's thread;
//! nothing is used by the plugin.
//!
//! How the pieces make a resume exact: the epoch's order comes from
//! [`rng::epoch_permutation`]`(seed, epoch)`, each step's noise from [`rng::step_noise`]`(seed,
//! step)`, learning rate and KL weight are functions of the step ([`schedule`]), and the
//! [`checkpoint::Checkpoint`] holds weights, [`adam::Adam`]'s moments, (epoch, position, step),
//! the seed, the order, early-stopping state and the metrics so far.

pub mod adam;
pub mod batches;
pub mod checkpoint;
pub mod metrics;
pub mod plot;
pub mod rng;
pub mod schedule;
pub mod trainer;

pub use adam::{Adam, AdamConfig};
pub use batches::{Batch, Batches, Remainder, gather_tensor, patterns_tensor};
pub use checkpoint::{Checkpoint, CheckpointError, Progress};
pub use metrics::{LossParts, MetricsLog, MetricsRow, RowKind};
pub use plot::plot;
pub use schedule::{BetaSchedule, EarlyStopping, LrSchedule, Verdict};

#[cfg(test)]
mod tests {
    //! The pieces together: a tiny VAE trained for two epochs, once straight through and once
    //! stopped mid-epoch, saved to a file, reloaded into fresh objects and resumed.

    use std::collections::BTreeMap;

    use candle_core::{DType, Device, Module, Tensor};
    use candle_nn::{Linear, VarBuilder, VarMap};

    use super::*;
    use crate::groove::{FEATURES, STEPS};
    use crate::{Cell, Pattern, Voice};

    const SEED: u64 = 11;
    const EXAMPLES: usize = 10;
    const BATCH: usize = 3;
    const EPOCHS: u64 = 2;
    const Z: usize = 4;
    const FLAT: usize = STEPS * FEATURES;

    fn patterns() -> Vec<Pattern> {
        (0..EXAMPLES)
            .map(|i| {
                let mut p = Pattern::EMPTY;
                for step in (i % 4..STEPS).step_by(4 + i % 3) {
                    let v = 0.3 + 0.05 * (step % 7) as f32;
                    p.set(
                        step,
                        Voice::ALL[(i + step) % 9],
                        Cell::hit(v, 0.01 * i as f32),
                    );
                }
                p
            })
            .collect()
    }

    struct Tiny {
        encoder: Linear,
        decoder: Linear,
    }

    impl Tiny {
        fn new(varmap: &VarMap) -> Tiny {
            let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
            let tiny = Tiny {
                encoder: candle_nn::linear(FLAT, 2 * Z, vb.pp("encoder")).unwrap(),
                decoder: candle_nn::linear(Z, FLAT, vb.pp("decoder")).unwrap(),
            };
            // Candle's initialisation is not seeded: overwrite it from the run's own generator.
            let mut rng = rng::derived_rng(SEED, rng::Purpose::Other, 0);
            let data = varmap.data().lock().unwrap();
            let mut names: Vec<_> = data.keys().cloned().collect();
            names.sort();
            for name in names {
                let var = &data[&name];
                let init = rng::standard_normal(&mut rng, var.shape(), &Device::Cpu).unwrap();
                var.set(&init.affine(0.05, 0.0).unwrap()).unwrap();
            }
            tiny
        }

        fn loss(&self, x: &Tensor, eps: &Tensor, beta: f64) -> Tensor {
            let h = self.encoder.forward(x).unwrap();
            let mu = h.narrow(1, 0, Z).unwrap();
            let log_var = h.narrow(1, Z, Z).unwrap();
            let z =
                (&mu + (log_var.affine(0.5, 0.0).unwrap().exp().unwrap() * eps).unwrap()).unwrap();
            let recon = candle_nn::loss::mse(&self.decoder.forward(&z).unwrap(), x).unwrap();
            // KL(N(mu, var) || N(0, 1)) = 0.5 * sum(var + mu^2 - 1 - log var), batch mean.
            let kl = ((log_var.exp().unwrap() + mu.sqr().unwrap()).unwrap()
                - log_var.affine(1.0, 1.0).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .affine(0.5 / x.dim(0).unwrap() as f64, 0.0)
            .unwrap();
            (recon + kl.affine(beta, 0.0).unwrap()).unwrap()
        }
    }

    enum Outcome {
        Finished(Vec<(String, Vec<u32>)>),
        Stopped(Box<Checkpoint>),
    }

    /// Trains from scratch or from `resume`; returns a checkpoint when (epoch, position) reaches
    /// `stop_at`, else the final weights' bits.
    fn run(resume: Option<Checkpoint>, stop_at: Option<(u64, u64)>) -> Outcome {
        let data = patterns();
        let varmap = VarMap::new();
        let model = Tiny::new(&varmap);
        let mut adam = Adam::from_varmap(&varmap, AdamConfig::default()).unwrap();
        let lr = LrSchedule {
            lr: 1e-2,
            min_lr: 1e-4,
            decay_rate: 0.9,
        };
        let beta = BetaSchedule {
            max_beta: 0.5,
            warmup_steps: 4,
        };
        let mut progress = Progress::default();
        let mut log = Vec::new();
        if let Some(ck) = resume {
            ck.restore_weights(&varmap).unwrap();
            adam.load_state(&ck.optimizer_map(), ck.adam_step).unwrap();
            progress = ck.progress;
            log = ck.metrics;
            assert_eq!(
                ck.permutation,
                rng::epoch_permutation(ck.seed, progress.epoch, EXAMPLES)
            );
        }
        while progress.epoch < EPOCHS {
            let order = rng::epoch_permutation(SEED, progress.epoch, EXAMPLES);
            for batch in
                Batches::new(&order, BATCH, Remainder::Drop).starting_at(progress.position as usize)
            {
                let b = batch.indices.len();
                let x = gather_tensor(&data, batch.indices, &Device::Cpu)
                    .unwrap()
                    .reshape((b, FLAT))
                    .unwrap();
                let eps = rng::step_noise(SEED, progress.step, (b, Z), &Device::Cpu).unwrap();
                let loss = model.loss(&x, &eps, beta.at(progress.step));
                let norm = adam
                    .step(&loss.backward().unwrap(), lr.at(progress.step))
                    .unwrap();
                progress.step += 1;
                progress.position = (batch.position + b) as u64;
                log.push(MetricsRow {
                    kind: RowKind::Step,
                    step: progress.step,
                    epoch: progress.epoch,
                    lr: lr.at(progress.step - 1),
                    beta: beta.at(progress.step - 1),
                    grad_norm: norm,
                    train: LossParts {
                        total: f64::from(loss.to_scalar::<f32>().unwrap()),
                        ..LossParts::default()
                    },
                    val: None,
                    examples_per_sec: 0.0,
                    elapsed_secs: 0.0,
                });
                if stop_at == Some((progress.epoch, progress.position)) {
                    return Outcome::Stopped(Box::new(Checkpoint {
                        weights: Checkpoint::weights_of(&varmap).unwrap(),
                        optimizer: adam.state_tensors().unwrap(),
                        adam_step: adam.step_count(),
                        progress,
                        seed: SEED,
                        permutation: order,
                        early_stopping: EarlyStopping::new(3),
                        metrics: log,
                        extra: BTreeMap::new(),
                    }));
                }
            }
            progress.epoch += 1;
            progress.position = 0;
        }
        let weights = Checkpoint::weights_of(&varmap).unwrap();
        Outcome::Finished(
            weights
                .into_iter()
                .map(|(k, t)| {
                    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    (k, v.into_iter().map(f32::to_bits).collect())
                })
                .collect(),
        )
    }

    #[test]
    fn resuming_from_a_mid_epoch_checkpoint_file_reproduces_an_uninterrupted_run_bit_for_bit() {
        let Outcome::Finished(straight) = run(None, None) else {
            unreachable!()
        };
        let Outcome::Stopped(ck) = run(None, Some((1, 3))) else {
            panic!("the run never reached epoch 1, position 3")
        };
        assert_eq!(
            ck.progress.step, 4,
            "3 batches in epoch 0 (one example dropped) + 1"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mid.safetensors");
        ck.save(&path).unwrap();
        let loaded = Checkpoint::load(&path, &Device::Cpu).unwrap();
        let Outcome::Finished(resumed) = run(Some(loaded), None) else {
            unreachable!()
        };
        assert_eq!(
            resumed, straight,
            "resumed weights differ from the uninterrupted run"
        );
    }
}
