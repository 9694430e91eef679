//! The training loop: epochs of shuffled batches, Adam with a decaying learning rate and gradient
//! clipping, validation after every epoch, the best-on-validation model kept, early stopping, and
//! a checkpoint at every epoch end and on interruption from which `resume` continues exactly. Runs
//! on the training CLI's thread.
//!
//! Run folder: `config.json` (written before the first step), `checkpoint.safetensors` (latest),
//! `best.safetensors` (a model file: the best validation loss so far), `metrics.csv`, `curves.png`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::batches::{Batches, Remainder, batches_per_epoch, gather_tensor};
use super::checkpoint::{Checkpoint, Progress};
use super::metrics::{LossParts, MetricsLog, MetricsRow, RowKind};
use super::rng::{self, Purpose};
use super::schedule::{BetaSchedule, EarlyStopping, LrSchedule, Verdict};
use super::{Adam, AdamConfig};
use crate::Pattern;
use crate::model::{self, Config, Losses, Vae, init::seeded_var_builder};

/// Latest checkpoint in the run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// Best-on-validation model in the run folder.
pub const BEST_FILE: &str = "best.safetensors";
/// The model config, written before training starts.
pub const CONFIG_FILE: &str = "config.json";
/// The loss curves.
pub const PLOT_FILE: &str = "curves.png";

/// Everything that decides a run's result.
#[derive(Clone, Debug)]
pub struct TrainSettings {
    pub config: Config,
    /// Epochs to train in total (a resumed run counts the ones already done).
    pub epochs: u64,
    pub batch_size: usize,
    pub lr: LrSchedule,
    pub beta: BetaSchedule,
    pub adam: AdamConfig,
    /// Epochs without a better validation loss before stopping; 0 = never stop early.
    pub patience: u32,
    /// Seed of the initial weights, the example order and every noise draw.
    pub seed: u64,
    /// Also log a step row every N steps (0 = epoch rows only).
    pub log_every: u64,
    /// Stop (with a checkpoint, as on Ctrl-C) once this many global steps are done. For tests
    /// and for bounded runs.
    pub stop_after_steps: Option<u64>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// All epochs done.
    Completed,
    /// Validation stopped improving for `patience` epochs.
    EarlyStopped,
    /// Ctrl-C or `stop_after_steps`: the checkpoint holds the exact place to resume from.
    Interrupted,
}

/// What the loop reports while it runs (for progress bars).
pub enum Event<'a> {
    /// An epoch begins; `batches` steps remain in it.
    EpochStart { epoch: u64, batches: u64 },
    /// A step finished.
    Step {
        step: u64,
        loss: &'a LossParts,
        examples_per_sec: f64,
    },
    /// An epoch finished and was validated.
    Epoch {
        row: &'a MetricsRow,
        verdict: Verdict,
    },
}

/// The result of [`train`].
pub struct Outcome {
    /// The variables as they are at the end (the last step's weights).
    pub varmap: VarMap,
    pub finish: Finish,
    /// The metrics log, epoch and step rows.
    pub metrics: Vec<MetricsRow>,
    /// Best validation epoch and loss, if any epoch finished.
    pub best: Option<(u64, f64)>,
    /// Global steps done.
    pub steps: u64,
}

/// Running sums over the steps of an epoch, saved in interruption checkpoints so that a resumed
/// epoch's row averages the same steps as an uninterrupted one.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Accumulator {
    total: f64,
    hit_bce: f64,
    velocity_mse: f64,
    offset_mse: f64,
    kl: f64,
    grad_norm: f64,
    steps: u64,
    examples: u64,
    seconds: f64,
}

impl Accumulator {
    fn add(&mut self, parts: &LossParts, grad_norm: f64, examples: usize, seconds: f64) {
        self.total += parts.total;
        self.hit_bce += parts.hit_bce;
        self.velocity_mse += parts.velocity_mse;
        self.offset_mse += parts.offset_mse;
        self.kl += parts.kl;
        self.grad_norm += grad_norm;
        self.steps += 1;
        self.examples += examples as u64;
        self.seconds += seconds;
    }

    fn mean(&self) -> LossParts {
        let n = self.steps.max(1) as f64;
        LossParts {
            total: self.total / n,
            hit_bce: self.hit_bce / n,
            velocity_mse: self.velocity_mse / n,
            offset_mse: self.offset_mse / n,
            kl: self.kl / n,
        }
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn parts_of(l: &Losses) -> Result<LossParts> {
    Ok(LossParts {
        total: scalar(&l.total)?,
        hit_bce: scalar(&l.hit_bce)?,
        velocity_mse: scalar(&l.velocity_mse)?,
        offset_mse: scalar(&l.offset_mse)?,
        kl: scalar(&l.kl)?,
    })
}

/// Mean validation losses over `data` at the full KL weight, with the same noise every epoch (so
/// epochs compare) and no autograd graph.
pub fn validation_loss(
    vae: &Vae,
    data: &[Pattern],
    batch_size: usize,
    seed: u64,
    beta: f64,
) -> Result<LossParts> {
    let model = vae.detach();
    let device = model.device().clone();
    let mut sum = LossParts::default();
    let mut n = 0usize;
    for (i, chunk) in data.chunks(batch_size.max(1)).enumerate() {
        let x = super::batches::patterns_tensor(chunk, &device)?;
        let mut noise = rng::derived_rng(seed, Purpose::Validation, i as u64);
        let eps = rng::standard_normal(&mut noise, (chunk.len(), model.config.latent), &device)?;
        let fwd = model.forward(&x, &eps)?;
        let p = parts_of(&model.loss(&x, &fwd, beta)?)?;
        let w = chunk.len() as f64;
        sum.total += p.total * w;
        sum.hit_bce += p.hit_bce * w;
        sum.velocity_mse += p.velocity_mse * w;
        sum.offset_mse += p.offset_mse * w;
        sum.kl += p.kl * w;
        n += chunk.len();
    }
    let n = n.max(1) as f64;
    Ok(LossParts {
        total: sum.total / n,
        hit_bce: sum.hit_bce / n,
        velocity_mse: sum.velocity_mse / n,
        offset_mse: sum.offset_mse / n,
        kl: sum.kl / n,
    })
}

/// Trains on `train`, validating on `validation`, in `run_dir`. With `resume`, continues from the
/// run folder's checkpoint (which must come from the same config, seed and batch size). Sets of
/// `stop` (Ctrl-C) end the run after the current step with a checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn train(
    settings: &TrainSettings,
    train: &[Pattern],
    validation: &[Pattern],
    device: &Device,
    run_dir: &Path,
    resume: bool,
    stop: &AtomicBool,
    mut on_event: impl FnMut(Event<'_>),
) -> Result<Outcome> {
    if train.is_empty() {
        bail!("no training windows: check the data folder and the split filter");
    }
    if settings.batch_size == 0 {
        bail!("batch size must be at least 1");
    }
    settings.config.validate().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create the run folder {}", run_dir.display()))?;
    let config_json = serde_json::to_string_pretty(&settings.config)?;
    crate::atomic_file::write(&run_dir.join(CONFIG_FILE), config_json.as_bytes())?;

    let varmap = VarMap::new();
    let vae = Vae::new(
        &settings.config,
        seeded_var_builder(&varmap, settings.seed, device),
    )?;
    let mut adam = Adam::from_varmap(&varmap, settings.adam)?;
    let mut progress = Progress {
        epoch: 0,
        position: 0,
        step: 0,
    };
    let mut early = EarlyStopping::new(settings.patience);
    let mut metrics = MetricsLog::new(run_dir, Vec::new());
    let mut acc = Accumulator::default();
    let mut elapsed_before = 0.0;
    let checkpoint_path = run_dir.join(CHECKPOINT_FILE);
    if resume {
        let ck = Checkpoint::load(&checkpoint_path, device)
            .with_context(|| format!("cannot resume from {}", run_dir.display()))?;
        // Configs compare as values, not as JSON text: a checkpoint from a version without a
        // newer option (which deserialises to its default) resumes in this one.
        let same_config = ck
            .extra
            .get("config")
            .and_then(|json| serde_json::from_str::<crate::model::Config>(json).ok())
            .is_some_and(|c| c == settings.config);
        let same_batch = ck.extra.get("batch_size") == Some(&settings.batch_size.to_string());
        for (key, same) in [("config", same_config), ("batch_size", same_batch)] {
            if !same {
                bail!(
                    "the checkpoint in {} was made with a different {key}; resume with the same settings or start a new run folder",
                    run_dir.display()
                );
            }
        }
        if ck.seed != settings.seed {
            bail!(
                "the checkpoint was made with seed {}, not {}",
                ck.seed,
                settings.seed
            );
        }
        ck.restore_weights(&varmap)?;
        adam.load_state(&ck.optimizer_map(), ck.adam_step)?;
        progress = ck.progress;
        early = EarlyStopping {
            patience: settings.patience,
            ..ck.early_stopping
        };
        metrics = MetricsLog::new(run_dir, ck.metrics.clone());
        if let Some(a) = ck.extra.get("accumulator") {
            acc = serde_json::from_str(a).context("checkpoint accumulator")?;
        }
        elapsed_before = ck
            .extra
            .get("elapsed_secs")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
    }

    let save_checkpoint = |progress: Progress,
                           order: &[u32],
                           adam: &Adam,
                           early: &EarlyStopping,
                           metrics: &MetricsLog,
                           acc: &Accumulator,
                           elapsed: f64|
     -> Result<()> {
        let extra = BTreeMap::from([
            (
                "config".to_string(),
                serde_json::to_string(&settings.config)?,
            ),
            ("batch_size".to_string(), settings.batch_size.to_string()),
            ("accumulator".to_string(), serde_json::to_string(acc)?),
            ("elapsed_secs".to_string(), elapsed.to_string()),
        ]);
        Checkpoint {
            weights: Checkpoint::weights_of(&varmap)?,
            optimizer: adam.state_tensors()?,
            adam_step: adam.step_count(),
            progress,
            seed: settings.seed,
            permutation: order.to_vec(),
            early_stopping: *early,
            metrics: metrics.rows().to_vec(),
            extra,
        }
        .save(&checkpoint_path)?;
        Ok(())
    };

    let started = Instant::now();
    let elapsed = || elapsed_before + started.elapsed().as_secs_f64();
    let n = train.len();
    let per_epoch = batches_per_epoch(n, settings.batch_size, Remainder::Keep) as u64;
    let mut finish = if early.should_stop() {
        Finish::EarlyStopped
    } else {
        Finish::Completed
    };
    let mut recent = Accumulator::default();
    'epochs: while finish == Finish::Completed && progress.epoch < settings.epochs {
        let order = rng::epoch_permutation(settings.seed, progress.epoch, n);
        let done_batches = (progress.position as usize).div_ceil(settings.batch_size) as u64;
        on_event(Event::EpochStart {
            epoch: progress.epoch,
            batches: per_epoch - done_batches,
        });
        let batches = Batches::new(&order, settings.batch_size, Remainder::Keep)
            .starting_at(progress.position as usize);
        for batch in batches {
            if stop.load(Ordering::Relaxed)
                || settings
                    .stop_after_steps
                    .is_some_and(|s| progress.step >= s)
            {
                save_checkpoint(progress, &order, &adam, &early, &metrics, &acc, elapsed())?;
                metrics.write()?;
                finish = Finish::Interrupted;
                break 'epochs;
            }
            let t0 = Instant::now();
            let x = gather_tensor(train, batch.indices, device)?;
            let eps = rng::step_noise(
                settings.seed,
                progress.step,
                (batch.indices.len(), settings.config.latent),
                device,
            )?;
            let beta = settings.beta.at(progress.step);
            let lr = settings.lr.at(progress.step);
            let p = settings.config.decoder_input_dropout;
            let keep = if p > 0.0 {
                Some(rng::input_keep_mask(
                    settings.seed,
                    progress.step,
                    batch.indices.len(),
                    crate::groove::STEPS,
                    p,
                    device,
                )?)
            } else {
                None
            };
            let fwd = vae.forward_with_input_mask(&x, &eps, keep.as_ref())?;
            let losses = vae.loss(&x, &fwd, beta)?;
            let grads = losses.total.backward()?;
            let grad_norm = adam.step(&grads, lr)?;
            let parts = parts_of(&losses)?;
            let seconds = t0.elapsed().as_secs_f64();
            acc.add(&parts, grad_norm, batch.indices.len(), seconds);
            recent.add(&parts, grad_norm, batch.indices.len(), seconds);
            progress.step += 1;
            progress.position = (batch.position + batch.indices.len()) as u64;
            on_event(Event::Step {
                step: progress.step,
                loss: &parts,
                examples_per_sec: batch.indices.len() as f64 / seconds,
            });
            if settings.log_every > 0 && progress.step.is_multiple_of(settings.log_every) {
                metrics.push(MetricsRow {
                    kind: RowKind::Step,
                    step: progress.step,
                    epoch: progress.epoch,
                    lr,
                    beta,
                    grad_norm: recent.grad_norm / recent.steps.max(1) as f64,
                    train: recent.mean(),
                    val: None,
                    examples_per_sec: recent.examples as f64 / recent.seconds.max(1e-9),
                    elapsed_secs: elapsed(),
                });
                recent = Accumulator::default();
            }
        }

        // End of epoch: validate, keep the best, log, checkpoint.
        let val = validation_loss(
            &vae,
            validation,
            settings.batch_size,
            settings.seed,
            settings.beta.max_beta,
        )?;
        let verdict = if validation.is_empty() {
            early.observe(progress.epoch, acc.mean().total)
        } else {
            early.observe(progress.epoch, val.total)
        };
        if verdict == Verdict::Improved {
            let meta = std::collections::HashMap::from([
                ("epoch".to_string(), progress.epoch.to_string()),
                ("val_loss".to_string(), val.total.to_string()),
            ]);
            model::file::save(&run_dir.join(BEST_FILE), &varmap, &settings.config, meta)?;
        }
        let step_before = progress.step.saturating_sub(1);
        let row = MetricsRow {
            kind: RowKind::Epoch,
            step: progress.step,
            epoch: progress.epoch,
            lr: settings.lr.at(step_before),
            beta: settings.beta.at(step_before),
            grad_norm: acc.grad_norm / acc.steps.max(1) as f64,
            train: acc.mean(),
            val: (!validation.is_empty()).then_some(val),
            examples_per_sec: acc.examples as f64 / acc.seconds.max(1e-9),
            elapsed_secs: elapsed(),
        };
        metrics.push(row);
        on_event(Event::Epoch { row: &row, verdict });
        acc = Accumulator::default();
        progress.epoch += 1;
        progress.position = 0;
        let next_order = rng::epoch_permutation(settings.seed, progress.epoch, n);
        save_checkpoint(
            progress,
            &next_order,
            &adam,
            &early,
            &metrics,
            &acc,
            elapsed(),
        )?;
        metrics.write()?;
        // A plot that fails to render (no fonts, say) must not end a training run.
        let _ = super::plot(&run_dir.join(PLOT_FILE), metrics.rows());
        if verdict == Verdict::Stop {
            finish = Finish::EarlyStopped;
        }
    }
    Ok(Outcome {
        varmap,
        finish,
        metrics: metrics.rows().to_vec(),
        best: early.best.map(|b| (b.epoch, b.loss)),
        steps: progress.step,
    })
}

/// The best model of a run folder, if one was saved.
pub fn best_model_path(run_dir: &Path) -> PathBuf {
    run_dir.join(BEST_FILE)
}

/// The variables of a model file, in a fresh `VarMap` (to re-save it with more metadata, or to
/// train on from it). Fails if the file's config differs from `config`.
pub fn load_varmap(path: &Path, config: &Config, device: &Device) -> Result<VarMap> {
    let (_, info) = model::file::load_file(path, device)?;
    if &info.config != config {
        bail!("{} holds a model of another config", path.display());
    }
    let varmap = VarMap::new();
    Vae::new(config, seeded_var_builder(&varmap, 0, device))?;
    let tensors = candle_core::safetensors::load(path, device)?;
    for (name, var) in varmap.data().lock().expect("not poisoned").iter() {
        let t = tensors
            .get(name)
            .with_context(|| format!("{} has no tensor {name}", path.display()))?;
        var.set(t)?;
    }
    Ok(varmap)
}
