//! The default model, compiled into the library so the plugin and `drumvae render` work with no
//! files around them. Loaded on the worker thread (or the CLI's main thread), never on the audio
//! thread.

use super::{ModelError, ModelInfo, Vae, load_bytes};
use candle_core::Device;

/// File name of the embedded model in `models/` (shown to users as the model's name).
pub const DEFAULT_MODEL_NAME: &str = "drumvae-4bar.safetensors";

/// The bytes of `models/drumvae-4bar.safetensors`.
pub static DEFAULT_MODEL_BYTES: &[u8] = include_bytes!("../../models/drumvae-4bar.safetensors");

/// Builds the embedded model on `device`, with the same checks as any user file.
pub fn load_default(device: &Device) -> Result<(Vae, ModelInfo), ModelError> {
    load_bytes(DEFAULT_MODEL_BYTES, device)
}
