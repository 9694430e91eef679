//! The decoders p(x | z): the hierarchical MusicVAE decoder (conductor + bar decoder) and the flat
//! GrooVAE baseline, each with a teacher-forced pass for training and an autoregressive sampler for
//! inference. Runs on the worker thread (decoding) and in the training CLI (teacher forcing).

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::encoder::detach_linear;
use super::lstm::{LstmState, StackedLstm, top_h};
use super::{BarState, Config, DecoderKind};
use crate::groove::{BARS, FEATURES, STEPS, STEPS_PER_BAR, VOICES};

/// How [`Decoder::sample`] turns hit logits into hits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeOptions {
    /// Sampling temperature for hits: each hit is drawn from `Bernoulli(sigmoid((logit + density)
    /// / temperature))`. `0` (the default) means no randomness: a hit wherever `logit + density >
    /// 0`, i.e. probability above 0.5. The default is 0 so that decoding the z of an encoded file
    /// reproduces the file and a point in latent space always sounds the same; variety comes from
    /// moving z (seeds, blends), and temperature is the explicit "looser" control. Negative or
    /// non-finite values count as 0.
    pub temperature: f32,
    /// Added to every hit logit before sampling: positive = busier, negative = sparser. `+1`
    /// multiplies the odds of each hit by e. Non-finite values count as 0.
    pub density: f32,
    /// Seed of the ChaCha8 generator for the Bernoulli draws (only used when temperature > 0).
    /// Row `i` of a batch draws from stream `i` of this seed, so a row's pattern depends on its
    /// z, the seed and its position, never on the other rows or the batch size.
    pub seed: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            temperature: 0.0,
            density: 0.0,
            seed: 0,
        }
    }
}

/// The decoder's per-step predictions, each `[B, 64, 9]`.
#[derive(Clone, Debug)]
pub struct DecoderOutput {
    /// Hit logits (before the sigmoid, so the loss can use the stable BCE form).
    pub hit_logits: Tensor,
    /// Velocities in `0..1` (sigmoid).
    pub velocity: Tensor,
    /// Offsets in steps, in `-0.5..0.5` (`0.5 * tanh`); positive = late.
    pub offset: Tensor,
}

/// Splits the 27 raw outputs of a step into (hit logits, velocities, offsets) on the last axis.
fn heads(raw: &Tensor) -> Result<DecoderOutput> {
    Ok(DecoderOutput {
        hit_logits: raw.narrow(D::Minus1, 0, VOICES)?,
        velocity: candle_nn::ops::sigmoid(&raw.narrow(D::Minus1, VOICES, VOICES)?)?,
        offset: (raw.narrow(D::Minus1, 2 * VOICES, VOICES)?.tanh()? * 0.5)?,
    })
}

/// `tanh(linear(emb))` split into `layers` LSTM states of width `hidden`, laid out `[h0, c0, h1,
/// c1, ...]`: how MusicVAE turns z (or a bar embedding) into a decoder's initial state.
fn initial_states(
    linear: &Linear,
    emb: &Tensor,
    layers: usize,
    hidden: usize,
) -> Result<Vec<LstmState>> {
    let s = linear.forward(emb)?.tanh()?;
    (0..layers)
        .map(|k| {
            Ok(LstmState {
                h: s.narrow(1, 2 * k * hidden, hidden)?.contiguous()?,
                c: s.narrow(1, (2 * k + 1) * hidden, hidden)?.contiguous()?,
            })
        })
        .collect()
}

/// Teacher-forcing inputs: the target shifted one step later, zeros before step 0. Detached: the
/// targets are data.
fn shift_right(x: &Tensor) -> Result<Tensor> {
    let (b, t, f) = x.dims3()?;
    let zeros = Tensor::zeros((b, 1, f), x.dtype(), x.device())?;
    Tensor::cat(&[&zeros, &x.detach().narrow(1, 0, t - 1)?], 1)
}

/// Applies the output layer to `h [B, T, H]` as one matmul, then the heads.
fn project(output: &Linear, h: &Tensor) -> Result<DecoderOutput> {
    let (b, t, hidden) = h.dims3()?;
    let raw = output.forward(&h.reshape((b * t, hidden))?)?;
    heads(&raw.reshape((b, t, FEATURES))?)
}

/// Either decoder; chosen by [`Config::decoder`].
#[derive(Clone, Debug)]
pub enum Decoder {
    Hierarchical(Hierarchical),
    Flat(Flat),
}

impl Decoder {
    /// Creates (or loads) the decoder `cfg.decoder` under `vb` (the model puts it at `decoder.`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Decoder> {
        Ok(match cfg.decoder {
            DecoderKind::Hierarchical => Decoder::Hierarchical(Hierarchical::new(cfg, vb)?),
            DecoderKind::Flat => Decoder::Flat(Flat::new(cfg, vb)?),
        })
    }

    /// Training pass: predictions for every step of `x [B, 64, 27]` given the true previous step.
    pub fn teacher_forced(&self, z: &Tensor, x: &Tensor) -> Result<DecoderOutput> {
        match self {
            Decoder::Hierarchical(d) => d.teacher_forced(z, x),
            Decoder::Flat(d) => d.teacher_forced(z, x),
        }
    }

    /// Autoregressive sampling from `z [N, latent]`: every step's sampled hits and predicted
    /// velocities and offsets feed the next step. Returns N flat `64 x 27` grids in the
    /// [`crate::Pattern::write_flat`] layout. Call it on a detached decoder.
    pub fn sample(&self, z: &Tensor, opts: &DecodeOptions) -> Result<Vec<Vec<f32>>> {
        Ok(self.sample_traced(z, opts)?.grids)
    }

    /// [`Decoder::sample`], also returning every step's predictions: the reference that
    /// [`super::cpu::fast_decoder::FastDecoder`] is tested and benchmarked against.
    pub fn sample_traced(&self, z: &Tensor, opts: &DecodeOptions) -> Result<SampleTrace> {
        let mut sampler = Sampler::new(z.dim(0)?, opts, z.device());
        match self {
            Decoder::Hierarchical(d) => d.sample(z, &mut sampler)?,
            Decoder::Flat(d) => d.sample(z, &mut sampler)?,
        }
        Ok(SampleTrace {
            grids: sampler.grids,
            outputs: sampler.outputs,
        })
    }

    /// Every weight tensor, in a fixed order: lets the model tell whether they are `Var`s and
    /// whether they are still the tensors a copy was made from.
    pub(crate) fn weights(&self) -> Vec<&Tensor> {
        let mut out = Vec::new();
        fn push_linear<'a>(l: &'a Linear, out: &mut Vec<&'a Tensor>) {
            out.push(l.weight());
            out.extend(l.bias());
        }
        fn push_stack<'a>(s: &'a StackedLstm, out: &mut Vec<&'a Tensor>) {
            for k in 0..s.layers() {
                let (a, b, c, d) = s.layer(k).weights();
                out.extend([a, b, c, d]);
            }
        }
        match self {
            Decoder::Hierarchical(d) => {
                push_linear(&d.conductor_init, &mut out);
                push_stack(&d.conductor, &mut out);
                push_linear(&d.bar_init, &mut out);
                push_stack(&d.bar, &mut out);
                push_linear(&d.output, &mut out);
            }
            Decoder::Flat(d) => {
                push_linear(&d.init, &mut out);
                push_stack(&d.lstm, &mut out);
                push_linear(&d.output, &mut out);
            }
        }
        out
    }

    /// The same decoder with every weight detached from autograd (for inference).
    pub fn detach(&self) -> Decoder {
        match self {
            Decoder::Hierarchical(d) => Decoder::Hierarchical(Hierarchical {
                conductor_init: detach_linear(&d.conductor_init),
                conductor: d.conductor.detach(),
                bar_init: detach_linear(&d.bar_init),
                bar: d.bar.detach(),
                output: detach_linear(&d.output),
                carry: d.carry,
            }),
            Decoder::Flat(d) => Decoder::Flat(Flat {
                init: detach_linear(&d.init),
                lstm: d.lstm.detach(),
                output: detach_linear(&d.output),
            }),
        }
    }
}

/// What an autoregressive decode produced, per batch row.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleTrace {
    /// The sampled `64 x 27` grids in the [`crate::Pattern::write_flat`] layout.
    pub grids: Vec<Vec<f32>>,
    /// Every step's predictions before sampling, `64 x 27` per row: 9 hit logits, 9 velocities
    /// (after the sigmoid), 9 offsets (after `0.5 * tanh`). Lets tests compare two implementations
    /// on numbers rather than on thresholded hits.
    pub outputs: Vec<Vec<f32>>,
}

/// MusicVAE's hierarchical decoder (Roberts et al. 2018, section 3.2) on the GrooVAE grid.
#[derive(Clone, Debug)]
pub struct Hierarchical {
    /// z -> tanh -> the conductor's initial (h, c) for every layer. `decoder.conductor_init`.
    conductor_init: Linear,
    /// One step per bar. Its input is z at every step (MusicVAE feeds zeros; giving the conductor
    /// z directly costs one projection per pattern and lets every bar see it undiluted).
    /// `decoder.conductor`.
    conductor: StackedLstm,
    /// Bar embedding c_u -> tanh -> the bar decoder's initial state, reset every bar.
    /// `decoder.bar_init`.
    bar_init: Linear,
    /// 16 steps per bar; input `[previous step's 27 outputs, c_u]`. `decoder.bar`.
    bar: StackedLstm,
    /// Top hidden state -> 27 raw outputs. `decoder.output`.
    output: Linear,
    /// Whether bars 2-4 continue from the previous bar's final state ([`BarState::Carry`]) instead
    /// of restarting from `bar_init(c_u)`. Not a weight: it comes from the config.
    carry: bool,
}

impl Hierarchical {
    /// Whether the bar decoder carries its state across bar lines (see [`BarState`]).
    pub(crate) fn carries_state(&self) -> bool {
        self.carry
    }

    /// The weights, for [`super::cpu::fast_decoder`]: `(conductor_init, conductor, bar_init, bar,
    /// output)`.
    pub(crate) fn parts(&self) -> (&Linear, &StackedLstm, &Linear, &StackedLstm, &Linear) {
        (
            &self.conductor_init,
            &self.conductor,
            &self.bar_init,
            &self.bar,
            &self.output,
        )
    }

    fn new(cfg: &Config, vb: VarBuilder) -> Result<Hierarchical> {
        let (hc, lc) = (cfg.conductor_hidden, cfg.conductor_layers);
        let (hd, ld) = (cfg.decoder_hidden, cfg.decoder_layers);
        Ok(Hierarchical {
            conductor_init: candle_nn::linear(cfg.latent, 2 * lc * hc, vb.pp("conductor_init"))?,
            conductor: StackedLstm::new(0, cfg.latent, hc, lc, false, &vb.pp("conductor"))?,
            bar_init: candle_nn::linear(hc, 2 * ld * hd, vb.pp("bar_init"))?,
            bar: StackedLstm::new(FEATURES, hc, hd, ld, false, &vb.pp("bar"))?,
            output: candle_nn::linear(hd, FEATURES, vb.pp("output"))?,
            carry: cfg.bar_state == BarState::Carry,
        })
    }

    /// The conductor's output for each bar, `BARS x [B, conductor_hidden]`. The conductor does not
    /// see the notes, so this is the same in training and sampling.
    fn bar_embeddings(&self, z: &Tensor) -> Result<Vec<Tensor>> {
        let mut states = initial_states(
            &self.conductor_init,
            z,
            self.conductor.layers(),
            self.conductor.hidden(),
        )?;
        let prepared = self.conductor.prepare()?;
        let stepper = prepared.condition(Some(z))?;
        (0..BARS)
            .map(|_| {
                states = stepper.step(None, &states)?;
                Ok(top_h(&states).clone())
            })
            .collect()
    }

    fn teacher_forced(&self, z: &Tensor, x: &Tensor) -> Result<DecoderOutput> {
        if self.carry {
            return self.teacher_forced_carried(z, x);
        }
        let b = z.dim(0)?;
        // With teacher forcing the four bars are independent given their embeddings, so they run
        // as one batch of B * 4 sequences of 16 steps instead of 64 sequential steps. Row b * 4 + u
        // is bar u of example b everywhere below.
        let c = Tensor::stack(&self.bar_embeddings(z)?, 1)?
            .reshape((b * BARS, self.conductor.hidden()))?;
        let init = initial_states(&self.bar_init, &c, self.bar.layers(), self.bar.hidden())?;
        // Shifting over all 64 steps before cutting bars makes bar u's first input the last step
        // of bar u - 1, as in sampling.
        let inputs = shift_right(x)?.reshape((b * BARS, STEPS_PER_BAR, FEATURES))?;
        let prepared = self.bar.prepare()?;
        let (h, _) = prepared.condition(Some(&c))?.seq(&inputs, &init)?;
        project(&self.output, &h.reshape((b, STEPS, self.bar.hidden()))?)
    }

    /// [`BarState::Carry`]'s teacher forcing: the bars depend on each other through the state, so
    /// they run one after another (four sequences of 16 steps of batch B), each from the state the
    /// last one ended in; gradients flow back across the bar lines through that state.
    fn teacher_forced_carried(&self, z: &Tensor, x: &Tensor) -> Result<DecoderOutput> {
        let embeddings = self.bar_embeddings(z)?;
        let inputs = shift_right(x)?;
        let prepared = self.bar.prepare()?;
        let (layers, hidden) = (self.bar.layers(), self.bar.hidden());
        let mut states = initial_states(&self.bar_init, &embeddings[0], layers, hidden)?;
        let mut bars = Vec::with_capacity(BARS);
        for (u, c) in embeddings.iter().enumerate() {
            let bar_inputs = inputs.narrow(1, u * STEPS_PER_BAR, STEPS_PER_BAR)?;
            let (h, end) = prepared.condition(Some(c))?.seq(&bar_inputs, &states)?;
            bars.push(h);
            states = end;
        }
        project(&self.output, &Tensor::cat(&bars, 1)?)
    }

    fn sample(&self, z: &Tensor, sampler: &mut Sampler) -> Result<()> {
        let prepared = self.bar.prepare()?;
        let mut prev = Tensor::zeros((z.dim(0)?, FEATURES), DType::F32, z.device())?;
        let mut carried: Option<Vec<LstmState>> = None;
        for (u, c) in self.bar_embeddings(z)?.iter().enumerate() {
            let mut states = match carried.take() {
                Some(states) => states,
                None => initial_states(&self.bar_init, c, self.bar.layers(), self.bar.hidden())?,
            };
            let stepper = prepared.condition(Some(c))?;
            for s in 0..STEPS_PER_BAR {
                states = stepper.step(Some(&prev), &states)?;
                let raw = self.output.forward(top_h(&states))?;
                prev = sampler.step(&raw, u * STEPS_PER_BAR + s)?;
            }
            if self.carry {
                carried = Some(states);
            }
        }
        Ok(())
    }
}

/// The flat baseline (the original GrooVAE decoder): one stacked LSTM over all 64 steps.
#[derive(Clone, Debug)]
pub struct Flat {
    /// z -> tanh -> initial (h, c) of every layer. `decoder.init`.
    init: Linear,
    /// Input `[previous step's 27 outputs, z]`. `decoder.lstm`.
    lstm: StackedLstm,
    /// Top hidden state -> 27 raw outputs. `decoder.output`.
    output: Linear,
}

impl Flat {
    /// The weights, for [`super::cpu::fast_decoder`]: `(init, lstm, output)`.
    pub(crate) fn parts(&self) -> (&Linear, &StackedLstm, &Linear) {
        (&self.init, &self.lstm, &self.output)
    }

    fn new(cfg: &Config, vb: VarBuilder) -> Result<Flat> {
        let (h, l) = (cfg.decoder_hidden, cfg.decoder_layers);
        Ok(Flat {
            init: candle_nn::linear(cfg.latent, 2 * l * h, vb.pp("init"))?,
            lstm: StackedLstm::new(FEATURES, cfg.latent, h, l, false, &vb.pp("lstm"))?,
            output: candle_nn::linear(h, FEATURES, vb.pp("output"))?,
        })
    }

    fn init_states(&self, z: &Tensor) -> Result<Vec<LstmState>> {
        initial_states(&self.init, z, self.lstm.layers(), self.lstm.hidden())
    }

    fn teacher_forced(&self, z: &Tensor, x: &Tensor) -> Result<DecoderOutput> {
        let prepared = self.lstm.prepare()?;
        let (h, _) = prepared
            .condition(Some(z))?
            .seq(&shift_right(x)?, &self.init_states(z)?)?;
        project(&self.output, &h)
    }

    fn sample(&self, z: &Tensor, sampler: &mut Sampler) -> Result<()> {
        let prepared = self.lstm.prepare()?;
        let stepper = prepared.condition(Some(z))?;
        let mut states = self.init_states(z)?;
        let mut prev = Tensor::zeros((z.dim(0)?, FEATURES), DType::F32, z.device())?;
        for step in 0..STEPS {
            states = stepper.step(Some(&prev), &states)?;
            let raw = self.output.forward(top_h(&states))?;
            prev = sampler.step(&raw, step)?;
        }
        Ok(())
    }
}

/// The sampling rule of one decode, shared by the Candle reference ([`Sampler`]) and
/// [`super::cpu::fast_decoder`], so that both draw exactly the same hits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HitSampling {
    /// Sanitised temperature (0 = threshold).
    temperature: f32,
    /// Sanitised density bias.
    density: f32,
    seed: u64,
}

impl HitSampling {
    /// Sanitises `opts` as [`DecodeOptions`] documents: non-finite values count as 0, and a
    /// negative temperature as 0.
    pub(crate) fn new(opts: &DecodeOptions) -> HitSampling {
        let finite_or_zero = |v: f32| if v.is_finite() { v } else { 0.0 };
        HitSampling {
            temperature: finite_or_zero(opts.temperature).max(0.0),
            density: finite_or_zero(opts.density),
            seed: opts.seed,
        }
    }

    /// The generator of batch row `row`: the seed's stream `row`, so a row's draws never depend
    /// on the other rows.
    pub(crate) fn rng(&self, row: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(row as u64);
        rng
    }

    /// Samples one step of one row from its predictions `heads` (9 hit logits, 9 velocities, 9
    /// offsets) and writes the next step's input into `next` (27 values): hits as 0/1, velocity and
    /// offset zeroed where there is no hit, like rests in the data. Draws one number per voice
    /// from `rng` when the temperature is above 0, none otherwise.
    pub(crate) fn sample_row(&self, heads: &[f32], rng: &mut ChaCha8Rng, next: &mut [f32]) {
        next[..FEATURES].fill(0.0);
        for v in 0..VOICES {
            let x = heads[v] + self.density;
            let hit = if self.temperature > 0.0 {
                let p = 1.0 / (1.0 + (-x / self.temperature).exp());
                rng.random::<f32>() < p
            } else {
                x > 0.0
            };
            if hit {
                next[v] = 1.0;
                next[VOICES + v] = heads[VOICES + v];
                next[2 * VOICES + v] = heads[2 * VOICES + v];
            }
        }
    }
}

/// Draws hits step by step and records the sampled grids (the Candle reference path).
struct Sampler {
    rule: HitSampling,
    /// One generator per batch row (stream = row index).
    rngs: Vec<ChaCha8Rng>,
    /// One `64 x 27` grid per row, filled as steps are sampled.
    grids: Vec<Vec<f32>>,
    /// One `64 x 27` record of the predictions per row (see [`SampleTrace::outputs`]).
    outputs: Vec<Vec<f32>>,
    device: Device,
}

impl Sampler {
    fn new(n: usize, opts: &DecodeOptions, device: &Device) -> Sampler {
        let rule = HitSampling::new(opts);
        Sampler {
            rule,
            rngs: (0..n).map(|i| rule.rng(i)).collect(),
            grids: vec![vec![0.0; STEPS * FEATURES]; n],
            outputs: vec![vec![0.0; STEPS * FEATURES]; n],
            device: device.clone(),
        }
    }

    /// Samples step `step` from the raw outputs `[N, 27]`; returns the next step's input `[N, 27]`.
    fn step(&mut self, raw: &Tensor, step: usize) -> Result<Tensor> {
        let out = heads(raw)?;
        let rows = Tensor::cat(&[&out.hit_logits, &out.velocity, &out.offset], 1)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let mut next = vec![0.0f32; rows.len() * FEATURES];
        let cells = step * FEATURES..(step + 1) * FEATURES;
        for (i, row) in rows.iter().enumerate() {
            let next_row = &mut next[i * FEATURES..(i + 1) * FEATURES];
            self.rule.sample_row(row, &mut self.rngs[i], next_row);
            self.grids[i][cells.clone()].copy_from_slice(next_row);
            self.outputs[i][cells.clone()].copy_from_slice(row);
        }
        Tensor::from_vec(next, (rows.len(), FEATURES), &self.device)
    }
}
