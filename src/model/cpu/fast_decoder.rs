//! Autoregressive decoding in plain Rust: [`Decoder::sample`] without Candle, for the CPU. Runs on
//! the plugin's worker thread every time the morph pad moves, in `drumvae render`, and in
//! evaluation; [`crate::model::Vae::decode`] picks it whenever the model lives on the CPU.
//!
//! Why not Candle: a batch-1 decode is 64 sequential steps of matrix-VECTOR products plus a few
//! thousand elementwise ops. Through Candle every op allocates a fresh tensor and dispatches
//! through gemm (built for matrix-matrix products), which made a `groovae` decode take 6-7 ms. The
//! arithmetic itself is small; what costs is streaming the weights: one bar-decoder step touches
//! `4H x (27 + 2H) + 4H x 2H + 27 x H` floats, 3.3 MB for H = 256, more than the 1 MiB L2, so every
//! step streams them from L3. Everything here is arranged around that:
//!
//! - Weights are copied out of the tensors once, into `Panels`: output rows in tiles of 64, each
//!   tile stored column by column, so a matrix-vector product is ONE sequential pass over the
//!   weights with a tile of outputs held in registers (8 AVX registers) and each input value
//!   broadcast once.
//! - The per-sequence conditioning input (z for the conductor and the flat decoder, the bar
//!   embedding c_u for the bar decoder) is projected once per sequence and becomes layer 0's gate
//!   bias, as in `lstm.rs`; it is not re-multiplied every step.
//! - The sampled input of a step (hits 0/1, velocity and offset only where there is a hit) is
//!   mostly zeros, so layer 0 only reads the weight columns of its nonzero entries. Skipping an
//!   exact zero changes no sum, so this is exact.
//! - All buffers are allocated once per decode call; a step allocates nothing.
//! - The hierarchical decoder runs the conductor for all four bars first, so that the bar
//!   decoder's weights then stream for 64 steps in a row.
//! - The inner loops use AVX2 + FMA (`std::arch::x86_64`) when the CPU has them, checked at run
//!   time; every other CPU (and aarch64) runs the portable loops, which the compiler vectorises.
//!   Both give the Candle reference's numbers within 1e-5 (they differ from it, and from each
//!   other, only in summation order, FMA rounding and exp/tanh approximations of ~1 ulp).
//!
//! Sampling is shared with the Candle path (`decoder::HitSampling`), so both draw identical hits from
//! identical predictions: same sanitising, same ChaCha8 stream per row, same draw order.
//!
//! One thread. The floor on one core is the L3 streaming rate, about 77 GB/s on the project's
//! machine, i.e. ~2.8 ms for the ~210 MB of bar-decoder weights a groovae decode streams. Sharing
//! each product's tiles with a persistent helper thread (commit 4bb9f3e, claimed from an atomic
//! counter) was measured there: with the second core idle it took a groovae decode from ~4.0 to
//! ~2.4 ms, but with both cores busy (that machine's usual state) from ~3.9 to ~9 ms, since the
//! caller then waits for a descheduled helper. It did not clearly pay, so it was removed.

use candle_core::{DType, Result, Tensor};
use candle_nn::Linear;
use rand_chacha::ChaCha8Rng;

use super::lstm_cell;
use crate::groove::{BARS, FEATURES, STEPS, STEPS_PER_BAR, VOICES};
use crate::model::decoder::{DecodeOptions, Decoder, HitSampling, SampleTrace};
use crate::model::device::cpu_has_avx2_fma;
use crate::model::lstm::StackedLstm;

/// Output rows per tile: 64 f32 accumulators are 8 AVX registers, leaving the other 8 for the
/// broadcast input and the weights in flight.
const TILE: usize = 64;
/// Rows are padded to a multiple of one AVX register.
const LANES: usize = 8;

/// Which inner loops a [`FastDecoder`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust loops, for every CPU.
    Portable,
    /// AVX2 + FMA intrinsics (x86-64 CPUs since Haswell / Zen 1).
    Avx2Fma,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Kernel {
        if Kernel::Avx2Fma.is_available() {
            Kernel::Avx2Fma
        } else {
            Kernel::Portable
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            Kernel::Avx2Fma => cpu_has_avx2_fma(),
        }
    }
}

/// A `[rows, cols]` matrix laid out for `y = W x`: rows padded to [`LANES`] and cut into tiles of
/// [`TILE`] rows (the last one narrower); tile `t` holds its `width x cols` block column by column
/// (`[cols][width]`), tiles one after another. Computing a tile's outputs is then one sequential
/// read of its block.
struct Panels {
    rows: usize,
    /// `rows` rounded up to [`LANES`]; padding rows are zero.
    padded: usize,
    cols: usize,
    /// The data, with up to 16 floats of slack in front so that it can start on a cache line.
    buf: Vec<f32>,
    start: usize,
}

impl Panels {
    /// Columns `col0..col0 + cols` of the row-major `[rows, stride]` matrix `w`.
    fn new(w: &[f32], rows: usize, stride: usize, col0: usize, cols: usize) -> Panels {
        assert!(w.len() == rows * stride && col0 + cols <= stride);
        let padded = rows.div_ceil(LANES) * LANES;
        let len = padded * cols;
        let mut buf = vec![0.0f32; len + 16];
        // 64-byte alignment makes every 8-float load sit inside one cache line. Only speed
        // depends on it (all loads are unaligned loads), and the heap block never moves.
        let start = buf.as_ptr().align_offset(64).min(16);
        let data = &mut buf[start..start + len];
        let mut at = 0;
        for row0 in (0..padded).step_by(TILE) {
            let width = TILE.min(padded - row0);
            for k in 0..cols {
                for j in 0..width {
                    let r = row0 + j;
                    data[at] = if r < rows {
                        w[r * stride + col0 + k]
                    } else {
                        0.0
                    };
                    at += 1;
                }
            }
        }
        Panels {
            rows,
            padded,
            cols,
            buf,
            start,
        }
    }

    fn tile_count(&self) -> usize {
        self.padded.div_ceil(TILE)
    }

    /// `(first row, width, block)` of tile `t`.
    fn tile(&self, t: usize) -> (usize, usize, &[f32]) {
        let row0 = t * TILE;
        let width = TILE.min(self.padded - row0);
        let data = &self.buf[self.start..self.start + self.padded * self.cols];
        (
            row0,
            width,
            &data[row0 * self.cols..(row0 + width) * self.cols],
        )
    }

    /// Floats read by one product (padding included).
    fn floats(&self) -> usize {
        self.padded * self.cols
    }
}

/// The nonzero entries of a step's sampled input, `(column, value)`.
type Sparse = Vec<(usize, f32)>;

impl Kernel {
    /// Tile `t` of `y = bias + W x` (see [`Kernel::matvec`]): writes the tile's rows into `out`.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        self,
        w: &Panels,
        t: usize,
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        dense_at: usize,
        out: &mut [f32],
    ) {
        let (row0, width, block) = w.tile(t);
        let bias = &bias[row0..row0 + width];
        assert!(out.len() == width && block.len() == width * w.cols);
        match self {
            Kernel::Portable => portable::tile(block, bias, sparse, dense, dense_at, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => {
                // SAFETY: a `Kernel::Avx2Fma` only reaches a decode after `is_available` said the
                // CPU has AVX2 and FMA (see `FastDecoder::with_kernel`), which is all the
                // function's `target_feature` requires.
                unsafe { avx2::tile(block, bias, sparse, dense, dense_at, out) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2Fma => unreachable!("AVX2 is never available off x86-64"),
        }
    }

    /// The LSTM cell on gate pre-activations `gates` (i, f, g, o, `hidden` each; overwritten with
    /// the activations): `c_prev` is the old cell state, `c` receives the new one and `h` the new
    /// output. The math is `lstm_cell.rs`'s, shared with the fused training layer.
    fn lstm_cell(self, gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h: &mut [f32]) {
        let hidden = c.len();
        assert!(gates.len() >= 4 * hidden && h.len() == hidden && c_prev.len() == hidden);
        lstm_cell::forward_with(
            self == Kernel::Avx2Fma,
            &mut gates[..4 * hidden],
            c_prev,
            c,
            h,
        );
    }

    /// `v = tanh(v)`.
    fn tanh(self, v: &mut [f32]) {
        lstm_cell::tanh_in_place(self == Kernel::Avx2Fma, v);
    }

    /// `y[..padded] = bias[..padded] + W x`, where `x` is zero except for the `sparse` entries and
    /// the dense tail `dense`, which covers the LAST `dense.len()` columns. `y` and `bias` hold at
    /// least `w.padded` values (padding rows come out as their bias).
    fn matvec(
        self,
        w: &Panels,
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        y: &mut [f32],
    ) {
        assert!(bias.len() >= w.padded && y.len() >= w.padded && dense.len() <= w.cols);
        let dense_at = w.cols - dense.len();
        assert!(sparse.iter().all(|&(k, _)| k < dense_at));
        for t in 0..w.tile_count() {
            let (row0, width, _) = w.tile(t);
            self.tile(
                w,
                t,
                bias,
                sparse,
                dense,
                dense_at,
                &mut y[row0..row0 + width],
            );
        }
    }
}

/// The kernels in plain Rust: the fallback for every CPU, and the tails the AVX2 kernels leave.
mod portable {
    use super::TILE;

    /// One tile: `out = bias + block x` (see [`super::Kernel::tile`]).
    pub(super) fn tile(
        block: &[f32],
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        dense_at: usize,
        out: &mut [f32],
    ) {
        match <&mut [f32; TILE]>::try_from(&mut *out) {
            Ok(out) => full_tile(block, bias, sparse, dense, dense_at, out),
            Err(_) => narrow_tile(block, bias, sparse, dense, dense_at, out),
        }
    }

    /// A full tile, with its accumulators in a fixed-size array that the compiler keeps in
    /// registers (measured: 1.45x faster than [`narrow_tile`]'s loop on baseline x86-64).
    fn full_tile(
        block: &[f32],
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        dense_at: usize,
        out: &mut [f32; TILE],
    ) {
        let (columns, _) = block.as_chunks::<TILE>();
        let mut acc: [f32; TILE] = bias.try_into().expect("a tile's bias");
        for &(k, v) in sparse {
            for (a, &wk) in acc.iter_mut().zip(&columns[k]) {
                *a += v * wk;
            }
        }
        for (column, &v) in columns[dense_at..].iter().zip(dense) {
            for (a, &wk) in acc.iter_mut().zip(column) {
                *a += v * wk;
            }
        }
        *out = acc;
    }

    /// The last, narrower tile of a matrix.
    fn narrow_tile(
        block: &[f32],
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        dense_at: usize,
        out: &mut [f32],
    ) {
        let width = out.len();
        out.copy_from_slice(bias);
        for &(k, v) in sparse {
            for (o, &wk) in out.iter_mut().zip(&block[k * width..(k + 1) * width]) {
                *o += v * wk;
            }
        }
        for (column, &v) in block[dense_at * width..].chunks_exact(width).zip(dense) {
            for (o, &wk) in out.iter_mut().zip(column) {
                *o += v * wk;
            }
        }
    }
}

/// AVX2 + FMA kernels. Every function here has `#[target_feature(enable = "avx2,fma")]`, so
/// calling one from outside needs the CPU check (see [`Kernel::tile`]); inside, only the loads
/// and stores through pointers are `unsafe`, and they go through [`load`] and [`store`], which
/// take fixed-size arrays, so the bounds are the type's.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn load(a: &[f32; 8]) -> __m256 {
        // SAFETY: `a` is 8 readable floats; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(a.as_ptr()) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn store(a: &mut [f32; 8], v: __m256) {
        // SAFETY: `a` is 8 writable floats; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) }
    }

    /// One tile: `out = bias + block x` (see [`super::Kernel::tile`]).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile(
        block: &[f32],
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        dense_at: usize,
        out: &mut [f32],
    ) {
        match out.len() / 8 {
            8 => tile_n::<8>(block, bias, sparse, dense, dense_at, out),
            7 => tile_n::<7>(block, bias, sparse, dense, dense_at, out),
            6 => tile_n::<6>(block, bias, sparse, dense, dense_at, out),
            5 => tile_n::<5>(block, bias, sparse, dense, dense_at, out),
            4 => tile_n::<4>(block, bias, sparse, dense, dense_at, out),
            3 => tile_n::<3>(block, bias, sparse, dense, dense_at, out),
            2 => tile_n::<2>(block, bias, sparse, dense, dense_at, out),
            1 => tile_n::<1>(block, bias, sparse, dense, dense_at, out),
            _ => unreachable!("tiles are 8 to 64 rows wide"),
        }
    }

    /// One tile of `8 N` rows: `N` registers of accumulators, one pass over the block.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn tile_n<const N: usize>(
        block: &[f32],
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        dense_at: usize,
        out: &mut [f32],
    ) {
        // The block as columns of N registers' worth of weights: no index below can be out of
        // bounds, so the loops carry no checks.
        let (lanes, _) = block.as_chunks::<8>();
        let (columns, _) = lanes.as_chunks::<N>();
        let (bias, _) = bias.as_chunks::<8>();
        let mut acc = [_mm256_setzero_ps(); N];
        for (a, b) in acc.iter_mut().zip(bias) {
            *a = load(b);
        }
        for &(k, v) in sparse {
            let x = _mm256_set1_ps(v);
            for (a, wk) in acc.iter_mut().zip(&columns[k]) {
                *a = _mm256_fmadd_ps(x, load(wk), *a);
            }
        }
        for (column, &v) in columns[dense_at..].iter().zip(dense) {
            let x = _mm256_set1_ps(v);
            for (a, wk) in acc.iter_mut().zip(column) {
                *a = _mm256_fmadd_ps(x, load(wk), *a);
            }
        }
        let (out, _) = out.as_chunks_mut::<8>();
        for (o, a) in out.iter_mut().zip(acc) {
            store(o, a);
        }
    }
}

/// Copies a tensor's values to the host as f32.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// A linear layer `y = W x + b` (Candle's `[out, in]` weight).
struct FastLinear {
    w: Panels,
    /// `b`, padded like the rows.
    bias: Vec<f32>,
}

impl FastLinear {
    fn new(linear: &Linear) -> Result<FastLinear> {
        let (rows, cols) = linear.weight().dims2()?;
        let w = Panels::new(&host(linear.weight())?, rows, cols, 0, cols);
        let mut bias = match linear.bias() {
            Some(b) => host(b)?,
            None => vec![0.0; rows],
        };
        if bias.len() != rows {
            candle_core::bail!("linear bias has {} values for {rows} rows", bias.len());
        }
        bias.resize(w.padded, 0.0);
        Ok(FastLinear { w, bias })
    }

    fn inputs(&self) -> usize {
        self.w.cols
    }

    fn outputs(&self) -> usize {
        self.w.rows
    }

    /// `y[..padded] = W x + b`.
    fn apply(&self, k: Kernel, x: &[f32], y: &mut [f32]) {
        k.matvec(&self.w, &self.bias, &[], x, y);
    }
}

/// One LSTM layer: gates `= W [x, h] + bias`, with the conditioning input folded into the bias.
struct FastLayer {
    /// `[4H, input + H]`: the per-step input's columns, then the recurrent ones.
    w: Panels,
    /// `[4H, cond]`, when the layer has a conditioning input.
    w_cond: Option<Panels>,
    /// `bias_ih + bias_hh`, padded.
    bias: Vec<f32>,
    input: usize,
}

impl FastLayer {
    fn new(layer: &crate::model::lstm::Lstm) -> Result<FastLayer> {
        let (w_ih, w_hh, b_ih, b_hh) = layer.weights();
        let (hidden, input, cond) = (layer.hidden(), layer.input(), layer.cond());
        let g = 4 * hidden;
        let (w_ih, w_hh) = (host(w_ih)?, host(w_hh)?);
        if w_ih.len() != g * (input + cond) || w_hh.len() != g * hidden {
            candle_core::bail!("LSTM weights do not match the layer's sizes");
        }
        // [x, h] side by side, as `lstm.rs` concatenates them for its fused gate product.
        let mut w = Vec::with_capacity(g * (input + hidden));
        for r in 0..g {
            w.extend_from_slice(&w_ih[r * (input + cond)..r * (input + cond) + input]);
            w.extend_from_slice(&w_hh[r * hidden..(r + 1) * hidden]);
        }
        let w = Panels::new(&w, g, input + hidden, 0, input + hidden);
        let w_cond = (cond > 0).then(|| Panels::new(&w_ih, g, input + cond, input, cond));
        // Summed as Candle sums them (`bias_ih + bias_hh`).
        let mut bias: Vec<f32> = host(b_ih)?
            .iter()
            .zip(host(b_hh)?)
            .map(|(a, b)| a + b)
            .collect();
        bias.resize(w.padded, 0.0);
        Ok(FastLayer {
            w,
            w_cond,
            bias,
            input,
        })
    }
}

/// A stacked LSTM: layer 0 reads `[x, cond]`, layer k > 0 reads layer k - 1's `h`.
struct FastStack {
    layers: Vec<FastLayer>,
    hidden: usize,
    cond: usize,
}

impl FastStack {
    fn new(stack: &StackedLstm) -> Result<FastStack> {
        Ok(FastStack {
            layers: (0..stack.layers())
                .map(|k| FastLayer::new(stack.layer(k)))
                .collect::<Result<_>>()?,
            hidden: stack.hidden(),
            cond: stack.layer(0).cond(),
        })
    }

    fn input(&self) -> usize {
        self.layers[0].input
    }

    /// Layer 0's gate bias for a sequence conditioned on `cond` (empty when the stack has no
    /// conditioning input): `bias + W_cond cond`, into `bias0` (`4H` padded).
    fn condition(&self, k: Kernel, cond: &[f32], bias0: &mut [f32]) {
        let first = &self.layers[0];
        match &first.w_cond {
            Some(w) => k.matvec(w, &first.bias, &[], cond, bias0),
            None => bias0.copy_from_slice(&first.bias),
        }
    }

    /// Floats of weights one step reads (padding included, the sampled input's columns all
    /// counted), and its multiply-adds.
    fn step_cost(&self) -> (usize, usize) {
        let floats = self.layers.iter().map(|l| l.w.floats()).sum();
        let macs = self.layers.iter().map(|l| l.w.rows * l.w.cols).sum();
        (floats, macs)
    }

    /// The same for conditioning one sequence.
    fn condition_cost(&self) -> (usize, usize) {
        let w = self.layers[0].w_cond.as_ref();
        (
            w.map_or(0, Panels::floats),
            w.map_or(0, |w| w.rows * w.cols),
        )
    }
}

/// The running state of a [`FastStack`] for one sequence: every buffer a step writes.
struct StackState {
    /// Per layer, the product's dense input: layer 0 `[h_0]`, layer k `[h_(k-1), h_k]`. A layer
    /// writes its new `h` into its own slot and copies it to the front of the next layer's.
    xh: Vec<Vec<f32>>,
    /// Per layer, the cell state.
    c: Vec<Vec<f32>>,
    /// The cell state before the step being computed (the cell writes the new one into `c`).
    c_prev: Vec<f32>,
    /// Gate pre-activations, `4H` padded.
    gates: Vec<f32>,
    /// Layer 0's gate bias for this sequence: `bias + W_cond cond`.
    bias0: Vec<f32>,
}

impl StackState {
    fn new(stack: &FastStack) -> StackState {
        let h = stack.hidden;
        StackState {
            xh: (0..stack.layers.len())
                .map(|k| vec![0.0; if k == 0 { h } else { 2 * h }])
                .collect(),
            c: vec![vec![0.0; h]; stack.layers.len()],
            c_prev: vec![0.0; h],
            gates: vec![0.0; stack.layers[0].w.padded],
            bias0: vec![0.0; stack.layers[0].w.padded],
        }
    }

    /// Layer `k`'s `h`.
    fn h(&self, k: usize) -> &[f32] {
        let xh = &self.xh[k];
        &xh[xh.len() - self.c[k].len()..]
    }

    /// The top layer's `h`.
    fn top(&self) -> &[f32] {
        self.h(self.xh.len() - 1)
    }

    /// Starts a sequence: the initial `(h, c)` of every layer from `init = tanh(linear(emb))`,
    /// laid out `[h0, c0, h1, c1, ...]` as `decoder.rs` splits it, and layer 0's gate bias
    /// `bias0` (see [`FastStack::condition`]).
    fn start(&mut self, stack: &FastStack, init: &[f32], bias0: &[f32]) {
        let h = stack.hidden;
        for layer in 0..stack.layers.len() {
            let at = 2 * layer * h;
            let len = self.xh[layer].len();
            self.xh[layer][len - h..].copy_from_slice(&init[at..at + h]);
            self.c[layer].copy_from_slice(&init[at + h..at + 2 * h]);
        }
        self.bias0.copy_from_slice(bias0);
    }

    /// Keeps the state and changes layer 0's gate bias: the next bar of a decoder that carries its
    /// state across bar lines, steered by the new bar's embedding.
    fn steer(&mut self, bias0: &[f32]) {
        self.bias0.copy_from_slice(bias0);
    }

    /// One step through every layer; `x` is the per-step input's nonzero entries.
    fn step(&mut self, stack: &FastStack, k: Kernel, x: &[(usize, f32)]) {
        let h = stack.hidden;
        let n = stack.layers.len();
        for (l, layer) in stack.layers.iter().enumerate() {
            let (bias, sparse) = if l == 0 {
                (&self.bias0[..], x)
            } else {
                (&layer.bias[..], &[][..])
            };
            k.matvec(&layer.w, bias, sparse, &self.xh[l], &mut self.gates);
            let len = self.xh[l].len();
            self.c_prev.copy_from_slice(&self.c[l]);
            k.lstm_cell(
                &mut self.gates,
                &self.c_prev,
                &mut self.c[l],
                &mut self.xh[l][len - h..],
            );
            if l + 1 < n {
                let (this, above) = self.xh.split_at_mut(l + 1);
                above[0][..h].copy_from_slice(&this[l][len - h..]);
            }
        }
    }
}

/// Which decoder, with its weights laid out for stepping.
enum Kind {
    Hierarchical {
        conductor_init: FastLinear,
        conductor: FastStack,
        bar_init: FastLinear,
        bar: FastStack,
        /// [`crate::model::BarState::Carry`]: bars 2-4 continue from the last bar's state.
        carry: bool,
    },
    Flat {
        init: FastLinear,
        lstm: FastStack,
    },
}

/// Weights read and multiply-adds done by decoding one batch row, counted over every matrix
/// product (padding rows included in the bytes; all of a step's input columns counted, although
/// the zero ones are skipped). Elementwise work (a few thousand exp/tanh per step) is not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeCost {
    /// Bytes of f32 weights streamed.
    pub weight_bytes: usize,
    /// Multiply-adds (FLOPs / 2).
    pub multiply_adds: usize,
}

/// A [`Decoder`]'s weights copied out and laid out for fast autoregressive decoding on the CPU;
/// see the module documentation. Built once per model (a few milliseconds) and immutable after,
/// so it can be shared between threads; it does not follow later changes to the decoder's
/// tensors (build a new one).
pub struct FastDecoder {
    kind: Kind,
    output: FastLinear,
    latent: usize,
    kernel: Kernel,
}

impl std::fmt::Debug for FastDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Hierarchical { .. } => "hierarchical",
            Kind::Flat { .. } => "flat",
        };
        f.debug_struct("FastDecoder")
            .field("kind", &kind)
            .field("latent", &self.latent)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl FastDecoder {
    /// Copies `decoder`'s weights (from any device) and picks [`Kernel::detect`].
    pub fn new(decoder: &Decoder) -> Result<FastDecoder> {
        let (kind, output, latent) = match decoder {
            Decoder::Hierarchical(d) => {
                let (conductor_init, conductor, bar_init, bar, output) = d.parts();
                let conductor_init = FastLinear::new(conductor_init)?;
                let latent = conductor_init.inputs();
                let kind = Kind::Hierarchical {
                    conductor_init,
                    conductor: FastStack::new(conductor)?,
                    bar_init: FastLinear::new(bar_init)?,
                    bar: FastStack::new(bar)?,
                    carry: d.carries_state(),
                };
                (kind, FastLinear::new(output)?, latent)
            }
            Decoder::Flat(d) => {
                let (init, lstm, output) = d.parts();
                let init = FastLinear::new(init)?;
                let latent = init.inputs();
                let kind = Kind::Flat {
                    init,
                    lstm: FastStack::new(lstm)?,
                };
                (kind, FastLinear::new(output)?, latent)
            }
        };
        let fast = FastDecoder {
            kind,
            output,
            latent,
            kernel: Kernel::detect(),
        };
        fast.check_sizes()?;
        Ok(fast)
    }

    /// The same decoder running `kernel` (to compare kernels); fails if this CPU lacks it.
    pub fn with_kernel(mut self, kernel: Kernel) -> Result<FastDecoder> {
        if !kernel.is_available() {
            candle_core::bail!("this CPU cannot run the {kernel:?} kernel");
        }
        self.kernel = kernel;
        Ok(self)
    }

    /// The kernel it runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The size of z.
    pub fn latent(&self) -> usize {
        self.latent
    }

    /// The stack that emits the notes, and the sizes every part must agree on.
    fn check_sizes(&self) -> Result<()> {
        let (note_stack, ok) = match &self.kind {
            Kind::Hierarchical {
                conductor_init,
                conductor,
                bar_init,
                bar,
                ..
            } => (
                bar,
                conductor.input() == 0
                    && conductor.cond == self.latent
                    && conductor_init.outputs() == 2 * conductor.layers.len() * conductor.hidden
                    && bar_init.inputs() == conductor.hidden
                    && bar_init.outputs() == 2 * bar.layers.len() * bar.hidden
                    && bar.cond == conductor.hidden,
            ),
            Kind::Flat { init, lstm } => (
                lstm,
                lstm.cond == self.latent && init.outputs() == 2 * lstm.layers.len() * lstm.hidden,
            ),
        };
        if !ok
            || note_stack.input() != FEATURES
            || self.output.inputs() != note_stack.hidden
            || self.output.outputs() != FEATURES
        {
            candle_core::bail!("the decoder's layer sizes do not fit together");
        }
        Ok(())
    }

    /// What decoding one row costs (see [`DecodeCost`]).
    pub fn cost_per_row(&self) -> DecodeCost {
        let mut floats = 0;
        let mut macs = 0;
        let mut add = |(f, m): (usize, usize), times: usize| {
            floats += f * times;
            macs += m * times;
        };
        let linear = |l: &FastLinear| (l.w.floats(), l.w.rows * l.w.cols);
        add(linear(&self.output), STEPS);
        match &self.kind {
            Kind::Hierarchical {
                conductor_init,
                conductor,
                bar_init,
                bar,
                ..
            } => {
                add(linear(conductor_init), 1);
                add(conductor.condition_cost(), 1);
                add(conductor.step_cost(), BARS);
                add(linear(bar_init), BARS);
                add(bar.condition_cost(), BARS);
                add(bar.step_cost(), STEPS);
            }
            Kind::Flat { init, lstm } => {
                add(linear(init), 1);
                add(lstm.condition_cost(), 1);
                add(lstm.step_cost(), STEPS);
            }
        }
        DecodeCost {
            weight_bytes: 4 * floats,
            multiply_adds: macs,
        }
    }

    /// [`Decoder::sample`]: decodes `z` (`N x latent` values, row-major) into N flat `64 x 27`
    /// grids, with the same sampling and the same numbers within 1e-5.
    pub fn sample(&self, z: &[f32], opts: &DecodeOptions) -> Result<Vec<Vec<f32>>> {
        Ok(self.run(z, opts, false)?.grids)
    }

    /// [`Decoder::sample_traced`]: the grids and every step's predictions.
    pub fn sample_traced(&self, z: &[f32], opts: &DecodeOptions) -> Result<SampleTrace> {
        self.run(z, opts, true)
    }

    fn run(&self, z: &[f32], opts: &DecodeOptions, trace: bool) -> Result<SampleTrace> {
        if !z.len().is_multiple_of(self.latent) {
            candle_core::bail!(
                "z has {} values, not a multiple of the latent size {}",
                z.len(),
                self.latent
            );
        }
        let n = z.len() / self.latent;
        let rule = HitSampling::new(opts);
        let mut work = Work::new(self);
        let mut out = SampleTrace {
            grids: vec![vec![0.0; STEPS * FEATURES]; n],
            outputs: if trace {
                vec![vec![0.0; STEPS * FEATURES]; n]
            } else {
                Vec::new()
            },
        };
        for (row, z) in z.chunks_exact(self.latent).enumerate() {
            let mut rng = rule.rng(row);
            let record = out.outputs.get_mut(row).map(Vec::as_mut_slice);
            self.decode_row(z, &rule, &mut rng, &mut work, &mut out.grids[row], record);
        }
        Ok(out)
    }

    fn decode_row(
        &self,
        z: &[f32],
        rule: &HitSampling,
        rng: &mut ChaCha8Rng,
        work: &mut Work,
        grid: &mut [f32],
        mut record: Option<&mut [f32]>,
    ) {
        let k = self.kernel;
        let notes = &mut work.notes;
        notes.sparse.clear();
        let mut step = 0;
        match &self.kind {
            Kind::Hierarchical {
                conductor_init,
                conductor,
                bar_init,
                bar,
                carry,
            } => {
                let cs = work.conductor.as_mut().expect("hierarchical work");
                conductor_init.apply(k, z, &mut work.init);
                k.tanh(&mut work.init[..conductor_init.outputs()]);
                conductor.condition(k, z, &mut work.bias0);
                cs.start(conductor, &work.init, &work.bias0);
                // Every bar's embedding and starting point first (the conductor does not see the
                // notes), so that the bar decoder's weights then stream for 64 steps in a row
                // instead of being pushed out of the cache by the conductor's at every bar.
                // A bar that continues from the last one's state needs only its embedding's bias,
                // not a starting state.
                let restarts = |u: usize| u == 0 || !carry;
                for (u, bar_start) in work.bars.iter_mut().enumerate() {
                    cs.step(conductor, k, &[]);
                    let c_u = cs.top();
                    if restarts(u) {
                        bar_init.apply(k, c_u, &mut bar_start.init);
                        k.tanh(&mut bar_start.init[..bar_init.outputs()]);
                    }
                    bar.condition(k, c_u, &mut bar_start.bias0);
                }
                for (u, bar_start) in work.bars.iter().enumerate() {
                    if restarts(u) {
                        notes.state.start(bar, &bar_start.init, &bar_start.bias0);
                    } else {
                        notes.state.steer(&bar_start.bias0);
                    }
                    for _ in 0..STEPS_PER_BAR {
                        self.note_step(bar, rule, rng, notes, grid, record.as_deref_mut(), step);
                        step += 1;
                    }
                }
            }
            Kind::Flat { init, lstm } => {
                init.apply(k, z, &mut work.init);
                k.tanh(&mut work.init[..init.outputs()]);
                lstm.condition(k, z, &mut work.bias0);
                notes.state.start(lstm, &work.init, &work.bias0);
                for _ in 0..STEPS {
                    self.note_step(lstm, rule, rng, notes, grid, record.as_deref_mut(), step);
                    step += 1;
                }
            }
        }
    }

    /// One step of the note-emitting stack: predict, sample, and make the next input.
    #[allow(clippy::too_many_arguments)]
    fn note_step(
        &self,
        stack: &FastStack,
        rule: &HitSampling,
        rng: &mut ChaCha8Rng,
        notes: &mut NoteWork,
        grid: &mut [f32],
        record: Option<&mut [f32]>,
        step: usize,
    ) {
        let k = self.kernel;
        notes.state.step(stack, k, &notes.sparse);
        let raw = &mut notes.raw;
        self.output.apply(k, notes.state.top(), raw);
        // The heads as `decoder.rs` applies them: logits as they are, sigmoid velocities,
        // `0.5 tanh` offsets; scalar std functions, as Candle computes them (`1 / (1 + e^-x)`).
        for v in &mut raw[VOICES..2 * VOICES] {
            *v = ((-*v).exp() + 1.0).recip();
        }
        for v in &mut raw[2 * VOICES..FEATURES] {
            *v = v.tanh() * 0.5;
        }
        let cells = step * FEATURES..(step + 1) * FEATURES;
        rule.sample_row(&raw[..FEATURES], rng, &mut grid[cells.clone()]);
        if let Some(record) = record {
            record[cells.clone()].copy_from_slice(&raw[..FEATURES]);
        }
        notes.sparse.clear();
        notes.sparse.extend(
            grid[cells]
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(i, &v)| (i, v)),
        );
    }
}

/// The note-emitting stack's buffers.
struct NoteWork {
    state: StackState,
    /// The output layer's 27 raw values, padded.
    raw: Vec<f32>,
    /// The previous step's sampled input, nonzero entries only.
    sparse: Sparse,
}

/// Every buffer of one decode call; reused for all its rows.
struct Work {
    conductor: Option<StackState>,
    notes: NoteWork,
    /// The initial state of the conductor or the flat decoder, `tanh(linear(z))`, padded.
    init: Vec<f32>,
    /// Layer 0's gate bias of the conductor or the flat decoder.
    bias0: Vec<f32>,
    /// Where each bar of the hierarchical decoder starts (empty for the flat one).
    bars: Vec<BarStart>,
}

/// The bar decoder's initial state and layer-0 gate bias for one bar.
struct BarStart {
    init: Vec<f32>,
    bias0: Vec<f32>,
}

impl Work {
    fn new(fast: &FastDecoder) -> Work {
        let (conductor, notes, init, bias0, bars) = match &fast.kind {
            Kind::Hierarchical {
                conductor_init,
                conductor,
                bar_init,
                bar,
                ..
            } => {
                let bars = (0..BARS)
                    .map(|_| BarStart {
                        init: vec![0.0; bar_init.w.padded],
                        bias0: vec![0.0; bar.layers[0].w.padded],
                    })
                    .collect();
                (
                    Some(StackState::new(conductor)),
                    StackState::new(bar),
                    conductor_init.w.padded,
                    conductor.layers[0].w.padded,
                    bars,
                )
            }
            Kind::Flat { init, lstm } => (
                None,
                StackState::new(lstm),
                init.w.padded,
                lstm.layers[0].w.padded,
                Vec::new(),
            ),
        };
        Work {
            conductor,
            notes: NoteWork {
                state: notes,
                raw: vec![0.0; fast.output.w.padded],
                sparse: Vec::with_capacity(FEATURES),
            },
            init: vec![0.0; init],
            bias0: vec![0.0; bias0],
            bars,
        }
    }
}
