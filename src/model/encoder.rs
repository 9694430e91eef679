//! The encoder q(z | x): a bidirectional LSTM over the 64 x 27 grid, whose final states give the mean
//! and standard deviation of the posterior. Runs on the worker thread (encoding a MIDI file to z)
//! and in the training CLI.

use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

use super::Config;
use super::lstm::{StackedLstm, reverse_time, top_h};
use crate::groove::FEATURES;

/// Added to the softplus so that sigma never reaches exactly 0. Our softplus has no `log1p`
/// (Candle has none), so in f32 it returns exactly 0 for pre-activations below about -17, and
/// `ln(sigma)` in the KL term would then be -inf (and NaN once multiplied by beta = 0). 1e-4 is far
/// below any sigma that matters for sampling.
pub const SIGMA_FLOOR: f64 = 1e-4;

/// Bidirectional single-layer LSTM -> linear -> (mu, softplus -> sigma), as in MusicVAE/GrooVAE.
#[derive(Clone, Debug)]
pub struct Encoder {
    /// Reads steps 0..63. Tensors `encoder.lstm.*_l0`.
    forward: StackedLstm,
    /// Reads steps 63..0 (we reverse the input ourselves). Tensors `encoder.lstm.*_l0_reverse`.
    backward: StackedLstm,
    /// `[2H] -> [latent]`.
    mu: Linear,
    /// `[2H] -> [latent]`, before the softplus.
    sigma: Linear,
}

impl Encoder {
    /// Creates (or loads) the encoder under `vb` (the model puts it at `encoder.`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Encoder> {
        let h = cfg.encoder_hidden;
        let lstm = vb.pp("lstm");
        Ok(Encoder {
            forward: StackedLstm::new(FEATURES, 0, h, 1, false, &lstm)?,
            backward: StackedLstm::new(FEATURES, 0, h, 1, true, &lstm)?,
            mu: candle_nn::linear(2 * h, cfg.latent, vb.pp("mu"))?,
            sigma: candle_nn::linear(2 * h, cfg.latent, vb.pp("sigma"))?,
        })
    }

    /// `x [B, 64, 27]` -> `(mu, sigma)`, each `[B, latent]`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let batch = x.dim(0)?;
        let device = x.device();
        let x = x.detach();
        let fwd = self.forward.prepare()?;
        let fwd_state = fwd
            .condition(None)?
            .last(&x, &self.forward.zero_state(batch, device)?)?;
        let bwd = self.backward.prepare()?;
        let bwd_state = bwd.condition(None)?.last(
            &reverse_time(&x)?,
            &self.backward.zero_state(batch, device)?,
        )?;
        let both = Tensor::cat(&[top_h(&fwd_state), top_h(&bwd_state)], 1)?;
        let mu = self.mu.forward(&both)?;
        let sigma = (super::softplus(&self.sigma.forward(&both)?)? + SIGMA_FLOOR)?;
        Ok((mu, sigma))
    }

    /// The same encoder with every weight detached from autograd (for inference).
    pub fn detach(&self) -> Encoder {
        Encoder {
            forward: self.forward.detach(),
            backward: self.backward.detach(),
            mu: detach_linear(&self.mu),
            sigma: detach_linear(&self.sigma),
        }
    }
}

/// A `Linear` whose weight and bias are detached from autograd.
pub(crate) fn detach_linear(l: &Linear) -> Linear {
    Linear::new(l.weight().detach(), l.bias().map(Tensor::detach))
}
