//! One interface over the two precisions' products, so that the fused layer and the projection
//! are written once: [`PackedWeights`] (a right-hand side packed once and multiplied many times,
//! the recurrent weights) and [`matmul`] (a one-off product with strided operands, the weight
//! gradients and input projections).

use gemm::Parallelism;

use super::packed_matmul::PackedRhs;
use super::packed_matmul_bf16::{PackedLhsBf16, PackedRhsBf16, matmul_bf16};
use super::precision::Precision;

/// A right-hand side `[k, n]` packed once in the chosen precision.
pub enum PackedWeights {
    /// f32 panels.
    F32(PackedRhs),
    /// bf16 panels, with the buffer each call's left-hand side is rounded into (kept between
    /// calls: the per-step products would otherwise allocate it at every step).
    Bf16(PackedRhsBf16, PackedLhsBf16),
}

impl PackedWeights {
    /// Packs `rhs [k, n]`, element `(kk, j)` at `rhs[kk * rs + j * cs]`.
    pub fn new(
        precision: Precision,
        rhs: &[f32],
        shape: (usize, usize),
        strides: (usize, usize),
    ) -> PackedWeights {
        match precision {
            Precision::F32 => PackedWeights::F32(PackedRhs::new(rhs, shape, strides)),
            Precision::Bf16 => PackedWeights::Bf16(
                PackedRhsBf16::new(rhs, shape, strides),
                PackedLhsBf16::new(),
            ),
        }
    }

    /// `dst [m, n] (row stride dst_rs) = (accumulate ? dst : 0) + lhs [m, k] · self`, `lhs`
    /// row-major with row stride `lhs_rs`.
    pub fn matmul(
        &mut self,
        dst: &mut [f32],
        dst_rs: usize,
        accumulate: bool,
        (m, k): (usize, usize),
        lhs: &[f32],
        lhs_rs: usize,
    ) {
        match self {
            PackedWeights::F32(rhs) => rhs.matmul(dst, dst_rs, accumulate, m, lhs, lhs_rs),
            PackedWeights::Bf16(rhs, scratch) => {
                scratch.pack(lhs, (m, k), (lhs_rs, 1));
                rhs.matmul(dst, dst_rs, accumulate, scratch);
            }
        }
    }
}

/// `dst [m, n] (row stride dst_rs) = (accumulate ? dst : 0) + lhs [m, k] · rhs [k, n]` in the
/// given precision, each operand given by its row and column strides.
///
/// # Panics
/// If a slice is too short for its shape and strides.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    precision: Precision,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    shape: (usize, usize, usize),
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    match precision {
        Precision::F32 => matmul_f32(
            dst,
            dst_rs,
            accumulate,
            shape,
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
        ),
        Precision::Bf16 => matmul_bf16(
            dst,
            dst_rs,
            accumulate,
            shape,
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
        ),
    }
}

/// Splits work over the rayon pool only when a matmul is big enough to pay for the handoff.
fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    let threads = candle_core::utils::get_num_threads();
    if threads > 1 && m * n * k >= 1 << 18 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `dst [m, n] (row stride dst_rs) = (accumulate ? dst : 0) + lhs [m, k] · rhs [k, n]`, with
/// each operand given by its row and column strides: the general gemm (as Candle calls it), used
/// for the one large weight-gradient product per layer. Public for the benchmark that compares
/// it with [`PackedRhs`] on the per-step shapes.
///
/// # Panics
/// If a slice is too short for its shape and strides.
#[allow(clippy::too_many_arguments)]
pub fn matmul_f32(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    assert!(
        dst.len() >= (m - 1) * dst_rs + n,
        "matmul destination too small"
    );
    assert!(
        lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs,
        "matmul lhs too small"
    );
    assert!(
        rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs,
        "matmul rhs too small"
    );
    // SAFETY: the asserts above keep every index gemm touches inside the three slices; `dst` is
    // a unique borrow, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, n, k),
        );
    }
}
