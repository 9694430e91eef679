//! A whole LSTM layer over a sequence as ONE Candle op, with a hand-written backward
//! (backpropagation through time over the gate activations saved by the forward pass).
//!
//! Why: written with Candle's per-step tensor ops, a 64-step layer is hundreds of autograd nodes;
//! each allocates fresh buffers, the elementwise ops run single-threaded one op at a time, and the
//! backward of every step allocates a full weight-sized gradient and adds it to a running sum
//! (candle-notes.md). Here the forward is one loop over preallocated buffers (one `h @ W_hhᵀ`
//! matmul and one pass of gate nonlinearities per step), the backward is one loop of `dA @ W_hh`
//! matmuls, and the weight gradient is ONE large matmul `dAᵀ @ H_prev` over all steps at the end,
//! which runs near the machine's matmul ceiling. Input projections are not in here: the caller
//! computes them for all steps at once with one Candle matmul (inputs are known up front: the
//! encoder's grid, the teacher-forced decoder targets, the layer below's outputs), so autograd
//! takes care of `W_ih`, the biases and the inputs through ordinary, efficient ops.
//!
//! The products run in the precision the calling thread chose ([`super::precision`]: f32, or bf16
//! operands with f32 accumulation), recorded in the op so that its backward pass uses the same;
//! the gate math, cell state and every buffer stay f32. CPU only (the `cuda` build falls back to
//! the reference per-step path in `lstm.rs`).

use super::lstm_cell as gates;
use super::precision::{Precision, current_precision};
use super::product::{self, PackedWeights};

use std::sync::{Arc, Mutex};

use candle_core::{
    CpuStorage, CustomOp1, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor,
};
use rayon::prelude::*;

/// Below this many cells per step (batch x hidden) the gate math of a step stays on one thread:
/// handing rows to the pool costs more than it saves.
const PARALLEL_CELLS: usize = 8192;

/// Runs one LSTM layer over a sequence.
///
/// - `gx [T, B, 4H]`: the input projections of every step, without bias (gate order i, f, g, o,
///   as PyTorch).
/// - `w_hh [4H, H]`: the recurrent weights.
/// - `h0`, `c0` `[B, H]`: the initial state.
/// - `bias`: the gate bias, `[4H]` or `[1, 4H]` (shared by every row) or `[B, 4H]` (per row: a
///   conditioning input's projection). Added inside the op, so that neither a `[T, B, 4H]`
///   broadcast sum in the forward pass nor its reduction in the backward pass is needed.
///
/// Returns every step's `h` `[T, B, H]` and the last step's cell state `c_T` `[B, H]`. Gradients
/// flow to every input from both.
///
/// Why two tensors and not one `[2, T, B, H]` to slice: Candle's backward of a slice builds a
/// zero tensor of the whole source, copies the gradient into it and adds that to the source's
/// gradient (three full-size passes of memory per layer and step of training), which measured
/// ~15 % of a training step. `c_T` comes from a second op ([`FinalCellOp`]) that shares the
/// layer's saved state: its backward hands `dc_T` to the layer's backward directly.
pub fn lstm_layer(
    gx: &Tensor,
    w_hh: &Tensor,
    h0: &Tensor,
    c0: &Tensor,
    bias: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (steps, batch, g4) = gx.dims3()?;
    let hidden = g4 / 4;
    if steps == 0 || batch == 0 {
        candle_core::bail!(
            "fused LSTM layer: empty sequence or batch ({steps} steps, batch {batch})"
        );
    }
    let per_row = match bias.elem_count() {
        n if n == g4 => false,
        n if n == batch * g4 => true,
        _ => candle_core::bail!(
            "fused LSTM layer: bias {:?} fits neither [4H] nor [B, 4H]",
            bias.dims()
        ),
    };
    if g4 != 4 * hidden
        || w_hh.dims() != [g4, hidden]
        || h0.dims() != [batch, hidden]
        || c0.dims() != [batch, hidden]
    {
        candle_core::bail!(
            "fused LSTM layer: gx {:?}, w_hh {:?}, h0 {:?}, c0 {:?} do not fit together",
            gx.dims(),
            w_hh.dims(),
            h0.dims(),
            c0.dims()
        );
    }
    // A custom op takes at most three inputs: the initial state and the bias travel as one.
    let packed = Tensor::cat(
        &[h0.flatten_all()?, c0.flatten_all()?, bias.flatten_all()?],
        0,
    )?;
    let shared = Arc::new(Mutex::new(Saved::default()));
    let op = LstmLayerOp {
        steps,
        batch,
        hidden,
        per_row,
        precision: current_precision(),
        saved: shared.clone(),
    };
    let hs = gx
        .contiguous()?
        .apply_op3(&w_hh.contiguous()?, &packed, op)?;
    let c_last = hs.apply_op1(FinalCellOp {
        batch,
        hidden,
        saved: shared,
    })?;
    Ok((hs, c_last))
}

/// What a layer's forward pass leaves for its backward pass and for [`FinalCellOp`].
#[derive(Default)]
struct Saved {
    /// Gate activations after their nonlinearities (`[T, B, 4H]`: σ(i), σ(f), tanh(g), σ(o)).
    acts: Option<Vec<f32>>,
    /// Every step's cell state `[T, B, H]`.
    cs: Option<Vec<f32>>,
    /// The gradient of the loss with respect to `c_T`, handed over by [`FinalCellOp`]'s backward
    /// (which Candle runs before the layer's: it consumes the layer's output).
    dc_last: Option<Vec<f32>>,
}

/// `c_T` of a layer, as an op on the layer's output `hs` (so that Candle orders its backward
/// before the layer's). Forward copies `c_T` out of the shared state; backward stores `dc_T` there
/// and gives `hs` a zero gradient (so that the layer's backward runs even when only `c_T` reaches
/// the loss; training never uses `c_T`, only tests and callers that continue a sequence do).
struct FinalCellOp {
    batch: usize,
    hidden: usize,
    saved: Arc<Mutex<Saved>>,
}

impl CustomOp1 for FinalCellOp {
    fn name(&self) -> &'static str {
        "fused-lstm-final-cell"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        let bh = self.batch * self.hidden;
        let saved = self.saved.lock().expect("fused LSTM state poisoned");
        let Some(cs) = saved.cs.as_ref() else {
            candle_core::bail!("fused LSTM: the final cell state was read before the layer ran");
        };
        let last = cs[cs.len() - bh..].to_vec();
        Ok((
            CpuStorage::F32(last),
            Shape::from((self.batch, self.hidden)),
        ))
    }

    fn bwd(&self, hs: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dc = grad_res.flatten_all()?.to_vec1::<f32>()?;
        let mut saved = self.saved.lock().expect("fused LSTM state poisoned");
        match saved.dc_last.as_mut() {
            Some(sum) => sum.iter_mut().zip(&dc).for_each(|(s, d)| *s += d),
            None => saved.dc_last = Some(dc),
        }
        Ok(Some(hs.zeros_like()?))
    }
}

/// One batch row of a forward step as the row loop hands it out: its index, gate pre-activations
/// (activations on return), cell state and output.
type ForwardRow<'a> = (usize, (&'a mut [f32], (&'a mut [f32], &'a mut [f32])));

/// The op; it keeps what backward needs from its forward pass.
struct LstmLayerOp {
    steps: usize,
    batch: usize,
    hidden: usize,
    /// Whether the bias has one row per batch row (else one shared row).
    per_row: bool,
    /// The products' precision, fixed when the op is built.
    precision: Precision,
    /// Written by `cpu_fwd`, read by `bwd` and [`FinalCellOp`]. A mutex only because custom ops
    /// take `&self`; it is never contended (the ops of one layer never run at the same time).
    saved: Arc<Mutex<Saved>>,
}

/// The contiguous f32 data of a tensor held by `storage` (a CPU tensor's storage guard).
fn storage_f32<'a>(storage: &'a Storage, l: &Layout) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(s) => f32_slice(s, l),
        _ => candle_core::bail!("the fused LSTM layer runs on the CPU only"),
    }
}

/// The contiguous f32 data of a CPU tensor argument.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("the fused LSTM layer only runs in f32"),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("the fused LSTM layer needs contiguous inputs"),
    }
}

impl CustomOp3 for LstmLayerOp {
    fn name(&self) -> &'static str {
        "fused-lstm-layer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (t_len, b, h) = (self.steps, self.batch, self.hidden);
        let g4 = 4 * h;
        let gx = f32_slice(s1, l1)?;
        let w = f32_slice(s2, l2)?;
        let packed = f32_slice(s3, l3)?;
        let bh = b * h;
        let (s0, bias) = packed.split_at(2 * bh);
        // W_hhᵀ [H, 4H] packed once for all steps (element (k, gate) is w[gate * H + k]).
        let mut w_t = PackedWeights::new(self.precision, w, (h, g4), (1, h));
        let mut acts = gx.to_vec();
        for step in acts.chunks_mut(b * g4) {
            for (r, row) in step.chunks_mut(g4).enumerate() {
                let bias = if self.per_row {
                    &bias[r * g4..(r + 1) * g4]
                } else {
                    bias
                };
                row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
            }
        }
        // Every step's h (the output) and c (kept for backward), each [T, B, H].
        let mut out = vec![0f32; t_len * bh];
        let mut cells = vec![0f32; t_len * bh];
        let (hs, cs) = (&mut out[..], &mut cells[..]);
        for t in 0..t_len {
            let (h_done, h_rest) = hs.split_at_mut(t * bh);
            let (c_done, c_rest) = cs.split_at_mut(t * bh);
            let h_prev = if t == 0 {
                &s0[..bh]
            } else {
                &h_done[(t - 1) * bh..]
            };
            let c_prev = if t == 0 {
                &s0[bh..]
            } else {
                &c_done[(t - 1) * bh..]
            };
            let a = &mut acts[t * b * g4..(t + 1) * b * g4];
            // a += h_prev [B, H] · W_hhᵀ [H, 4H]
            w_t.matmul(a, g4, true, (b, h), h_prev, h);
            let c_out = &mut c_rest[..bh];
            let h_out = &mut h_rest[..bh];
            let row = |(r, (a, (c_out, h_out))): ForwardRow<'_>| {
                gates::forward(a, &c_prev[r * h..(r + 1) * h], c_out, h_out)
            };
            if bh >= PARALLEL_CELLS {
                a.par_chunks_mut(g4)
                    .zip(c_out.par_chunks_mut(h).zip(h_out.par_chunks_mut(h)))
                    .enumerate()
                    .for_each(row);
            } else {
                a.chunks_mut(g4)
                    .zip(c_out.chunks_mut(h).zip(h_out.chunks_mut(h)))
                    .enumerate()
                    .for_each(row);
            }
        }
        let mut saved = self.saved.lock().expect("fused LSTM state poisoned");
        saved.acts = Some(acts);
        saved.cs = Some(cells);
        Ok((CpuStorage::F32(out), Shape::from((t_len, b, h))))
    }

    fn bwd(
        &self,
        _gx: &Tensor,
        w_hh: &Tensor,
        packed: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (t_len, b, h) = (self.steps, self.batch, self.hidden);
        let (g4, bh) = (4 * h, b * h);
        let mut saved = self.saved.lock().expect("fused LSTM state poisoned");
        // dc_T from the final-cell op, when c_T reached the loss (taken: a second backward pass
        // over the same graph gets its own); else no gradient enters through c.
        let dc_taken = saved.dc_last.take();
        let (Some(acts), Some(cs)) = (saved.acts.as_ref(), saved.cs.as_ref()) else {
            candle_core::bail!("fused LSTM backward ran before its forward pass");
        };
        let zeros = vec![0f32; bh];
        let dc_last = dc_taken.as_deref().unwrap_or(&zeros);
        // Read the tensors in place (no copies): hold their storage guards for the whole pass.
        let grad_res = grad_res.contiguous()?;
        let (w_guard, w_layout) = w_hh.storage_and_layout();
        let w = storage_f32(&w_guard, w_layout)?;
        let (p_guard, p_layout) = packed.storage_and_layout();
        let s0 = &storage_f32(&p_guard, p_layout)?[..2 * bh];
        let (o_guard, o_layout) = res.storage_and_layout();
        let hs = storage_f32(&o_guard, o_layout)?;
        let (g_guard, g_layout) = grad_res.storage_and_layout();
        let dhs = storage_f32(&g_guard, g_layout)?;

        let mut d_acts = vec![0f32; t_len * b * g4];
        // Gradients flowing into step t from step t + 1 (and, at the end, into the initial state).
        let mut dh_next = vec![0f32; bh];
        // W_hh [4H, H] packed once for all steps' `dA · W_hh`.
        let mut w_packed = PackedWeights::new(self.precision, w, (g4, h), (h, 1));
        let mut dc_next = vec![0f32; bh];
        for t in (0..t_len).rev() {
            let act = &acts[t * b * g4..(t + 1) * b * g4];
            let da = &mut d_acts[t * b * g4..(t + 1) * b * g4];
            let c_prev = if t == 0 {
                &s0[bh..]
            } else {
                &cs[(t - 1) * bh..t * bh]
            };
            let c = &cs[t * bh..(t + 1) * bh];
            let dh_out = &dhs[t * bh..(t + 1) * bh];
            let dc_out = if t + 1 == t_len { dc_last } else { &zeros[..] };
            let row = |(r, (carry, da)): (usize, (&mut [f32], &mut [f32]))| {
                let rows = r * h..(r + 1) * h;
                gates::backward(
                    &act[r * g4..(r + 1) * g4],
                    &c[rows.clone()],
                    &c_prev[rows.clone()],
                    &dh_out[rows.clone()],
                    &dh_next[rows.clone()],
                    &dc_out[rows],
                    carry,
                    da,
                )
            };
            if bh >= PARALLEL_CELLS {
                dc_next
                    .par_chunks_mut(h)
                    .zip(da.par_chunks_mut(g4))
                    .enumerate()
                    .for_each(row);
            } else {
                dc_next
                    .chunks_mut(h)
                    .zip(da.chunks_mut(g4))
                    .enumerate()
                    .for_each(row);
            }
            // dh_prev [B, H] = dA_t [B, 4H] · W_hh [4H, H]
            w_packed.matmul(&mut dh_next, h, false, (b, g4), da, g4);
        }

        // dW_hh [4H, H] = Σ_t dA_tᵀ · h_{t-1}: all steps in one matmul over [T·B] rows.
        let mut h_prev = Vec::with_capacity(t_len * bh);
        h_prev.extend_from_slice(&s0[..bh]);
        h_prev.extend_from_slice(&hs[..(t_len - 1) * bh]);
        let mut dw = vec![0f32; g4 * h];
        product::matmul(
            self.precision,
            &mut dw,
            h,
            false,
            (g4, h, t_len * b),
            &d_acts,
            (1, g4),
            &h_prev,
            (h, 1),
        );

        // The packed input's gradient: [dh0 | dc0 | d bias], the bias summed over steps (and rows
        // when it is shared).
        let mut d_packed = dh_next;
        d_packed.extend_from_slice(&dc_next);
        let mut d_bias = vec![0f32; if self.per_row { b * g4 } else { g4 }];
        for step in d_acts.chunks(b * g4) {
            for (r, row) in step.chunks(g4).enumerate() {
                let d = if self.per_row {
                    &mut d_bias[r * g4..(r + 1) * g4]
                } else {
                    &mut d_bias[..]
                };
                d.iter_mut().zip(row).for_each(|(d, a)| *d += a);
            }
        }
        d_packed.extend_from_slice(&d_bias);
        let device = Device::Cpu;
        let packed_len = d_packed.len();
        Ok((
            Some(Tensor::from_vec(d_acts, (t_len, b, g4), &device)?),
            Some(Tensor::from_vec(dw, (g4, h), &device)?),
            Some(Tensor::from_vec(d_packed, packed_len, &device)?),
        ))
    }
}
