//! The DrumVAE model: a MusicVAE (Roberts et al., "A Hierarchical Latent Vector Model for Learning
//! Long-Term Structure in Music", ICML 2018, <https://arxiv.org/abs/1803.05428>) on the GrooVAE
//! grid, with its configuration, loss, inference API and model files. Training runs it in the
//! training CLI; the plugin's worker thread owns one for encoding and decoding. Nothing here is
//! ever touched by the audio thread.
//!
//! Where we deviate from MusicVAE/GrooVAE, the item says so: the conductor reads z at every bar,
//! sigma has a floor of [`encoder::SIGMA_FLOOR`], and teacher-forced bars run as one batch.

pub mod cpu;
pub mod decoder;
pub mod device;
pub mod embedded;
pub mod encoder;
pub mod file;
pub mod init;
pub mod lstm;

use std::sync::{Arc, Mutex};

use candle_core::{D, DType, Device, Result, Tensor, TensorId};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::groove::{FEATURES, Pattern, STEPS, VOICES};

pub use cpu::fast_decoder::FastDecoder;
pub use decoder::{DecodeOptions, Decoder, DecoderOutput, SampleTrace};
pub use device::{DeviceError, DeviceRequest, select_device};
pub use encoder::Encoder;
pub use file::{FORMAT, ModelError, ModelInfo, load_bytes, load_file, save, to_bytes};
pub use init::seeded_var_builder;

/// Which decoder the model uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderKind {
    /// MusicVAE's conductor + bar decoder: the presets' default, built for long sequences, where
    /// per-bar embeddings keep a phrase coherent and make every bar use z. At 4 bars it measured
    /// below the flat decoder (models/README.md, the ablation).
    #[default]
    Hierarchical,
    /// One LSTM over all 64 steps, the original GrooVAE decoder: the shipped 4-bar model's, which
    /// reconstructed 4-bar grooves best on the validation split.
    Flat,
}

/// What the hierarchical decoder's bar decoder starts each bar from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BarState {
    /// MusicVAE's rule: every bar starts from `tanh(bar_init(c_u))`, its own bar embedding. The
    /// bars are independent given their embeddings, so a bar decoder that knew how the last bar
    /// ended has to be told again by the conductor. The default for files written before the
    /// option existed.
    #[default]
    Reset,
    /// Bar 1 starts from its embedding; every later bar continues from the state the previous
    /// bar ended in, and the conductor steers it through the bar embedding `c_u` fed at every
    /// step. Keeps what the flat decoder carries across bar lines (the ablation's flat decoder
    /// beat the reset rule by 0.023 sampled hit F1 at four bars) and the conductor's per-bar
    /// plan.
    Carry,
}

/// Which cells the velocity and offset heads are trained on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HeadLoss {
    /// Every cell, with target 0 where there is no hit (Magenta's GrooVAE). The heads then learn
    /// "velocity times the chance of a hit", pulled toward 0 wherever a hit is uncertain: decoded
    /// hits come out soft. The default for files written before the option existed.
    #[default]
    AllCells,
    /// Only cells whose target has a hit: the heads learn the velocity and timing a hit would
    /// have. Decoding is consistent with it because the sampler zeroes both where it draws no
    /// hit, exactly as rests look in the data the bar decoder is fed.
    HitCells,
}

/// Every size and loss weight of a model. Saved as JSON in each model file, so a file rebuilds
/// exactly the network it was trained as.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Hidden units per direction of the bidirectional encoder LSTM (MusicVAE/GrooVAE: 512). The
    /// encoder only has to summarise 64 steps, so the small preset halves it for speed.
    pub encoder_hidden: usize,
    /// Size of z. GrooVAE used 256; 128 is plenty for 4 bars of 9 voices and makes blends and
    /// attribute vectors less noisy.
    pub latent: usize,
    /// Hierarchical (conductor + bar decoder) or the flat GrooVAE baseline.
    pub decoder: DecoderKind,
    /// Hidden units of the conductor LSTM; also the size of each bar embedding c_u, which is the
    /// conductor's top-layer output (no extra projection: MusicVAE's c_u is the same).
    pub conductor_hidden: usize,
    /// Layers of the conductor (MusicVAE: 2).
    pub conductor_layers: usize,
    /// Hidden units of the bar decoder (or of the flat decoder); GrooVAE: 256.
    pub decoder_hidden: usize,
    /// Layers of the bar decoder (or of the flat decoder); GrooVAE: 2.
    pub decoder_layers: usize,
    /// Default weight of the KL term, GrooVAE's 0.2: low, because for drums reconstruction quality
    /// matters more than a perfectly Gaussian latent space. Training may anneal it per step (see
    /// [`Vae::loss`]); this is the target value.
    pub beta: f64,
    /// Free bits, as a total budget in nats over all latent dimensions: KL below this is not
    /// penalised, so the encoder can use that much information without the posterior collapsing.
    /// GrooVAE's 48 bits = 48 ln 2 ≈ 33.27 nats.
    pub free_bits: f64,
    /// Which cells the velocity and offset MSE runs over (absent in older files: all cells).
    #[serde(default)]
    pub head_loss: HeadLoss,
    /// Training only: the chance that a step's teacher-forced input (the previous step) is
    /// replaced by zeros, as in Bowman et al.'s word dropout. A decoder that cannot always read
    /// the previous step has to take more of the groove from z, which is what sampling from an
    /// encoded groove relies on. 0 = off (and in files written before the option existed).
    #[serde(default)]
    pub decoder_input_dropout: f64,
    /// Hierarchical decoder only: whether the bar decoder restarts at every bar line (MusicVAE)
    /// or carries its state across (absent in older files: reset).
    #[serde(default)]
    pub bar_state: BarState,
}

/// GrooVAE's free-bits budget: 48 bits in nats.
pub const FREE_BITS_48: f64 = 48.0 * std::f64::consts::LN_2;

impl Default for Config {
    fn default() -> Self {
        Config::small()
    }
}

impl Config {
    /// Names accepted by [`Config::preset`].
    pub const PRESETS: [&'static str; 3] = ["small", "groovae", "groovae-flat"];

    /// The default: hierarchical, encoder 256, z 128, conductor and bar decoder 2 x 256. Trains
    /// and decodes about twice as fast as the GrooVAE sizes on a CPU.
    pub fn small() -> Config {
        Config {
            encoder_hidden: 256,
            latent: 128,
            decoder: DecoderKind::Hierarchical,
            conductor_hidden: 256,
            conductor_layers: 2,
            decoder_hidden: 256,
            decoder_layers: 2,
            beta: 0.2,
            free_bits: FREE_BITS_48,
            head_loss: HeadLoss::HitCells,
            decoder_input_dropout: 0.0,
            bar_state: BarState::Reset,
        }
    }

    /// GrooVAE's sizes (encoder 512, z 256, decoder 2 x 256) with the hierarchical decoder.
    pub fn groovae() -> Config {
        Config {
            encoder_hidden: 512,
            latent: 256,
            ..Config::small()
        }
    }

    /// `"small"`, `"groovae"`, or `"groovae-flat"` (the original GrooVAE: its sizes and the flat
    /// decoder, for the ablation).
    pub fn preset(name: &str) -> Option<Config> {
        match name {
            "small" => Some(Config::small()),
            "groovae" => Some(Config::groovae()),
            "groovae-flat" => Some(Config {
                decoder: DecoderKind::Flat,
                ..Config::groovae()
            }),
            _ => None,
        }
    }

    /// Checks that the sizes can build a network and the loss weights are usable.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("encoder_hidden", self.encoder_hidden),
            ("latent", self.latent),
            ("conductor_hidden", self.conductor_hidden),
            ("conductor_layers", self.conductor_layers),
            ("decoder_hidden", self.decoder_hidden),
            ("decoder_layers", self.decoder_layers),
        ];
        for (name, v) in sizes {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        for (name, v) in [("beta", self.beta), ("free_bits", self.free_bits)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be finite and >= 0, got {v}"));
            }
        }
        let p = self.decoder_input_dropout;
        if !(p.is_finite() && (0.0..1.0).contains(&p)) {
            return Err(format!(
                "decoder_input_dropout must be in 0..1 (a probability below 1), got {p}"
            ));
        }
        Ok(())
    }
}

/// `softplus(x) = ln(1 + e^x)`, computed stably as `relu(x) + ln(1 + e^-|x|)` (Candle has neither
/// `softplus` nor `log1p`).
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + log1p_exp_neg_abs(x)?
}

/// `ln(1 + e^-|x|)`: never overflows, shared by softplus and the stable BCE.
fn log1p_exp_neg_abs(x: &Tensor) -> Result<Tensor> {
    (x.abs()?.neg()?.exp()? + 1.0)?.log()
}

/// Everything a training step needs from one forward pass.
#[derive(Clone, Debug)]
pub struct Forward {
    /// Posterior mean `[B, latent]`.
    pub mu: Tensor,
    /// Posterior standard deviation `[B, latent]`.
    pub sigma: Tensor,
    /// The sample `mu + sigma * eps` that the decoder saw `[B, latent]`.
    pub z: Tensor,
    /// `[B, 64, 9]`.
    pub hit_logits: Tensor,
    /// `[B, 64, 9]`, in `0..1`.
    pub velocity: Tensor,
    /// `[B, 64, 9]`, in steps, in `-0.5..0.5`.
    pub offset: Tensor,
}

/// The loss terms, each a scalar tensor; every term except `total` is for logging.
#[derive(Clone, Debug)]
pub struct Losses {
    /// `hit_bce + velocity_mse + offset_mse + beta * kl_penalty`: what to backpropagate.
    pub total: Tensor,
    /// Binary cross-entropy of the hits, summed over steps and voices, mean over the batch.
    pub hit_bce: Tensor,
    /// Squared velocity error, summed over steps and voices, mean over the batch.
    pub velocity_mse: Tensor,
    /// Squared offset error, summed over steps and voices, mean over the batch.
    pub offset_mse: Tensor,
    /// KL(q(z|x) || N(0, I)) in nats, mean over the batch (before free bits).
    pub kl: Tensor,
    /// `mean over the batch of max(KL - free_bits, 0)`: the part of the KL that beta weighs.
    pub kl_penalty: Tensor,
}

/// Teacher-forced predictions for evaluation, each `[B, 64, 9]`.
#[derive(Clone, Debug)]
pub struct Reconstruction {
    /// The z used: the posterior mean `[B, latent]`.
    pub mu: Tensor,
    /// Hit probabilities (sigmoid of the logits).
    pub hit_prob: Tensor,
    /// Predicted velocities.
    pub velocity: Tensor,
    /// Predicted offsets.
    pub offset: Tensor,
}

/// The loss of one batch. With [`HeadLoss::AllCells`] the velocity and offset MSE runs over every
/// cell, like Magenta's GrooVAE, where rests have target 0; with [`HeadLoss::HitCells`] it runs
/// over the cells whose target has a hit (see [`HeadLoss`] for why).
pub fn losses(
    x: &Tensor,
    fwd: &Forward,
    beta: f64,
    free_bits: f64,
    head_loss: HeadLoss,
) -> Result<Losses> {
    let x = x.detach();
    let hits = x.narrow(D::Minus1, 0, VOICES)?;
    let velocity = x.narrow(D::Minus1, VOICES, VOICES)?;
    let offset = x.narrow(D::Minus1, 2 * VOICES, VOICES)?;
    let per_example = |t: Tensor| t.sum((1, 2))?.mean(0);
    let l = &fwd.hit_logits;
    // Stable BCE with logits: relu(l) - l*y + ln(1 + e^-|l|).
    let bce = ((l.relu()? - l.mul(&hits)?)? + log1p_exp_neg_abs(l)?)?;
    let hit_bce = per_example(bce)?;
    let masked = |e: Tensor| match head_loss {
        HeadLoss::AllCells => Ok(e),
        HeadLoss::HitCells => e.mul(&hits),
    };
    let velocity_mse = per_example(masked(fwd.velocity.sub(&velocity)?.sqr()?)?)?;
    let offset_mse = per_example(masked(fwd.offset.sub(&offset)?.sqr()?)?)?;
    // KL per example = sum over dims of 0.5 (mu^2 + sigma^2 - 1 - 2 ln sigma).
    let kl_each = ((fwd.mu.sqr()? + fwd.sigma.sqr()?)? - (fwd.sigma.log()? * 2.0)?)?
        .affine(0.5, -0.5)?
        .sum(1)?;
    let kl = kl_each.mean(0)?;
    let kl_penalty = (kl_each - free_bits)?.relu()?.mean(0)?;
    let total = ((&hit_bce + &velocity_mse)? + &offset_mse)?.add(&(&kl_penalty * beta)?)?;
    Ok(Losses {
        total,
        hit_bce,
        velocity_mse,
        offset_mse,
        kl,
        kl_penalty,
    })
}

/// Patterns in the model's layout, `[N, 64, 27]` on `device`.
pub fn patterns_to_tensor(patterns: &[Pattern], device: &Device) -> Result<Tensor> {
    let mut flat = Vec::with_capacity(patterns.len() * STEPS * FEATURES);
    for p in patterns {
        p.write_flat(&mut flat);
    }
    Tensor::from_vec(flat, (patterns.len(), STEPS, FEATURES), device)
}

/// Decoded grids as patterns.
fn grids_to_patterns(grids: &[Vec<f32>]) -> Result<Vec<Pattern>> {
    grids
        .iter()
        .map(|g| {
            Pattern::from_flat(g)
                .map_err(|e| candle_core::Error::Msg(format!("decoded pattern is broken: {e}")))
        })
        .collect()
}

/// The variational autoencoder: weights `encoder.*` and `decoder.*`.
#[derive(Clone, Debug)]
pub struct Vae {
    /// The configuration it was built from.
    pub config: Config,
    /// q(z | x).
    pub encoder: Encoder,
    /// p(x | z).
    pub decoder: Decoder,
    /// Where its weights live.
    device: Device,
    /// The plain-Rust decoder [`Vae::decode`] uses on the CPU; see [`FastCache`].
    fast: FastCache,
}

/// Where [`Vae::decode`] gets its [`FastDecoder`] from. A `FastDecoder` is a COPY of the decoder's
/// weights, so it must never outlive them:
///
/// - A model whose weights are `Var`s (built on a `VarMap`: training, evaluation during training,
///   `load_varmap`) can have them changed in place by an optimizer step or `Var::set`, without
///   any tensor id changing. Such a model builds a fresh `FastDecoder` for every decode call
///   ([`FastCache::PerCall`]): a few milliseconds, small next to the batches evaluation decodes,
///   and every decode sees the current weights. [`Vae::detach`] keeps that mode, because the
///   detached tensors share the `Var`s' storage.
/// - Any other model (loaded from a file or bytes: the plugin, `drumvae render`) has immutable
///   weights, so its `FastDecoder` is built on the first decode and shared by every clone
///   ([`FastCache::Shared`]). It is stored with the ids of the tensors it was copied from and
///   rebuilt if they differ, so assigning another decoder to the public `decoder` field is safe.
#[derive(Clone, Debug)]
enum FastCache {
    PerCall,
    Shared(Arc<Mutex<Option<BuiltFrom>>>),
}

/// A cached [`FastDecoder`] and the ids of the tensors it was copied from.
type BuiltFrom = (Vec<TensorId>, Arc<FastDecoder>);

impl FastCache {
    fn for_decoder(decoder: &Decoder) -> FastCache {
        if decoder.weights().iter().any(|t| t.is_variable()) {
            FastCache::PerCall
        } else {
            FastCache::Shared(Arc::default())
        }
    }

    /// The `FastDecoder` for `decoder`'s current weights.
    fn get(&self, decoder: &Decoder) -> Result<Arc<FastDecoder>> {
        let weights = decoder.weights();
        let slot = match self {
            // A variable in a decoder assigned after construction counts too.
            FastCache::Shared(slot) if !weights.iter().any(|t| t.is_variable()) => slot,
            _ => return Ok(Arc::new(FastDecoder::new(decoder)?)),
        };
        let ids: Vec<TensorId> = weights.iter().map(|t| t.id()).collect();
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some((built_from, fast)) if *built_from == ids => Ok(fast.clone()),
            _ => {
                let fast = Arc::new(FastDecoder::new(decoder)?);
                *slot = Some((ids, fast.clone()));
                Ok(fast)
            }
        }
    }
}

impl Vae {
    /// Creates (from a `VarMap` builder, for training) or loads (from stored tensors) the model.
    pub fn new(config: &Config, vb: VarBuilder) -> Result<Vae> {
        if let Err(e) = config.validate() {
            candle_core::bail!("invalid model config: {e}");
        }
        let decoder = Decoder::new(config, vb.pp("decoder"))?;
        Ok(Vae {
            config: config.clone(),
            encoder: Encoder::new(config, vb.pp("encoder"))?,
            fast: FastCache::for_decoder(&decoder),
            decoder,
            device: vb.device().clone(),
        })
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The training pass: encode `x [B, 64, 27]`, sample `z = mu + sigma * eps` with the given
    /// standard-normal `eps [B, latent]` (passed in so the caller owns the randomness), decode with
    /// teacher forcing.
    pub fn forward(&self, x: &Tensor, eps: &Tensor) -> Result<Forward> {
        self.forward_with_input_mask(x, eps, None)
    }

    /// [`Vae::forward`] with decoder input dropout: `keep [B, 64, 1]` (1 = keep, 0 = drop) scales
    /// each step of the decoder's teacher-forced input; the encoder and the loss still see `x`.
    /// See [`Config::decoder_input_dropout`].
    pub fn forward_with_input_mask(
        &self,
        x: &Tensor,
        eps: &Tensor,
        keep: Option<&Tensor>,
    ) -> Result<Forward> {
        self.check_input(x)?;
        let (mu, sigma) = self.encoder.forward(x)?;
        let z = mu.add(&sigma.mul(eps)?)?;
        let decoder_input = match keep {
            Some(keep) => x.broadcast_mul(keep)?,
            None => x.clone(),
        };
        let out = self.decoder.teacher_forced(&z, &decoder_input)?;
        Ok(Forward {
            mu,
            sigma,
            z,
            hit_logits: out.hit_logits,
            velocity: out.velocity,
            offset: out.offset,
        })
    }

    /// The loss of a forward pass, with the KL weighted by `beta` (pass [`Config::beta`], or an
    /// annealed value) and [`Config::free_bits`]. See [`losses`].
    pub fn loss(&self, x: &Tensor, fwd: &Forward, beta: f64) -> Result<Losses> {
        losses(x, fwd, beta, self.config.free_bits, self.config.head_loss)
    }

    /// A copy whose weights are detached from autograd, so that running it records no graph.
    /// Cheap: tensors share storage. The inference methods below use it themselves.
    pub fn detach(&self) -> Vae {
        Vae {
            config: self.config.clone(),
            encoder: self.encoder.detach(),
            decoder: self.decoder.detach(),
            device: self.device.clone(),
            // Detaching a loaded model's tensors keeps their ids, so the cache stays valid; a
            // `Var` model stays per-call (see `FastCache`).
            fast: self.fast.clone(),
        }
    }

    /// The posterior means of `patterns`, `[N, latent]`, detached.
    pub fn encode(&self, patterns: &[Pattern]) -> Result<Tensor> {
        if patterns.is_empty() {
            return Tensor::zeros((0, self.config.latent), DType::F32, &self.device);
        }
        let x = patterns_to_tensor(patterns, &self.device)?;
        Ok(self.detach().encoder.forward(&x)?.0.detach())
    }

    /// Decodes `z [N, latent]` autoregressively into N patterns. On the CPU this runs the
    /// plain-Rust [`FastDecoder`] (about 2x faster at batch 1; see `fast_decoder.rs`), elsewhere
    /// Candle ([`Vae::decode_reference`]); both give the same patterns.
    pub fn decode(&self, z: &Tensor, opts: &DecodeOptions) -> Result<Vec<Pattern>> {
        let Some(z) = self.check_latent(z)? else {
            return Ok(Vec::new());
        };
        if !self.device.is_cpu() {
            return self.decode_reference(&z, opts);
        }
        let fast = self.fast.get(&self.decoder)?;
        let grids = fast.sample(&z.flatten_all()?.to_vec1::<f32>()?, opts)?;
        grids_to_patterns(&grids)
    }

    /// [`Vae::decode`] through Candle's [`Decoder::sample`], on the model's device, as one batch:
    /// the reference the fast decoder is tested and benchmarked against, and the path for GPUs.
    pub fn decode_reference(&self, z: &Tensor, opts: &DecodeOptions) -> Result<Vec<Pattern>> {
        let Some(z) = self.check_latent(z)? else {
            return Ok(Vec::new());
        };
        let z = z.to_device(&self.device)?;
        grids_to_patterns(&self.detach().decoder.sample(&z, opts)?)
    }

    /// The plain-Rust decoder for the current weights (built, or taken from the cache; see
    /// [`Vae::decode`]).
    pub fn fast_decoder(&self) -> Result<Arc<FastDecoder>> {
        self.fast.get(&self.decoder)
    }

    /// `z` detached as f32, after checking its size; `None` for an empty batch.
    fn check_latent(&self, z: &Tensor) -> Result<Option<Tensor>> {
        let (n, latent) = z.dims2()?;
        if latent != self.config.latent {
            candle_core::bail!(
                "z has {latent} dimensions but the model's latent size is {}",
                self.config.latent
            );
        }
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(z.detach().to_dtype(DType::F32)?))
    }

    /// Teacher-forced reconstruction of `x [B, 64, 27]` from z = mu, for evaluation: per-cell hit
    /// probabilities given the true previous steps. Detached.
    pub fn reconstruct_teacher_forced(&self, x: &Tensor) -> Result<Reconstruction> {
        self.check_input(x)?;
        let model = self.detach();
        let (mu, _) = model.encoder.forward(x)?;
        let out = model.decoder.teacher_forced(&mu, x)?;
        Ok(Reconstruction {
            mu,
            hit_prob: candle_nn::ops::sigmoid(&out.hit_logits)?,
            velocity: out.velocity,
            offset: out.offset,
        })
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        match x.dims() {
            [_, STEPS, FEATURES] => Ok(()),
            d => candle_core::bail!("model input must be [batch, {STEPS}, {FEATURES}], got {d:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: &Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn presets_round_trip_through_json_and_default_is_small() {
        for name in Config::PRESETS {
            let c = Config::preset(name).unwrap();
            c.validate().unwrap();
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
        }
        assert_eq!(Config::default(), Config::small());
        assert!(Config::preset("huge").is_none());
        let json = serde_json::to_string(&Config::preset("groovae-flat").unwrap()).unwrap();
        assert!(json.contains(r#""decoder":"flat""#), "{json}");
        assert!((Config::small().free_bits - 33.2711).abs() < 1e-4);
    }

    #[test]
    fn validate_rejects_zero_sizes_and_negative_beta() {
        let c = Config {
            decoder_layers: 0,
            ..Config::small()
        };
        assert!(c.validate().unwrap_err().contains("decoder_layers"));
        let c = Config {
            beta: -1.0,
            ..Config::small()
        };
        assert!(c.validate().unwrap_err().contains("beta"));
    }

    #[test]
    fn softplus_is_stable_and_accurate() {
        let x = Tensor::new(&[-100f32, -1.0, 0.0, 1.0, 100.0], &Device::Cpu).unwrap();
        let y = softplus(&x).unwrap().to_vec1::<f32>().unwrap();
        let expect = [0.0, 0.313_261_7, std::f32::consts::LN_2, 1.313_261_7, 100.0];
        for (a, b) in y.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    /// Loss terms on a 1-example batch, against numbers worked out by hand.
    #[test]
    fn loss_terms_match_hand_computed_values() {
        let dev = Device::Cpu;
        let mut x = vec![0f32; STEPS * FEATURES];
        x[0] = 1.0; // kick hit at step 0
        x[VOICES] = 0.5; // its velocity
        x[2 * VOICES] = 0.25; // its offset
        let x = Tensor::from_vec(x, (1, STEPS, FEATURES), &dev).unwrap();
        let mut logits = vec![0f32; STEPS * VOICES];
        logits[0] = 200.0; // confident and right: BCE ~ 0, and no overflow
        logits[1] = 200.0; // confident and wrong: BCE = 200
        let hit_logits = Tensor::from_vec(logits, (1, STEPS, VOICES), &dev).unwrap();
        let zeros = Tensor::zeros((1, STEPS, VOICES), DType::F32, &dev).unwrap();
        let latent = 4;
        let fwd = Forward {
            mu: Tensor::new(&[[1f32, 0.0, 0.0, 0.0]], &dev).unwrap(),
            sigma: Tensor::ones((1, latent), DType::F32, &dev).unwrap(),
            z: Tensor::zeros((1, latent), DType::F32, &dev).unwrap(),
            hit_logits,
            velocity: zeros.clone(),
            offset: zeros,
        };
        let l = losses(&x, &fwd, 0.5, 0.1, HeadLoss::AllCells).unwrap();
        // The other 574 cells have logit 0: ln 2 each.
        let bce = 200.0 + 574.0 * std::f32::consts::LN_2;
        assert!(
            (scalar(&l.hit_bce) - bce).abs() < 1e-2,
            "{}",
            scalar(&l.hit_bce)
        );
        assert!((scalar(&l.velocity_mse) - 0.25).abs() < 1e-6);
        assert!((scalar(&l.offset_mse) - 0.0625).abs() < 1e-6);
        assert!((scalar(&l.kl) - 0.5).abs() < 1e-6, "KL of N(1,1) vs N(0,1)");
        assert!((scalar(&l.kl_penalty) - 0.4).abs() < 1e-6);
        let total = bce + 0.25 + 0.0625 + 0.5 * 0.4;
        assert!((scalar(&l.total) - total).abs() < 1e-2);
        // Within the free-bits budget the KL costs nothing.
        let l = losses(&x, &fwd, 0.5, 1.0, HeadLoss::AllCells).unwrap();
        assert_eq!(scalar(&l.kl_penalty), 0.0);
    }

    /// With `HitCells` the heads are scored only where the target has a hit: a prediction of 0.3
    /// everywhere costs (0.5 - 0.3)^2 on the one hit, and nothing on the 575 rests that
    /// `AllCells` charges 0.3^2 each.
    #[test]
    fn hit_cell_head_loss_ignores_rests() {
        let dev = Device::Cpu;
        let mut x = vec![0f32; STEPS * FEATURES];
        x[0] = 1.0;
        x[VOICES] = 0.5;
        let x = Tensor::from_vec(x, (1, STEPS, FEATURES), &dev).unwrap();
        let fwd = Forward {
            mu: Tensor::zeros((1, 4), DType::F32, &dev).unwrap(),
            sigma: Tensor::ones((1, 4), DType::F32, &dev).unwrap(),
            z: Tensor::zeros((1, 4), DType::F32, &dev).unwrap(),
            hit_logits: Tensor::zeros((1, STEPS, VOICES), DType::F32, &dev).unwrap(),
            velocity: Tensor::full(0.3f32, (1, STEPS, VOICES), &dev).unwrap(),
            offset: Tensor::full(0.1f32, (1, STEPS, VOICES), &dev).unwrap(),
        };
        let hit = losses(&x, &fwd, 0.2, 0.0, HeadLoss::HitCells).unwrap();
        assert!((scalar(&hit.velocity_mse) - 0.04).abs() < 1e-5);
        assert!((scalar(&hit.offset_mse) - 0.01).abs() < 1e-5);
        let all = losses(&x, &fwd, 0.2, 0.0, HeadLoss::AllCells).unwrap();
        assert!((scalar(&all.velocity_mse) - (0.04 + 575.0 * 0.09)).abs() < 1e-3);
        assert!((scalar(&all.offset_mse) - 576.0 * 0.01).abs() < 1e-3);
    }
}
