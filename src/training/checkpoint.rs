//! A training checkpoint: everything a run needs to continue exactly where it stopped, as ONE
//! safetensors file written atomically. It runs on the training CLI's thread.
//!
//! Layout of the file:
//! - model weights under their own VarMap names, so `VarBuilder::from_mmaped_safetensors` can
//!   load a checkpoint as a model (it ignores the other tensors);
//! - the optimizer's moments as `adam.m.<param>` / `adam.v.<param>`;
//! - the current epoch's example order as the u32 tensor `__train.permutation`;
//! - scalars in the header's `__metadata__` (string to string): format and version, step, epoch,
//!   position, seed, optimizer step, early-stopping state, the metrics history as CSV
//!   (exact floats, see [`super::metrics`]) and free-form `extra.<key>` entries for the caller
//!   (model config, command line).
//!
//! Randomness is derived from (seed, epoch) and (seed, step) (see [`super::rng`]), so seed, epoch,
//! position and step reproduce the rest of the run; the permutation is stored as well so that a
//! resume can check it against the data it now sees.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use safetensors::{SafeTensorError, SafeTensors};

use super::adam::{FIRST_MOMENT_PREFIX, SECOND_MOMENT_PREFIX};
use super::metrics::{self, MetricsRow};
use super::schedule::{Best, EarlyStopping};

/// Value of the `format` metadata entry.
pub const FORMAT: &str = "drumvae-checkpoint";
/// Version written; loading accepts this one and older.
pub const VERSION: u32 = 1;
/// Name of the permutation tensor.
pub const PERMUTATION: &str = "__train.permutation";
/// Prefix of the caller's metadata entries.
const EXTRA_PREFIX: &str = "extra.";

/// Where in the run the checkpoint was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// 0-based epoch in progress (after an epoch ends: the next one, with `position` 0).
    pub epoch: u64,
    /// Examples of this epoch's permutation already trained on.
    pub position: u64,
    /// Global steps taken (the index of the next step's noise and learning rate).
    pub step: u64,
}

/// Everything saved at a checkpoint. Tensors are taken as they are: build it with
/// [`Checkpoint::weights_of`] (which copies) or save it before the next optimizer step, which
/// updates parameters in place.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Model parameters by VarMap name.
    pub weights: Vec<(String, Tensor)>,
    /// [`super::adam::Adam::state_tensors`].
    pub optimizer: Vec<(String, Tensor)>,
    /// [`super::adam::Adam::step_count`] (can differ from `progress.step` if steps were skipped).
    pub adam_step: u64,
    /// Where the run stood.
    pub progress: Progress,
    /// The run's seed, from which all its randomness derives.
    pub seed: u64,
    /// The example order of epoch `progress.epoch`.
    pub permutation: Vec<u32>,
    /// Best validation loss, its epoch, and patience used.
    pub early_stopping: EarlyStopping,
    /// The metrics log so far.
    pub metrics: Vec<MetricsRow>,
    /// Caller's entries (e.g. `config` = the model config's JSON), stored as `extra.<key>`.
    pub extra: BTreeMap<String, String>,
}

/// Why a checkpoint could not be saved, loaded or applied.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write checkpoint {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {} is truncated (an interrupted copy?): {detail}", .path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("checkpoint {} is corrupt: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("{} is not a DrumVAE checkpoint: {detail}", .path.display())]
    NotACheckpoint { path: PathBuf, detail: String },
    #[error(
        "checkpoint {} has format version {found}; this build reads up to {VERSION}",
        .path.display()
    )]
    NewerVersion { path: PathBuf, found: u32 },
    #[error("checkpoint {}: metadata `{key}` {problem}", .path.display())]
    Metadata {
        path: PathBuf,
        key: String,
        problem: String,
    },
    #[error("checkpoint tensor `{name}`: {source}")]
    Tensor {
        name: String,
        source: candle_core::Error,
    },
    #[error("checkpoint: {0}")]
    Invalid(String),
}

impl Checkpoint {
    /// Copies of every variable of `varmap`, sorted by name.
    pub fn weights_of(varmap: &VarMap) -> candle_core::Result<Vec<(String, Tensor)>> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
        let mut out = data
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The optimizer tensors by name, for [`super::adam::Adam::load_state`].
    pub fn optimizer_map(&self) -> HashMap<String, Tensor> {
        self.optimizer.iter().cloned().collect()
    }

    /// Sets every variable of `varmap` from the checkpoint's weights. Fails, changing nothing, if a
    /// variable has no weight, a weight has no variable, or shapes differ.
    pub fn restore_weights(&self, varmap: &VarMap) -> Result<(), CheckpointError> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| CheckpointError::Invalid("the VarMap's lock is poisoned".into()))?;
        let weights: HashMap<&str, &Tensor> =
            self.weights.iter().map(|(k, t)| (k.as_str(), t)).collect();
        for name in weights.keys() {
            if !data.contains_key(*name) {
                return Err(CheckpointError::Invalid(format!(
                    "weight `{name}` belongs to no parameter of this model (a different model config?)"
                )));
            }
        }
        for (name, var) in data.iter() {
            let Some(t) = weights.get(name.as_str()) else {
                return Err(CheckpointError::Invalid(format!(
                    "no weight for parameter `{name}` (a different model config?)"
                )));
            };
            if t.shape() != var.shape() {
                return Err(CheckpointError::Invalid(format!(
                    "weight `{name}` has shape {:?}, the model's parameter {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
        }
        for (name, var) in data.iter() {
            weights[name.as_str()]
                .to_dtype(var.dtype())
                .and_then(|t| t.to_device(var.device()))
                .and_then(|t| var.set(&t))
                .map_err(|source| CheckpointError::Tensor {
                    name: name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let invalid = |m: String| Err(CheckpointError::Invalid(m));
        for (name, _) in &self.weights {
            if name.starts_with("adam.") || name.starts_with("__train.") {
                return invalid(format!(
                    "weight name `{name}` uses a prefix reserved for training state"
                ));
            }
        }
        for (name, _) in &self.optimizer {
            if !name.starts_with(FIRST_MOMENT_PREFIX) && !name.starts_with(SECOND_MOMENT_PREFIX) {
                return invalid(format!(
                    "optimizer tensor `{name}` lacks the `adam.m.`/`adam.v.` prefix"
                ));
            }
        }
        let n = self.permutation.len();
        let permutation =
            Tensor::from_slice(&self.permutation, n, &Device::Cpu).map_err(|source| {
                CheckpointError::Tensor {
                    name: PERMUTATION.into(),
                    source,
                }
            })?;
        let mut tensors: Vec<(&str, &Tensor)> = self
            .weights
            .iter()
            .chain(&self.optimizer)
            .map(|(k, t)| (k.as_str(), t))
            .collect();
        tensors.push((PERMUTATION, &permutation));
        tensors.sort_by(|a, b| a.0.cmp(b.0));
        if let Some(w) = tensors.windows(2).find(|w| w[0].0 == w[1].0) {
            return invalid(format!("tensor name `{}` appears twice", w[0].0));
        }

        let mut meta = HashMap::new();
        let mut put = |k: &str, v: String| meta.insert(k.to_string(), v);
        put("format", FORMAT.into());
        put("version", VERSION.to_string());
        put("step", self.progress.step.to_string());
        put("epoch", self.progress.epoch.to_string());
        put("position", self.progress.position.to_string());
        put("seed", self.seed.to_string());
        put("adam_step", self.adam_step.to_string());
        let es = &self.early_stopping;
        put("early_stopping.patience", es.patience.to_string());
        put("early_stopping.min_delta", format!("{:?}", es.min_delta));
        put(
            "early_stopping.epochs_since_best",
            es.epochs_since_best.to_string(),
        );
        if let Some(best) = es.best {
            put("early_stopping.best_epoch", best.epoch.to_string());
            put("early_stopping.best_loss", format!("{:?}", best.loss));
        }
        put("metrics", metrics::to_csv(&self.metrics));
        for (k, v) in &self.extra {
            put(&format!("{EXTRA_PREFIX}{k}"), v.clone());
        }
        safetensors::serialize(tensors, Some(meta))
            .map_err(|e| CheckpointError::Invalid(format!("cannot serialise: {e}")))
    }

    /// Writes the checkpoint to `path` atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = self.to_bytes()?;
        crate::atomic_file::write(path, &bytes).map_err(|source| CheckpointError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a checkpoint, placing weights and optimizer state on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Checkpoint::from_bytes(&bytes, path, device)
    }

    /// Parses a checkpoint's bytes; `path` only names it in errors.
    pub fn from_bytes(
        bytes: &[u8],
        path: &Path,
        device: &Device,
    ) -> Result<Checkpoint, CheckpointError> {
        let path_buf = || path.to_path_buf();
        let st = SafeTensors::deserialize(bytes).map_err(|e| diagnose(bytes, e, path))?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| diagnose(bytes, e, path))?;
        let meta = header.metadata().clone().unwrap_or_default();

        match meta.get("format") {
            Some(f) if f == FORMAT => {}
            Some(f) => {
                return Err(CheckpointError::NotACheckpoint {
                    path: path_buf(),
                    detail: format!("its format is `{f}`"),
                });
            }
            None => {
                return Err(CheckpointError::NotACheckpoint {
                    path: path_buf(),
                    detail:
                        "a safetensors file without DrumVAE's `format` entry (model weights only?)"
                            .into(),
                });
            }
        }
        let field = Fields { meta: &meta, path };
        let version: u32 = field.parse("version")?;
        if version > VERSION {
            return Err(CheckpointError::NewerVersion {
                path: path_buf(),
                found: version,
            });
        }

        let mut weights = Vec::new();
        let mut optimizer = Vec::new();
        let mut permutation = None;
        for (name, view) in st.iter() {
            let on = if name == PERMUTATION {
                &Device::Cpu
            } else {
                device
            };
            let t = view.load(on).map_err(|source| CheckpointError::Tensor {
                name: name.to_string(),
                source,
            })?;
            if name == PERMUTATION {
                let p = t
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<u32>())
                    .map_err(|source| CheckpointError::Tensor {
                        name: name.to_string(),
                        source,
                    })?;
                permutation = Some(p);
            } else if name.starts_with("adam.") {
                optimizer.push((name.to_string(), t));
            } else {
                weights.push((name.to_string(), t));
            }
        }
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        optimizer.sort_by(|a, b| a.0.cmp(&b.0));
        let Some(permutation) = permutation else {
            return Err(CheckpointError::Corrupt {
                path: path_buf(),
                detail: format!("no `{PERMUTATION}` tensor"),
            });
        };

        let best = match meta.contains_key("early_stopping.best_epoch") {
            true => Some(Best {
                epoch: field.parse("early_stopping.best_epoch")?,
                loss: field.parse("early_stopping.best_loss")?,
            }),
            false => None,
        };
        let metrics =
            metrics::parse_csv(field.get("metrics")?).map_err(|e| CheckpointError::Metadata {
                path: path_buf(),
                key: "metrics".into(),
                problem: e.to_string(),
            })?;
        let extra = meta
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(EXTRA_PREFIX)?.to_string(), v.clone())))
            .collect();
        Ok(Checkpoint {
            weights,
            optimizer,
            adam_step: field.parse("adam_step")?,
            progress: Progress {
                epoch: field.parse("epoch")?,
                position: field.parse("position")?,
                step: field.parse("step")?,
            },
            seed: field.parse("seed")?,
            permutation,
            early_stopping: EarlyStopping {
                patience: field.parse("early_stopping.patience")?,
                min_delta: field.parse("early_stopping.min_delta")?,
                best,
                epochs_since_best: field.parse("early_stopping.epochs_since_best")?,
            },
            metrics,
            extra,
        })
    }
}

/// Typed access to the metadata entries, with errors naming the key.
struct Fields<'a> {
    meta: &'a HashMap<String, String>,
    path: &'a Path,
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Result<&str, CheckpointError> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| CheckpointError::Metadata {
                path: self.path.to_path_buf(),
                key: key.into(),
                problem: "is missing".into(),
            })
    }

    fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<T, CheckpointError> {
        let text = self.get(key)?;
        text.parse().map_err(|_| CheckpointError::Metadata {
            path: self.path.to_path_buf(),
            key: key.into(),
            problem: format!("`{text}` is not a valid {}", std::any::type_name::<T>()),
        })
    }
}

/// Turns a safetensors parse error into a message that says whether the file is cut short.
fn diagnose(bytes: &[u8], error: SafeTensorError, path: &Path) -> CheckpointError {
    let truncated = |detail: String| CheckpointError::Truncated {
        path: path.to_path_buf(),
        detail,
    };
    let len = bytes.len();
    let Some(head) = bytes.get(..8) else {
        return truncated(format!(
            "{len} bytes, fewer than the 8 of the header length"
        ));
    };
    let header_len = u64::from_le_bytes(head.try_into().expect("8 bytes"));
    let header_end = header_len.saturating_add(8);
    if header_end > len as u64 && header_len < 100_000_000 {
        return truncated(format!(
            "the header needs {header_end} bytes, the file has {len}"
        ));
    }
    let data_end = bytes
        .get(8..header_end as usize)
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(h).ok())
        .and_then(|h| {
            h.as_object()?
                .iter()
                .filter(|(k, _)| k.as_str() != "__metadata__")
                .map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
                .try_fold(0u64, |m, end| Some(m.max(end?)))
        });
    if let Some(data_end) = data_end {
        let need = header_end + data_end;
        if need > len as u64 {
            return truncated(format!("its tensors need {need} bytes, the file has {len}"));
        }
    }
    CheckpointError::Corrupt {
        path: path.to_path_buf(),
        detail: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::metrics::tests::{same, sample_rows};
    use candle_core::DType;

    fn sample(device: &Device) -> Checkpoint {
        let w = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, device).unwrap();
        Checkpoint {
            weights: vec![
                (
                    "decoder.bias".into(),
                    w(vec![0.5, -1.25, f32::MIN_POSITIVE], &[3]),
                ),
                (
                    "encoder.weight".into(),
                    w((0..6).map(|i| i as f32 / 7.0).collect(), &[2, 3]),
                ),
            ],
            optimizer: vec![
                ("adam.m.decoder.bias".into(), w(vec![1e-30, 2.0, 3.0], &[3])),
                ("adam.v.decoder.bias".into(), w(vec![4.0, 5.0, 6e20], &[3])),
            ],
            adam_step: 1233,
            progress: Progress {
                epoch: 7,
                position: 512,
                step: 1234,
            },
            seed: u64::MAX - 3,
            permutation: vec![4, 0, 3, 1, 2, u32::MAX],
            early_stopping: EarlyStopping {
                patience: 5,
                min_delta: 0.01,
                best: Some(Best {
                    epoch: 5,
                    loss: 0.1 + 0.2,
                }),
                epochs_since_best: 2,
            },
            metrics: sample_rows(),
            extra: BTreeMap::from([
                (
                    "config".into(),
                    r#"{"z_dim":256,"name":"small, \"quoted\""}"#.into(),
                ),
                ("command".into(), "drumvae train --epochs 10".into()),
            ]),
        }
    }

    fn values(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    fn assert_tensors_equal(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(b) {
            assert_eq!(na, nb);
            assert_eq!(ta.dims(), tb.dims(), "{na}");
            assert_eq!(values(ta), values(tb), "{na}");
        }
    }

    #[test]
    fn checkpoint_round_trips_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let saved = sample(&Device::Cpu);
        saved.save(&path).unwrap();
        let loaded = Checkpoint::load(&path, &Device::Cpu).unwrap();
        // Destructure so that a new field breaks this test until it is checked here.
        let Checkpoint {
            weights,
            optimizer,
            adam_step,
            progress,
            seed,
            permutation,
            early_stopping,
            metrics,
            extra,
        } = loaded;
        assert_tensors_equal(&weights, &saved.weights);
        assert_tensors_equal(&optimizer, &saved.optimizer);
        assert_eq!(adam_step, saved.adam_step);
        assert_eq!(progress, saved.progress);
        assert_eq!(seed, saved.seed);
        assert_eq!(permutation, saved.permutation);
        assert_eq!(early_stopping, saved.early_stopping);
        assert_eq!(
            early_stopping.best.unwrap().loss.to_bits(),
            (0.1f64 + 0.2).to_bits()
        );
        assert!(same(&metrics, &saved.metrics), "metrics history changed");
        assert_eq!(extra, saved.extra);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary left behind"
        );

        // No best yet, empty history and permutation also survive.
        let mut fresh = sample(&Device::Cpu);
        fresh.early_stopping = EarlyStopping::new(0);
        fresh.metrics.clear();
        fresh.permutation.clear();
        fresh.save(&path).unwrap();
        let loaded = Checkpoint::load(&path, &Device::Cpu).unwrap();
        assert_eq!(loaded.early_stopping, fresh.early_stopping);
        assert!(loaded.metrics.is_empty() && loaded.permutation.is_empty());
    }

    #[test]
    fn a_checkpoint_loads_as_model_weights() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        sample(&Device::Cpu).save(&path).unwrap();
        // SAFETY: the file is not modified while mapped.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu)
                .unwrap()
        };
        let t = vb.get((2, 3), "encoder.weight").unwrap();
        assert_eq!(values(&t), values(&sample(&Device::Cpu).weights[1].1));
    }

    #[test]
    fn a_truncated_checkpoint_gives_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.safetensors");
        let bytes = sample(&Device::Cpu).to_bytes().unwrap();
        for keep in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..keep]).unwrap();
            let e = Checkpoint::load(&path, &Device::Cpu).unwrap_err();
            assert!(
                matches!(e, CheckpointError::Truncated { .. }),
                "{keep} bytes: {e}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains("truncated") && msg.contains("cut.safetensors"),
                "{msg}"
            );
        }
        let e = Checkpoint::load(&dir.path().join("absent"), &Device::Cpu).unwrap_err();
        assert!(matches!(e, CheckpointError::Read { .. }), "{e}");
    }

    #[test]
    fn wrong_files_and_bad_metadata_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.safetensors");
        let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("w", t)]), &path).unwrap();
        let e = Checkpoint::load(&path, &Device::Cpu).unwrap_err();
        assert!(matches!(e, CheckpointError::NotACheckpoint { .. }), "{e}");

        let mut bytes = sample(&Device::Cpu).to_bytes().unwrap();
        // Same-length edit inside the header: seed "18446744073709551612" -> a non-number.
        let at = bytes
            .windows(20)
            .position(|w| w == b"18446744073709551612")
            .unwrap();
        bytes[at..at + 2].copy_from_slice(b"x1");
        let e = Checkpoint::from_bytes(&bytes, &path, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`seed`"), "{e}");

        let mut reserved = sample(&Device::Cpu);
        reserved.weights[0].0 = "adam.m.x".into();
        assert!(matches!(
            reserved.save(&path),
            Err(CheckpointError::Invalid(_))
        ));
    }

    #[test]
    fn restore_weights_sets_variables_and_refuses_other_models() {
        let ck = sample(&Device::Cpu);
        let varmap = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        vb.get_with_hints((2, 3), "encoder.weight", candle_nn::Init::Const(0.0))
            .unwrap();
        vb.get_with_hints(3, "decoder.bias", candle_nn::Init::Const(0.0))
            .unwrap();
        ck.restore_weights(&varmap).unwrap();
        assert_tensors_equal(&Checkpoint::weights_of(&varmap).unwrap(), &ck.weights);

        let other = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu);
        vb.get_with_hints((3, 2), "encoder.weight", candle_nn::Init::Const(0.0))
            .unwrap();
        vb.get_with_hints(3, "decoder.bias", candle_nn::Init::Const(0.0))
            .unwrap();
        let e = ck.restore_weights(&other).unwrap_err().to_string();
        assert!(e.contains("shape"), "{e}");
    }
}
