//! Matrix products with bf16 operands and f32 accumulation (`vdpbf16ps`, AVX-512 BF16): the
//! mixed-precision engine of the fused LSTM layers and their input projections.
//!
//! Why: on this project's CPUs an f32 multiply-add loop tops out at ~115 GFLOP/s per core, AVX2 or
//! AVX-512 alike, while `vdpbf16ps` (pairs of bf16 multiplied and added into f32 lanes) reaches
//! ~230 (candle-notes.md). bf16 operands are the only way past the f32 ceiling. Products still
//! accumulate in f32, and everything outside them (master weights, Adam moments, gate math, cell
//! state, the loss) stays f32: the classic mixed-precision recipe, where a product's result differs
//! from f32 by the operands' rounding (8 significant bits, relative 2⁻⁹ per operand), not by an
//! error that grows with the depth of the sum.
//!
//! Three engines share one layout, chosen for the instructions: the right-hand side is packed once
//! into panels `[n / NR][k / 2][NR]` of `u32` bf16 pairs `(B[2q][j], B[2q+1][j])` (the even k in
//! the low half): a row of a panel is one k-pair of 32 columns, which is both two 512-bit
//! `vdpbf16ps` operands and AMX's B-tile ("VNNI") row. The left-hand side is row-major pairs
//! `[m][k / 2]`, AMX's A-tile layout. Depths are padded to 32 (16 pairs) and rows to 32 with zeros,
//! so that the tile engine never needs a partial tile.
//! - [`super::amx`] (AMX-BF16, Intel Sapphire Rapids and later): 32 x 32 output blocks in four
//!   tiles. Where present it is by far the fastest (see that file's figures).
//! - AVX-512 BF16 (`vdpbf16ps`): a 12 x 32 register tile, 24 accumulators, 2 panel registers and
//!   one broadcast of the 32 AVX-512 registers. It pays on CPUs that run it at full rate (AMD Zen 4:
//!   ~230 GFLOP/s per core against ~115 for f32, candle-notes.md).
//! - A portable loop with the same rounding of the operands, for tests and correctness only (the
//!   training CLI picks f32 there, see [`super::precision`]).

use rayon::prelude::*;

use super::amx;
use super::packed_matmul::SharedDst;
use super::precision::cpu_has_avx512_bf16;

/// Columns per panel: two registers of 16 f32 lanes.
pub const NR: usize = 32;
/// Rows per microkernel call.
const MR: usize = 12;
/// k-pairs per pass over the panels: a panel's block (128 pairs x 32 columns x 4 bytes = 16 KiB)
/// stays in L1 while the rows stream against it.
const KCP: usize = 128;
/// Rows per pass (a multiple of MR): the rows' block (96 x 128 pairs, 48 KiB) stays in L2.
const MC: usize = 96;
/// Below this many multiply-adds per call, one thread does the whole product.
const PARALLEL_MACS: usize = 1 << 20;
/// Pairs and rows are padded to multiples of these (whole AMX tiles: 16 pairs = 32 k, and two
/// 16-row A tiles per block).
const PAIR_PAD: usize = 16;
const ROW_PAD: usize = 32;

/// Which engine runs the products on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// AMX tiles.
    Amx,
    /// AVX-512 BF16 `vdpbf16ps`.
    Avx512,
    /// Scalar code with the same operand rounding.
    Portable,
}

impl Engine {
    /// The fastest engine this CPU (and OS) offers.
    pub fn detect() -> Engine {
        if amx::available() {
            Engine::Amx
        } else if cpu_has_avx512_bf16() {
            Engine::Avx512
        } else {
            Engine::Portable
        }
    }
}

/// The engine of this process, detected once.
fn engine() -> Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    *ENGINE.get_or_init(Engine::detect)
}

/// `x` rounded to bf16 (round to nearest, ties to even; NaN stays NaN), as the f32 bit pattern
/// whose low 16 bits are zero.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000;
    // Keep a NaN a (quiet) NaN: rounding could carry its payload into the exponent. A select, not
    // a branch, so that the packing loops vectorise.
    let nan = (b | 0x0040_0000) & 0xFFFF_0000;
    if x.is_nan() { nan } else { rounded }
}

/// `x` rounded to the nearest bf16, as an f32: what the products see of an operand.
#[inline(always)]
pub fn round_to_bf16(x: f32) -> f32 {
    f32::from_bits(bf16_bits(x))
}

/// Two operands as one bf16 pair: `lo` (the even k) in bits 0-15, `hi` (the odd k) in 16-31.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    (bf16_bits(lo) >> 16) | bf16_bits(hi)
}

/// `dst[q] = pair(src[2q], src[2q + 1])` (a zero after an odd-length row): one contiguous row of
/// k values as pairs. Written as plain slice loops so that the compiler vectorises it.
fn pairs_of_row(dst: &mut [u32], src: &[f32]) {
    let whole = src.len() / 2;
    for (d, p) in dst[..whole].iter_mut().zip(src.chunks_exact(2)) {
        *d = pair(p[0], p[1]);
    }
    if src.len() % 2 == 1 {
        dst[whole] = pair(src[src.len() - 1], 0.0);
    }
}

/// `dst[i] = pair(even[i], odd[i])`: two contiguous rows (k = 2q and 2q + 1) as one row of pairs.
fn interleave(dst: &mut [u32], even: &[f32], odd: &[f32]) {
    for ((d, &e), &o) in dst.iter_mut().zip(even).zip(odd) {
        *d = pair(e, o);
    }
}

/// A left-hand side `[m, k]` as row-major bf16 pairs `[m (padded to 32)][k.div_ceil(2) (padded
/// to 16)]`, zeros in the padding. Reusable: [`PackedLhsBf16::pack`] keeps the buffer.
#[derive(Default)]
pub struct PackedLhsBf16 {
    m: usize,
    k: usize,
    /// Row stride in pairs.
    stride: usize,
    data: Vec<u32>,
}

impl PackedLhsBf16 {
    /// An empty buffer.
    pub fn new() -> PackedLhsBf16 {
        PackedLhsBf16::default()
    }

    /// Rounds and packs `lhs [m, k]`, element `(i, kk)` at `lhs[i * rs + kk * cs]`.
    ///
    /// # Panics
    /// If `lhs` is too short for that layout.
    pub fn pack(&mut self, lhs: &[f32], (m, k): (usize, usize), (rs, cs): (usize, usize)) {
        assert!(
            m == 0 || k == 0 || lhs.len() > (m - 1) * rs + (k - 1) * cs,
            "bf16 matmul: left-hand side too short"
        );
        let pairs = k.div_ceil(2);
        let stride = pairs.next_multiple_of(PAIR_PAD);
        let rows = m.next_multiple_of(ROW_PAD);
        // Same depth and size as last time (every step of a sequence): the padding pairs are
        // still zero and every other word of rows 0..m is overwritten below, so nothing needs
        // clearing (rows past m only ever produce output rows that are never written).
        if self.k != k || self.data.len() != rows * stride {
            self.data.clear();
            self.data.resize(rows * stride, 0);
        }
        self.m = m;
        self.k = k;
        self.stride = stride;
        if m == 0 || k == 0 {
            return;
        }
        let parallel = m * k >= PARALLEL_MACS / 16 && candle_core::utils::get_num_threads() > 1;
        let body = &mut self.data[..m * stride];
        if cs == 1 {
            // Row-major source: a row of pairs is one contiguous source row.
            let fill = |(i, row): (usize, &mut [u32])| {
                pairs_of_row(&mut row[..pairs], &lhs[i * rs..i * rs + k])
            };
            if parallel {
                body.par_chunks_mut(stride).enumerate().for_each(fill);
            } else {
                body.chunks_mut(stride).enumerate().for_each(fill);
            }
        } else if rs == 1 {
            // Column-major source (a transposed operand): source rows 2q and 2q + 1 interleave
            // into column q of the packed rows; blocks of 64 rows keep the written lines in L1.
            const BLOCK: usize = 64;
            let fill = |(b, block): (usize, &mut [u32])| {
                let i0 = b * BLOCK;
                let n = block.len() / stride;
                let mut column = [0u32; BLOCK];
                for q in 0..pairs {
                    let even = &lhs[2 * q * cs + i0..2 * q * cs + i0 + n];
                    if 2 * q + 1 < k {
                        let odd = &lhs[(2 * q + 1) * cs + i0..(2 * q + 1) * cs + i0 + n];
                        interleave(&mut column[..n], even, odd);
                    } else {
                        column
                            .iter_mut()
                            .zip(even)
                            .for_each(|(c, &e)| *c = pair(e, 0.0));
                    }
                    for (i, c) in column[..n].iter().enumerate() {
                        block[i * stride + q] = *c;
                    }
                }
            };
            if parallel {
                body.par_chunks_mut(BLOCK * stride)
                    .enumerate()
                    .for_each(fill);
            } else {
                body.chunks_mut(BLOCK * stride).enumerate().for_each(fill);
            }
        } else {
            let value = |i: usize, kk: usize| if kk < k { lhs[i * rs + kk * cs] } else { 0.0 };
            for (i, row) in body.chunks_mut(stride).enumerate() {
                for (q, o) in row[..pairs].iter_mut().enumerate() {
                    *o = pair(value(i, 2 * q), value(i, 2 * q + 1));
                }
            }
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.m
    }
}

/// A right-hand side `[k, n]` rounded to bf16 and laid out as zero-padded column panels of pairs.
pub struct PackedRhsBf16 {
    k: usize,
    n: usize,
    /// Pairs per panel: `k.div_ceil(2)` padded to 16.
    pairs: usize,
    /// `[n.div_ceil(NR)][pairs][NR]`.
    panels: Vec<u32>,
}

impl PackedRhsBf16 {
    /// Packs `rhs [k, n]`, element `(kk, j)` at `rhs[kk * rs + j * cs]`.
    ///
    /// # Panics
    /// If `k` or `n` is 0 or `rhs` is too short for that layout.
    pub fn new(rhs: &[f32], (k, n): (usize, usize), (rs, cs): (usize, usize)) -> PackedRhsBf16 {
        assert!(k > 0 && n > 0, "bf16 matmul: empty right-hand side");
        assert!(
            rhs.len() > (k - 1) * rs + (n - 1) * cs,
            "bf16 matmul: right-hand side too short"
        );
        let pairs = k.div_ceil(2).next_multiple_of(PAIR_PAD);
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0u32; n_panels * pairs * NR];
        let fill = |(p, panel): (usize, &mut [u32])| {
            let (col0, width) = (p * NR, NR.min(n - p * NR));
            if cs == 1 {
                // Rows of the source are k: rows 2q and 2q + 1 interleave into panel row q.
                for (q, dst) in panel.chunks_mut(NR).take(k.div_ceil(2)).enumerate() {
                    let even = &rhs[2 * q * rs + col0..2 * q * rs + col0 + width];
                    if 2 * q + 1 < k {
                        let odd = &rhs[(2 * q + 1) * rs + col0..(2 * q + 1) * rs + col0 + width];
                        interleave(&mut dst[..width], even, odd);
                    } else {
                        dst.iter_mut()
                            .zip(even)
                            .for_each(|(d, &e)| *d = pair(e, 0.0));
                    }
                }
            } else if rs == 1 {
                // A transposed source (rows of the source are columns here): each column's k
                // values are contiguous; write them down the panel.
                let mut column = vec![0u32; k.div_ceil(2)];
                for jj in 0..width {
                    let j = col0 + jj;
                    pairs_of_row(&mut column, &rhs[j * cs..j * cs + k]);
                    for (q, c) in column.iter().enumerate() {
                        panel[q * NR + jj] = *c;
                    }
                }
            } else {
                for (q, dst) in panel.chunks_mut(NR).take(k.div_ceil(2)).enumerate() {
                    let (k0, k1) = (2 * q, 2 * q + 1);
                    for (jj, d) in dst[..width].iter_mut().enumerate() {
                        let j = col0 + jj;
                        let hi = if k1 < k { rhs[k1 * rs + j * cs] } else { 0.0 };
                        *d = pair(rhs[k0 * rs + j * cs], hi);
                    }
                }
            }
        };
        if k * n >= PARALLEL_MACS / 16 && candle_core::utils::get_num_threads() > 1 {
            panels.par_chunks_mut(pairs * NR).enumerate().for_each(fill);
        } else {
            panels.chunks_mut(pairs * NR).enumerate().for_each(fill);
        }
        PackedRhsBf16 {
            k,
            n,
            pairs,
            panels,
        }
    }

    /// `dst [m, n] (row stride dst_rs) = (accumulate ? dst : 0) + lhs · self`. Splits the column
    /// panels over the rayon pool when the product is large enough.
    ///
    /// # Panics
    /// If `lhs` was packed with another depth or `dst` is too small.
    pub fn matmul(&self, dst: &mut [f32], dst_rs: usize, accumulate: bool, lhs: &PackedLhsBf16) {
        self.matmul_on(engine(), dst, dst_rs, accumulate, lhs);
    }

    /// [`PackedRhsBf16::matmul`] on a given engine, which this CPU must have.
    fn matmul_on(
        &self,
        engine: Engine,
        dst: &mut [f32],
        dst_rs: usize,
        accumulate: bool,
        lhs: &PackedLhsBf16,
    ) {
        let (m, k, n) = (lhs.m, self.k, self.n);
        if m == 0 {
            return;
        }
        assert_eq!(lhs.k, k, "bf16 matmul: operands of different depth");
        assert!(
            dst_rs >= n && dst.len() >= (m - 1) * dst_rs + n,
            "bf16 matmul: destination too small"
        );
        let n_panels = n.div_ceil(NR);
        let threads = candle_core::utils::get_num_threads().min(n_panels);
        let out = SharedDst(dst.as_mut_ptr());
        let run = |panels: std::ops::Range<usize>| {
            // SAFETY: the asserts above bound every row and column written; each call gets a
            // disjoint range of panels, hence disjoint columns of `dst`.
            unsafe { self.panels_into(engine, panels, &out, dst_rs, accumulate, lhs) }
        };
        if threads > 1 && m * n * k >= PARALLEL_MACS {
            let per = n_panels.div_ceil(threads);
            (0..threads)
                .into_par_iter()
                .for_each(|t| run(t * per..n_panels.min((t + 1) * per)));
        } else {
            run(0..n_panels);
        }
    }

    /// Computes the columns of `panels` for every row of `lhs`.
    ///
    /// # Safety
    /// `dst` must be valid for rows `0..lhs.m` at stride `dst_rs` and columns `0..self.n`, and no
    /// other thread may write the columns of `panels` meanwhile.
    unsafe fn panels_into(
        &self,
        engine: Engine,
        panels: std::ops::Range<usize>,
        dst: &SharedDst,
        dst_rs: usize,
        accumulate: bool,
        lhs: &PackedLhsBf16,
    ) {
        // Writes `rows` x `width` of a computed block at (row, col0), adding or overwriting.
        let write = |tile: &[[f32; NR]], row: usize, rows: usize, col0: usize, add: bool| {
            let width = NR.min(self.n - col0);
            for (i, t) in tile.iter().enumerate().take(rows) {
                // SAFETY: row `row + i < m` and columns `col0..col0 + width <= n` are in bounds
                // (caller's contract), and this thread owns these columns.
                unsafe { dst.store((row + i) * dst_rs + col0, &t[..width], add) };
            }
        };
        let m = lhs.m;
        let pairs = self.pairs;
        #[cfg(target_arch = "x86_64")]
        if engine == Engine::Amx {
            // SAFETY: AMX was found available and permitted.
            let mut tiles = unsafe { amx::Tiles::configure() };
            let mut block = [[0f32; NR]; 32];
            for p in panels {
                let panel = &self.panels[p * pairs * NR..(p + 1) * pairs * NR];
                for row in (0..m).step_by(32) {
                    // SAFETY: the left-hand side has rows padded to 32 and `pairs` (a multiple
                    // of 16) pairs per row at stride `lhs.stride`; the panel holds `pairs` rows.
                    unsafe {
                        tiles.block(
                            &mut block,
                            lhs.data.as_ptr().add(row * lhs.stride),
                            lhs.stride,
                            panel.as_ptr(),
                            pairs,
                        )
                    };
                    write(&block, row, 32.min(m - row), p * NR, accumulate);
                }
            }
            return;
        }
        for (q0, m0) in (0..pairs)
            .step_by(KCP)
            .flat_map(|q0| (0..m).step_by(MC).map(move |m0| (q0, m0)))
        {
            let qc = KCP.min(pairs - q0);
            let m_end = m.min(m0 + MC);
            let add = accumulate || q0 > 0;
            for p in panels.clone() {
                let panel = &self.panels[(p * pairs + q0) * NR..(p * pairs + q0 + qc) * NR];
                let mut row = m0;
                while row < m_end {
                    let rows = MR.min(m_end - row);
                    let mut tile = [[0f32; NR]; MR];
                    // Pairs q0.. of rows `row..`: element (i, q) at a[i * stride + q - q0].
                    let a = &lhs.data[row * lhs.stride + q0..];
                    if engine == Engine::Avx512 {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: AVX-512 BF16 was detected at run time; `a` holds `rows` rows of
                        // `qc` pairs at stride `lhs.stride`, `panel` holds `qc * NR` pairs.
                        unsafe {
                            avx512::tile(&mut tile, rows, a, lhs.stride, panel, qc)
                        };
                    } else {
                        portable_tile(&mut tile, rows, a, lhs.stride, panel, qc);
                    }
                    write(&tile, row, rows, p * NR, add);
                    row += rows;
                }
            }
        }
    }
}

/// `dst [m, n] (row stride dst_rs) = (accumulate ? dst : 0) + lhs [m, k] · rhs [k, n]` in bf16
/// with f32 accumulation, each operand given by its row and column strides: packs both, then
/// multiplies. For the once-per-layer products (weight gradients, input projections).
///
/// # Panics
/// If a slice is too short for its shape and strides.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    let mut a = PackedLhsBf16::new();
    a.pack(lhs, (m, k), lhs_strides);
    PackedRhsBf16::new(rhs, (k, n), rhs_strides).matmul(dst, dst_rs, accumulate, &a);
}

/// The bf16 value in the low (`hi == false`) or high half of a pair, as f32.
#[inline(always)]
fn half_of(pair: u32, hi: bool) -> f32 {
    f32::from_bits(if hi { pair & 0xFFFF_0000 } else { pair << 16 })
}

/// `tile[0..rows] = a · panel` over `pairs` k-pairs (row `i` of `a` at `i * a_stride`), for CPUs
/// without AVX-512 BF16.
fn portable_tile(
    tile: &mut [[f32; NR]; MR],
    rows: usize,
    a: &[u32],
    a_stride: usize,
    panel: &[u32],
    pairs: usize,
) {
    for (i, t) in tile.iter_mut().enumerate().take(rows) {
        for (q, b) in panel.chunks_exact(NR).take(pairs).enumerate() {
            let ap = a[i * a_stride + q];
            let (a0, a1) = (half_of(ap, false), half_of(ap, true));
            for (t, &bp) in t.iter_mut().zip(b) {
                *t += a0 * half_of(bp, false) + a1 * half_of(bp, true);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// `tile[0..rows] = a · panel` over `pairs` k-pairs with all accumulators in registers.
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 must be available; `a` must hold `rows` rows of `pairs` pairs at
    /// stride `a_stride`; `panel` must hold `pairs * NR` pairs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile(
        tile: &mut [[f32; NR]; MR],
        rows: usize,
        a: &[u32],
        a_stride: usize,
        panel: &[u32],
        pairs: usize,
    ) {
        match rows {
            12 => unsafe { kernel::<12>(tile, a, a_stride, panel, pairs) },
            11 => unsafe { kernel::<11>(tile, a, a_stride, panel, pairs) },
            10 => unsafe { kernel::<10>(tile, a, a_stride, panel, pairs) },
            9 => unsafe { kernel::<9>(tile, a, a_stride, panel, pairs) },
            8 => unsafe { kernel::<8>(tile, a, a_stride, panel, pairs) },
            7 => unsafe { kernel::<7>(tile, a, a_stride, panel, pairs) },
            6 => unsafe { kernel::<6>(tile, a, a_stride, panel, pairs) },
            5 => unsafe { kernel::<5>(tile, a, a_stride, panel, pairs) },
            4 => unsafe { kernel::<4>(tile, a, a_stride, panel, pairs) },
            3 => unsafe { kernel::<3>(tile, a, a_stride, panel, pairs) },
            2 => unsafe { kernel::<2>(tile, a, a_stride, panel, pairs) },
            _ => unsafe { kernel::<1>(tile, a, a_stride, panel, pairs) },
        }
    }

    /// The register-blocked microkernel for `R` rows: per k-pair, two panel loads, `R`
    /// broadcasts and `2R` `vdpbf16ps`.
    ///
    /// # Safety
    /// As [`tile`], with `rows == R`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn kernel<const R: usize>(
        tile: &mut [[f32; NR]; MR],
        a: &[u32],
        a_stride: usize,
        panel: &[u32],
        pairs: usize,
    ) {
        assert!(R <= MR && panel.len() >= pairs * NR);
        assert!(pairs == 0 || a.len() >= (R - 1) * a_stride + pairs);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let a = a.as_ptr();
        let b = panel.as_ptr();
        for q in 0..pairs {
            // SAFETY: q < pairs, so both panel loads and every row's pair are in bounds (asserts).
            unsafe {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR).cast()));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16).cast()));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(i * a_stride + q) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
                }
            }
        }
        for (t, acc) in tile.iter_mut().zip(acc) {
            // SAFETY: each tile row holds NR = 32 floats.
            unsafe {
                _mm512_storeu_ps(t.as_mut_ptr(), acc[0]);
                _mm512_storeu_ps(t.as_mut_ptr().add(16), acc[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32)
            .map(|v| v / (1u32 << 24) as f32 - 0.5)
            .collect()
    }

    /// The exact product of the bf16-rounded operands (f64 sums).
    fn naive_of_rounded(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|kk| {
                        f64::from(round_to_bf16(a[i * k + kk]))
                            * f64::from(round_to_bf16(b[kk * n + j]))
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn rounding_is_to_nearest_even_and_keeps_specials() {
        // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1).
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
        assert_eq!(
            round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-9)), 1.0);
        assert_eq!(round_to_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_to_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert!(f32::from_bits(bf16_bits(f32::from_bits(0x7FFF_FFFF))).is_nan());
        for x in values(1000, 9) {
            let r = round_to_bf16(x * 1e3);
            assert!((r - x * 1e3).abs() <= (x * 1e3).abs() * 2f32.powi(-8));
        }
    }

    #[test]
    fn packed_product_is_the_exact_product_of_rounded_operands_for_ragged_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 33, 17),
            (13, 5, 40),
            (64, 64, 256),
            (12, 300, 32),
            (25, 257, 65),
            (100, 600, 70),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let want = naive_of_rounded(m, k, n, &a, &b);
            let packed = PackedRhsBf16::new(&b, (k, n), (n, 1));
            let mut lhs = PackedLhsBf16::new();
            lhs.pack(&a, (m, k), (k, 1));
            let mut got = vec![f32::NAN; m * n];
            packed.matmul(&mut got, n, false, &lhs);
            // Only the f32 accumulation order differs from the exact sum.
            let tol = |w: f64| 1e-5 * (1.0 + w.abs()) * (k as f64).sqrt();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (f64::from(*g) - w).abs() <= tol(*w),
                    "{m}x{k}x{n}: {g} vs {w}"
                );
            }
            packed.matmul(&mut got, n, true, &lhs);
            for (g, w) in got.iter().zip(&want) {
                assert!((f64::from(*g) - 2.0 * w).abs() <= 2.0 * tol(*w));
            }
        }
    }

    #[test]
    fn strided_operands_read_the_same_matrices() {
        let (m, k, n) = (9, 21, 35);
        let a = values(m * k, 3);
        let b = values(k * n, 4);
        let transpose = |x: &[f32], rows: usize, cols: usize| {
            let mut t = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = x[r * cols + c];
                }
            }
            t
        };
        let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
        let mut x = vec![0f32; m * n];
        let mut y = vec![0f32; m * n];
        matmul_bf16(&mut x, n, false, (m, n, k), &a, (k, 1), &b, (n, 1));
        matmul_bf16(&mut y, n, false, (m, n, k), &at, (1, m), &bt, (1, k));
        assert_eq!(x, y);
    }

    #[test]
    fn products_are_within_bf16_tolerance_of_f32() {
        let (m, k, n) = (64, 512, 128);
        let a = values(m * k, 5);
        let b = values(k * n, 6);
        let mut got = vec![0f32; m * n];
        matmul_bf16(&mut got, n, false, (m, n, k), &a, (k, 1), &b, (n, 1));
        let (mut err, mut norm) = (0f64, 0f64);
        for i in 0..m {
            for j in 0..n {
                let w: f64 = (0..k)
                    .map(|kk| f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]))
                    .sum();
                err += (f64::from(got[i * n + j]) - w).powi(2);
                norm += w * w;
            }
        }
        // Random-sign sums: the rounding errors (≤ 2^-9 relative per operand) add like noise.
        let rel = (err / norm).sqrt();
        assert!(rel < 1e-2, "relative error {rel}");
    }

    #[test]
    fn a_reused_left_hand_buffer_gives_what_a_fresh_one_gives_whatever_came_before() {
        // Shapes whose padded sizes coincide, so the buffer is reused with stale contents.
        let mut reused = PackedLhsBf16::new();
        for &(m, k) in &[(30, 30), (20, 20), (31, 31), (5, 3), (32, 32)] {
            let a = values(m * k, m as u32 + 100 * k as u32);
            let b = values(k * 40, 13);
            let rhs = PackedRhsBf16::new(&b, (k, 40), (40, 1));
            let mut fresh = PackedLhsBf16::new();
            fresh.pack(&a, (m, k), (k, 1));
            reused.pack(&a, (m, k), (k, 1));
            let (mut x, mut y) = (vec![0f32; m * 40], vec![0f32; m * 40]);
            rhs.matmul(&mut x, 40, false, &fresh);
            rhs.matmul(&mut y, 40, false, &reused);
            assert_eq!(x, y, "{m}x{k}");
        }
    }

    #[test]
    fn every_engine_this_cpu_has_computes_the_same_products() {
        let mut engines = vec![Engine::Portable];
        if cpu_has_avx512_bf16() {
            engines.push(Engine::Avx512);
        }
        if amx::available() {
            engines.push(Engine::Amx);
        }
        eprintln!("engines here: {engines:?}");
        for &(m, k, n) in &[(1, 1, 1), (33, 70, 65), (64, 512, 96), (100, 31, 32)] {
            let a = values(m * k, 11);
            let b = values(k * n, 12);
            let rhs = PackedRhsBf16::new(&b, (k, n), (n, 1));
            let mut lhs = PackedLhsBf16::new();
            lhs.pack(&a, (m, k), (k, 1));
            let mut want = vec![0f32; m * n];
            rhs.matmul_on(Engine::Portable, &mut want, n, false, &lhs);
            for &engine in &engines {
                let mut got = vec![1f32; m * n];
                rhs.matmul_on(engine, &mut got, n, true, &lhs);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - 1.0 - w).abs() <= 1e-5 * (1.0 + w.abs()) * (k as f32).sqrt(),
                        "{engine:?} {m}x{k}x{n}: {g} vs 1 + {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn portable_and_avx512_tiles_agree() {
        let (pairs, rows) = (37, 11);
        let a: Vec<u32> = values(pairs * rows * 2, 7)
            .chunks(2)
            .map(|p| pair(p[0], p[1]))
            .collect();
        let panel: Vec<u32> = values(pairs * NR * 2, 8)
            .chunks(2)
            .map(|p| pair(p[0], p[1]))
            .collect();
        let mut want = [[0f32; NR]; MR];
        portable_tile(&mut want, rows, &a, pairs, &panel, pairs);
        if cpu_has_avx512_bf16() {
            let mut got = [[0f32; NR]; MR];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detected above; shapes as documented.
            unsafe {
                avx512::tile(&mut got, rows, &a, pairs, &panel, pairs)
            };
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }
}
