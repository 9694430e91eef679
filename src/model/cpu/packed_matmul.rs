//! The recurrent matmul of an LSTM layer (`h @ W_hhᵀ` forward, `dA @ W_hh` backward) with the
//! weight matrix packed ONCE per layer call and reused by every time step.
//!
//! Why: a general gemm (the `gemm` crate, as Candle uses) packs both operands again on every call
//! and its blocking is tuned for large square products. The per-step products here are short and
//! wide (m = batch 64-256, n = 1024-2048, k = 256-2048) and there are 64 of them per layer and
//! direction, with the same right-hand side each time; measured on this CPU, gemm reached only
//! 25-40 GFLOP/s on them against ~110 per core on large squares. Here the weights are laid out
//! as column panels `[n / NR][k][NR]` before the loop, so a step is nothing but a 6x16
//! register-blocked AVX2+FMA microkernel streaming a panel (L1/L2) against six rows of `h`,
//! with the panels split over the threads.
//!
//! Results differ from gemm's only by summation order (f32 rounding, ~1e-7 relative); the fused
//! layer's equivalence tests hold the whole layer to 1e-5 of the reference.

use rayon::prelude::*;

use crate::model::device::cpu_has_avx2_fma;

/// Columns per panel: two 8-wide AVX registers.
pub const NR: usize = 16;
/// Rows per microkernel call: 6 x 2 accumulators + 2 panel registers + 1 broadcast = 15 of the
/// 16 AVX registers.
const MR: usize = 6;
/// Depth (k) per pass over the panels; see `panels_into`.
const KC: usize = 256;
/// Rows per pass over the panels (a multiple of MR): with KC, the rows' block (96 KiB) stays in
/// L2 next to the panels streaming through it.
const MC: usize = 96;
/// Below this many multiply-adds per call, one thread does the whole product: waking the pool
/// costs more than it saves.
const PARALLEL_MACS: usize = 1 << 20;

/// A right-hand side `[k, n]` laid out as zero-padded column panels of [`NR`] columns.
pub struct PackedRhs {
    k: usize,
    n: usize,
    /// `[n.div_ceil(NR)][k][NR]`.
    panels: Vec<f32>,
}

impl PackedRhs {
    /// Packs `rhs [k, n]` given with row stride `rs` and column stride `cs`, so that element
    /// `(kk, j)` is `rhs[kk * rs + j * cs]`.
    ///
    /// # Panics
    /// If `rhs` is too short for that layout.
    pub fn new(rhs: &[f32], (k, n): (usize, usize), (rs, cs): (usize, usize)) -> PackedRhs {
        assert!(k > 0 && n > 0, "packed matmul: empty right-hand side");
        assert!(
            rhs.len() > (k - 1) * rs + (n - 1) * cs,
            "packed matmul: right-hand side too short"
        );
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * k * NR];
        for (p, panel) in panels.chunks_mut(k * NR).enumerate() {
            let cols = (p * NR)..n.min((p + 1) * NR);
            for (kk, dst) in panel.chunks_mut(NR).enumerate() {
                for (d, j) in dst.iter_mut().zip(cols.clone()) {
                    *d = rhs[kk * rs + j * cs];
                }
            }
        }
        PackedRhs { k, n, panels }
    }

    /// `dst [m, n] (row stride dst_rs) = (accumulate ? dst : 0) + lhs [m, k] · self`, `lhs`
    /// row-major with row stride `lhs_rs`. Splits the column panels over the rayon pool when the
    /// product is large enough and more than one thread is configured.
    ///
    /// # Panics
    /// If `dst` or `lhs` is too short for `m` rows.
    pub fn matmul(
        &self,
        dst: &mut [f32],
        dst_rs: usize,
        accumulate: bool,
        m: usize,
        lhs: &[f32],
        lhs_rs: usize,
    ) {
        if m == 0 {
            return;
        }
        let (k, n) = (self.k, self.n);
        assert!(
            dst_rs >= n && dst.len() >= (m - 1) * dst_rs + n,
            "packed matmul: destination too small"
        );
        assert!(
            lhs_rs >= k && lhs.len() >= (m - 1) * lhs_rs + k,
            "packed matmul: left-hand side too small"
        );
        let n_panels = n.div_ceil(NR);
        let threads = candle_core::utils::get_num_threads().min(n_panels);
        let out = SharedDst(dst.as_mut_ptr());
        let run = |panels: std::ops::Range<usize>| {
            // SAFETY: the asserts above bound every row and column written; each call gets a
            // disjoint range of panels, hence disjoint columns of `dst`.
            unsafe { self.panels_into(panels, &out, dst_rs, accumulate, m, lhs, lhs_rs) }
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

    /// Computes the columns of `panels` for every row.
    ///
    /// # Safety
    /// `dst` must be valid for rows `0..m` at stride `dst_rs` and columns `0..self.n`, and no
    /// other thread may write the columns of `panels` meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn panels_into(
        &self,
        panels: std::ops::Range<usize>,
        dst: &SharedDst,
        dst_rs: usize,
        accumulate: bool,
        m: usize,
        lhs: &[f32],
        lhs_rs: usize,
    ) {
        let k = self.k;
        let avx = cpu_has_avx2_fma();
        // Depth blocks of KC and row blocks of MC: a panel's block (KC x 16 floats, 16 KiB) stays
        // in L1 while the row blocks stream against it, and the rows' block (MC x KC) in L2.
        for (k0, m0) in (0..k)
            .step_by(KC)
            .flat_map(|k0| (0..m).step_by(MC).map(move |m0| (k0, m0)))
        {
            let kc = KC.min(k - k0);
            let m_end = m.min(m0 + MC);
            let add = accumulate || k0 > 0;
            for p in panels.clone() {
                let panel = &self.panels[(p * k + k0) * NR..(p * k + k0 + kc) * NR];
                let col0 = p * NR;
                let width = NR.min(self.n - col0);
                let mut row = m0;
                while row < m_end {
                    let rows = MR.min(m_end - row);
                    let mut tile = [[0f32; NR]; MR];
                    let a = &lhs[row * lhs_rs + k0..];
                    if avx {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: AVX2 and FMA were detected at run time; `a` holds `rows` rows
                        // of `kc` values at stride `lhs_rs` (asserted by the caller).
                        unsafe {
                            avx2::tile(&mut tile, rows, a, lhs_rs, panel, kc)
                        };
                    } else {
                        portable_tile(&mut tile, rows, a, lhs_rs, panel, kc);
                    }
                    for (i, t) in tile.iter().enumerate().take(rows) {
                        // SAFETY: row `row + i < m` and columns `col0..col0 + width <= n` are in
                        // bounds (caller's contract), and this thread owns these columns.
                        unsafe { dst.store((row + i) * dst_rs + col0, &t[..width], add) };
                    }
                    row += rows;
                }
            }
        }
    }
}

/// The destination pointer, shared by the threads that write disjoint columns of it (here and in
/// the bf16 product).
pub(super) struct SharedDst(pub(super) *mut f32);
// SAFETY: only used to write disjoint column ranges from different threads (see `matmul`).
unsafe impl Sync for SharedDst {}

impl SharedDst {
    /// Writes `values` at element `at` of the destination, adding to what is there or not.
    ///
    /// # Safety
    /// `at..at + values.len()` must be inside the destination, and no other thread may touch it
    /// meanwhile.
    pub(super) unsafe fn store(&self, at: usize, values: &[f32], add: bool) {
        // SAFETY: the caller's contract.
        let d = unsafe { std::slice::from_raw_parts_mut(self.0.add(at), values.len()) };
        if add {
            d.iter_mut().zip(values).for_each(|(d, v)| *d += v);
        } else {
            d.copy_from_slice(values);
        }
    }
}

/// `tile[0..rows] = a [rows, k] · panel [k, NR]`, for CPUs without AVX2 + FMA.
fn portable_tile(
    tile: &mut [[f32; NR]; MR],
    rows: usize,
    a: &[f32],
    lhs_rs: usize,
    panel: &[f32],
    k: usize,
) {
    for (i, t) in tile.iter_mut().enumerate().take(rows) {
        let a = &a[i * lhs_rs..i * lhs_rs + k];
        for (av, b) in a.iter().zip(panel.chunks_exact(NR)) {
            t.iter_mut().zip(b).for_each(|(t, b)| *t += av * b);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// `tile[0..rows] = a [rows, k] · panel [k, NR]` with all accumulators in registers.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` must hold `rows` rows of `k` values at stride `rs`;
    /// `panel` must hold `k * NR` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(
        tile: &mut [[f32; NR]; MR],
        rows: usize,
        a: &[f32],
        rs: usize,
        panel: &[f32],
        k: usize,
    ) {
        match rows {
            6 => unsafe { kernel::<6>(tile, a, rs, panel, k) },
            5 => unsafe { kernel::<5>(tile, a, rs, panel, k) },
            4 => unsafe { kernel::<4>(tile, a, rs, panel, k) },
            3 => unsafe { kernel::<3>(tile, a, rs, panel, k) },
            2 => unsafe { kernel::<2>(tile, a, rs, panel, k) },
            _ => unsafe { kernel::<1>(tile, a, rs, panel, k) },
        }
    }

    /// The register-blocked microkernel for `R` rows: per k, two panel loads, `R` broadcasts and
    /// `2R` fused multiply-adds.
    ///
    /// # Safety
    /// As [`tile`], with `rows == R`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn kernel<const R: usize>(
        tile: &mut [[f32; NR]; MR],
        a: &[f32],
        rs: usize,
        panel: &[f32],
        k: usize,
    ) {
        assert!(R <= MR && a.len() >= (R - 1) * rs + k && panel.len() >= k * NR);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let a = a.as_ptr();
        let b = panel.as_ptr();
        for kk in 0..k {
            // SAFETY: kk < k, so both panel loads and every row's element are in bounds (assert).
            unsafe {
                let b0 = _mm256_loadu_ps(b.add(kk * NR));
                let b1 = _mm256_loadu_ps(b.add(kk * NR + 8));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(i * rs + kk));
                    acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                }
            }
        }
        for (t, acc) in tile.iter_mut().zip(acc) {
            // SAFETY: each tile row holds NR = 16 floats.
            unsafe {
                _mm256_storeu_ps(t.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(t.as_mut_ptr().add(8), acc[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum();
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32)
            .map(|v| v / (1u32 << 24) as f32 - 0.5)
            .collect()
    }

    #[test]
    fn packed_product_matches_a_naive_product_for_ragged_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 33, 17),
            (13, 5, 40),
            (64, 64, 256),
            (6, 300, 16),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let want = naive(m, k, n, &a, &b);
            let packed = PackedRhs::new(&b, (k, n), (n, 1));
            let mut got = vec![f32::NAN; m * n];
            packed.matmul(&mut got, n, false, m, &a, k);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{m}x{k}x{n}: {g} vs {w}"
                );
            }
            // Accumulating adds onto what is there.
            packed.matmul(&mut got, n, true, m, &a, k);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - 2.0 * w).abs() <= 2e-4 * (1.0 + w.abs()));
            }
        }
    }

    #[test]
    fn transposed_packing_reads_the_matrix_by_columns() {
        let (k, n) = (9, 21);
        let b = values(k * n, 3);
        // The same matrix stored transposed ([n, k] row-major).
        let mut bt = vec![0f32; k * n];
        for kk in 0..k {
            for j in 0..n {
                bt[j * k + kk] = b[kk * n + j];
            }
        }
        let a = values(5 * k, 4);
        let (p, pt) = (
            PackedRhs::new(&b, (k, n), (n, 1)),
            PackedRhs::new(&bt, (k, n), (1, k)),
        );
        let (mut x, mut y) = (vec![0f32; 5 * n], vec![0f32; 5 * n]);
        p.matmul(&mut x, n, false, 5, &a, k);
        pt.matmul(&mut y, n, false, 5, &a, k);
        assert_eq!(x, y);
    }

    #[test]
    fn portable_and_avx2_tiles_agree() {
        let (k, rows) = (37, 5);
        let a = values(rows * k, 5);
        let panel = values(k * NR, 6);
        let mut want = [[0f32; NR]; MR];
        portable_tile(&mut want, rows, &a, k, &panel, k);
        if cpu_has_avx2_fma() {
            let mut got = [[0f32; NR]; MR];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detected above; shapes as documented.
            unsafe {
                avx2::tile(&mut got, rows, &a, k, &panel, k)
            };
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()));
            }
        }
    }
}
