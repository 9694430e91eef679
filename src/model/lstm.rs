//! Our LSTM layer and its stacked wrapper: the one place in DrumVAE where recurrent math lives for
//! training and for the Candle reference decode. Runs wherever the model runs: in the training CLI,
//! and for decoding on GPUs and in tests. CPU decoding goes through `cpu/fast_decoder.rs`, which
//! copies these weights out and is tested against this code.
//!
//! The encoder and both decoders only call [`StackedLstm`] (`prepare` → `condition` → `step` /
//! `seq` / `last`), so a later "fast recurrent layers" issue can replace the internals of this file
//! (a fused custom op with its own backward, a CUDA kernel) without touching the rest of the model.
//!
//! Parameter names, shapes and gate order follow PyTorch's `nn.LSTM` (`weight_ih_l{k}` `[4H, I]`,
//! `weight_hh_l{k}` `[4H, H]`, `bias_ih_l{k}`, `bias_hh_l{k}`, gates `i, f, g, o`, and a `_reverse`
//! suffix for the backward direction), so weights can be checked against or ported from PyTorch.
//!
//! Built for speed along the lines measured in candle-notes (the project docs on Candle on this CPU): each step does ONE gate
//! matmul on `[x_t, h]` against the weights concatenated once per pass; a per-sequence
//! conditioning input (the bar embedding `c_u`, or z) is projected once per sequence and enters as
//! a gate bias instead of being concatenated into every step; per-step slices are only ever taken
//! of input data (which needs no gradient), never of a tracked tensor, which would make backward
//! O(T²). Tried and dropped: stepping both encoder directions as one batched matmul `[2, B, .]` was
//! no faster (equal at B 8 / H 64, slower at B 64 / H 256).
//!
//! Whole sequences (`seq`/`last`: the encoder and the teacher-forced decoders) run on the CPU as
//! one fused op per layer ([`super::cpu::fused_lstm`]): the input projections of all steps in one
//! matmul, then the recurrence with a hand-written backward. The per-step tensor path stays as the
//! reference it is tested against, for other devices, and for stepping (sampling, the conductor);
//! [`with_kernel`] picks the path for sequences on the calling thread.

use std::cell::Cell;
use std::sync::OnceLock;

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::cpu::fused_lstm::lstm_layer;
use super::cpu::projection::project;

/// How [`Stepper::seq`] and [`Stepper::last`] run a sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LstmKernel {
    /// One fused op per layer (CPU, f32); elsewhere falls back to [`LstmKernel::Reference`].
    #[default]
    Fused,
    /// Candle tensor ops step by step, differentiated by Candle's autograd.
    Reference,
}

impl std::str::FromStr for LstmKernel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fused" => Ok(LstmKernel::Fused),
            "reference" => Ok(LstmKernel::Reference),
            _ => Err(format!(
                "unknown LSTM kernel \"{s}\": use fused or reference"
            )),
        }
    }
}

impl std::fmt::Display for LstmKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LstmKernel::Fused => "fused",
            LstmKernel::Reference => "reference",
        })
    }
}

thread_local! {
    static KERNEL: Cell<LstmKernel> = const { Cell::new(LstmKernel::Fused) };
}

/// Runs `f` with sequences on this thread computed by `kernel` (the model runs on the thread that
/// calls it), then restores the previous choice. For equivalence tests, benchmarks and the
/// training CLI's `--lstm-kernel`.
pub fn with_kernel<T>(kernel: LstmKernel, f: impl FnOnce() -> T) -> T {
    struct Restore(LstmKernel);
    impl Drop for Restore {
        fn drop(&mut self) {
            KERNEL.with(|k| k.set(self.0));
        }
    }
    let _restore = Restore(KERNEL.with(|k| k.replace(kernel)));
    f()
}

/// The kernel sequences on this thread use now.
pub fn current_kernel() -> LstmKernel {
    KERNEL.with(Cell::get)
}

/// The recurrent state of one LSTM layer.
#[derive(Clone, Debug)]
pub struct LstmState {
    /// Hidden state (the layer's output) `[B, H]`.
    pub h: Tensor,
    /// Cell state `[B, H]`.
    pub c: Tensor,
}

impl LstmState {
    /// All-zero state, PyTorch's default initial state.
    pub fn zeros(batch: usize, hidden: usize, device: &Device) -> Result<LstmState> {
        let z = Tensor::zeros((batch, hidden), DType::F32, device)?;
        Ok(LstmState { h: z.clone(), c: z })
    }
}

/// One LSTM layer with fused gate weights.
///
/// Its input is `[x, cond]`: `x` changes every step, `cond` (width may be 0) is constant over a
/// sequence. `weight_ih` covers both, exactly as if `cond` were concatenated to every step's input.
#[derive(Clone, Debug)]
pub struct Lstm {
    /// `[4H, input + cond]`, rows in gate order i, f, g, o.
    weight_ih: Tensor,
    /// `[4H, H]`.
    weight_hh: Tensor,
    /// `[4H]`.
    bias_ih: Tensor,
    /// `[4H]`; kept separate from `bias_ih` only to keep PyTorch's names.
    bias_hh: Tensor,
    /// Width of the per-step input.
    input: usize,
    /// Width of the per-sequence conditioning input.
    cond: usize,
    /// Hidden size.
    hidden: usize,
}

impl Lstm {
    /// Creates (or loads) layer `layer`; `reverse` adds PyTorch's `_reverse` suffix. Fresh weights
    /// are uniform in ±1/√H, PyTorch's initialisation.
    pub fn new(
        input: usize,
        cond: usize,
        hidden: usize,
        layer: usize,
        reverse: bool,
        vb: &VarBuilder,
    ) -> Result<Lstm> {
        let suffix = if reverse { "_reverse" } else { "" };
        let k = 1.0 / (hidden as f64).sqrt();
        let init = Init::Uniform { lo: -k, up: k };
        let g = 4 * hidden;
        Ok(Lstm {
            weight_ih: vb.get_with_hints(
                (g, input + cond),
                &format!("weight_ih_l{layer}{suffix}"),
                init,
            )?,
            weight_hh: vb.get_with_hints(
                (g, hidden),
                &format!("weight_hh_l{layer}{suffix}"),
                init,
            )?,
            bias_ih: vb.get_with_hints(g, &format!("bias_ih_l{layer}{suffix}"), init)?,
            bias_hh: vb.get_with_hints(g, &format!("bias_hh_l{layer}{suffix}"), init)?,
            input,
            cond,
            hidden,
        })
    }

    /// Hidden size.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Width of the per-step input (0 for the conductor).
    pub(crate) fn input(&self) -> usize {
        self.input
    }

    /// Width of the per-sequence conditioning input.
    pub(crate) fn cond(&self) -> usize {
        self.cond
    }

    /// `(weight_ih, weight_hh, bias_ih, bias_hh)` in PyTorch's shapes, for code that lays the
    /// weights out its own way (the plain-Rust decoder in `fast_decoder`).
    pub(crate) fn weights(&self) -> (&Tensor, &Tensor, &Tensor, &Tensor) {
        (
            &self.weight_ih,
            &self.weight_hh,
            &self.bias_ih,
            &self.bias_hh,
        )
    }

    /// One step, the textbook way: `x` is the full input `[B, input + cond]`. Kept as the
    /// reference the fast path is tested against; the model itself uses [`StackedLstm`].
    pub fn step(&self, x: &Tensor, state: &LstmState) -> Result<LstmState> {
        let gates = x
            .matmul(&self.weight_ih.t()?)?
            .add(&state.h.matmul(&self.weight_hh.t()?)?)?
            .broadcast_add(&self.bias_ih.add(&self.bias_hh)?)?;
        cell(&gates, &state.c, self.hidden)
    }

    /// Runs a whole sequence `x [B, T, input]` (no conditioning input) from `init` (zeros if
    /// `None`); returns every step's `h` as `[B, T, H]` and the final state.
    pub fn seq(&self, x: &Tensor, init: Option<&LstmState>) -> Result<(Tensor, LstmState)> {
        let stacked = StackedLstm {
            layers: vec![self.clone()],
        };
        let init = match init {
            Some(s) => vec![s.clone()],
            None => stacked.zero_state(x.dim(0)?, x.device())?,
        };
        let (out, mut states) = stacked.prepare()?.condition(None)?.seq(x, &init)?;
        Ok((out, states.remove(0)))
    }

    /// The same layer with every weight detached from autograd (for inference).
    pub fn detach(&self) -> Lstm {
        Lstm {
            weight_ih: self.weight_ih.detach(),
            weight_hh: self.weight_hh.detach(),
            bias_ih: self.bias_ih.detach(),
            bias_hh: self.bias_hh.detach(),
            ..*self
        }
    }

    /// Weights laid out for fast stepping: computed once per forward pass.
    fn prepare(&self) -> Result<PreparedLayer> {
        let w_x_t = if self.input == 0 {
            None
        } else {
            Some(self.weight_ih.narrow(1, 0, self.input)?.t()?)
        };
        let w_cond = if self.cond == 0 {
            None
        } else {
            Some(self.weight_ih.narrow(1, self.input, self.cond)?.t()?)
        };
        Ok(PreparedLayer {
            w: OnceLock::new(),
            w_x_t,
            w_hh: self.weight_hh.clone(),
            w_cond,
            bias: self.bias_ih.add(&self.bias_hh)?,
            has_input: self.input > 0,
            hidden: self.hidden,
        })
    }
}

/// The LSTM cell nonlinearity on pre-activations `gates [..., 4H]` (order i, f, g, o, on the last
/// axis) and the previous cell state `c [..., H]`.
fn cell(gates: &Tensor, c: &Tensor, hidden: usize) -> Result<LstmState> {
    // One sigmoid over all four gates (the g slice is wasted work) is fewer graph nodes than three.
    let sig = candle_nn::ops::sigmoid(gates)?;
    let i = sig.narrow(D::Minus1, 0, hidden)?;
    let f = sig.narrow(D::Minus1, hidden, hidden)?;
    let g = gates.narrow(D::Minus1, 2 * hidden, hidden)?.tanh()?;
    let o = sig.narrow(D::Minus1, 3 * hidden, hidden)?;
    let c = f.mul(c)?.add(&i.mul(&g)?)?;
    let h = o.mul(&c.tanh()?)?;
    Ok(LstmState { h, c })
}

/// A stack of LSTM layers: layer 0 reads `[x, cond]`, layer k > 0 reads layer k-1's `h`.
#[derive(Clone, Debug)]
pub struct StackedLstm {
    layers: Vec<Lstm>,
}

impl StackedLstm {
    /// Creates (or loads) `layers` layers named `*_l0 .. *_l{layers-1}` in `vb`.
    pub fn new(
        input: usize,
        cond: usize,
        hidden: usize,
        layers: usize,
        reverse: bool,
        vb: &VarBuilder,
    ) -> Result<StackedLstm> {
        if layers == 0 {
            candle_core::bail!("an LSTM stack needs at least one layer");
        }
        let layers = (0..layers)
            .map(|k| {
                let (i, c) = if k == 0 { (input, cond) } else { (hidden, 0) };
                Lstm::new(i, c, hidden, k, reverse, vb)
            })
            .collect::<Result<_>>()?;
        Ok(StackedLstm { layers })
    }

    /// Number of layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Hidden size (the same for every layer).
    pub fn hidden(&self) -> usize {
        self.layers[0].hidden
    }

    /// The layers, bottom first.
    pub fn layer(&self, k: usize) -> &Lstm {
        &self.layers[k]
    }

    /// All-zero states, one per layer.
    pub fn zero_state(&self, batch: usize, device: &Device) -> Result<Vec<LstmState>> {
        self.layers
            .iter()
            .map(|l| LstmState::zeros(batch, l.hidden, device))
            .collect()
    }

    /// Lays the weights out for stepping. Do this once per forward pass, not per step: it
    /// concatenates weight matrices.
    pub fn prepare(&self) -> Result<PreparedStack> {
        Ok(PreparedStack {
            layers: self
                .layers
                .iter()
                .map(Lstm::prepare)
                .collect::<Result<_>>()?,
        })
    }

    /// The same stack with every weight detached from autograd (for inference).
    pub fn detach(&self) -> StackedLstm {
        StackedLstm {
            layers: self.layers.iter().map(Lstm::detach).collect(),
        }
    }
}

/// One layer's weights as [`Stepper::step`] uses them.
#[derive(Clone, Debug)]
struct PreparedLayer {
    /// `[input + H, 4H]`: per-step input and recurrent weights side by side (a transposed view),
    /// built on the first step: whole fused sequences never need it.
    w: OnceLock<Tensor>,
    /// `[input, 4H]` (a transposed view), when the layer has a per-step input.
    w_x_t: Option<Tensor>,
    /// `[4H, H]`.
    w_hh: Tensor,
    /// `[cond, 4H]`, when the layer has a conditioning input.
    w_cond: Option<Tensor>,
    /// `bias_ih + bias_hh`, `[4H]`.
    bias: Tensor,
    /// Whether the layer has a per-step input at all (the conductor's has none).
    has_input: bool,
    hidden: usize,
}

impl PreparedLayer {
    /// The stepping weights `[input + H, 4H]`.
    fn step_weights(&self) -> Result<&Tensor> {
        if let Some(w) = self.w.get() {
            return Ok(w);
        }
        let w = match &self.w_x_t {
            None => self.w_hh.t()?,
            Some(w_x_t) => Tensor::cat(&[&w_x_t.t()?, &self.w_hh], 1)?.t()?,
        };
        Ok(self.w.get_or_init(|| w))
    }
}

/// A stack's weights laid out for stepping; see [`StackedLstm::prepare`].
#[derive(Clone, Debug)]
pub struct PreparedStack {
    layers: Vec<PreparedLayer>,
}

impl PreparedStack {
    /// Fixes the per-sequence conditioning input `cond [B, C]` (required exactly when layer 0 was
    /// built with `cond > 0`): its projection is computed here, once, and added as a gate bias.
    pub fn condition(&self, cond: Option<&Tensor>) -> Result<Stepper<'_>> {
        let first = &self.layers[0];
        let bias0 = match (&first.w_cond, cond) {
            (Some(w), Some(c)) => c.matmul(w)?.broadcast_add(&first.bias)?,
            (None, None) => first.bias.unsqueeze(0)?,
            (Some(_), None) => candle_core::bail!("this LSTM needs a conditioning input"),
            (None, Some(_)) => candle_core::bail!("this LSTM takes no conditioning input"),
        };
        Ok(Stepper { stack: self, bias0 })
    }
}

/// A prepared stack with its conditioning input fixed: steps or runs whole sequences.
#[derive(Clone, Debug)]
pub struct Stepper<'a> {
    stack: &'a PreparedStack,
    /// Layer 0's gate bias including the conditioning projection, `[B, 4H]` or `[1, 4H]`.
    bias0: Tensor,
}

impl Stepper<'_> {
    /// One time step through every layer. `x [B, input]` is required unless layer 0 has no
    /// per-step input, in which case pass `None`.
    pub fn step(&self, x: Option<&Tensor>, states: &[LstmState]) -> Result<Vec<LstmState>> {
        if states.len() != self.stack.layers.len() {
            candle_core::bail!(
                "expected {} LSTM states, got {}",
                self.stack.layers.len(),
                states.len()
            );
        }
        let mut next: Vec<LstmState> = Vec::with_capacity(states.len());
        for (k, (layer, state)) in self.stack.layers.iter().zip(states).enumerate() {
            let below = if k == 0 {
                x.cloned()
            } else {
                Some(next[k - 1].h.clone())
            };
            let xh = match (layer.has_input, below) {
                (true, Some(x)) => Tensor::cat(&[&x, &state.h], 1)?,
                (false, None) => state.h.clone(),
                (true, None) => candle_core::bail!("this LSTM needs a per-step input"),
                (false, Some(_)) => candle_core::bail!("this LSTM takes no per-step input"),
            };
            let bias = if k == 0 { &self.bias0 } else { &layer.bias };
            let gates = xh.matmul(layer.step_weights()?)?.broadcast_add(bias)?;
            next.push(cell(&gates, &state.c, layer.hidden)?);
        }
        Ok(next)
    }

    /// Runs `x [B, T, input]` from `init`; returns the top layer's `h` for every step as
    /// `[B, T, H]` and the final states. `x` is sliced per step, so it must be data that needs no
    /// gradient (teacher-forcing targets, the encoder's input).
    pub fn seq(&self, x: &Tensor, init: &[LstmState]) -> Result<(Tensor, Vec<LstmState>)> {
        let (states, out) = self.run(x, init, true)?;
        Ok((out.expect("kept"), states))
    }

    /// Like [`Stepper::seq`] but keeps only the final states (all the encoder needs).
    pub fn last(&self, x: &Tensor, init: &[LstmState]) -> Result<Vec<LstmState>> {
        Ok(self.run(x, init, false)?.0)
    }

    fn run(
        &self,
        x: &Tensor,
        init: &[LstmState],
        keep: bool,
    ) -> Result<(Vec<LstmState>, Option<Tensor>)> {
        if init.len() != self.stack.layers.len() {
            candle_core::bail!(
                "expected {} LSTM states, got {}",
                self.stack.layers.len(),
                init.len()
            );
        }
        let (batch, steps, _) = x.dims3()?;
        let fused = current_kernel() == LstmKernel::Fused
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && steps > 0
            && batch > 0;
        if fused {
            return self.run_fused(x, init, keep);
        }
        // Time-major and contiguous, so that each step's slice is a contiguous view.
        let xt = x.transpose(0, 1)?.contiguous()?;
        let mut states = init.to_vec();
        let mut outputs = Vec::with_capacity(if keep { steps } else { 0 });
        for t in 0..steps {
            states = self.step(Some(&xt.get(t)?), &states)?;
            if keep {
                outputs.push(top_h(&states).clone());
            }
        }
        let out = if keep {
            Some(Tensor::stack(&outputs, 1)?)
        } else {
            None
        };
        Ok((states, out))
    }

    /// [`Stepper::run`] with one fused op per layer: each layer's input projections for all steps
    /// in one matmul, then the recurrence in [`lstm_layer`].
    fn run_fused(
        &self,
        x: &Tensor,
        init: &[LstmState],
        keep: bool,
    ) -> Result<(Vec<LstmState>, Option<Tensor>)> {
        let (batch, steps, _) = x.dims3()?;
        // Layer by layer, time-major: [T, B, features].
        let mut below = x.transpose(0, 1)?.contiguous()?;
        let mut states = Vec::with_capacity(init.len());
        for (k, (layer, state)) in self.stack.layers.iter().zip(init).enumerate() {
            let g4 = 4 * layer.hidden;
            let bias = if k == 0 {
                self.bias0.clone()
            } else {
                layer.bias.unsqueeze(0)?
            };
            let gx = match &layer.w_x_t {
                Some(w_x_t) => {
                    let width = below.dim(2)?;
                    project(&below.reshape((steps * batch, width))?, w_x_t)?
                        .reshape((steps, batch, g4))?
                }
                None => Tensor::zeros((steps, batch, g4), DType::F32, x.device())?,
            };
            let (hs, c_last) = lstm_layer(&gx, &layer.w_hh, &state.h, &state.c, &bias)?;
            states.push(LstmState {
                h: hs.get(steps - 1)?,
                c: c_last,
            });
            below = hs;
        }
        let out = if keep {
            Some(below.transpose(0, 1)?)
        } else {
            None
        };
        Ok((states, out))
    }
}

/// `[B, T, F]` with the time axis reversed (for the backward direction of a bidirectional LSTM).
pub fn reverse_time(x: &Tensor) -> Result<Tensor> {
    let t = x.dim(1)?;
    let idx: Vec<u32> = (0..t as u32).rev().collect();
    x.index_select(&Tensor::new(idx, x.device())?, 1)
}

/// The top layer's `h` of a state stack.
pub fn top_h(states: &[LstmState]) -> &Tensor {
    &states.last().expect("at least one layer").h
}

/// Used by tests that look at every feature of a state.
#[cfg(test)]
fn rounded(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|v| (v * 1e5).round() / 1e5).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;
    use std::collections::HashMap;

    const W_IH: [[f32; 3]; 8] = [
        [-0.3, -0.2, -0.1],
        [0.0, 0.1, 0.2],
        [0.3, -0.3, -0.2],
        [-0.1, 0.0, 0.1],
        [0.2, 0.3, -0.3],
        [-0.2, -0.1, 0.0],
        [0.1, 0.2, 0.3],
        [-0.3, -0.2, -0.1],
    ];
    const W_HH: [[f32; 2]; 8] = [
        [-0.1, -0.05],
        [0.0, 0.05],
        [0.1, -0.1],
        [-0.05, 0.0],
        [0.05, 0.1],
        [-0.1, -0.05],
        [0.0, 0.05],
        [0.1, -0.1],
    ];
    const B_IH: [f32; 8] = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07];
    const B_HH: [f32; 8] = [0.045, 0.025, 0.005, -0.015, -0.035, -0.055, -0.075, -0.095];

    /// The 3-input, 2-unit layer whose outputs were computed with plain Python `math` (no torch).
    fn golden_layer(cond: usize) -> Lstm {
        let dev = Device::Cpu;
        let mut ts = HashMap::new();
        let flat_ih: Vec<f32> = W_IH.iter().flatten().copied().collect();
        let flat_hh: Vec<f32> = W_HH.iter().flatten().copied().collect();
        ts.insert(
            "weight_ih_l0".to_string(),
            Tensor::from_vec(flat_ih, (8, 3), &dev).unwrap(),
        );
        ts.insert(
            "weight_hh_l0".to_string(),
            Tensor::from_vec(flat_hh, (8, 2), &dev).unwrap(),
        );
        ts.insert("bias_ih_l0".to_string(), Tensor::new(&B_IH, &dev).unwrap());
        ts.insert("bias_hh_l0".to_string(), Tensor::new(&B_HH, &dev).unwrap());
        let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
        Lstm::new(3 - cond, cond, 2, 0, false, &vb).unwrap()
    }

    fn t2(rows: &[&[f32]]) -> Tensor {
        let n = rows[0].len();
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (rows.len(), n), &Device::Cpu).unwrap()
    }

    #[test]
    fn step_matches_hand_computed_golden_values() {
        let lstm = golden_layer(0);
        let x = t2(&[&[0.5, -1.0, 2.0], &[0.0, 0.0, 0.0]]);
        let state = LstmState {
            h: t2(&[&[0.1, -0.2], &[0.0, 0.0]]),
            c: t2(&[&[0.3, 0.4], &[0.0, 0.0]]),
        };
        let next = lstm.step(&x, &state).unwrap();
        // Python reference (plain `math`), printed to 6 decimals.
        assert_eq!(
            rounded(&next.h),
            vec![vec![-0.09556, 0.09735], vec![0.00127, -0.00126]]
        );
        assert_eq!(
            rounded(&next.c),
            vec![vec![-0.15937, 0.21306], vec![0.00256, -0.00254]]
        );
    }

    #[test]
    fn seq_matches_hand_computed_golden_values() {
        let lstm = golden_layer(0);
        let x = Tensor::from_vec(
            vec![0.5f32, -1.0, 2.0, -0.3, 0.8, 0.1],
            (1, 2, 3),
            &Device::Cpu,
        )
        .unwrap();
        let (out, last) = lstm.seq(&x, None).unwrap();
        assert_eq!(out.dims(), &[1, 2, 2]);
        assert_eq!(
            rounded(&out.squeeze(0).unwrap()),
            vec![vec![-0.18419, -0.00133], vec![-0.03122, -0.00234]]
        );
        assert_eq!(rounded(&last.c), vec![vec![-0.05829, -0.00498]]);
    }

    #[test]
    fn conditioned_fast_path_equals_step_on_concatenated_input() {
        // Input width 1 + conditioning width 2 must act exactly like a width-3 input.
        let lstm = golden_layer(2);
        let stack = StackedLstm {
            layers: vec![lstm.clone()],
        };
        let x = t2(&[&[0.5], &[-0.7]]);
        let cond = t2(&[&[-1.0, 2.0], &[0.25, 0.5]]);
        let state = LstmState {
            h: t2(&[&[0.1, -0.2], &[0.3, 0.0]]),
            c: t2(&[&[0.3, 0.4], &[-0.1, 0.2]]),
        };
        let prepared = stack.prepare().unwrap();
        let fast = prepared
            .condition(Some(&cond))
            .unwrap()
            .step(Some(&x), std::slice::from_ref(&state))
            .unwrap();
        let full = Tensor::cat(&[&x, &cond], 1).unwrap();
        let slow = lstm.step(&full, &state).unwrap();
        assert_eq!(rounded(&fast[0].h), rounded(&slow.h));
        assert_eq!(rounded(&fast[0].c), rounded(&slow.c));
        assert_eq!(
            rounded(&fast[0].h)[0],
            vec![-0.09556, 0.09735],
            "row 0 is the golden case"
        );
    }

    #[test]
    fn stack_uses_pytorch_parameter_names_and_shapes() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        StackedLstm::new(5, 3, 4, 2, true, &vb).unwrap();
        let data = varmap.data().lock().unwrap();
        let mut shapes: Vec<(String, Vec<usize>)> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        shapes.sort();
        assert_eq!(
            shapes,
            vec![
                ("bias_hh_l0_reverse".into(), vec![16]),
                ("bias_hh_l1_reverse".into(), vec![16]),
                ("bias_ih_l0_reverse".into(), vec![16]),
                ("bias_ih_l1_reverse".into(), vec![16]),
                ("weight_hh_l0_reverse".into(), vec![16, 4]),
                ("weight_hh_l1_reverse".into(), vec![16, 4]),
                ("weight_ih_l0_reverse".into(), vec![16, 8]),
                ("weight_ih_l1_reverse".into(), vec![16, 4]),
            ]
        );
    }

    #[test]
    fn conductor_style_stack_steps_without_per_step_input() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let stack = StackedLstm::new(0, 3, 4, 2, false, &vb).unwrap();
        let cond = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        let prepared = stack.prepare().unwrap();
        let stepper = prepared.condition(Some(&cond)).unwrap();
        let s = stepper
            .step(None, &stack.zero_state(2, &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(top_h(&s).dims(), &[2, 4]);
        assert!(stepper.step(Some(&cond), &s).is_err(), "no per-step input");
    }

    #[test]
    fn reverse_time_flips_only_the_time_axis() {
        let x = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 2))
            .unwrap();
        let r = reverse_time(&x).unwrap();
        assert_eq!(
            r.to_vec3::<f32>().unwrap()[0],
            vec![vec![4.0, 5.0], vec![2.0, 3.0], vec![0.0, 1.0]]
        );
    }
}
