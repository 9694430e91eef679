//! Model files: `.safetensors` with the config and free-form metadata (training command, dataset
//! summary, metrics) as JSON strings in `__metadata__`. Written by the training CLI; read by the
//! worker thread (plugin model loading) and the offline CLI. Loading checks everything it can, so a
//! bad file fails with a reason the user can act on and the current model stays in place.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use safetensors::{SafeTensorError, SafeTensors};

use super::{Config, Vae};
use crate::untrusted_file::{self, ReadError};

/// The value of the `format` metadata key in files every DrumVAE version reads. Bump it when the
/// tensor layout or the meaning of a config field changes, so old readers refuse new files instead
/// of misreading them.
pub const FORMAT: &str = "drumvae-model-v1";
/// The format of files whose config uses something version 1 readers would silently ignore and
/// then decode wrongly: a bar decoder that carries its state across bar lines
/// ([`super::BarState::Carry`]). Files without it stay [`FORMAT`], readable by older versions.
pub const FORMAT_V2: &str = "drumvae-model-v2";
/// Every format this version reads.
pub const READABLE_FORMATS: [&str; 2] = [FORMAT, FORMAT_V2];

/// The oldest format that can hold `config` without an older reader misreading it.
pub fn format_for(config: &Config) -> &'static str {
    match config.bar_state {
        super::BarState::Reset => FORMAT,
        super::BarState::Carry => FORMAT_V2,
    }
}
/// Metadata key holding [`FORMAT`].
pub const FORMAT_KEY: &str = "format";
/// Metadata key holding the JSON of the [`Config`].
pub const CONFIG_KEY: &str = "config";

/// What a model file says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// The network's sizes and loss weights.
    pub config: Config,
    /// Every `__metadata__` entry, including `format` and `config`.
    pub metadata: HashMap<String, String>,
}

/// Why a model could not be saved or loaded. Messages name the file's problem and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read or write model file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "not a safetensors model file ({reason}); choose a .safetensors file written by `train`"
    )]
    NotSafetensors { reason: String },
    #[error(
        "the model file is truncated ({reason}); it was probably cut off while copying or \
         downloading: copy it again"
    )]
    Truncated { reason: String },
    #[error("the model file is corrupt ({reason}); use another copy or retrain")]
    Corrupt { reason: String },
    #[error(
        "not a DrumVAE model: the file has no \"{FORMAT_KEY}\" metadata (expected \"{FORMAT}\")"
    )]
    NotDrumvae,
    #[error(
        "unsupported model format \"{found}\": this version reads \"{FORMAT}\" and \
         \"{FORMAT_V2}\"; use a newer DrumVAE, or retrain"
    )]
    UnsupportedFormat { found: String },
    #[error("the model file has no \"{CONFIG_KEY}\" metadata, so its network cannot be rebuilt")]
    MissingConfig,
    #[error("the model file's config is invalid: {reason}")]
    BadConfig { reason: String },
    #[error(
        "the model file has no tensor `{name}` (expected shape {expected:?}); its weights do not \
         match its config"
    )]
    MissingTensor { name: String, expected: Vec<usize> },
    #[error(
        "tensor `{name}` has shape {found:?} but the file's config needs {expected:?}; its \
         weights do not match its config"
    )]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error(
        "the model file has tensors its config does not use: {names:?}; it was written for a \
         different network"
    )]
    UnexpectedTensors { names: Vec<String> },
    #[error("tensor `{name}` has dtype {dtype:?}; model weights must be floating point")]
    WrongDtype { name: String, dtype: DType },
    #[error(
        "tensor `{name}` holds {count} non-finite values (first: {first} at index {index}); the \
         training run diverged: use an earlier checkpoint"
    )]
    NonFinite {
        name: String,
        count: usize,
        first: f32,
        index: usize,
    },
    #[error(
        "{path} is not a regular file (a folder, device, pipe or socket); choose a .safetensors \
         model file"
    )]
    NotAFile { path: PathBuf },
    #[error(
        "{path} is {size} bytes; model files over {MAX_MODEL_BYTES} bytes are refused (DrumVAE \
         models are a few tens of MB): is it the right file?"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("metadata key \"{0}\" is reserved for the model format")]
    ReservedKey(String),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The model file bytes for the weights in `varmap` (the names [`Vae::new`] gave them), `config`,
/// and `extra` metadata (training command, dataset summary, metrics as JSON...).
pub fn to_bytes(
    varmap: &VarMap,
    config: &Config,
    extra: HashMap<String, String>,
) -> Result<Vec<u8>, ModelError> {
    let mut metadata = extra;
    for key in [FORMAT_KEY, CONFIG_KEY] {
        if metadata.contains_key(key) {
            return Err(ModelError::ReservedKey(key.to_string()));
        }
    }
    metadata.insert(FORMAT_KEY.into(), format_for(config).into());
    metadata.insert(
        CONFIG_KEY.into(),
        serde_json::to_string(config).expect("a Config always serialises"),
    );
    let tensors: Vec<(String, Tensor)> = {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect()
    };
    safetensors::serialize(tensors, Some(metadata)).map_err(|e| ModelError::Corrupt {
        reason: format!("while writing: {e}"),
    })
}

/// Writes a model file atomically (temporary file + rename): a crash never leaves half a model.
pub fn save(
    path: &Path,
    varmap: &VarMap,
    config: &Config,
    extra: HashMap<String, String>,
) -> Result<(), ModelError> {
    let bytes = to_bytes(varmap, config, extra)?;
    crate::atomic_file::write(path, &bytes).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The same model file with `updates` written into its metadata (other keys, and every tensor,
/// byte for byte as they were): for refreshing what a model says about itself, such as its style
/// anchors, without retraining. The format and config keys cannot be changed this way.
pub fn with_metadata(
    bytes: &[u8],
    updates: HashMap<String, String>,
) -> Result<Vec<u8>, ModelError> {
    for key in [FORMAT_KEY, CONFIG_KEY] {
        if updates.contains_key(key) {
            return Err(ModelError::ReservedKey(key.to_string()));
        }
    }
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| container_error(bytes, e))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| container_error(bytes, e))?;
    let mut metadata = header.metadata().clone().unwrap_or_default();
    metadata.extend(updates);
    // A rewrite also brings the format up to date with the config: a model that carries its bar
    // state but was written as v1 (by a build from before v2) leaves as v2.
    if let Some(config) = metadata
        .get(CONFIG_KEY)
        .and_then(|json| serde_json::from_str::<Config>(json).ok())
    {
        metadata.insert(FORMAT_KEY.into(), format_for(&config).into());
    }
    safetensors::serialize(st.tensors(), Some(metadata)).map_err(|e| ModelError::Corrupt {
        reason: format!("while writing: {e}"),
    })
}

/// The largest model file read: 256 MB, several times the largest preset in f32.
pub const MAX_MODEL_BYTES: u64 = 256_000_000;
/// The largest safetensors header read (tensor table and metadata, style anchors included): 8 MB.
pub const MAX_HEADER_BYTES: u64 = 8_000_000;

/// Reads and checks a model file; see [`load_bytes`]. The path comes from users and saved
/// sessions, so it is untrusted: only a regular file is opened (a FIFO would block the open, a
/// device never ends), its size is capped at [`MAX_MODEL_BYTES`] and every read is bounded by it
/// (a file that grows while read, or a /proc file that reports size 0, cannot run past it), and
/// the header is read and checked for our format before the weights, so a multi-GB unrelated
/// safetensors file costs one small read.
pub fn load_file(path: &Path, device: &Device) -> Result<(Vae, ModelInfo), ModelError> {
    let bytes = read_model_bytes(path)?;
    load_bytes(&bytes, device)
}

/// The bytes of a model file, read with the checks [`load_file`] describes.
pub fn read_model_bytes(path: &Path) -> Result<Vec<u8>, ModelError> {
    let refused = |e: ReadError| match e {
        ReadError::NotAFile => ModelError::NotAFile {
            path: path.to_path_buf(),
        },
        ReadError::TooLarge { bytes } => ModelError::TooLarge {
            path: path.to_path_buf(),
            size: bytes,
        },
        ReadError::Io(source) => ModelError::Io {
            path: path.to_path_buf(),
            source,
        },
    };
    let mut file = untrusted_file::open(path, MAX_MODEL_BYTES).map_err(refused)?;
    let mut bytes = Vec::with_capacity(file.reported_len() as usize);
    let read = |e: std::io::Error| refused(ReadError::Io(e));
    // The 8-byte header length, then the header: enough to refuse a file that is not ours.
    file.read_up_to(8, &mut bytes).map_err(read)?;
    if bytes.len() == 8 {
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        // A header that does not fit the file is left to `load_bytes`, which explains a
        // truncated or corrupt file; a well-formed header of someone else's file stops here.
        if n <= MAX_HEADER_BYTES && n <= file.reported_len().saturating_sub(8) {
            file.read_up_to(n, &mut bytes).map_err(read)?;
            check_header(&bytes)?;
        }
    }
    file.read_rest(&mut bytes).map_err(refused)?;
    Ok(bytes)
}

/// Checks a complete header (length prefix + JSON) for our format key, before the weights are
/// read.
fn check_header(head: &[u8]) -> Result<(), ModelError> {
    // Not JSON: `load_bytes` names the container problem.
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&head[8..]) else {
        return Ok(());
    };
    if !header.is_object() {
        return Ok(());
    }
    check_format(
        header
            .get("__metadata__")
            .and_then(|m| m.get(FORMAT_KEY))
            .and_then(|f| f.as_str()),
    )
}

/// The one rule for a file's `format` value, shared by the header pre-check and [`load_bytes`]:
/// absent means not ours, and only [`READABLE_FORMATS`] are read.
fn check_format(found: Option<&str>) -> Result<(), ModelError> {
    match found {
        None => Err(ModelError::NotDrumvae),
        Some(f) if !READABLE_FORMATS.contains(&f) => Err(ModelError::UnsupportedFormat {
            found: f.to_string(),
        }),
        Some(_) => Ok(()),
    }
}

/// Builds the model a file describes, onto `device`. Checks the container, the format, the config,
/// every tensor's presence, shape and dtype, that no tensor is left over, and that every weight is
/// finite.
pub fn load_bytes(bytes: &[u8], device: &Device) -> Result<(Vae, ModelInfo), ModelError> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| container_error(bytes, e))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| container_error(bytes, e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    check_format(metadata.get(FORMAT_KEY).map(String::as_str))?;
    let json = metadata.get(CONFIG_KEY).ok_or(ModelError::MissingConfig)?;
    let config: Config = serde_json::from_str(json).map_err(|e| ModelError::BadConfig {
        reason: e.to_string(),
    })?;
    config
        .validate()
        .map_err(|reason| ModelError::BadConfig { reason })?;

    let mut tensors = HashMap::new();
    for (name, view) in st.iter() {
        let t = match candle_core::safetensors::Load::load(&view, &Device::Cpu) {
            Ok(t) => t,
            Err(e) => {
                return Err(ModelError::Corrupt {
                    reason: format!("tensor `{name}`: {e}"),
                });
            }
        };
        if !t.dtype().is_float() {
            return Err(ModelError::WrongDtype {
                name: name.to_string(),
                dtype: t.dtype(),
            });
        }
        let t = t.to_dtype(DType::F32)?;
        check_finite(name, &t)?;
        tensors.insert(name.to_string(), t);
    }

    let problem = Arc::new(Mutex::new(None));
    let used = Arc::new(Mutex::new(HashSet::new()));
    let names: Vec<String> = tensors.keys().cloned().collect();
    let backend = Checked {
        tensors,
        problem: problem.clone(),
        used: used.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
    let vae = match Vae::new(&config, vb) {
        Ok(vae) => vae,
        Err(e) => {
            let recorded = problem.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(recorded.unwrap_or(ModelError::Candle(e)));
        }
    };
    let used = used.lock().unwrap_or_else(|p| p.into_inner());
    let mut unused: Vec<String> = names.into_iter().filter(|n| !used.contains(n)).collect();
    if !unused.is_empty() {
        unused.sort();
        return Err(ModelError::UnexpectedTensors { names: unused });
    }
    Ok((vae, ModelInfo { config, metadata }))
}

/// Classifies a safetensors parse failure into "not one", "truncated" or "corrupt".
fn container_error(bytes: &[u8], e: SafeTensorError) -> ModelError {
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let looks_like_header = bytes.get(8) == Some(&b'{');
    match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            // The header parsed, so its declared data size is known.
            let n = header_len.unwrap_or(0) as usize;
            match declared_data_len(&bytes[8..8 + n]) {
                Some(data) if 8 + n + data > bytes.len() => ModelError::Truncated {
                    reason: format!(
                        "its header describes {} bytes but the file has {}",
                        8 + n + data,
                        bytes.len()
                    ),
                },
                Some(data) => ModelError::Corrupt {
                    reason: format!(
                        "{} bytes after the {} its header describes",
                        bytes.len() - 8 - n - data,
                        8 + n + data
                    ),
                },
                None => ModelError::Corrupt {
                    reason: e.to_string(),
                },
            }
        }
        SafeTensorError::InvalidHeaderLength if looks_like_header => ModelError::Truncated {
            reason: format!(
                "the file ends inside its {}-byte header ({} bytes in all)",
                header_len.unwrap_or(0),
                bytes.len()
            ),
        },
        SafeTensorError::TensorInvalidInfo
        | SafeTensorError::InvalidOffset(_)
        | SafeTensorError::ValidationOverflow
        | SafeTensorError::InvalidTensorView(..)
        | SafeTensorError::MisalignedSlice
            if looks_like_header =>
        {
            ModelError::Corrupt {
                reason: e.to_string(),
            }
        }
        SafeTensorError::HeaderTooSmall => ModelError::NotSafetensors {
            reason: format!("only {} bytes", bytes.len()),
        },
        e => ModelError::NotSafetensors {
            reason: e.to_string(),
        },
    }
}

/// The end of the last tensor's data according to a (valid) JSON header.
fn declared_data_len(header: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(header).ok()?;
    v.as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .map(|m| m as usize)
}

fn check_finite(name: &str, t: &Tensor) -> Result<(), ModelError> {
    let values = t.flatten_all()?.to_vec1::<f32>()?;
    let mut bad = values.iter().enumerate().filter(|(_, v)| !v.is_finite());
    if let Some((index, &first)) = bad.next() {
        return Err(ModelError::NonFinite {
            name: name.to_string(),
            count: 1 + bad.count(),
            first,
            index,
        });
    }
    Ok(())
}

/// A tensor source for [`VarBuilder`] that records which tensors the model asked for and, on the
/// first missing or misshapen one, a [`ModelError`] naming it (Candle's own errors are strings).
struct Checked {
    tensors: HashMap<String, Tensor>,
    problem: Arc<Mutex<Option<ModelError>>>,
    used: Arc<Mutex<HashSet<String>>>,
}

impl Checked {
    fn fail(&self, e: ModelError) -> candle_core::Error {
        let msg = e.to_string();
        let mut slot = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
        candle_core::Error::Msg(msg)
    }

    fn take(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = &self.tensors[name];
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        t.to_dtype(dtype)?.to_device(dev)
    }
}

impl SimpleBackend for Checked {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            None => Err(self.fail(ModelError::MissingTensor {
                name: name.to_string(),
                expected: s.dims().to_vec(),
            })),
            Some(t) if t.dims() != s.dims() => Err(self.fail(ModelError::WrongShape {
                name: name.to_string(),
                expected: s.dims().to_vec(),
                found: t.dims().to_vec(),
            })),
            Some(_) => self.take(name, dtype, dev),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if !self.tensors.contains_key(name) {
            return Err(self.fail(ModelError::MissingTensor {
                name: name.to_string(),
                expected: Vec::new(),
            }));
        }
        self.take(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
