//! The decode step both players share: a loaded model turns a [`Point`] (four corners, a position
//! on the morph pad, sampling options) into a [`Pattern`]. The plugin's worker thread and the
//! offline `drumvae render` command both call [`Engine::decode`], so render writes exactly what
//! the plugin would play. Runs on the WORKER THREAD (or the CLI's main thread).

pub mod slots;

pub use slots::{SLOT_COUNT, SLOT_NAMES, Slot, Slots};

use crate::groove::Pattern;
use crate::latent;
use crate::midi_file;
use crate::model::embedded::{DEFAULT_MODEL_NAME, load_default};
use crate::model::{DecodeOptions, ModelError, ModelInfo, Vae, load_bytes, load_file};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// Everything that decides one decoded pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// The corners being blended.
    pub slots: Slots,
    /// `0..=1`: A -> B (and C -> D), by spherical interpolation.
    pub x: f32,
    /// `0..=1`: the A-B edge -> the C-D edge.
    pub y: f32,
    /// Hit sampling temperature (0 = threshold; see [`DecodeOptions`]).
    pub temperature: f32,
    /// Hit-logit bias (positive = busier).
    pub density: f32,
    /// Seed of the hit draws when the temperature is above 0.
    pub seed: u64,
}

impl Default for Point {
    fn default() -> Self {
        Point {
            slots: Slots::default(),
            x: 0.0,
            y: 0.0,
            temperature: 0.0,
            density: 0.0,
            seed: 0,
        }
    }
}

/// A loaded model with its style anchors.
pub struct Engine {
    vae: Vae,
    info: ModelInfo,
    name: String,
    anchors: BTreeMap<String, Vec<f32>>,
}

/// A latent for a corner, plus a note when the slot could not be honoured as asked.
pub struct SlotLatent {
    pub z: Vec<f32>,
    pub warning: Option<String>,
}

impl Engine {
    /// The model compiled into the library, on `device`.
    pub fn embedded(device: &Device) -> Result<Engine, ModelError> {
        let (vae, info) = load_default(device)?;
        Ok(Engine::new(vae, info, DEFAULT_MODEL_NAME.to_string()))
    }

    /// A model file written by `train`, on `device`.
    pub fn from_file(path: &Path, device: &Device) -> Result<Engine, ModelError> {
        let (vae, info) = load_file(path, device)?;
        Ok(Engine::new(vae, info, Engine::name_of(path)))
    }

    /// A model file's bytes (read by [`crate::model::file::read_model_bytes`]), named after
    /// `path`, on `device`.
    pub fn from_bytes(path: &Path, bytes: &[u8], device: &Device) -> Result<Engine, ModelError> {
        let (vae, info) = load_bytes(bytes, device)?;
        Ok(Engine::new(vae, info, Engine::name_of(path)))
    }

    fn name_of(path: &Path) -> String {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string())
    }

    fn new(vae: Vae, info: ModelInfo, name: String) -> Engine {
        // A file without (or with unreadable) anchors still works: style slots fall back to seeds.
        let anchors = info
            .metadata
            .get("style_anchors")
            .and_then(|json| serde_json::from_str::<BTreeMap<String, Vec<f32>>>(json).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, z)| z.len() == info.config.latent && z.iter().all(|v| v.is_finite()))
            .collect();
        Engine {
            vae,
            info,
            name,
            anchors,
        }
    }

    /// The model's display name (its file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network and its metadata.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        self.vae.device()
    }

    /// Names of the styles this model offers as corners.
    pub fn style_names(&self) -> impl Iterator<Item = &str> {
        self.anchors.keys().map(String::as_str)
    }

    /// The latent of one corner. A style the model lacks, or a stored latent of the wrong size
    /// (from another model), falls back to a seeded random point derived from the slot's text, so
    /// the pad still plays, and says so.
    pub fn latent_of(&self, slot: &Slot) -> SlotLatent {
        let dim = self.info.config.latent;
        let fallback = |why: String| SlotLatent {
            z: latent::seeded_z(fnv1a(slot.to_string().as_bytes()), dim),
            warning: Some(why),
        };
        match slot {
            Slot::Seed { seed } => SlotLatent {
                z: latent::seeded_z(*seed, dim),
                warning: None,
            },
            Slot::Style { name } => match self.anchors.get(name) {
                Some(z) => SlotLatent {
                    z: z.clone(),
                    warning: None,
                },
                None => fallback(format!(
                    "model {} has no style \"{name}\" (it has: {}); playing a seeded groove instead",
                    self.name,
                    self.style_list()
                )),
            },
            Slot::File { name, z } if z.len() == dim && z.iter().all(|v| v.is_finite()) => {
                SlotLatent {
                    z: z.clone(),
                    warning: None,
                }
            }
            Slot::File { name, z } => fallback(format!(
                "the groove from {name} was encoded by a model with {} latent dimensions, this \
                 one has {dim}; load the file again to re-encode it",
                z.len()
            )),
            Slot::Unreadable { reason, .. } => fallback(format!(
                "a corner saved in this session could not be read ({reason}); playing a seeded \
                 groove there, and the saved corner is kept as it was"
            )),
        }
    }

    fn style_list(&self) -> String {
        if self.anchors.is_empty() {
            "none".to_string()
        } else {
            self.anchors.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    /// The blended latent of a point (x and y clamped to `0..=1`), with any slot warnings.
    pub fn latent_at(&self, point: &Point) -> (Vec<f32>, Vec<String>) {
        let corners: Vec<SlotLatent> = point.slots.0.iter().map(|s| self.latent_of(s)).collect();
        let warnings = corners.iter().filter_map(|c| c.warning.clone()).collect();
        let unit = |v: f32| {
            if v.is_finite() {
                v.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let refs: [&[f32]; SLOT_COUNT] = std::array::from_fn(|i| corners[i].z.as_slice());
        (latent::blend4(refs, unit(point.x), unit(point.y)), warnings)
    }

    /// Decodes a point into the pattern the plugin plays there.
    pub fn decode(&self, point: &Point) -> candle_core::Result<(Pattern, Vec<String>)> {
        let (z, warnings) = self.latent_at(point);
        let dim = z.len();
        let z = Tensor::from_vec(z, (1, dim), self.vae.device())?;
        let opts = DecodeOptions {
            temperature: point.temperature,
            density: point.density,
            seed: point.seed,
        };
        let mut patterns = self.vae.decode(&z, &opts)?;
        let pattern = patterns
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("the decoder returned no pattern".into()))?;
        Ok((pattern, warnings))
    }

    /// Encodes groove `window` (0-based) of a MIDI file into a corner: a 4-bar window (1-bar hop)
    /// of a long file, or a 1-3 bar loop repeated to 4 bars ([`midi_file::Grid::groove`]).
    pub fn encode_file(&self, path: &Path, window: usize) -> anyhow::Result<Slot> {
        let grid = midi_file::read_grid(path)?;
        let pattern = grid.groove(window, &path.display().to_string())?;
        let z = self.vae.encode(&[pattern])?.to_vec2::<f32>()?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Slot::File {
            name,
            z: z.into_iter().next().unwrap_or_default(),
        })
    }
}

/// FNV-1a: a stable hash (unlike `DefaultHasher`, fixed across Rust versions) for fallback seeds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
