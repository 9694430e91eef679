//! The LSTM cell's elementwise math, forward and backward, for one batch row: the one place the
//! CPU fast paths compute gate nonlinearities. The fused training layer (`fused_lstm.rs`) uses the
//! forward and backward; the fast batch-1 decoder (`fast_decoder.rs`) the forward and
//! [`tanh_in_place`]. Written so that the compiler turns each loop into 8-wide AVX2 code.
//!
//! Why not `f32::exp`/`tanh`: those are libm calls the compiler cannot vectorise, and with them
//! the gate nonlinearities took about as long as the recurrent matmul itself. `exp` here is the
//! Cephes single-precision algorithm (range reduction by ln 2, degree-6 polynomial, exponent built
//! from bits), branch-free and within 2 ulp of libm over the range that matters; `tanh` is
//! Cephes' `tanhf` (an odd polynomial below |x| = 0.625, so that small values keep their relative
//! precision, and `1 - 2 / (e^2|x| + 1)` above). The equivalence tests of both users hold them to
//! 1e-5 of the libm-based Candle reference. The same source is compiled twice, for AVX2+FMA
//! (picked at run time) and for the baseline target, and both give the same bits: FMA contraction
//! never happens without fast-math, so `a * b + c` rounds twice in both.

#[cfg(target_arch = "x86_64")]
use crate::model::device::cpu_has_avx2_fma;

/// `e^x` for f32, vectorisable. Inputs are clamped to ±88 (beyond that the sigmoid and tanh
/// callers are saturated anyway).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `x - n ln 2` stays exact.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a branch or call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-88.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from its exponent bits; n is in -127..=127 after the clamp.
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    let ax = x.abs();
    let big = (1.0 - 2.0 / (1.0 + exp(2.0 * ax))).copysign(x);
    let z = x * x;
    let mut p = -5.704_988_7e-3;
    p = p * z + 2.063_909e-2;
    p = p * z - 5.373_971_6e-2;
    p = p * z + 0.133_314_42;
    p = p * z - 0.333_332_8;
    let small = p * z * x + x;
    if ax < 0.625 { small } else { big }
}

/// Forward body: `a [4H]` holds pre-activations on entry and activations (σ(i), σ(f), tanh(g),
/// σ(o)) on exit; writes `c = f c_prev + i g` and `h = o tanh(c)`.
#[inline(always)]
fn forward_body(a: &mut [f32], c_prev: &[f32], c_out: &mut [f32], h_out: &mut [f32]) {
    let h = c_prev.len();
    let (ai, rest) = a.split_at_mut(h);
    let (af, rest) = rest.split_at_mut(h);
    let (ag, ao) = rest.split_at_mut(h);
    let (ao, c_out, h_out) = (&mut ao[..h], &mut c_out[..h], &mut h_out[..h]);
    for j in 0..h {
        let i = sigmoid(ai[j]);
        let f = sigmoid(af[j]);
        let g = tanh(ag[j]);
        let o = sigmoid(ao[j]);
        let c = f * c_prev[j] + i * g;
        ai[j] = i;
        af[j] = f;
        ag[j] = g;
        ao[j] = o;
        c_out[j] = c;
        h_out[j] = o * tanh(c);
    }
}

/// Backward body for one row. From the activations `act [4H]`, this step's cell state `c` and the
/// previous one `c_prev`, and the gradients arriving at this step's `h` (`dh_out` from the layer's
/// output, `dh_rec` from the next step) and `c` (`dc_out` from the output, `carry` from the next
/// step), writes the pre-activation gradients `da [4H]` and replaces `carry` with the gradient
/// flowing to `c_prev`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_body(
    act: &[f32],
    c: &[f32],
    c_prev: &[f32],
    dh_out: &[f32],
    dh_rec: &[f32],
    dc_out: &[f32],
    carry: &mut [f32],
    da: &mut [f32],
) {
    let h = c.len();
    let (ai, af, ag, ao) = (
        &act[..h],
        &act[h..2 * h],
        &act[2 * h..3 * h],
        &act[3 * h..4 * h],
    );
    let (dai, rest) = da.split_at_mut(h);
    let (daf, rest) = rest.split_at_mut(h);
    let (dag, dao) = rest.split_at_mut(h);
    let (dao, c_prev, dh_out, dh_rec, dc_out, carry) = (
        &mut dao[..h],
        &c_prev[..h],
        &dh_out[..h],
        &dh_rec[..h],
        &dc_out[..h],
        &mut carry[..h],
    );
    for j in 0..h {
        let (i, f, g, o) = (ai[j], af[j], ag[j], ao[j]);
        let tc = tanh(c[j]);
        let dh = dh_out[j] + dh_rec[j];
        let dc = dc_out[j] + carry[j] + dh * o * (1.0 - tc * tc);
        dai[j] = dc * g * i * (1.0 - i);
        daf[j] = dc * c_prev[j] * f * (1.0 - f);
        dag[j] = dc * i * (1.0 - g * g);
        dao[j] = dh * tc * o * (1.0 - o);
        carry[j] = dc * f;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_avx2(a: &mut [f32], c_prev: &[f32], c_out: &mut [f32], h_out: &mut [f32]) {
    forward_body(a, c_prev, c_out, h_out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn backward_avx2(
    act: &[f32],
    c: &[f32],
    c_prev: &[f32],
    dh_out: &[f32],
    dh_rec: &[f32],
    dc_out: &[f32],
    carry: &mut [f32],
    da: &mut [f32],
) {
    backward_body(act, c, c_prev, dh_out, dh_rec, dc_out, carry, da)
}

/// The cell forward for one row; see `forward_body`. `a` is `4H` long, the others `H`.
pub fn forward(a: &mut [f32], c_prev: &[f32], c_out: &mut [f32], h_out: &mut [f32]) {
    forward_with(true, a, c_prev, c_out, h_out)
}

/// [`forward`], with the AVX2 build only when `vector` is true (and the CPU has it), so that a
/// caller can run the baseline build on purpose (the fast decoder's portable kernel).
pub fn forward_with(
    vector: bool,
    a: &mut [f32],
    c_prev: &[f32],
    c_out: &mut [f32],
    h_out: &mut [f32],
) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vector;
    #[cfg(target_arch = "x86_64")]
    if vector && cpu_has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { forward_avx2(a, c_prev, c_out, h_out) };
    }
    forward_body(a, c_prev, c_out, h_out)
}

#[inline(always)]
fn tanh_body(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = tanh(*x));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tanh_avx2(v: &mut [f32]) {
    tanh_body(v)
}

/// `v = tanh(v)`, vectorised; `vector` as in [`forward_with`].
pub fn tanh_in_place(vector: bool, v: &mut [f32]) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vector;
    #[cfg(target_arch = "x86_64")]
    if vector && cpu_has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { tanh_avx2(v) };
    }
    tanh_body(v)
}

/// The cell backward for one row; see `backward_body`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    act: &[f32],
    c: &[f32],
    c_prev: &[f32],
    dh_out: &[f32],
    dh_rec: &[f32],
    dc_out: &[f32],
    carry: &mut [f32],
    da: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if cpu_has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { backward_avx2(act, c, c_prev, dh_out, dh_rec, dc_out, carry, da) };
    }
    backward_body(act, c, c_prev, dh_out, dh_rec, dc_out, carry, da)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        for k in -8000..=8000 {
            let x = k as f32 * 0.01;
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn sigmoid_and_tanh_saturate_without_nan() {
        for x in [-1e30f32, -100.0, -88.0, 88.0, 100.0, 1e30] {
            assert!(sigmoid(x).is_finite() && tanh(x).is_finite(), "{x}");
        }
        assert!(sigmoid(-1e30) < 1e-37);
        assert_eq!(sigmoid(1e30), 1.0);
        assert_eq!(tanh(1e30), 1.0);
        assert_eq!(tanh(-1e30), -1.0);
        assert!((tanh(0.3) - 0.3f32.tanh()).abs() < 1e-7);
    }

    #[test]
    fn tanh_keeps_its_relative_precision_near_zero_and_across_the_switch() {
        let mut worst = 0f32;
        for k in -4000..=4000 {
            let x = k as f32 * 1e-3 + 1e-6;
            let (a, b) = (tanh(x), x.tanh());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 1e-6, "worst relative error {worst:e}");
        let mut v: Vec<f32> = (0..19).map(|k| k as f32 * 0.3 - 2.7).collect();
        let want: Vec<f32> = v.iter().map(|&x| tanh(x)).collect();
        tanh_in_place(true, &mut v);
        assert_eq!(v, want);
    }

    #[test]
    fn the_vector_and_baseline_builds_give_the_same_bits() {
        let h = 37; // not a multiple of the vector width
        let a0: Vec<f32> = (0..4 * h).map(|k| (k as f32 * 0.37).sin() * 6.0).collect();
        let c_prev: Vec<f32> = (0..h).map(|k| (k as f32 * 0.11).cos()).collect();
        let mut a1 = a0.clone();
        let (mut c1, mut h1) = (vec![0.0; h], vec![0.0; h]);
        forward(&mut a1, &c_prev, &mut c1, &mut h1);
        let mut a2 = a0.clone();
        let (mut c2, mut h2) = (vec![0.0; h], vec![0.0; h]);
        forward_body(&mut a2, &c_prev, &mut c2, &mut h2);
        assert_eq!((&a1, &c1, &h1), (&a2, &c2, &h2));

        let dh: Vec<f32> = (0..h).map(|k| (k as f32 * 0.7).sin()).collect();
        let (mut da1, mut dc1) = (vec![0.0; 4 * h], c1.clone());
        backward(&a1, &c1, &c_prev, &dh, &c_prev, &h1, &mut dc1, &mut da1);
        let (mut da2, mut dc2) = (vec![0.0; 4 * h], c1.clone());
        backward_body(&a1, &c1, &c_prev, &dh, &c_prev, &h1, &mut dc2, &mut da2);
        assert_eq!((da1, dc1), (da2, dc2));
    }
}
